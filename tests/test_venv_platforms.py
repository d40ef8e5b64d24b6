"""`make venv` on every host it has locks for: uv pinned and hash-checked in one place, the lock picked from
`uname -s` / `uname -m` (tested with a FAKE `uname` first on PATH, so macOS is checked here without a Mac), the
macOS arm64 locks (PyPI's torch, no +cpu), and one line for a machine without locks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lock  # environments/ (pytest's pythonpath): the lock tool's modules import each other by name
import lockfile
import pytest

from conftest import REPO, read_bytecode_check, run_imports_bytecode_check

ENVS = REPO / "environments"
UV_PIN = ENVS / "bootstrap" / "uv.txt"
FAKE_UNAME = """#!/bin/sh
# FAKE uname (tests/test_venv_platforms.py): the kernel and machine of the host under test
case "$1" in
  -s) echo "$FAKE_UNAME_S" ;;
  -m) echo "$FAKE_UNAME_M" ;;
  *) echo "$FAKE_UNAME_S" ;;
esac
"""


def make_n_venv(tmp_path, system: str, machine: str, *, dry: bool = True) -> subprocess.CompletedProcess:
    """`make [-n] venv` as a host with this `uname -s` / `uname -m` would run it (FAKE uname), into tmp_path."""
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "uname").write_text(FAKE_UNAME)
    (fake / "uname").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "PIP_FIND_LINKS")}
    env.update(PATH=f"{fake}:{env['PATH']}", FAKE_UNAME_S=system, FAKE_UNAME_M=machine)
    args = ["make", *(["-n"] if dry else []), "venv", f"VENV={tmp_path / 'venv'}", f"BOOTSTRAP={tmp_path / 'bs'}"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


# --- uv: pinned and hash-checked in one place -----------------------------------------------------------------------


def test_the_bootstrap_uv_is_one_pin_with_hashes_and_the_dev_locks_uv():
    """environments/bootstrap/uv.txt: one exact pin, sha256 hashes only (PyPI's, cited there), the same uv as the
    dev layer's lock (the lock tool), each hash one the dev lock lists for that version."""
    pin = lockfile.read(UV_PIN)
    assert [p.name for p in pin.packages] == ["uv"] and pin.packages[0].hashes
    assert "https://pypi.org/pypi/uv/json" in "\n".join(pin.header)
    for platform in ("linux-64", "osx-arm64"):
        locked = lockfile.parse_lock(ENVS / "dev" / f"pip.{platform}.lock")["uv"]
        assert pin.packages[0].version == locked["version"], platform
        assert set(pin.packages[0].hashes) <= set(locked["hashes"]), platform


def test_make_venv_installs_uv_with_require_hashes_then_syncs_the_locks_with_hashes(tmp_path):
    proc = make_n_venv(tmp_path, "Linux", "x86_64")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"pip install --quiet --require-hashes --only-binary :all: --no-deps -r {UV_PIN.relative_to(REPO)}" in out
    sync = next(line for line in out.splitlines() if " pip sync " in line)
    assert "--require-hashes" in sync and "--no-build-isolation" not in sync
    editable = next(line for line in out.splitlines() if line.endswith(" -e ."))
    assert "bin/uv pip" in editable and "-m pip" in editable  # uv when bootstrapped, else pip: the same flags
    assert " install --quiet --no-deps --no-build-isolation -e ." in editable  # the lock's setuptools, nothing fetched
    assert "building .venv with pip" in out  # the fallback when uv cannot be installed, in one line


# --- the lock each host gets (FAKE uname) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system, machine, platform",
    [
        ("Linux", "x86_64", "linux-64"),
        ("Linux", "aarch64", "linux-aarch64"),  # Graviton, Ampere, a Linux VM on Apple silicon
        ("Linux", "arm64", "linux-aarch64"),
        ("Darwin", "arm64", "osx-arm64"),
    ],
)
def test_make_venv_installs_the_lock_of_this_host_fake_uname(tmp_path, system, machine, platform):
    proc = make_n_venv(tmp_path, system, machine)
    assert proc.returncode == 0, proc.stderr
    sync = next(line for line in proc.stdout.splitlines() if " pip sync " in line)
    locks = re.findall(r"environments/\w+/pip\.[\w-]+\.lock", sync)
    assert locks == [f"environments/cpu/pip.{platform}.lock", f"environments/dev/pip.{platform}.lock"], sync
    # torch's CPU index only where the CPU build is a +cpu wheel (Linux); macOS takes PyPI's torch
    assert (lockfile.TORCH_CPU_FIND_LINKS in sync) == (system == "Linux"), sync


