"""`invoke doctor`: on this machine for real (when it has no NVIDIA driver, it must fail and say what to do; on a GPU
machine that test is skipped), and on FAKE GPU hosts (tests/fakes.py) for the cases this machine cannot be:
healthy, and a driver without the container toolkit."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from fakes import fake_host

from conftest import REPO, explain, invoke

MIN_DRIVER = yaml.safe_load((REPO / "invoke.yaml").read_text())["cuda"]["min_driver"]


def doctor(env: dict | None, *args) -> subprocess.CompletedProcess:
    return invoke(env, "doctor", *args)


def rows(out: str) -> dict[str, str]:
    """check name -> state word (ok, WARN, FAIL, skip) from the table."""
    table = {}
    for line in out.splitlines():
        state, _, rest = line.partition("  ")
        if state.strip() in ("ok", "WARN", "FAIL", "skip"):
            table[rest.strip().split("  ")[0]] = state.strip()
    return table


def nvidia_driver_answers() -> bool:
    return subprocess.run(["sh", "-c", "nvidia-smi"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    nvidia_driver_answers(), reason="needs a machine without an NVIDIA driver (nvidia-smi answers here)"
)
def test_on_this_machine_without_a_gpu_it_fails_with_the_fix():
    proc = doctor(None)
    table = rows(proc.stdout)
    assert proc.returncode == 1, explain(proc)
    assert table["GPU runtime (driver, container toolkit)"] == "FAIL"
    assert (
        "no NVIDIA driver answers" in proc.stdout and f"fix: Install the NVIDIA driver >= {MIN_DRIVER}" in proc.stdout
    )
    assert table["lockfiles fresh"] == "ok" and table["deploy host over SSH"] == "skip"
    assert "GPU runtime" in proc.stderr  # the closing line names what failed


def test_cpu_only_skips_the_gpu_checks():
    table = rows(doctor(None, "--cpu").stdout)
    assert table["GPU runtime (driver, container toolkit)"] == "skip"


def test_fake_healthy_gpu_host_passes(tmp_path):
    env = fake_host(tmp_path, "580.95.05", '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}')
    env |= {"FAKE_BUILDX": "1", "FAKE_CUDA_IMAGE": "1", "FAKE_GPU_NAME": "NVIDIA H100 80GB HBM3 (FAKE)"}
    proc = doctor(env)
    table = rows(proc.stdout)
    assert table["Docker engine"] == "ok" and table["BuildKit"] == "ok"
    assert table["GPU runtime (driver, container toolkit)"] == "ok" and "driver 580.95.05" in proc.stdout
    assert table["GPU visible inside finetune:cuda"] == "ok" and "H100 80GB HBM3 (FAKE)" in proc.stdout
    enough_disk = shutil.disk_usage(tmp_path).free / 1e9 >= 40  # the disk check reads the real disk
    assert table["free disk (images, HF cache)"] == ("ok" if enough_disk else "FAIL")
    assert proc.returncode == (0 if enough_disk else 1), proc.stdout + proc.stderr


def test_fake_gpu_host_without_the_container_toolkit_says_how_to_install_it(tmp_path):
    proc = doctor(fake_host(tmp_path, "580.95.05"))
    assert proc.returncode == 1
    assert rows(proc.stdout)["GPU runtime (driver, container toolkit)"] == "FAIL"
    assert "nvidia-ctk runtime configure --runtime=docker" in proc.stdout


def test_unreachable_deploy_host_fails_with_the_fix():
    proc = doctor(None, "--cpu", "--host", "nobody@deploy-host.invalid")
    assert (
        rows(proc.stdout)["deploy host over SSH"] == "FAIL" and "ssh-copy-id nobody@deploy-host.invalid" in proc.stdout
    )
    assert proc.returncode == 1


def test_doctor_checks_the_cuda_image_under_the_configured_registry(tmp_path):
    """With image.registry set, the image train --gpu runs is <registry>/finetune:cuda: doctor must look for that
    one (it built `finetune:cuda` itself and ignored the registry)."""
    env = fake_host(tmp_path, "580.95.05", '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}')
    env |= {"FAKE_BUILDX": "1", "INVOKE_IMAGE_REGISTRY": "ghcr.io/acme"}
    table = rows(doctor(env).stdout)
    assert "GPU visible inside ghcr.io/acme/finetune:cuda" in table, table
