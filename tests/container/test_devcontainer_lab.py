"""The devcontainer configurations through the real devcontainer CLI (the spec's reference implementation, the engine
VS Code uses), `invoke lab`: JupyterLab in the dev image, token required, published on loopback only, and
`invoke tensorboard`: the viewer in the dev image over the event files a run writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import FIGURES, free_port
from .helpers_engine import http_status, lab_token_once_it_answers

pytestmark = [pytest.mark.container, pytest.mark.slow]
CONFIGS = [".devcontainer/devcontainer.json", ".devcontainer/gpu/devcontainer.json"]


def jsonc(path: Path) -> dict:
    """devcontainer.json allows // comments (ours are whole-line comments only)."""
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")))


@pytest.fixture(scope="session")
def devcontainer_cli(workspace) -> list[str]:
    """The pinned @devcontainers/cli (devtools/devcontainer-cli/package-lock.json), installed with npm ci."""
    folder = workspace.root / "devtools" / "devcontainer-cli"
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(folder)], check=True, capture_output=True)
    subprocess.run(["chown", "-R", f"{workspace.uid}:{workspace.gid}", str(folder)], check=True)
    return [str(folder / "node_modules" / ".bin" / "devcontainer")]


@pytest.mark.parametrize("config", CONFIGS)
def test_devcontainer_cli_reads_each_configuration(workspace, devcontainer_cli, config):
    cmd = [*devcontainer_cli, "read-configuration", "--workspace-folder", str(workspace.root), "--config", config]
    proc = workspace.as_user([*cmd, "--docker-path", workspace.engine.client])
    conf = json.loads(proc.stdout)["configuration"]
    assert conf["build"]["target"] == "dev" and conf["remoteUser"] == "finetune"
    assert conf["customizations"]["vscode"]["settings"]["python.defaultInterpreterPath"] == "/opt/env/bin/python"
    assert conf["forwardPorts"] == [8888, 6006]
    if "gpu" in config:
        assert conf["build"]["args"]["VARIANT"] == "cuda" and conf["hostRequirements"]["gpu"] is True
        assert "--ipc=host" in conf["runArgs"]
    else:
        assert conf["build"]["args"]["VARIANT"] == "cpu" and "--shm-size=8g" in conf["runArgs"]


def test_devcontainer_up_then_exec_runs_the_unit_tests_and_a_tiny_training(workspace, devcontainer_cli, dev_image):
    # The shipped CPU configuration, plus only the build arguments that select the stand-in bases (the same ones
    # `invoke build` passed, so the build reuses its cached layers); see conftest.py.
    conf = jsonc(workspace.root / ".devcontainer" / "devcontainer.json")
    image = workspace.settings.get("image", {})
    extra = {"USER_UID": str(workspace.uid), "USER_GID": str(workspace.gid)}
    if image:
        extra |= {"MINIFORGE_IMAGE": image["base_images"]["miniforge"], "CPU_BASE_IMAGE": image["base_images"]["cpu"]}
        extra["TORCH_FIND_LINKS"] = image["torch_find_links"]
        extra["APT_SNAPSHOT_DEBIAN"] = image["apt_snapshot"]["debian"]
    conf["build"] |= {
        "dockerfile": "../../docker/Dockerfile",
        "context": "../..",
        "args": conf["build"]["args"] | extra,
    }
    derived = workspace.root / ".devcontainer" / "ci" / "devcontainer.json"
    derived.parent.mkdir(exist_ok=True)
    derived.write_text(json.dumps(conf, indent=2))
    subprocess.run(["chown", "-R", f"{workspace.uid}:{workspace.gid}", str(derived.parent)], check=True)
    where = [
        "--workspace-folder",
        str(workspace.root),
        "--config",
        str(derived),
        "--docker-path",
        workspace.engine.client,
    ]
    t0 = time.monotonic()
    try:
        up = workspace.as_user([*devcontainer_cli, "up", *where, "--remove-existing-container"])
        FIGURES["devcontainer up s (image layers cached)"] = round(time.monotonic() - t0, 1)
        assert json.loads(up.stdout.strip().splitlines()[-1])["outcome"] == "success", up.stdout[-2000:]
        exec_ = [*devcontainer_cli, "exec", *where]
        who = workspace.as_user([*exec_, "bash", "-c", "id -un; id -u; python -c 'import sys; print(sys.executable)'"])
        assert who.stdout.split()[-3:] == ["finetune", str(workspace.uid), "/opt/env/bin/python"]
        units = workspace.as_user(
            [*exec_, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_units.py"]
        )
        assert re.search(r"\d+ passed", units.stdout) and "failed" not in units.stdout, units.stdout[-2000:]
        tiny = ["--set", "training.max_steps=20", "--set", "eval.max_samples=20", "--set", "training.save_steps=1000"]
        run = workspace.as_user(
            [
                *exec_,
                "python",
                "-m",
                "finetune",
                "train",
                "configs/default.yaml",
                "--output-dir",
                "/tmp/devcontainer-run",
                *tiny,
            ],
        )
        assert "status        completed" in run.stdout, run.stdout[-2000:]
    finally:
        ids = workspace.engine("ps", "-aq", "--filter", f"label=devcontainer.local_folder={workspace.root}").stdout
        if ids.split():
            workspace.engine("rm", "-f", *ids.split())


def _non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent: this only picks a route
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]


