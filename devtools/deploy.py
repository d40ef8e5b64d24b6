"""`invoke deploy`: train on a remote Docker host (a cloud GPU VM) over SSH, restartable after the VM is reclaimed.

  invoke deploy --host USER@HOST [--gpu] [--config C] [--name N] [--replace]   start training there, detached
  invoke deploy.status | deploy.logs [--follow] | deploy.fetch [--force] | deploy.stop   (--host, --name as above)

On the host (deploy.remote_dir, default ~/finetune; put it on a persistent disk):
  deploys/<name>/configs, data   what run <name> reads: its own copy, so deploying another name never changes it
  runs/<name>                    what it writes (shared runs/ folder, one subfolder a run)

The image travels through the registry when image.registry is set (push here, pull there), otherwise over the SSH
connection (`docker save | ssh HOST docker load`, skipped when the host already has that image id; `invoke --dry`
contacts no host and plans the transfer). A deploy never kills a running trainer: it refuses while finetune-<name>
runs there, and `--replace` stops it as `deploy.stop` does (SIGTERM, a final checkpoint) first. The container runs
with `--restart on-failure:N` (deploy.max_restarts), so it comes back after a crash or a VM restart (Docker stops it
with SIGTERM, the trainer checkpoints and exits 143) but a broken run stops after N tries, and its command ends in
`--resume`, so it continues from the last complete checkpoint in runs/<name>. Secrets (HF_TOKEN) are read by the
remote shell from the SSH connection's stdin into the environment of `docker run`, which passes them by name: never
in an image, a local or remote command line, or `ps`.

Names (--name) follow finetune.names, the project's one rule; hosts and ssh command lines come from devtools/remote.py.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from invoke import Collection, Exit, task

from devtools import containers, images, launch, remote
from devtools.nodes import launcher
from finetune.names import check_name

STOP_TIMEOUT = 120  # seconds Docker waits after SIGTERM: time for a final checkpoint
ACTIVE = 3  # exit status of the remote check when finetune-<name> is running there (ssh itself fails with 255)
RUNS = "runs"  # on the host and in the container: <remote_dir>/runs, /workspace/runs (not the local runs_dir)
SHARED_RUNS = f"$PWD/{RUNS}:{containers.WORKSPACE}/{RUNS}"  # container_args' runs/ mount, before _word moves it


def _valid(check, *args):
    """check(*args), a ValueError from it turned into one line and exit 2 (bad input, nothing has run)."""
    try:
        return check(*args)
    except ValueError as err:
        raise Exit(str(err), code=2) from None


def _host(c, host):
    host = host or c.deploy.host
    if not host:
        raise Exit("--host USER@HOST is required (or set deploy.host in invoke.yaml)", code=2)
    return _valid(remote.check_host, host)


def _name(name: str) -> str:
    return _valid(check_name, name, "--name")


def _ssh(c, host: str, script: str) -> str:
    return _valid(remote.ssh, c, host, script)


def _remote(c, host: str, script: str, **kw):
    """Run a shell script on the host (one quoted argument, so the remote shell sees it exactly)."""
    return c.run(_ssh(c, host, script), **{"in_stream": False, **kw})


def _dir(c) -> str:
    return _valid(remote.remote_dir, c)


def _q(path) -> str:
    return shlex.quote(str(path))


def _container(name: str) -> str:
    return f"finetune-{name}"


def _ship(c, host: str, image: str, image_id: str, again: bool) -> None:
    if c.image.registry:
        c.run(f"{c.docker.client} push {shlex.quote(image)}")
        _remote(c, host, shlex.join(["docker", "pull", image]))
        return
    if not (again or c.config.run.dry):  # --dry contacts no host: the plan assumes the image must travel
        inspect = shlex.join(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        there = images.probe(c, _ssh(c, host, inspect))
        if there.ok and there.stdout.strip() == image_id:
            print(f"{host} already has {image} ({image_id[:19]}): not shipping it again", flush=True)
            return
    c.run(f"{c.docker.client} save {shlex.quote(image)} | gzip -1 | {_ssh(c, host, 'gunzip | docker load')}")


def _make_way(c, host: str, name: str, replace: bool) -> None:
    """Before anything changes on the host: refuse while finetune-<name> is active there, or (--replace) stop it
    gracefully first; a stopped one of that name is removed. Never `docker rm -f`: SIGKILL loses the last steps."""
    ct = shlex.quote(_container(name))
    active = f"docker stop --time {STOP_TIMEOUT} {ct} >/dev/null || exit 1" if replace else f"exit {ACTIVE}"
    state = f"docker inspect --format '{{{{.State.Status}}}}' {ct} 2>/dev/null"
    script = f'case "$({state})" in running|restarting|paused) {active};; esac; docker rm {ct} >/dev/null 2>&1; true'
    res = _remote(c, host, script, warn=True)
    if res.exited == ACTIVE:
        raise Exit(
            f"--name {name}: {_container(name)} is running on {host}; --replace stops it (SIGTERM: it checkpoints) "
            "and starts this deploy in its place",
            code=2,
        )
    if not res.ok:
        raise Exit(f"deploy: could not check or stop {_container(name)} on {host} (exit {res.exited})", code=1)


def _send_inputs(c, host: str, d: str, name: str) -> None:
    """configs/ and data/ into the run's own folder, deploys/<name>; a fresh copy replaces the old one once complete."""
    folder, new = f"{d}/deploys/{name}", f"{d}/deploys/.{name}.new"
    unpack = f"mkdir -p {d}/{RUNS}/{name} {d}/deploys && rm -rf {new} && mkdir {new} && tar -C {new} -xz"
    unpack += f" && rm -rf {folder} && mv {new} {folder}"
    c.run(f"tar -C {shlex.quote(str(containers.REPO))} -cz configs data | {_ssh(c, host, unpack)}")


