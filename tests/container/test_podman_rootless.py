"""Rootless Podman (issue 17), for real: a non-root host user (the harness's test user, with its /etc/subuid range)
builds the CPU runtime image with its own Podman (this session's one Podman build: its command line, Docker's image
format, the build user and the labels are checked here; test_podman.py runs Docker's images under rootful Podman) and
runs `invoke train --docker`; docker.run_as resolves to keep-id
(`--userns=keep-id`), so the image's user, built with that user's UID, writes the run as the host user.

Set up here for the test user, each named: a home and an XDG_RUNTIME_DIR of its own, and a storage.conf that asks for
Podman's native rootless overlay driver (this machine's /dev/fuse is root's only, so Podman 4.3 would fall back to
the vfs driver, a full copy of the image per layer), and a TMPDIR of its own: Podman 4.3's Buildah keeps cache mounts
in $TMPDIR/buildah-cache (default /var/tmp), which root's Podman made first on this machine. And /dev/net/tun, which
slirp4netns (the network of rootless containers and RUN steps) opens as the user, is made mode 666 as distributions
ship it (this VM's is 600, root's only: "failed to read from slirp4netns sync pipe") and put back afterwards. The
stand-in base images are loaded into the user's storage (`docker save | podman load`). Skipped, in one line, where
the tests do not run as root (they switch users), there is no test user, or rootless Podman does not answer for it.
A build from scratch (about 2.5 minutes here), so in the podman_build tier with invoke verify-image's builds: deselected
from `make test`, a step of its own in .ci/run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import explain

from .conftest import FIGURES
from .helpers_workspace import as_user, fresh_copy, printed_run_dir, tun_open_to_users

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.podman_build]
USER_SETTINGS = ("HOME", "USER", "XDG_RUNTIME_DIR", "CONTAINERS_STORAGE_CONF", "TMPDIR")  # what Podman reads


def own(env: dict) -> dict:
    """The settings of env that the user's Podman must see (runuser would reset HOME and USER)."""
    return {k: env[k] for k in USER_SETTINGS}


