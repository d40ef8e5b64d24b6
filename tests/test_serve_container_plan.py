"""`invoke serve --docker/--gpu`: the plan and the API key, on a FAKE docker (tests/fakes.py: no GPU or engine is
needed to check a command line). The served answers in a real container are tests/container/test_images.py's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fakes import docker_calls, fake_host, record_variable

from conftest import invoke, run_line

READY_GPU = '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}'  # what the FAKE docker reports for --gpu


def a_run(tmp_path: Path) -> Path:
    """A folder `invoke serve` takes for a run (it reads nothing else before the container starts)."""
    run = tmp_path / "runs" / "my run"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"config": {"task": "causal_lm"}}))
    return run


def test_the_plan_mounts_only_the_model_read_only_and_publishes_on_loopback(tmp_path):
    run = a_run(tmp_path)
    proc = invoke(fake_host(tmp_path, None), "--dry", "serve", "--docker", "--model", run, "--api-key", "k-9f3")
    assert proc.returncode == 0, proc.stderr
    argv = run_line(proc.stdout)
    assert argv[argv.index("--publish") + 1] == "127.0.0.1:8000:8000"
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert f"{run}:/mnt/model:ro" in mounts and not [m for m in mounts if m.startswith(str(tmp_path / "runs") + ":")]
    assert argv[argv.index("FINETUNE_API_KEY") - 1] == "--env"  # by name: docker reads it from its environment
    tail = argv[argv.index("finetune:cpu") :]
    assert tail == ["finetune:cpu", "finetune", "serve", "/mnt/model", "--host", "0.0.0.0", "--port", "8000"], tail
    assert "k-9f3" not in proc.stdout + proc.stderr  # the user's key: never echoed
    assert "WARNING" not in proc.stdout


def published_on_every_address_after_a_warning(proc, port: int) -> list[str]:
    """The plan's `docker run` argv, once it is seen to publish on 0.0.0.0:port after a warning naming the tunnel."""
    assert proc.returncode == 0, proc.stderr
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("WARNING"))
    assert f"0.0.0.0:{port}" in warning and f"ssh -L {port}:127.0.0.1:{port}" in warning, warning
    argv = run_line(proc.stdout)
    assert argv[argv.index("--publish") + 1] == f"0.0.0.0:{port}:8000"
    return argv


def test_another_address_is_warned_about_and_gpu_takes_the_cuda_image_with_the_gpus(tmp_path):
    run = a_run(tmp_path)
    env = fake_host(tmp_path, "580.95.05", READY_GPU)
    proc = invoke(env, "--dry", "serve", "--gpu", "--model", run, "--host", "0.0.0.0", "--port", "9001")
    argv = published_on_every_address_after_a_warning(proc, 9001)
    assert "--gpus" in argv and "finetune:cuda" in argv and "finetune:cpu" not in argv, argv


@pytest.mark.parametrize("how", ["flag", "environment", "none"])
def test_the_key_reaches_docker_only_through_its_environment(tmp_path, how):
    """A FAKE docker wrapper records the FINETUNE_API_KEY it was started with; with no key given, the one printed once
    is the one the container got."""
    env = fake_host(tmp_path, None)
    log = record_variable(env, tmp_path, "FINETUNE_API_KEY")
    env.pop("FINETUNE_API_KEY", None)
    args = ["serve", "--docker", "--model", a_run(tmp_path)]
    if how == "flag":
        args += ["--api-key", "k-secret-314"]
    elif how == "environment":
        env["FINETUNE_API_KEY"] = "k-secret-314"
    proc = invoke(env, *args)
    assert proc.returncode == 0, proc.stderr
    run = next(call for call in docker_calls(tmp_path) if call.startswith("run "))
    got = log.read_text().splitlines()[-1]
    assert got and got not in " ".join(docker_calls(tmp_path)) and "--env FINETUNE_API_KEY " in run
    if how == "none":  # a new key, long enough to guess at no better than chance, shown once with the URL
        [shown] = re.findall(r"Authorization: Bearer (\S+)\)", proc.stdout)
        assert shown == got and len(got) >= 32, (shown, got)
    else:
        assert got == "k-secret-314" and "k-secret-314" not in proc.stdout + proc.stderr