def _restarts(c) -> str:
    n = c.deploy.max_restarts
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise Exit(f"deploy.max_restarts: got {n!r}; allowed: a whole number >= 0 (Docker's on-failure limit)", code=2)
    return f"on-failure:{n}"


def _word(arg: str, d: str) -> str:
    """One docker run argument as remote shell text: configs/ and data/ from the run's folder ($PWD, expanded by the
    remote shell), runs/ from the shared <remote_dir>/runs, everything else quoted."""
    if arg == SHARED_RUNS:
        return d + shlex.quote(arg[len("$PWD") :])
    if arg.startswith("$PWD/"):
        return '"$PWD"' + shlex.quote(arg[len("$PWD") :])
    return shlex.quote(arg)


def _docker_run(c, d: str, name: str, image: containers.Image, secrets: list[str], gpu: bool) -> str:
    """`docker run --detach` of the run's container, as remote shell text (cwd: deploys/<name>), command excluded."""
    run = ["docker", "run", "--detach", "--name", _container(name), "--restart", _restarts(c)]
    run += ["--stop-timeout", str(STOP_TIMEOUT), "--label", f"org.finetune.deploy={name}"]
    # container_args reads the runs/ name, the image settings and the engine facts. On the host the layout is fixed
    # (RUNS above); the user is the login's (--user below, so no image/root mapping), and its GPUs come through the
    # NVIDIA container toolkit's --gpus, as docs/gpu.md's deploy section asks of a GPU host.
    engine = SimpleNamespace(run_as="image", gpu_devices="gpus")
    cfg = SimpleNamespace(finetune=SimpleNamespace(runs_dir=RUNS), image=c.image, docker=engine)
    run += containers.container_args(cfg, "$PWD", image, secrets, "all" if gpu else None)
    if SHARED_RUNS not in run:  # container_args changed how it mounts runs/: this must change with it
        raise RuntimeError(f"containers.container_args gave no {SHARED_RUNS!r} mount")
    # $PWD and $(id -u) are expanded by the remote shell: the files in runs/ belong to the login user there.
    return " ".join(_word(a, d) for a in run) + ' --user "$(id -u):$(id -g)"'


