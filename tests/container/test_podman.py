"""Podman as the engine (issue 17), rootful: `invoke train --docker`, `invoke shell` and `invoke lab` with
docker.client: podman, on the real Podman of this machine (Debian's podman 4.3 here), rootful when the tests run as
root: a completed run whose files belong to the host user (root: on a rootful engine the container runs as its root,
docker.run_as), the manifest's image facts, the checkout mounted in the dev image, the lab's token on loopback.

The images are the ones the Docker tests of this session built from docker/Dockerfile (helpers_builds.py), copied
into Podman's storage with `docker save | podman load`: a Podman build of the same Dockerfile is
test_podman_rootless.py's (the same `podman build` command line, as a non-root user, the harder case), so a second
build of both images here would prove nothing more for four minutes. These tests therefore share the "docker" xdist
group (the images' tags). The checkout is a root-owned copy of the harness's workspace. Skipped, in one line, where
Podman is not installed or does not answer. Podman 4.3 as root raises every container's open-file limit to 1048576,
which a machine without CAP_SYS_RESOURCE (this one: hard limit 20000) refuses ("error setting rlimit type 7"); the
tests then give Podman a containers.conf with limits this machine allows (CONTAINERS_CONF, a stand-in for the host's
own configuration, said here).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import explain

from .conftest import FIGURES, free_port
from .helpers_engine import http_status, lab_token_once_it_answers
from .helpers_workspace import fresh_copy, printed_run_dir

pytestmark = [pytest.mark.container, pytest.mark.slow]


class Podman:
    def __init__(self, root: Path, config: Path, invoke: Path, env: dict):
        self.root, self.config, self.invoke_bin, self.env = root, config, invoke, env

    def __call__(self, *args, check=True, timeout=600, **kw) -> subprocess.CompletedProcess:
        run = ["podman", *map(str, args)]
        proc = subprocess.run(run, env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and proc.returncode:
            raise AssertionError(explain(proc))
        return proc

    def invoke(self, *args, check=True, timeout=1800) -> subprocess.CompletedProcess:
        cmd = [str(self.invoke_bin), "-f", str(self.config), *map(str, args)]
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(explain(proc))
        return proc

    def popen(self, *args) -> subprocess.Popen:
        """invoke ARGS left running (lab), its output merged and readable line by line."""
        cmd = [str(self.invoke_bin), "-f", str(self.config), *map(str, args)]
        return subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def inspect(self, image: str) -> dict:
        return json.loads(self("image", "inspect", image).stdout)[0]


@pytest.fixture(scope="session")
def podman(engine, workspace, tmp_path_factory) -> Podman:
    if os.getuid() != 0:
        pytest.skip("the Podman tests run rootful: they need root (rootless Podman: docs/containers.md, engine table)")
    if not shutil.which("podman") or subprocess.run(["podman", "info"], capture_output=True).returncode:
        pytest.skip("Podman tests need `podman` (Debian: apt-get install podman)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "INVOKE_"))}
    conf = tmp_path_factory.mktemp("podman-conf") / "containers.conf"
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]\n')
    if subprocess.run(["podman", "info"], capture_output=True).returncode == 0:
        env["CONTAINERS_CONF"] = str(conf)
    settings = {"docker": {"client": "podman"}, "image": dict(workspace.settings.get("image", {}))}
    root = tmp_path_factory.mktemp("podman") / "repo"
    fresh_copy(workspace.root, root)
    subprocess.run(["chown", "-R", "0:0", str(root)], check=True)  # the host user here is root
    # the checkout as committed: earlier container tests edit tracked files in the shared workspace (a code-only
    # rebuild), which would make this copy's image revision "<head>-dirty"
    subprocess.run(["git", "-c", "safe.directory=*", "checkout", "--quiet", "--", "."], cwd=root, check=True)
    config = root.parent / "invoke-podman.yaml"
    config.write_text(yaml.safe_dump(settings))
    return Podman(root, config, workspace.root.parent / "invoke-venv" / "bin" / "invoke", env)


def load_from_docker(engine, podman: Podman, *images: str) -> None:
    """docker save IMAGE... | podman load: the images Docker built, under the same names in Podman's storage. One
    archive for all of them: the layers they share are in it once (measured, quiet: the runtime and dev images one
    after the other 21 + 53 s, together 56 s)."""
    t0 = time.monotonic()
    save = subprocess.Popen([engine.client, "save", *images], env=engine.env, stdout=subprocess.PIPE)
    load = podman("load", stdin=save.stdout)
    assert save.wait() == 0, f"docker save {' '.join(images)} failed"
    assert all(image in load.stdout for image in images), load.stdout[-500:]
    FIGURES[f"podman: docker save | podman load {' '.join(images)} s"] = round(time.monotonic() - t0, 1)


@pytest.fixture(scope="session")
def podman_images(engine, podman: Podman, runtime_image: dict, dev_image: dict) -> dict:
    """The runtime and dev images Docker built, loaded into Podman's storage in one go: {"runtime": .., "dev": ..}."""
    load_from_docker(engine, podman, runtime_image["image"], dev_image["image"])
    return {"runtime": runtime_image["image"], "dev": dev_image["image"]}


