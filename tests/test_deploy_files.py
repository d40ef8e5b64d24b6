"""The provisioning and launcher files in deploy/, checked with the tools that consume them: cloud-init's own schema
validator (Debian's cloud-init) and SkyPilot's own task parser (PyPI skypilot, in a throwaway venv)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

DEPLOY = REPO / "deploy"
SKYPILOT = "skypilot==0.14.1"


def _have_or_install_cloud_init() -> str:
    if not shutil.which("cloud-init") and os.getuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "cloud-init"],
            check=True,
            capture_output=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    if not shutil.which("cloud-init"):
        pytest.skip("cloud-init is not installed (Debian/Ubuntu package cloud-init)")
    return shutil.which("cloud-init")


@pytest.mark.slow
def test_cloud_init_passes_cloud_inits_schema_validation():
    proc = subprocess.run(
        [_have_or_install_cloud_init(), "schema", "--config-file", str(DEPLOY / "cloud-init.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr


def test_cloud_init_installs_driver_docker_toolkit_and_checks():
    """Read as cloud-init reads it (YAML, so a step named only in a comment does not count): runcmd installs the
    driver, then Docker, then the toolkit and registers it with Docker, then enables the host check, which
    write_files puts in place as an executable; the VM reboots so the driver loads."""
    conf = yaml.safe_load((DEPLOY / "cloud-init.yaml").read_text())
    steps = [cmd if isinstance(cmd, str) else shlex.join(cmd) for cmd in conf["runcmd"]]

    def step(pattern: str) -> int:
        hits = [i for i, cmd in enumerate(steps) if re.search(pattern, cmd)]
        assert hits, f"no runcmd step matches {pattern!r}: {steps}"
        return hits[0]

    order = [
        step(r"^ubuntu-drivers install\b"),
        step(r"\bapt-get install\b.* docker-ce( |$)"),
        step(r"\bapt-get install\b.* nvidia-container-toolkit( |$)"),
        step(r"^nvidia-ctk runtime configure --runtime=docker$"),
        step(r"^systemctl enable finetune-host-check\.service$"),
    ]
    assert order == sorted(order), f"runcmd steps out of order: {[steps[i] for i in order]}"
    files = {f["path"]: f for f in conf["write_files"]}
    check = files["/usr/local/sbin/finetune-host-check"]
    assert check["permissions"] == "0755" and check["content"].startswith("#!/bin/sh\n"), check
    unit = files["/etc/systemd/system/finetune-host-check.service"]["content"]
    assert "ExecStart=/bin/sh -c '/usr/local/sbin/finetune-host-check " in unit, unit
    assert conf["power_state"]["mode"] == "reboot"


@pytest.mark.slow
def test_skypilot_task_parses_with_skypilots_own_parser(tmp_path):
    venv = tmp_path / "sky"
    uv = REPO / ".venv" / "bin" / "uv"
    subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    install = subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), SKYPILOT],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        pytest.fail(f"could not install {SKYPILOT}: {install.stderr[-1500:]}")
    code = (
        "import sky; t = sky.Task.from_yaml('deploy/skypilot.yaml'); "
        "print(t.name, t.num_nodes, sorted(str(r) for r in t.resources), sorted(t.envs), t.run is not None)"
    )
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("finetune 1 ") and "H100" in proc.stdout and "'CONFIG'" in proc.stdout