class RootlessPodman:
    def __init__(self, user: str, uid: int, gid: int, root: Path, config: Path, invoke: Path, env: dict):
        self.user, self.uid, self.gid = user, uid, gid
        self.root, self.config, self.invoke_bin, self.env = root, config, invoke, env

    def run(self, cmd: list, *, check=True, timeout=1800, **kw) -> subprocess.CompletedProcess:
        full = as_user(self.user, own(self.env), cmd)
        proc = subprocess.run(full, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and proc.returncode:
            raise AssertionError(explain(proc, " ".join(map(str, cmd))))
        return proc

    def invoke(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run([self.invoke_bin, "-f", self.config, *args], **kw)


@pytest.fixture(scope="session")
def rootless(engine, standins, workspace) -> RootlessPodman:
    if os.getuid() != 0 or not workspace.user:
        pytest.skip("the rootless Podman test switches to the harness's test user: run the tests as root")
    if not shutil.which("podman") or not shutil.which("newuidmap"):
        pytest.skip("rootless Podman needs `podman` and `newuidmap` (Debian: apt-get install podman uidmap)")
    top = Path(tempfile.mkdtemp(prefix="finetune-podman-rootless-"))  # not pytest's tmp root: mode 700, root's
    top.chmod(0o755)
    home, runtime = top / "home", Path(f"/run/user/{workspace.uid}")
    for folder in (home, runtime, home / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, workspace.uid, workspace.gid)
    runtime.chmod(0o700)
    storage = home / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{home}/storage"\nrunroot = "{runtime}/containers"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "INVOKE_", "CONTAINERS_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), CONTAINERS_STORAGE_CONF=str(storage), USER=workspace.user)
    env["TMPDIR"] = str(home / "tmp")  # Buildah's cache mounts live in $TMPDIR/buildah-cache: /var/tmp's is root's here
    probe = subprocess.run(
        as_user(workspace.user, own(env), ["podman", "info", "--format", "{{.Host.Security.Rootless}}"]),
        cwd=top, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode or probe.stdout.strip() != "true":
        pytest.skip(f"rootless Podman does not answer for {workspace.user}: {(probe.stderr or probe.stdout)[-300:]}")
    settings = {"docker": {"client": "podman"}, "image": dict(workspace.settings.get("image", {}))}
    if standins:  # the stand-in bases into the user's own storage, under fully qualified names
        images = list(standins["image"]["base_images"].values())
        save = subprocess.Popen([engine.client, "save", *images], env=engine.env, stdout=subprocess.PIPE)
        load = subprocess.run(
            as_user(workspace.user, own(env), ["podman", "load"]),
            stdin=save.stdout, cwd=top, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert save.wait() == 0 and load.returncode == 0, load.stderr
        settings["image"]["base_images"] = {k: f"localhost/{v}" for k, v in standins["image"]["base_images"].items()}
    root = top / "repo"  # the checkout as committed (git checkout below), without runs/
    fresh_copy(workspace.root, root)
    subprocess.run(["chown", "-R", f"{workspace.uid}:{workspace.gid}", str(top)], check=True)
    config = top / "invoke-rootless.yaml"
    config.write_text(yaml.safe_dump(settings))
    invoke = workspace.root.parent / "invoke-venv" / "bin" / "invoke"
    podman = RootlessPodman(workspace.user, workspace.uid, workspace.gid, root, config, invoke, env)
    podman.run(["git", "checkout", "--quiet", "--", "."])
    try:
        with tun_open_to_users():
            yield podman
    finally:
        podman.run(["podman", "system", "reset", "--force"], check=False, timeout=600)  # the user's layers
        shutil.rmtree(top, ignore_errors=True)


def test_rootless_podman_builds_labels_and_trains_with_the_run_owned_by_the_host_user(rootless):
    t0 = time.monotonic()
    build = rootless.invoke("build")
    FIGURES["rootless podman: cpu runtime build s"] = round(time.monotonic() - t0, 1)
    log = build.stdout + build.stderr
    # Podman builds with Buildah: no BuildKit variables, Docker's image format (OCI has no SHELL or HEALTHCHECK)
    built = "podman build --file docker/Dockerfile --target runtime --tag finetune:cpu --format docker"
    assert built in log, log[-2000:]
    assert "DOCKER_BUILDKIT" not in log and "SHELL is not supported for OCI image format" not in log
    info = json.loads(rootless.run(["podman", "image", "inspect", "finetune:cpu"]).stdout)[0]
    assert info["Config"]["User"] == f"{rootless.uid}:{rootless.gid}"  # built for the host user's UID
    user = rootless.run(["podman", "run", "--rm", "finetune:cpu", "id", "-u"]).stdout.split()
    assert user == [str(rootless.uid)], user  # the image's user, not root, without any --user
    labels = info["Config"]["Labels"]
    head = rootless.run(["git", "rev-parse", "HEAD"]).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head, labels
    assert labels["org.finetune.variant"] == "cpu" and labels["org.finetune.target"] == "runtime", labels
    # 60 steps: the point is the engine (builds, runs, the files' owner); that the default run learns in this image is
    # test_images.py's test_invoke_train_docker_runs_the_default_fine_tune_... (same Dockerfile and locks)
    t0 = time.monotonic()
    proc = rootless.invoke("train", "--docker", "--set", "training.max_steps=60", "--set", "eval.max_samples=50")
    FIGURES["rootless podman: 60-step run in the cpu container, wall s"] = round(time.monotonic() - t0, 1)
    assert "podman run --rm" in proc.stdout and "--userns=keep-id" in proc.stdout, proc.stdout[-2000:]
    run = printed_run_dir(proc.stdout, rootless.root)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60 and "eval_accuracy" in summary, summary
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run, *run.rglob("*")]}
    assert owners == {(rootless.uid, rootless.gid)}, owners