def test_linux_aarch64_dev_lock_has_the_linux_64_versions_and_takes_torch_from_its_base():
    """The dev layer for aarch64 hosts (and the arm64 dev image), resolved against the cpu lock's torch stand-in: the
    same packages at the same versions as linux-64's, and no torch of its own (the cpu lock's +cpu one)."""
    arm, x86 = (lockfile.parse_lock(ENVS / "dev" / f"pip.{p}.lock") for p in ("linux-aarch64", "linux-64"))
    assert "torch" not in arm and {n: v["version"] for n, v in arm.items()} == {n: v["version"] for n, v in x86.items()}
    assert all(v["hashes"] for v in arm.values())


@pytest.mark.parametrize("system, machine", [("Darwin", "x86_64"), ("FreeBSD", "amd64"), ("Linux", "riscv64")])
def test_make_venv_on_a_host_without_locks_says_which_have_them_in_one_line_fake_uname(tmp_path, system, machine):
    for dry in (True, False):
        proc = make_n_venv(tmp_path, system, machine, dry=dry)
        assert proc.returncode == 2 and not (tmp_path / "venv").exists()
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert f"no lock for {system} {machine}: locks exist for Linux x86_64 (linux-64)" in proc.stderr
        assert "macOS arm64 (osx-arm64)" in proc.stderr


def test_the_makefile_and_lock_py_map_uname_to_the_same_platforms():
    table = re.findall(r"^platform\.(\w+)\.(\w+)\s*:= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert {(s, m): p for s, m, p in table} == lock.UNAME_PLATFORMS


# --- the macOS arm64 locks -----------------------------------------------------------------------------------------


def test_macos_arm64_locks_take_pypis_torch_and_the_linux_versions_of_everything_else():
    """PyPI's macOS torch (the CPU/MPS build, no +cpu), every other package at the linux-64 lock's version; that every
    line carries a sha256 hash: test_every_lock_entry_is_pinned_with_sha256 (tests/test_environments.py)."""
    for variant in ("cpu", "dev"):
        mac = lockfile.read(ENVS / variant / "pip.osx-arm64.lock")
        assert mac.field("platform") == "osx-arm64" and all(p.hashes for p in mac.packages)
        linux = lockfile.parse_lock(ENVS / variant / "pip.linux-64.lock")
        versions = {p.key: p.version for p in mac.packages if p.key in linux}
        assert versions == {n: linux[n]["version"] for n in versions if n != "torch"} | (
            {"torch": linux["torch"]["version"].removesuffix("+cpu")} if "torch" in versions else {}
        )
    assert lockfile.parse_lock(ENVS / "cpu" / "pip.osx-arm64.lock")["torch"]["version"] == "2.13.0"


def test_the_venvs_packages_have_bytecode_for_what_a_run_imports():
    """Without .pyc every Python process compiles what it imports from source: 10.7 of the 18 s that
    `from transformers import Trainer` took here (cProfile: 4,615 calls of compile), paid again by every CLI run and
    test process, because uv installs no bytecode and PYTHONDONTWRITEBYTECODE=1 (set on this machine kind and in many
    CI images) keeps Python from writing it. `make venv` compiles the packages once, when it installs them."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"checks the venv `make venv` builds ({REPO / '.venv'}), not {sys.prefix}")
    code = run_imports_bytecode_check(sys.prefix)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    total, missing, lines = read_bytecode_check(out)
    assert total > 500 and missing <= total * 0.02, lines