def test_invoke_lab_requires_the_token_and_listens_on_loopback_only(workspace, dev_image):
    port = free_port()
    proc = workspace.as_user(workspace.invoke_cmd("lab", "--port", port), popen=True)
    try:
        token = lab_token_once_it_answers(proc, port, seconds=90)
        status = f"http://127.0.0.1:{port}/api/status"
        assert http_status(status) == 403  # no token: refused
        assert http_status(f"{status}?token=wrong-{token}") == 403
        address = _non_loopback_address()
        assert address != "127.0.0.1"
        assert http_status(f"http://{address}:{port}/api/status?token={token}") is None  # not published there
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert token not in ps, "the token must not appear on a command line"
    finally:
        workspace.engine("stop", f"finetune-lab-{port}", check=False)
        proc.wait(timeout=60)


def test_invoke_tensorboard_shows_the_event_files_a_run_writes(workspace, dev_image):
    """Runs write event files with tensorboardX (the runtime images have no tensorboard package); `invoke
    tensorboard` serves runs/ with the viewer of the dev image."""
    from tensorboardX import SummaryWriter

    name = f"tensorboard-check-{free_port()}"
    runs, run_dir = workspace.root / "runs", workspace.root / "runs" / name
    made = [d for d in (runs, run_dir) if not d.exists()]
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        writer.add_scalar("loss", 1.0, 1)
    for path in [*made, *run_dir.rglob("*")]:
        os.chown(path, workspace.uid, workspace.gid)  # the user's, as a run of theirs would be
    port = free_port()
    proc = workspace.as_user(workspace.invoke_cmd("tensorboard", "--port", port), popen=True)
    try:
        deadline, listed = time.time() + 120, []
        while f"{name}/tensorboard" not in listed:
            assert proc.poll() is None, f"invoke tensorboard exited {proc.returncode}: {proc.stdout.read()[-3000:]}"
            assert time.time() < deadline, f"TensorBoard on 127.0.0.1:{port} did not list the run in 120 s: {listed}"
            time.sleep(2)
            try:
                listed = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=3).read())
            except OSError:
                listed = []
        tags = urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=3).read()
        assert "loss" in json.loads(tags)[f"{name}/tensorboard"], tags
    finally:
        workspace.engine("stop", f"finetune-tensorboard-{port}", check=False)
        proc.wait(timeout=60)
        shutil.rmtree(run_dir, ignore_errors=True)