def test_a_folder_that_is_neither_a_run_nor_an_export_is_one_line_exit_2(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "serve", "--docker", "--model", tmp_path / "nothing")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--model {tmp_path / 'nothing'}: not a run directory (manifest.json) or an exported folder" in proc.stderr
    assert docker_calls(tmp_path) == [], "nothing built or run"


# --- `invoke serve --vllm`: vLLM's OpenAI server in its own image (environments/vllm-server, Dockerfile serve-vllm) ---


def an_export(tmp_path: Path) -> Path:
    """A folder `invoke serve` takes for an export (config.json): served as it is, no export step."""
    out = tmp_path / "exports" / "my-export"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    return out


def test_vllm_exports_the_run_then_serves_the_export_read_only_with_the_gpus_on_loopback(tmp_path):
    run = a_run(tmp_path)
    env = fake_host(tmp_path, "580.95.05", READY_GPU)
    proc = invoke(env, "--dry", "serve", "--vllm", "--model", run, "--api-key", "k-7e1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    export = next(i for i, line in enumerate(lines) if " export " in line)
    assert re.search(r"\.venv/bin/finetune export .*my run.* --format hf --out .*my run-hf.* --force$", lines[export])
    argv = run_line(proc.stdout)
    assert export < lines.index(next(line for line in lines if " run --rm " in line)), "exported before it is served"
    assert argv[argv.index("--publish") + 1] == "127.0.0.1:8000:8000"
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    assert f"{run.parent / 'my run-hf'}:/mnt/model:ro" in mounts and f"{run}:/mnt/model:ro" not in mounts
    assert argv[argv.index("--gpus") + 1] == "all" and "--ipc=host" in argv
    assert argv[argv.index("VLLM_API_KEY") - 1] == "--env"  # by name: docker reads it from its environment
    tail = argv[argv.index("finetune:vllm-server") :]
    assert tail == [
        "finetune:vllm-server",
        "vllm",
        "serve",
        "/mnt/model",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "my run",
    ], tail
    assert "--api-key" not in argv and "k-7e1" not in proc.stdout + proc.stderr  # never in argv, never echoed
    assert "WARNING" not in proc.stdout


def test_vllm_serves_an_export_as_it_is_and_warns_about_another_address(tmp_path):
    out = an_export(tmp_path)
    env = fake_host(tmp_path, "580.95.05", READY_GPU)
    proc = invoke(env, "--dry", "serve", "--vllm", "--model", out, "--host", "0.0.0.0", "--port", "9002")
    argv = published_on_every_address_after_a_warning(proc, 9002)
    assert not [line for line in proc.stdout.splitlines() if " export " in line]
    assert f"{out}:/mnt/model:ro" in argv and argv[-2:] == ["--served-model-name", "my-export"], argv


def test_vllm_gets_the_key_through_dockers_environment_a_new_one_shown_once(tmp_path):
    env = fake_host(tmp_path, "580.95.05", READY_GPU)
    log = record_variable(env, tmp_path, "VLLM_API_KEY")
    for name in ("FINETUNE_API_KEY", "VLLM_API_KEY"):
        env.pop(name, None)
    proc = invoke(env, "serve", "--vllm", "--model", an_export(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run = next(call for call in docker_calls(tmp_path) if call.startswith("run "))
    got = log.read_text().splitlines()[-1]
    [shown] = re.findall(r"Authorization: Bearer (\S+)\)", proc.stdout)
    assert shown == got and len(got) >= 32 and got not in run and "--env VLLM_API_KEY " in run, (shown, got, run)


def test_vllm_without_a_gpu_runtime_stops_before_exporting_or_building(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "serve", "--vllm", "--model", a_run(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert docker_calls(tmp_path) == [] and not (tmp_path / "runs" / "my run-hf").exists()
