"""fly.toml, Dockerfile and .dockerignore agree with the code and with each other (no Docker engine here)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from archiver.environment import load_run_config
from archiver.units import parse_duration_s

ROOT = Path(__file__).resolve().parents[1]
FLY_MAX_KILL_TIMEOUT_S = 300  # Fly's documented maximum
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|cargo|rustc|apt-get|apk|dev)\b")


@pytest.fixture(scope="module")
def fly() -> dict[str, Any]:
    return tomllib.loads((ROOT / "fly.toml").read_text())


def dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(FROM line, instructions) per stage, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [
        line
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line.strip())
    return stages


def instructions(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :].strip() for line in stage if line.upper().startswith(keyword + " ")]


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides; ``!`` re-includes."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(body):
            if body.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif body.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif body[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif body[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif body[i] == "[":
                end = body.index("]", i)
                regex, i = regex + body[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(body[i]), i + 1
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_fly_exposes_no_public_service(fly: dict[str, Any]) -> None:
    assert "http_service" not in fly
    assert "services" not in fly
    assert "allowed_public_ports" not in fly.get("experimental", {})


def test_fly_health_check_and_metrics_match_the_code_defaults(fly: dict[str, Any]) -> None:
    port = load_run_config({}, {}).http_port
    assert port == 8686
    checks = fly["checks"]
    assert len(checks) == 1
    (check,) = checks.values()
    assert check["type"] == "http"
    assert check["port"] == port
    assert check["path"] == "/health"
    assert check.get("method", "get").lower() == "get"
    for key in ("interval", "timeout", "grace_period"):
        assert parse_duration_s(check[key]) > 0, key
    assert parse_duration_s(check["timeout"]) < parse_duration_s(check["interval"])
    assert fly["metrics"] == {"port": port, "path": "/metrics"}


def test_fly_mount_holds_the_spool_and_env_is_sane(fly: dict[str, Any]) -> None:
    env = fly["env"]
    mount = fly["mounts"]
    assert isinstance(mount, dict), "one [mounts] table"
    assert mount["source"] == "archiver_spool"
    spool = PurePosixPath(env["SPOOL_DIR"])
    assert spool.is_absolute()
    assert spool.parent == PurePosixPath(mount["destination"])
    # BUCKET_NAME from `fly storage create` must decide the archive; secrets never sit in fly.toml.
    for name in ("ARCHIVE_URL", "BUCKET_NAME", "ACCESS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert name not in env
    assert all(isinstance(value, str) for value in env.values())
    text = (ROOT / "fly.toml").read_text()
    assert re.search(r'^\s*#\s*SUBJECT\s*=\s*"logs\.myapp\.>"', text, re.MULTILINE)
    assert re.search(r"^\s*#\s*QUEUE\s*=", text, re.MULTILINE)


def test_fly_gives_time_to_flush_on_the_signal_the_code_handles(fly: dict[str, Any]) -> None:
    timeout = fly["kill_timeout"]
    seconds = timeout if isinstance(timeout, int) else parse_duration_s(timeout)
    flush_interval = load_run_config({}, {}).flush_interval_s
    assert flush_interval <= seconds <= FLY_MAX_KILL_TIMEOUT_S
    assert fly.get("kill_signal", "SIGINT") in ("SIGTERM", "SIGINT")
    (vm,) = fly["vm"]
    assert re.fullmatch(r"\d+(mb|gb)", vm["memory"].lower())


def test_dockerfile_is_multi_stage_with_a_lean_non_root_final_stage(fly: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    (builder_from, builder), (final_from, final) = stages[0], stages[-1]
    builder_image = builder_from.split()[1]
    assert builder_image.startswith("python:3.12-slim")
    assert re.search(r"\bAS\s+builder\b", builder_from, re.IGNORECASE)
    # The venv's python is a symlink into the base image: both stages must use the same one.
    assert final_from.split()[1] == builder_image
    assert any('".[fast]"' in run or "'.[fast]'" in run for run in instructions(builder, "RUN"))

    users = instructions(final, "USER")
    assert users, "the final stage must set a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    cmd = instructions(final, "CMD")
    assert cmd and json.loads(cmd[-1]) == ["archiver", "run"]
    assert not instructions(final, "ENTRYPOINT")
    assert not instructions(final, "EXPOSE"), "nothing public: 8686 is for Fly's private checks"
    copies = instructions(final, "COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    for run in instructions(final, "RUN"):
        assert not BUILD_TOOLS.search(run), run
        assert "pip" not in run, run
    env_text = " ".join(instructions(final, "ENV"))
    assert f"SPOOL_DIR={fly['env']['SPOOL_DIR']}" in env_text
    assert "PATH=/opt/venv/bin" in env_text
    assert "8686" in " ".join(instructions(final, "HEALTHCHECK"))


def test_dockerfile_copies_exist_and_are_in_the_build_context() -> None:
    (_, builder), *_ = dockerfile_stages()
    sources: list[str] = []
    for copy in instructions(builder, "COPY"):
        words = [w for w in copy.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    assert {"pyproject.toml", "README.md", "archiver", "query"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing, the image would not build"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    # The shipped sample text (and its licence) is package data and must reach the image.
    for sample in (ROOT / "archiver" / "demo" / "sample").iterdir():
        assert not dockerignore_excludes(f"archiver/demo/sample/{sample.name}"), sample.name
    assert not dockerignore_excludes("archiver/demo/loadgen.py")


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    for path in (
        ".venv",
        ".venv/bin/python",
        ".git",
        ".git/HEAD",
        "tests/test_loadgen.py",
        "bench/out/result.json",
        "archive/x.parquet",
        "demo-archive/a",
        "spool/segment-1",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "archiver/__pycache__/loadgen.cpython-312.pyc",
        "archiver.egg-info/PKG-INFO",
        ".env",
    ):
        assert dockerignore_excludes(path), path
    text = (ROOT / ".dockerignore").read_text()
    assert re.search(r"^\.venv$", text, re.MULTILINE) and re.search(r"^\.git$", text, re.MULTILINE)
