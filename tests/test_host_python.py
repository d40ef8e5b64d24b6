"""`make venv` on a host whose python3 is not the CPython the locks are made for (environments/hostpython.py): it
takes that python3 when it is the right one, else pythonX.Y on PATH, else one uv finds or downloads, else one line
with the fix (never a traceback). The host pythons are real (this machine's pyenv has 3.9 to 3.13, where present);
uv is a FAKE (a shell script, named so below) because the real `uv python install` needs github.com.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_environments import locked_python

from conftest import REPO

HOSTPYTHON = REPO / "environments" / "hostpython.py"
LOCKS = [REPO / "environments" / "cpu" / "pip.linux-64.lock", REPO / "environments" / "dev" / "pip.linux-64.lock"]
WANT = locked_python()  # the X.Y the locks are made for (the python fact's source)
PYENV = Path.home() / ".pyenv" / "versions"
FAKE_UV = """#!/bin/sh
# FAKE uv (tests/test_host_python.py): `uv python find|install X.Y` as the test scripts it; logs each call
echo "$*" >> "$FAKE_UV_LOG"
case "$2" in
  find) if [ -n "$FAKE_UV_FOUND" ] && { [ -z "$FAKE_UV_NEEDS_INSTALL" ] || [ -f "$FAKE_UV_LOG.installed" ]; }; then
          echo "$FAKE_UV_FOUND"
        else
          echo "error: No interpreter found for Python $4 in managed installations or search path" >&2; exit 2
        fi ;;
  install) if [ -n "$FAKE_UV_INSTALL_FAILS" ]; then
             echo "error: Failed to install cpython-$3.18-linux-x86_64-gnu" >&2
             echo "  cause: failed to lookup address information: Name or service not known" >&2; exit 1; fi
           : > "$FAKE_UV_LOG.installed" ;;
esac
"""


def other_python(minor: str | None = None) -> Path:
    """A real CPython of another X.Y than the locks' (pyenv's; the newest, or 3.<minor>), to play the host's python3."""
    found = {}
    for version in PYENV.glob("3.*"):
        xy = ".".join(version.name.split(".")[:2])
        if xy != WANT and int(xy.split(".")[1]) >= 9 and (version / "bin" / "python3").exists():
            found[xy] = version / "bin" / "python3"
    if minor:
        if minor not in found:
            pytest.skip(f"needs CPython {minor} (pyenv's, under {PYENV})")
        return found[minor]
    if not found:
        pytest.skip(f"needs a CPython 3.9+ other than {WANT} (pyenv's, under {PYENV})")
    return found[max(found, key=lambda xy: int(xy.split(".")[1]))]


def pick(tmp_path, python, *, path_dirs=(), uv: dict | None = None) -> subprocess.CompletedProcess:
    """hostpython.py run by `python`, with PATH = path_dirs only (no system python3.X, no pyenv shims), and the
    FAKE uv configured by `uv` (None: no uv at all)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = ":".join(map(str, path_dirs)) or "/nonexistent"  # no system python3.X to find by chance
    args = [str(python), str(HOSTPYTHON)]
    if uv is not None:
        fake = tmp_path / "fake-uv"
        fake.write_text(FAKE_UV)
        fake.chmod(0o755)
        env.update(FAKE_UV_LOG=str(tmp_path / "uv.log"), **uv)
        args += ["--uv", str(fake)]
    return subprocess.run([*args, *map(str, LOCKS)], env=env, capture_output=True, text=True, timeout=60)


def uv_calls(tmp_path) -> list[str]:
    log = tmp_path / "uv.log"
    return log.read_text().splitlines() if log.exists() else []


def test_the_right_python3_is_taken_as_it_is(tmp_path):
    proc = pick(tmp_path, sys.executable, uv={})
    assert proc.returncode == 0 and proc.stdout.strip() == sys.executable, proc.stderr
    assert uv_calls(tmp_path) == []


def test_another_python3_takes_pythonXY_from_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{WANT}").symlink_to(sys.executable)
    proc = pick(tmp_path, other_python(), path_dirs=[bin_dir], uv={})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(bin_dir / f"python{WANT}")
    assert uv_calls(tmp_path) == []


def test_another_python3_gets_the_locks_python_from_uv_find(tmp_path):
    proc = pick(tmp_path, other_python(), uv={"FAKE_UV_FOUND": sys.executable})
    assert proc.returncode == 0 and proc.stdout.strip() == sys.executable, proc.stderr
    assert uv_calls(tmp_path) == [f"python find --system {WANT}"]


def test_another_python3_has_uv_download_the_locks_python_once(tmp_path):
    proc = pick(tmp_path, other_python(), uv={"FAKE_UV_FOUND": sys.executable, "FAKE_UV_NEEDS_INSTALL": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == sys.executable, proc.stderr
    find = f"python find --system {WANT}"
    assert uv_calls(tmp_path) == [find, f"python install {WANT}", find]
    assert f"downloading one with uv (uv python install {WANT})" in proc.stderr


@pytest.mark.parametrize("minor", ["3.9", "3.13"])  # macOS's own python3; Debian 13's and Fedora's
@pytest.mark.parametrize("uv", [None, {"FAKE_UV_INSTALL_FAILS": "1"}], ids=["no uv", "uv cannot download"])
def test_without_any_way_to_the_locks_python_one_line_names_the_fix(tmp_path, uv, minor):
    python = other_python(minor)
    proc = pick(tmp_path, python, uv=uv)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("make: the locks")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert f"the locks are made for CPython {WANT}" in line and f"{python} is " in line
    assert f"`.bootstrap/bin/uv python install {WANT}`" in line and f"make PYTHON=/path/to/python{WANT}" in line
    if uv:  # uv's own reason, first error and last cause, in the same line
        assert "Failed to install cpython-" in line and "Name or service not known" in line
    else:
        assert "uv is not installed" in line


@pytest.mark.slow
def test_make_venv_with_another_python3_builds_the_locks_python_venv(tmp_path):
    """The real Makefile, PYTHON= another CPython (pyenv's), pythonX.Y on PATH: .venv is X.Y and imports torch."""
    python = other_python()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{WANT}").symlink_to(Path(sys.base_prefix) / "bin" / f"python{WANT}")  # the real one, not .venv
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    venv, bootstrap = tmp_path / "venv", tmp_path / "bootstrap"
    # BYTECODE= : this venv runs one import; that `make venv` compiles bytecode is proven on the suite's own .venv
    # (test_the_venvs_packages_have_bytecode_for_what_a_run_imports); compiling here costs 57 CPU-s (Makefile)
    make = ["make", "venv", f"PYTHON={python}", f"VENV={venv}", f"BOOTSTRAP={bootstrap}", "BYTECODE="]
    proc = subprocess.run(make, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = "import sys, torch; print('%d.%d' % sys.version_info[:2], torch.__version__)"
    out = subprocess.run([venv / "bin" / "python", "-c", check], capture_output=True, text=True).stdout.split()
    assert out[0] == WANT and out[1].startswith("2.13.0"), out
