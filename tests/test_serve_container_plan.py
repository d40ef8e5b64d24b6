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


def test_another_address_is_warned_about_and_gpu_takes_the_cuda_image_with_the_gpus(tmp_path):
    run = a_run(tmp_path)
    env = fake_host(tmp_path, "580.95.05", READY_GPU)
    proc = invoke(env, "--dry", "serve", "--gpu", "--model", run, "--host", "0.0.0.0", "--port", "9001")
    assert proc.returncode == 0, proc.stderr
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("WARNING"))
    assert "0.0.0.0:9001" in warning and "ssh -L 9001:127.0.0.1:9001" in warning, warning
    argv = run_line(proc.stdout)
    assert argv[argv.index("--publish") + 1] == "0.0.0.0:9001:8000"
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