@pytest.fixture(scope="session")
def podman_runtime(podman_images: dict) -> str:
    return podman_images["runtime"]


def test_podman_train_docker_completes_and_its_files_belong_to_the_host_user(podman, podman_runtime):
    # 60 steps: the point is the engine (runs, the files' owner); that the default run learns in this image is
    # test_images.py's test_invoke_train_docker_runs_the_default_fine_tune_... (same Dockerfile and locks)
    t0 = time.monotonic()
    proc = podman.invoke("train", "--docker", "--set", "training.max_steps=60", "--set", "eval.max_samples=50")
    FIGURES["podman: 60-step run in the cpu container, wall s"] = round(time.monotonic() - t0, 1)
    assert "runtime: docker (--docker/--gpu)" in proc.stdout and "podman run --rm" in proc.stdout
    assert "--user 0:0" in proc.stdout  # root on a rootful engine: the container's root writes as the host user
    run = printed_run_dir(proc.stdout, podman.root)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60 and "eval_accuracy" in summary, summary
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run, *run.rglob("*")]}
    assert owners == {(0, 0)}, owners
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runtime"] == "docker" and manifest["container"]["image"] == "finetune:cpu"
    assert "not built yet" not in proc.stdout  # the loaded image ran: nothing was built
    now = podman.inspect(podman_runtime)  # the image the run used
    assert manifest["container"]["image_id"].removeprefix("sha256:") == now["Id"].removeprefix("sha256:")
    assert manifest["container"]["labels"] == now["Config"]["Labels"]


@pytest.fixture(scope="session")
def podman_dev(podman_images: dict) -> str:
    return podman_images["dev"]


def test_podman_shell_runs_the_checkout_in_the_dev_image_and_writes_as_the_host_user(podman, podman_dev):
    cmd = "id -u && python -c 'import finetune; print(finetune.__file__)' && touch /workspace/from-podman-shell"
    proc = podman.invoke("shell", "--cmd", cmd)
    assert f"podman run --rm --volume {podman.root}:/workspace" in proc.stdout, proc.stdout[-2000:]
    assert "not built yet" not in proc.stdout  # the dev image Docker built and Podman loaded ran
    out = proc.stdout.splitlines()
    assert "0" in out  # root on a rootful engine runs the container as root (docker.run_as), so files are root's
    assert "/workspace/src/finetune/__init__.py" in out  # the checkout's code, not the image's copy
    made = podman.root / "from-podman-shell"
    assert (made.stat().st_uid, made.stat().st_gid) == (0, 0)
    made.unlink()


def test_podman_lab_answers_with_the_token_only_on_loopback(podman, podman_dev):
    port = free_port()
    proc = podman.popen("lab", "--port", port)
    try:
        t0 = time.monotonic()
        token = lab_token_once_it_answers(proc, port)
        FIGURES["podman: lab answered after s"] = round(time.monotonic() - t0, 1)
        status = f"http://127.0.0.1:{port}/api/status"
        assert http_status(status) == 403  # no token: refused
        assert token not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        podman("stop", f"finetune-lab-{port}", check=False)
        proc.wait(timeout=60)
