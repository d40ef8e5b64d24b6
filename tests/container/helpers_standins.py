"""Stand-ins for what this project's CI machines cannot reach (FINETUNE_TEST_STANDINS=auto|1|0): the Debian base made
with debootstrap, tests/container/standin for the Miniforge base, the +cpu torch wheel from this machine's wheel
folder (see conftest.py), and for snapshot.debian.org today's mirror under snapshot URLs
(tests/container/standin/snapshot_server.py, started by `docker/engine.sh snapshot`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers_engine import ENGINE_SH, FIGURES, REPO, Engine, one_worker_at_a_time

HERE = Path(__file__).resolve().parent
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STANDIN_MINIFORGE = "local/miniforge-standin:test"
STANDIN_DEBIAN = "local/debian:bookworm"
SHIPPED_SNAPSHOT = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["apt_snapshot"]


def _use_standins(engine: Engine) -> bool:
    mode = os.environ.get("FINETUNE_TEST_STANDINS", "auto")
    if mode in ("0", "1"):
        return mode == "1"
    real = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["base_images"]["miniforge"]
    return engine("pull", "--quiet", real, check=False, timeout=300).returncode != 0


def _standin_context(dest: Path) -> Path:
    """The stand-in Miniforge's build context: ./conda, ./Dockerfile, this host's CPython (stdlib and headers), pip
    wheel."""
    dest.mkdir(parents=True)
    for name in ("conda", "Dockerfile"):
        shutil.copy2(HERE / "standin" / name, dest / name)
    prefix, ver = Path(sys.base_prefix), f"python{sys.version_info.major}.{sys.version_info.minor}"
    (dest / "python" / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys.base_prefix) / "bin" / ver, dest / "python" / "bin" / ver)
    (dest / "python" / "bin" / "python3").symlink_to(ver)
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__", "ensurepip"}
    shutil.copytree(
        prefix / "lib" / ver,
        dest / "python" / "lib" / ver,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in skip or n.startswith(("config-3", "_tkinter"))],
    )
    (dest / "python" / "lib" / ver / "site-packages").mkdir()
    # Python.h and friends, as conda-forge's python package ships them (Triton and inductor compile against them)
    shutil.copytree(prefix / "include" / ver, dest / "python" / "include" / ver, symlinks=True)
    for lib in (prefix / "lib").glob("libpython3*.so*"):
        shutil.copy2(lib, dest / "python" / "lib" / lib.name, follow_symlinks=False)
    import lockfile  # environments/lockfile.py (pytest's pythonpath): the one reader of the lock format

    conda_pins = lockfile.read(REPO / "environments/cpu/pip.linux-64.lock").conda
    pip_pin = next(p for p in conda_pins if p.startswith("pip="))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            f"pip=={pip_pin.split('=', 1)[1]}",
        ],
        check=True,
    )
    return dest


@pytest.fixture(scope="session")
def standins(engine: Engine, tmp_path_factory) -> dict:
    """invoke config overrides that swap in the stand-ins (empty when the real bases are reachable)."""
    if not _use_standins(engine):
        FIGURES["stand-ins"] = "none (real base images and channels)"
        return {}
    with one_worker_at_a_time("base-images"):
        base = subprocess.run(["bash", str(ENGINE_SH), "base"], env=engine.env, capture_output=True, text=True)
        assert base.returncode == 0, base.stderr[-3000:]
        ctx = _standin_context(tmp_path_factory.mktemp("standin") / "ctx")
        engine("build", "--quiet", "--build-arg", f"BASE_IMAGE={STANDIN_DEBIAN}", "--tag", STANDIN_MINIFORGE, ctx)
        snapshot = subprocess.run(["bash", str(ENGINE_SH), "snapshot"], env=engine.env, capture_output=True, text=True)
        assert snapshot.returncode == 0, snapshot.stderr[-3000:]
    FIGURES["stand-ins"] = (
        f"{STANDIN_DEBIAN} (debootstrap), {STANDIN_MINIFORGE} (tests/container/standin), snapshot.debian.org: "
        f"{snapshot.stdout.strip()} (today's mirror, tests/container/standin/snapshot_server.py)"
    )
    return {
        "image": {
            "base_images": {"miniforge": STANDIN_MINIFORGE, "cpu": STANDIN_DEBIAN},
            "torch_find_links": "",  # the +cpu wheel comes from docker/wheelhouse/ (below)
            "ca_bundle": CA_BUNDLE if Path(CA_BUNDLE).exists() else "",
            # the shipped date, Debian's snapshots from the stand-in (the Ubuntu bases are Debian stand-ins too)
            "apt_snapshot": {**SHIPPED_SNAPSHOT, "debian": snapshot.stdout.strip()},
        }
    }
