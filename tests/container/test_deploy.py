"""`invoke deploy` end to end against a real SSH server: Debian's sshd on a loopback port with a throwaway key, whose
sessions reach this machine's Docker engine (the "remote" Docker host is the local engine). Ship the CPU image over
SSH, train remotely, fetch the run back byte for byte, stop the container."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import last_step

from .conftest import FIGURES, free_port
from .helpers_engine import one_worker_at_a_time

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="session")
def sshd(workspace):
    """A throwaway sshd on 127.0.0.1 for the test user; yields the invoke config file that points deploy at it."""
    if os.getuid() != 0:
        pytest.skip("starting an sshd for another user needs root")
    if not Path("/usr/sbin/sshd").exists():
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "openssh-server"],
            check=True,
            capture_output=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    top = workspace.root.parent
    d, home_ssh = top / "sshd", top / ".ssh"
    d.mkdir()
    home_ssh.mkdir(exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home_ssh / "id_ed25519")], check=True)
    shutil.copy(home_ssh / "id_ed25519.pub", d / "authorized_keys")
    with one_worker_at_a_time("test-user"):  # usermod locks /etc/passwd: not while another worker changes the user
        subprocess.run(["usermod", "-p", "*", workspace.user], check=True)  # no password, but not a locked account
    port = free_port()
    sock = workspace.engine.env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nAllowUsers {workspace.user}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSetEnv DOCKER_HOST={sock}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    remote_dir = top / "remote-host-dir"  # the VM's persistent disk, as far as this test is concerned
    remote_dir.mkdir()
    subprocess.run(["chown", "-R", f"{workspace.uid}:{workspace.gid}", str(home_ssh), str(remote_dir)], check=True)
    key = home_ssh / "id_ed25519"
    opts = f"-p {port} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    config = top / "invoke-deploy.yaml"
    settings = {
        **workspace.settings,
        "deploy": {"host": f"{workspace.user}@127.0.0.1", "ssh_options": opts, "remote_dir": str(remote_dir)},
    }
    config.write_text(yaml.safe_dump(settings))
    ssh = ["ssh", *opts.split(), f"{workspace.user}@127.0.0.1", "docker", "version"]
    deadline = time.time() + 30
    while workspace.as_user(ssh, check=False, timeout=30).returncode != 0:
        assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-2000:]
        time.sleep(0.5)
    yield config, remote_dir
    # Containers a failed test left running would write into remote_dir, which is removed with the workspace.
    left = workspace.engine("ps", "-aq", "--filter", "label=org.finetune.deploy").stdout.split()
    if left:
        workspace.engine("rm", "-f", *left)
    server.terminate()
    server.wait(timeout=10)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deploy_ships_trains_survives_a_preemption_fetches_the_run_and_stops(workspace, runtime_image, sshd):
    """The way there and back (ship the image, train detached, fetch the run byte for byte, stop), with what a
    reclaimed or restarted VM does to the container on the way: SIGTERM. The trainer checkpoints and exits 143,
    Docker's restart policy starts it again, and `--resume` continues from that checkpoint to the end.
    One remote run proves both (they were two tests with a run each: issue 24)."""
    config, remote_dir = sshd
    # 60 steps: what this test proves is the way there and back and the restart; that the default run learns in this
    # image is test_images.py's test_invoke_train_docker_runs_the_default_fine_tune_... (same Dockerfile and locks)
    steps = ["--set", "training.max_steps=60", "--set", "training.save_steps=1000", "--set", "eval.max_samples=50"]
    t0 = time.monotonic()
    shipped = workspace.invoke("deploy", "--reship", "--name", "deployed", *steps, config=config)
    FIGURES["deploy: ship image over ssh + start s"] = round(time.monotonic() - t0, 1)
    assert "docker load" in shipped.stdout and "Loaded image" in shipped.stdout + shipped.stderr
    remote_run = remote_dir / "runs" / "deployed"
    deadline = time.time() + 600
    while last_step(remote_run / "metrics.jsonl") < 20:
        status = workspace.invoke("deploy.status", "--name", "deployed", config=config).stdout
        assert "Exited" not in status, status
        assert time.time() < deadline, "training did not reach step 20"
        time.sleep(0.5)
    # What a VM shutdown does to the container: SIGTERM to its PID 1 (tini, which forwards it to the trainer). Sent
    # from inside: `docker kill`/`docker stop` would count as a manual stop, which Docker never restarts.
    workspace.engine("exec", "finetune-deployed", "bash", "-c", "kill -TERM 1")
    summary_file = remote_run / "summary.json"
    while not summary_file.exists() or json.loads(summary_file.read_text())["status"] != "completed":
        assert time.time() < deadline, workspace.invoke("deploy.logs", "--name", "deployed", config=config).stdout[
            -3000:
        ]
        time.sleep(1)
    FIGURES["deploy: remote 60-step run with a preemption, wall s"] = round(time.monotonic() - t0, 1)
    info = json.loads(workspace.engine("inspect", "finetune-deployed").stdout)[0]
    assert info["RestartCount"] >= 1
    status = workspace.invoke("deploy.status", "--name", "deployed", config=config).stdout
    assert '"status": "completed"' in status
    assert "Starting" not in status  # no restart loop
    logs = workspace.invoke("deploy.logs", "--name", "deployed", config=config)
    assert "[finetune] resuming from" in logs.stdout + logs.stderr
    assert "eval accuracy" in logs.stdout

    workspace.invoke("deploy.fetch", "--name", "deployed", config=config)
    local_run = workspace.root / "runs" / "deployed"
    assert _tree(local_run) == _tree(remote_run) and (local_run / "model").is_dir()
    summary = json.loads((local_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60 and "eval_accuracy" in summary
    manifest = json.loads((local_run / "manifest.json").read_text())
    assert (
        manifest["runtime"] == "docker"
        and manifest["container"]["image_id"] == workspace.engine.inspect("finetune:cpu")["Id"]
    )
    owners = {p.stat().st_uid for p in remote_run.rglob("*")}
    assert owners == {workspace.uid}  # the login user's, through --user "$(id -u):$(id -g)"

    workspace.invoke("deploy.stop", "--name", "deployed", config=config)
    left = workspace.engine("ps", "-a", "--filter", "name=^finetune-deployed$", "--format", "{{.Names}}").stdout
    assert left.strip() == ""
