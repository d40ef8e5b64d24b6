"""tasks.py and the container build files without an engine: the exact docker command lines (`invoke --dry`), the
GPU preflight on each kind of host, the pins shared by invoke.yaml and docker/Dockerfile.

The GPU hosts are FAKES (tests/fakes.py): a fake `nvidia-smi` and a fake `docker` answer the probes as a host with
or without a driver / container toolkit would. Anything else the fake docker is asked to do is recorded, so a test
can prove a failing preflight ran no docker command at all.
"""

from __future__ import annotations

import os
import re
import shlex

import pytest
import yaml
from fakes import docker_calls, fake_host

from conftest import REPO, invoke, plain

SETTINGS = yaml.safe_load((REPO / "invoke.yaml").read_text())


def test_dry_gpu_train_prints_the_complete_gpu_command_line(tmp_path):
    env = fake_host(tmp_path, driver=None)
    proc = invoke(env, "--dry", "train", "--gpu", "--nproc", "8")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(dry run) a real run would stop here: --gpu: no NVIDIA driver answers" in out
    build = next(line for line in out.splitlines() if " build " in line)
    assert "--target runtime --tag finetune:cuda" in build and "--build-arg VARIANT=cuda" in build
    assert f"--build-arg CUDA_BASE_IMAGE={SETTINGS['image']['base_images']['cuda']}" in build
    run = shlex.split(plain(next(line for line in out.splitlines() if " run --rm " in line)))
    joined = " ".join(run)
    assert "--gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864" in joined
    assert joined.endswith(
        "finetune:cuda torchrun --standalone --nproc-per-node=8 -m finetune train /workspace/configs/default.yaml"
    )
    assert f"{REPO}/configs:/workspace/configs:ro" in run and f"{REPO}/data:/workspace/data:ro" in run
    assert f"{REPO}/runs:/workspace/runs" in run
    assert f"{SETTINGS['image']['hf_cache_volume']}:/home/finetune/.cache/huggingface" in run
    assert "FINETUNE_RUNTIME=docker" in run and "--shm-size" not in run  # --ipc=host shares the host's shm
    assert docker_calls(tmp_path) == []  # --dry ran nothing


@pytest.mark.parametrize(
    "driver, runtimes, expected",
    [
        (None, '{"runc":{}}', "no NVIDIA driver answers (`nvidia-smi` failed). Install the NVIDIA driver >= "),
        ("535.104.05", '{"runc":{}}', "NVIDIA driver 535.104.05 is older than"),
        ("580.95.05", '{"runc":{}}', "the NVIDIA container toolkit is missing"),
    ],
)
def test_gpu_train_without_a_gpu_runtime_fails_before_building_and_says_how_to_fix(
    tmp_path, driver, runtimes, expected
):
    proc = invoke(fake_host(tmp_path, driver, runtimes), "train", "--gpu")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert expected in proc.stderr
    assert "install" in proc.stderr.lower() or "upgrade" in proc.stderr.lower()
    assert docker_calls(tmp_path) == [], "the preflight must fail before any build or run"


def test_gpu_train_on_a_ready_host_builds_then_runs_with_the_gpus(tmp_path):
    env = fake_host(tmp_path, "580.95.05", '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}')
    proc = invoke(env, "train", "--gpu", "--gpus", "0,2")
    assert proc.returncode == 0, proc.stderr
    calls = docker_calls(tmp_path)
    assert len(calls) == 2 and calls[0].startswith("build ") and calls[1].startswith("run ")
    assert '--gpus "device=0,2" --ipc=host' in calls[1]  # docker needs the quotes: the comma would split the value


def test_secrets_reach_the_container_by_name_only(tmp_path):
    env = dict(fake_host(tmp_path, None), HF_TOKEN="hf_secret_value_123")
    proc = invoke(env, "--dry", "train", "--docker")
    assert proc.returncode == 0, proc.stderr
    assert "--env HF_TOKEN " in proc.stdout
    assert "hf_secret_value_123" not in proc.stdout + proc.stderr


