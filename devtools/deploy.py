"""`invoke deploy`: train on a remote Docker host (a cloud GPU VM) over SSH, restartable after the VM is reclaimed.

  invoke deploy --host USER@HOST [--gpu] [--config C]   ship the image, configs and data; start training detached
  invoke deploy.status | deploy.logs [--follow] | deploy.fetch | deploy.stop   (--host, --name as above)

The image travels through the registry when image.registry is set (push here, pull there), otherwise over the SSH
connection (`docker save | ssh HOST docker load`, skipped when the host already has that image id). The container
runs with `--restart on-failure`, so it comes back after a crash or a VM restart (Docker stops it with SIGTERM, the
trainer checkpoints and exits 143), and its command ends in `--resume`, so it continues from the last complete
checkpoint in the host's runs/ (deploy.remote_dir: put it on a persistent disk). Secrets (HF_TOKEN) are read by the
remote shell from the SSH connection's stdin into the environment of `docker run`, which passes them by name: never
in an image, a local or remote command line, or `ps`.
"""

from __future__ import annotations

import io
import os
import shlex
from pathlib import Path

from invoke import Collection, Exit, task

from devtools import containers, images

STOP_TIMEOUT = 120  # seconds Docker waits after SIGTERM: time for a final checkpoint


def _host(c, host):
    host = host or c.deploy.host
    if not host:
        raise Exit("--host USER@HOST is required (or set deploy.host in invoke.yaml)", code=2)
    return host


def _ssh(c, host: str) -> str:
    return " ".join(["ssh", "-o", "BatchMode=yes", *shlex.split(c.deploy.ssh_options), shlex.quote(host)])


def _remote(c, host: str, script: str, **kw):
    """Run a shell script on the host (one quoted argument, so the remote shell sees it exactly)."""
    return c.run(f"{_ssh(c, host)} {shlex.quote(script)}", **kw)


def _dir(c) -> str:
    d = c.deploy.remote_dir
    return d if d.startswith("/") else f'"$HOME"/{shlex.quote(d)}'


def _container(name: str) -> str:
    return f"finetune-{name}"


def _ship(c, host: str, image: str, image_id: str, again: bool) -> None:
    if c.image.registry:
        c.run(f"{c.docker.client} push {image}")
        _remote(c, host, f"docker pull {shlex.quote(image)}")
        return
    there = images.probe(c, f"{_ssh(c, host)} docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)}")
    if there.ok and there.stdout.strip() == image_id and not again:
        print(f"{host} already has {image} ({image_id[:19]}): not shipping it again", flush=True)
        return
    c.run(f"{c.docker.client} save {image} | gzip -1 | {_ssh(c, host)} 'gunzip | docker load'")