@task(
    iterable=["set_"],
    help={
        "host": "USER@HOST of a Docker host (default deploy.host); ssh options in deploy.ssh_options",
        "gpu": "the CUDA image with all the host's GPUs (--ipc=host, NVIDIA's ulimits)",
        "config": "config to train (default from invoke.yaml); must be under configs/",
        "name": "run name on the host: runs/<name> and container finetune-<name> (default: the config's file name)",
        "set_": launch.HELP["set_"],
        "nproc": launch.HELP["nproc"],
        "reship": "send the image even when the host already has the same image id",
        "replace": f"stop a running finetune-<name> first (SIGTERM, a checkpoint, up to {STOP_TIMEOUT} s) and start "
        "this deploy in its place; it resumes runs/<name>, so a changed config needs a new --name "
        "(or --set ... with care)",
    },
)
def start(c, host=None, gpu=False, config=None, name=None, set_=None, nproc=1, reship=False, replace=False):
    """Ship the image, configs and data to HOST and start the training there, detached and restartable."""
    host, config = _host(c, host), config or c.finetune.config
    if not config.startswith("configs/"):
        raise Exit(f"--config {config}: deploy ships configs/ and data/; put the config under configs/", code=2)
    name, d = _name(name or Path(config).stem), _dir(c)
    image = images.ensure_image(c, "cuda" if gpu else "cpu", "runtime")
    _make_way(c, host, name, replace)
    _ship(c, host, image.name, image.id, reship)
    _send_inputs(c, host, d, name)
    secrets = containers.passthrough_env(containers.SECRETS)
    overrides = [a for s in set_ or [] for a in ("--set", s)]
    args = ["train", config, "--output-dir", f"{RUNS}/{name}", "--resume", *overrides]
    command = shlex.join([image.name, *launcher(nproc), *args])
    read_secrets = "".join(f"IFS= read -r {v}; export {v}; " for v in secrets)  # values from stdin, not argv
    script = f"cd {d}/deploys/{name} && {read_secrets}{_docker_run(c, d, name, image, secrets, gpu)} {command}"
    stdin = io.StringIO("".join(os.environ[v] + "\n" for v in secrets)) if secrets else False
    _remote(c, host, script, in_stream=stdin)
    print(f"started {_container(name)} on {host}: invoke deploy.logs --host {host} --name {name} --follow", flush=True)


@task(help={"host": "USER@HOST", "name": "run name (default: default)"})
def status(c, host=None, name="default"):
    """The container's state and the run's summary.json (if it has finished) on the host."""
    name, host, d = _name(name), _host(c, host), _dir(c)
    match = shlex.quote(f"name=^{_container(name)}$")
    script = (
        f"docker ps -a --filter {match} --format '{{{{.Names}}}}: {{{{.Status}}}}'; "
        f"cat {d}/{RUNS}/{name}/summary.json 2>/dev/null || echo 'no summary.json yet'"
    )
    _remote(c, host, script)


@task(help={"host": "USER@HOST", "name": "run name (default: default)", "follow": "keep streaming"})
def logs(c, host=None, name="default", follow=False):
    """The training container's output."""
    name, host = _name(name), _host(c, host)
    script = shlex.join(["docker", "logs", *(["--follow"] if follow else []), _container(name)])
    _remote(c, host, script, pty=follow, in_stream=None if follow else False)  # --follow: Ctrl-C reaches it


@task(help={"host": "USER@HOST", "name": "run name (default: default)", "force": "replace a local runs/<name>"})
def fetch(c, host=None, name="default", force=False):
    """Copy runs/<name> from the host into the local runs/: into a folder next to it first, which replaces a local
    copy (--force) only once the whole transfer has arrived. Links in the host's copy are refused."""
    name, host, d = _name(name), _host(c, host), _dir(c)
    local = containers.REPO / c.finetune.runs_dir
    target, scratch = local / name, local / f".fetch-{name}"
    if target.exists() and not force:
        raise Exit(f"{target} exists: --force replaces it", code=2)
    c.run(f"rm -rf {_q(scratch)} && mkdir -p {_q(scratch / 'new')}")
    unpack = f"{_q(sys.executable)} {_q(remote.__file__)} extract {_q(scratch / 'new')}"  # no links, nothing outside
    got = c.run(f"set -o pipefail; {_ssh(c, host, f'tar -C {d}/{RUNS} -c {name}')} | {unpack}", warn=True)
    if not got.ok or not (c.config.run.dry or (scratch / "new" / name).is_dir()):
        c.run(f"rm -rf {_q(scratch)}")
        raise Exit(f"deploy.fetch: no complete copy of {RUNS}/{name} from {host}; {target} is unchanged", code=1)
    aside = f"mv {_q(target)} {_q(scratch / 'old')} && " if target.exists() else ""
    c.run(f"{aside}mv {_q(scratch / 'new' / name)} {_q(target)} && rm -rf {_q(scratch)}")


@task(help={"host": "USER@HOST", "name": "run name (default: default)"})
def stop(c, host=None, name="default"):
    """Stop the training (SIGTERM: it checkpoints first) and remove the container; runs/ on the host stays."""
    name, host = _name(name), _host(c, host)
    ct = shlex.quote(_container(name))
    _remote(c, host, f"docker stop --time {STOP_TIMEOUT} {ct} && docker rm {ct}")


ns = Collection("deploy")
ns.add_task(start, default=True)
for t in (status, logs, fetch, stop):
    ns.add_task(t)