def test_the_hosts_thread_settings_reach_the_container(tmp_path):
    """OMP_NUM_THREADS/MKL_NUM_THREADS set on the host are the container's too: two runs side by side on two cores,
    each with torch's default threads, ran 6x slower than with one thread each (OpenMP threads spin while waiting)."""
    env = dict(fake_host(tmp_path, None), OMP_NUM_THREADS="1")
    env.pop("MKL_NUM_THREADS", None)
    proc = invoke(env, "--dry", "train", "--docker")
    assert proc.returncode == 0, proc.stderr
    assert "--env OMP_NUM_THREADS " in proc.stdout and "MKL_NUM_THREADS" not in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "--variant", "tpu"], "--variant 'tpu': allowed: cpu, cuda"),
        (["build", "--target", "prod"], "--target 'prod': allowed: runtime, dev"),
        (["build", "--variant", "vllm-server", "--target", "dev"], "--target 'dev': allowed: runtime, dev (a server"),
        (["verify-image", "--variant", "vllm-server"], "--variant vllm-server: allowed: cpu, cuda (the training"),
        (
            ["train", "--docker", "--gpu", "--gpus", "two"],
            "--gpus 'two': allowed: all, or device ids as nvidia-smi numbers them",
        ),
        (["train", "--runtime", "k8s"], "--runtime 'k8s': allowed: auto, docker, local"),
        (["build", "--ca-bundle", "/nonexistent/ca.pem"], "--ca-bundle /nonexistent/ca.pem: no such file"),
    ],
)
def test_bad_flags_exit_2_with_what_is_allowed(tmp_path, args, message):
    proc = invoke(fake_host(tmp_path, None), *args)
    assert proc.returncode == 2 and message in proc.stderr, (proc.stdout, proc.stderr)
    assert docker_calls(tmp_path) == []


def test_build_passes_pins_user_and_lock_digest_and_the_ca_bundle_as_a_secret(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a real CA\n")
    proc = invoke(fake_host(tmp_path, None), "--dry", "build", "--ca-bundle", str(bundle))
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(plain(proc.stdout.strip().splitlines()[-1]))
    args = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--build-arg")
    base = SETTINGS["image"]["base_images"]
    assert (args["MINIFORGE_IMAGE"], args["CPU_BASE_IMAGE"]) == (base["miniforge"], base["cpu"])
    expected_uid = os.getuid() or 1000  # root builds for UID 1000, everyone else for themselves
    assert args["USER_UID"] == str(expected_uid)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", args["LOCK_DIGEST"])
    assert f"id=ca-bundle,src={bundle}" in cmd and cmd[-1] == "."
    # the revision and lock digest as --label, from every client: set when the image is committed, so a cached
    # LABEL step can never carry an earlier build's values (Podman 4.3.1 did; the Dockerfile's LABELs serve builds
    # made without invoke)
    labels = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--label")
    assert labels == {
        "org.opencontainers.image.revision": args["GIT_REVISION"],
        "org.finetune.lock-digest": args["LOCK_DIGEST"],
        "org.finetune.apt-snapshot": args["APT_SNAPSHOT"],  # the date apt installed from (issue 29)
    }


def test_the_build_context_is_an_allowlist_that_holds_what_the_dockerfile_copies():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from=" not in line]
    sources = {m.group(1) for line in copies if (m := re.match(r"COPY (?:--\S+ )*(\S+?)/?(?:\*\S*)? \S+$", line))}
    sources |= set(re.findall(r"source=([\w/]+),target", dockerfile))
    missing = {s for s in sources if not any(s == a or s.startswith(a + "/") for a in allowed)}
    assert not missing, f"COPY/bind sources outside the .dockerignore allowlist: {missing}"
    assert (REPO / "docker" / "wheelhouse" / "README.md").exists()  # the bind mount's source exists in a clone


def test_dry_deploy_plans_ship_sync_and_a_restartable_resuming_container(tmp_path):
    env = dict(fake_host(tmp_path, None), HF_TOKEN="hf_secret_value_456")
    proc = invoke(
        env, "--dry", "deploy", "--host", "me@gpu-vm", "--gpu", "--nproc", "4", "--config", "configs/lora.yaml"
    )
    assert proc.returncode == 0, proc.stderr
    out = plain(proc.stdout)
    assert "save finetune:cuda | gzip -1 | ssh -o BatchMode=yes -- me@gpu-vm 'gunzip | docker load'" in out
    assert "tar -C " in out and " -cz configs data | ssh" in out
    start = next(line for line in out.splitlines() if "docker run --detach" in line)
    assert "--restart on-failure" in start and "--gpus all --ipc=host" in start
    assert (
        "torchrun --standalone --nproc-per-node=4 -m finetune train configs/lora.yaml --output-dir runs/lora --resume"
        in start
    )
    assert "IFS= read -r HF_TOKEN; export HF_TOKEN;" in start and "--env HF_TOKEN" in start
    assert "hf_secret_value_456" not in proc.stdout + proc.stderr