@task(
    iterable=["set_"],
    help={
        "host": "USER@HOST of a Docker host (default deploy.host); ssh options in deploy.ssh_options",
        "gpu": "the CUDA image with all the host's GPUs (--ipc=host, NVIDIA's ulimits)",
        "config": "config to train (default from invoke.yaml); must be under configs/",
        "name": "run name on the host: runs/<name> and container finetune-<name> (default: the config's file name)",
        "set_": "override a config key, repeatable",
        "nproc": "processes in the container (torchrun), e.g. one per GPU",
        "reship": "send the image even when the host already has the same image id",
    },
)
def start(c, host=None, gpu=False, config=None, name=None, set_=None, nproc=1, reship=False):
    """Ship the image, configs and data to HOST and start the training there, detached and restartable."""
    host, config = _host(c, host), config or c.finetune.config
    if not config.startswith("configs/"):
        raise Exit(f"--config {config}: deploy ships configs/ and data/; put the config under configs/", code=2)
    name = name or Path(config).stem
    image, (image_id, labels) = images.ensure_image(c, "cuda" if gpu else "cpu", "runtime", gpu)
    _ship(c, host, image, image_id, reship)
    d = _dir(c)
    unpack = shlex.quote(f"mkdir -p {d}/runs && tar -C {d} -xz")
    c.run(f"tar -C {containers.REPO} -cz configs data | {_ssh(c, host)} {unpack}")
    secrets = containers.passthrough_env(containers.SECRETS)
    args = ["train", config, "--output-dir", f"runs/{name}", "--resume", *(a for s in set_ or [] for a in ("--set", s))]
    run = ["docker", "run", "--detach", "--name", _container(name), "--restart", "on-failure"]
    run += ["--stop-timeout", str(STOP_TIMEOUT), "--label", f"org.finetune.deploy={name}"]
    run += containers.container_args(c, "$PWD", image, image_id, labels, secrets, "all" if gpu else None)
    # $PWD and $(id -u) are expanded by the remote shell: the files in runs/ belong to the login user there.
    docker_run = " ".join(f'"$PWD"{a[4:]}' if a.startswith("$PWD") else shlex.quote(a) for a in run)
    docker_run += ' --user "$(id -u):$(id -g)" ' + shlex.join([image, *containers.launcher(nproc), *args])
    read_secrets = "".join(f"IFS= read -r {v}; export {v}; " for v in secrets)  # values from stdin, not argv
    script = f"cd {d} && docker rm -f {_container(name)} >/dev/null 2>&1; {read_secrets}{docker_run}"
    stdin = io.StringIO("".join(os.environ[v] + "\n" for v in secrets)) if secrets else None
    _remote(c, host, script, in_stream=stdin or False)
    print(f"started {_container(name)} on {host}: invoke deploy.logs --host {host} --name {name} --follow", flush=True)


@task(help={"host": "USER@HOST", "name": "run name (default: default)"})
def status(c, host=None, name="default"):
    """The container's state and the run's summary.json (if it has finished) on the host."""
    host, d = _host(c, host), _dir(c)
    script = (
        f"docker ps -a --filter name=^{_container(name)}$ --format '{{{{.Names}}}}: {{{{.Status}}}}'; "
        f"cat {d}/runs/{shlex.quote(name)}/summary.json 2>/dev/null || echo 'no summary.json yet'"
    )
    _remote(c, host, script)


@task(help={"host": "USER@HOST", "name": "run name (default: default)", "follow": "keep streaming"})
def logs(c, host=None, name="default", follow=False):
    """The training container's output."""
    _remote(c, _host(c, host), f"docker logs {'--follow ' if follow else ''}{_container(name)}", pty=follow)


@task(help={"host": "USER@HOST", "name": "run name (default: default)", "force": "replace a local runs/<name>"})
def fetch(c, host=None, name="default", force=False):
    """Copy runs/<name> from the host into the local runs/ (byte for byte, through tar over SSH)."""
    host, d = _host(c, host), _dir(c)
    local = containers.REPO / c.finetune.runs_dir
    if (local / name).exists() and not force:
        raise Exit(f"{local / name} exists: --force replaces it", code=2)
    if force:
        c.run(f"rm -rf {shlex.quote(str(local / name))}")
    c.run(f"mkdir -p {shlex.quote(str(local))}")
    remote_tar = f"tar -C {d}/runs -c {shlex.quote(name)}"
    c.run(f"{_ssh(c, host)} {shlex.quote(remote_tar)} | tar -C {shlex.quote(str(local))} -x")


@task(help={"host": "USER@HOST", "name": "run name (default: default)"})
def stop(c, host=None, name="default"):
    """Stop the training (SIGTERM: it checkpoints first) and remove the container; runs/ on the host stays."""
    script = f"docker stop --time {STOP_TIMEOUT} {_container(name)} && docker rm {_container(name)}"
    _remote(c, _host(c, host), script)


ns = Collection("deploy")
ns.add_task(start, default=True)
for t in (status, logs, fetch, stop):
    ns.add_task(t)
