"""The sample text the load generator speaks, and the tables that go with it.

Split from :mod:`archiver.demo.loadgen` so the generator module holds only the
deterministic message machinery: this module owns the app and region names,
the runner's messages, the application log levels (and how a line's own level
is detected), and reading the shipped LogHub sample in ``archiver/demo/sample`` or
a LogHub directory given by the caller.
"""

from __future__ import annotations

import bisect
import importlib.resources
import os
import re
from pathlib import Path

import zstandard

#: Default app names; more apps than names get a numeric suffix.
APP_NAMES = (
    "sandwich",
    "billing-api",
    "web-frontend",
    "queue-worker",
    "auth-service",
    "image-resizer",
    "search-indexer",
    "chat-gateway",
    "metrics-proxy",
    "dc-team-52-simon",
)
#: Fly region codes that apps are spread over.
REGIONS = (
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
    "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
    "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
)  # fmt: skip


#: What the platform's runner says about a machine (provider "runner").
RUNNER_MESSAGES = (
    "Pulling container image registry.fly.io/{app}:deployment-01HZX3K4QF7T2M8V9W0YBCDE5G",
    "Successfully prepared image registry.fly.io/{app}:deployment-01HZX3K4QF7T2M8V9W0YBCDE5G (1.84s)",
    "Configuring firecracker",
    "Starting machine",
    "Preparing to run: `/app/start.sh` as root",
    "machine did not have a restart policy, defaulting to restart",
    "Sending signal SIGINT to main child process w/ PID 313",
    "Main child exited normally with code: 0",
    "Reaped child process with pid: 314, exit code: 0",
    "machine exited with exit code 0, not restarting",
)


#: Application log levels as the JSON logging libraries spell them: name, weight,
# then the spellings of zap (level), Cloud Logging (severity), log15 (lvl), pino (level number)
# and structlog (level).
LEVELS = (
    ("debug", 0.10, "debug", "DEBUG", "dbug", 20, "debug"),
    ("info", 0.62, "info", "INFO", "info", 30, "info"),
    ("warn", 0.15, "warn", "WARNING", "warn", 40, "warning"),
    ("error", 0.11, "error", "ERROR", "eror", 50, "error"),
    ("fatal", 0.02, "fatal", "CRITICAL", "crit", 60, "critical"),
)
_LEVEL_CUMULATIVE = tuple(sum(level[1] for level in LEVELS[: i + 1]) for i in range(len(LEVELS)))
# A line that names its own level keeps it when wrapped in JSON, so text and level agree.
_LEVEL_WORD = re.compile(r"\b(debug|info|warn|warning|error|fatal|critical)\b", re.IGNORECASE)
_ANDROID_LEVEL = re.compile(r"^\d\d-\d\d [\d:.]+\s+\d+\s+\d+ ([VDIWEF]) ")
_LEVEL_OF_WORD = {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3, "fatal": 4, "critical": 4}
_LEVEL_OF_LETTER = {"V": 0, "D": 0, "I": 1, "W": 2, "E": 3, "F": 4}


def _read_log(name: str, data: bytes) -> list[str]:
    if name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _system_name(file_name: str) -> str:
    # "HDFS_2k.log", "HDFS_300.log.zst" and "HDFS.log" all name the system "HDFS".
    return file_name.split(".", 1)[0].split("_", 1)[0]


def sample_systems(directory: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Sample lines by system, from a directory's ``*.log``/``*.log.zst`` or else the shipped sample."""
    systems: dict[str, list[str]] = {}
    if directory is not None:
        files = [(p.name, p.read_bytes) for p in sorted(Path(directory).iterdir())]
    else:
        sample = importlib.resources.files("archiver.demo") / "sample"
        files = [(p.name, p.read_bytes) for p in sorted(sample.iterdir(), key=lambda p: p.name)]
    for name, read in files:
        if name.endswith((".log", ".log.zst")):
            lines = _read_log(name, read())
            if lines:
                systems.setdefault(_system_name(name), []).extend(lines)
    if not systems:
        raise FileNotFoundError(
            f"no *.log or *.log.zst files with text in {directory or 'archiver/demo/sample'}"
        )
    return systems


def sample_lines(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """All sample log lines (system by system, in name order), from a directory or the shipped sample."""
    return [line for lines in sample_systems(directory).values() for line in lines]


def default_app_names(count: int) -> list[str]:
    """``count`` app names: APP_NAMES in order, repeated with a numeric suffix past its end."""
    if count < 1:
        raise ValueError("need at least one app")
    return [
        APP_NAMES[i % len(APP_NAMES)] + (f"-{i // len(APP_NAMES)}" if i >= len(APP_NAMES) else "")
        for i in range(count)
    ]


def level_of(text: str, draw: float) -> int:
    """Index into LEVELS: the level the line names, else one drawn by weight."""
    letter = _ANDROID_LEVEL.match(text)
    if letter:
        return _LEVEL_OF_LETTER[letter[1]]
    word = _LEVEL_WORD.search(text)
    if word:
        return _LEVEL_OF_WORD[word[1].lower()]
    return min(bisect.bisect_right(_LEVEL_CUMULATIVE, draw), len(LEVELS) - 1)
