"""Rootless Docker (issue 17), for real as far as it goes without a second image build: the harness's test user starts
its own dockerd (Debian's `dockerd-rootless.sh` from docker.io, with `rootlesskit`), and then
- `invoke doctor` and the plan of `invoke train --docker` on that engine say rootless and run the container as its
  root (`--user 0:0`, docker.run_as auto);
- a container's root writes a bind-mounted folder as the host user, and the image's UID 1000 cannot write there at
  all: why run_as is root on rootless Docker, not the image's user.

Set up for the test user, each named: a home, an XDG_RUNTIME_DIR and a data root of its own (all removed after), the
stand-in Debian image loaded into that engine, and /dev/net/tun made mode 666 while it runs (slirp4netns, rootless
Docker's network, opens it as the user; this VM's is root's only) and put back. Skipped, in one line, without root,
without the test user, without `rootlesskit` (Debian: apt-get install rootlesskit), or when the daemon does not
start. Not run here: a full build and `train --docker` on rootless Docker (the rootless Podman test does that).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, plain

from .helpers_standins import STANDIN_DEBIAN
from .helpers_workspace import as_user, tun_open_to_users

pytestmark = [pytest.mark.container, pytest.mark.slow]
ROOTLESS_SH = Path("/usr/share/docker.io/contrib/dockerd-rootless.sh")  # Debian's docker.io ships it here
IMAGE = "rootless-test/debian:stand-in"


@pytest.fixture(scope="module")
def rootless_docker(engine, standins, workspace):
    if os.getuid() != 0 or not workspace.user:
        pytest.skip("the rootless Docker test switches to the harness's test user: run the tests as root")
    if not shutil.which("rootlesskit") or not ROOTLESS_SH.exists():
        pytest.skip(f"rootless Docker needs rootlesskit and {ROOTLESS_SH} (Debian: apt-get install rootlesskit)")
    if not standins:
        pytest.skip("this test loads the stand-in Debian image into the rootless engine (no registry is asked)")
    top = Path(tempfile.mkdtemp(prefix="finetune-docker-rootless-"))
    home, runtime, data = top / "home", top / "run", top / "data"
    for folder in (home, runtime, data):
        folder.mkdir()
    runtime.chmod(0o700)
    subprocess.run(["chown", "-R", f"{workspace.uid}:{workspace.gid}", str(top)], check=True)
    top.chmod(0o755)
    sock = runtime / "docker.sock"
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    user_env = dict(env, DOCKER_HOST=f"unix://{sock}")

    def docker(*args, check=True, **kw):
        cmd = as_user(workspace.user, user_env, ["/usr/bin/docker", *args])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
        assert not check or proc.returncode == 0, proc.stderr[-2000:]
        return proc

    dockerd = [str(ROOTLESS_SH), "--data-root", str(data), "--exec-root", str(runtime / "exec")]
    dockerd += ["--pidfile", str(runtime / "docker.pid"), "-H", f"unix://{sock}"]
    with tun_open_to_users(), (top / "dockerd.log").open("w") as log:
        daemon = subprocess.Popen(
            as_user(workspace.user, env, dockerd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.time() + 90
            while docker("info", check=False).returncode:
                if daemon.poll() is not None or time.time() > deadline:
                    pytest.skip(f"rootless dockerd did not start: {(top / 'dockerd.log').read_text()[-600:]}")
                time.sleep(1)
            save = subprocess.Popen([engine.client, "save", STANDIN_DEBIAN], env=engine.env, stdout=subprocess.PIPE)
            docker("load", stdin=save.stdout)
            assert save.wait() == 0
            docker("tag", STANDIN_DEBIAN, IMAGE)
            yield {"docker": docker, "host": f"unix://{sock}", "top": top, "uid": workspace.uid, "gid": workspace.gid}
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
            shutil.rmtree(top, ignore_errors=True)


def test_rootless_docker_is_detected_and_runs_the_container_as_its_root(rootless_docker):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "INVOKE_"))}
    env.update(DOCKER_HOST=rootless_docker["host"], INVOKE_DOCKER_CLIENT="/usr/bin/docker")
    invoke = [str(REPO / ".venv" / "bin" / "invoke")]
    doctor = subprocess.run([*invoke, "doctor", "--cpu"], cwd=REPO, env=env, capture_output=True, text=True)
    engine_line = next(line for line in doctor.stdout.splitlines() if "Docker engine" in line)
    assert engine_line.startswith("ok") and "rootless: containers run as its root (you on the host)" in engine_line
    plan = subprocess.run([*invoke, "--dry", "train", "--docker"], cwd=REPO, env=env, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-2000:]
    run = next(line for line in plain(plan.stdout).splitlines() if line.startswith("/usr/bin/docker run "))
    assert " --user 0:0 " in run, run


def test_on_rootless_docker_container_root_writes_as_the_host_user_and_uid_1000_cannot(rootless_docker):
    shared = rootless_docker["top"] / "home" / "runs"
    shared.mkdir()
    os.chown(shared, rootless_docker["uid"], rootless_docker["gid"])
    docker = rootless_docker["docker"]
    docker("run", "--rm", "--network", "none", "--user", "0:0", "-v", f"{shared}:/x", IMAGE, "touch", "/x/by-root")
    made = shared / "by-root"
    assert (made.stat().st_uid, made.stat().st_gid) == (rootless_docker["uid"], rootless_docker["gid"])
    other = docker("run", "--rm", "--network", "none", "--user", "1000:1000", "-v", f"{shared}:/x", IMAGE,
                   "touch", "/x/by-1000", check=False)  # fmt: skip
    assert other.returncode != 0 and "Permission denied" in other.stderr, other.stderr
