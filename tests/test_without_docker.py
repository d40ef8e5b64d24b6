"""`make test` on a machine without Docker: the container suite is skipped with one reason line, never errors.

The suite runs in a subprocess, the way a new user meets it: a PATH with every program of this machine except the
Docker client and engine and Debian's package tools (so docker/engine.sh cannot install an engine either, as on a
machine without apt or for a user who is not root), and no CI variable (CI fails loudly instead, by design).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

HIDDEN = {"docker", "dockerd", "docker-init", "docker-proxy", "containerd", "runc", "apt", "apt-get", "dpkg"}


def path_without_docker(bin_dir: Path) -> str:
    """A folder of links to every program on PATH but Docker's and the package tools."""
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if program.name not in HIDDEN and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    return str(bin_dir)


@pytest.mark.slow
# serial, and on pytest-xdist workers as make test runs it: the line must reach the controller's summary
@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadgroup"]], ids=["serial", "xdist"])
def test_container_suite_is_skipped_in_one_line_without_docker(tmp_path, workers):
    env = {
        "PATH": path_without_docker(tmp_path / "bin"),
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "FINETUNE_TEST_DOCKER": "docker",  # by name, through PATH (the harness prefers /usr/bin/docker otherwise)
    }
    assert shutil.which("docker", path=env["PATH"]) is None
    # `tests` as make test gives it (testpaths), not tests/container: under xdist the controller then never loads
    # tests/container/conftest.py, and only hooks in tests/conftest.py print the line
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", "container", "-q", "-rs", "-p", "no:cacheprovider", *workers]
    proc = subprocess.run(
        [*cmd, "--basetemp", str(tmp_path / "pytest")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    summary = re.search(r"(\d+) skipped(?:, \d+ deselected)? in", out)  # deselected: markers off by default
    assert summary and int(summary.group(1)) >= 10, out[-2000:]
    assert not re.search(r"\d+ (passed|failed|errors?)\b", out), out[-2000:]
    said = [line for line in out.splitlines() if line.startswith("container tests skipped: ")]
    assert len(said) == 1, f"one line for the whole suite, saying why and how to enable them:\n{out[-3000:]}"
    assert "docker: not found" in said[0] and "DOCKER_HOST" in said[0] and "-m 'not container'" in said[0], said[0]
