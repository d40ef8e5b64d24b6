"""The pinned environments: locks fresh and hashed, staleness caught and explained, host venv == CPU lock + dev."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from conftest import REPO

ENVS = REPO / "environments"
sys.path.insert(0, str(ENVS))
from lock import environment_differences, parse_lock  # noqa: E402  (environments/lock.py, the lock tool itself)

sys.path.remove(str(ENVS))
LOCKS = sorted(ENVS.glob("*/pip.*.lock"))


def run_lock(lock_script: Path, *args):
    return subprocess.run([sys.executable, lock_script, *args], capture_output=True, text=True)


def test_every_variant_has_its_locks():
    for env_file in ENVS.glob("*/environment.yml"):
        env = yaml.safe_load(env_file.read_text())
        assert env["channels"] == ["conda-forge"], f"{env_file}: conda-forge only"
        for platform in env["platforms"]:
            assert (env_file.parent / f"pip.{platform}.lock").exists(), (env_file, platform)
    assert {p.parent.name for p in LOCKS} >= {"cpu", "cuda", "dev"}


def test_locks_are_fresh():
    proc = run_lock(ENVS / "lock.py", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_lock_entry_is_pinned_with_sha256(lock):
    for line in lock.read_text().splitlines():  # nothing but comments, exact pins and their hashes
        assert not line.strip() or line.startswith("#") or re.match(r"^\S+==\S+ \\$|^    --hash=sha256:", line), line
    packages = parse_lock(lock)
    assert packages
    for name, info in packages.items():
        assert info["hashes"], f"{lock.name}: {name} has no sha256 hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in info["hashes"]), name


@pytest.mark.parametrize("variant", ["cpu", "cuda", "dev"])
def test_check_names_the_variant_and_the_added_package(tmp_path, variant):
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    env_file = copy / variant / "environment.yml"
    env_file.write_text(env_file.read_text().rstrip("\n") + "\n      - rich>=13\n")
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf"STALE {variant} \(linux-64\): added rich>=13", proc.stdout), proc.stdout
    assert "invoke lock --variant" in proc.stdout


def test_cpu_lock_has_the_cpu_torch_and_cuda_lock_the_stated_cuda():
    cpu, cuda = parse_lock(ENVS / "cpu" / "pip.linux-64.lock"), parse_lock(ENVS / "cuda" / "pip.linux-64.lock")
    assert cpu["torch"]["version"] == "2.13.0+cpu" and not any(n.startswith("nvidia-") for n in cpu)
    stated = yaml.safe_load((REPO / "invoke.yaml").read_text())["cuda"]["version"]
    runtime = cuda["nvidia-cuda-runtime"]["version"]
    assert runtime.startswith(stated + "."), (stated, runtime)
    shared = set(cpu) & set(cuda) - {"torch"}
    assert {n: cpu[n]["version"] for n in shared} == {n: cuda[n]["version"] for n in shared}


def test_cpu_lock_for_arm64_is_the_same_cpu_set():
    """linux-aarch64 (Apple-silicon Docker, Graviton) gets the +cpu torch and the same versions as linux-64."""
    x86, arm = parse_lock(ENVS / "cpu" / "pip.linux-64.lock"), parse_lock(ENVS / "cpu" / "pip.linux-aarch64.lock")
    assert {n: p["version"] for n, p in arm.items()} == {n: p["version"] for n, p in x86.items()}
    assert arm["torch"]["hashes"] != x86["torch"]["hashes"]  # a different wheel file, not a copy of x86_64's entry


def test_this_environment_matches_cpu_lock_plus_dev_layer():
    """`make test` runs in .venv, built from the CPU lock + dev lock: it must hold exactly those packages."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"not running in the project's .venv ({sys.prefix}); `make test` does")
    assert environment_differences(["cpu", "dev"], "linux-64") == []
    # and the comparison itself sees a difference when there is one
    expected = parse_lock(ENVS / "cpu" / "pip.linux-64.lock")
    assert metadata.version("torch") == expected["torch"]["version"]
    diffs = environment_differences(["cpu"], "linux-64")  # the dev layer's packages are then extra
    assert ("pytest", None, metadata.version("pytest")) in diffs
