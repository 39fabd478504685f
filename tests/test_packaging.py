"""The Dockerfile's install step, mirrored: a regular (non-editable) wheel install works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=180)  # fmt: skip
    (wheel,) = wheels.glob("archiver-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "archiver/cli/main.py",
        "query/cli.py",
        "archiver/demo/sample/LICENSE",
        "archiver/py.typed",
    } <= names
    assert any(n.startswith("archiver/demo/sample/") and n.endswith(".zst") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "archiver = archiver.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    # Run from an empty directory with only the installed copy (and the venv's dependencies) on the path.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    code = "import archiver, query, sys; assert 'site' in archiver.__file__, archiver.__file__; " \
           "from archiver.cli.main import main; sys.argv=['archiver', '--help']; main()"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("run", "query", "ls", "demo"):
        assert command in result.stdout
    sample = subprocess.run([sys.executable, "-c", "from archiver.demo.corpus import sample_lines; print(len(sample_lines()))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sample.returncode == 0 and int(sample.stdout) >= 1000, sample.stderr
