"""Invoke tasks: `invoke --list`, `invoke --help TASK`, `invoke --dry TASK` prints the plan without running it.

Every command goes through `c.run`, so `--dry` shows the whole plan; probes of the host (docker info, nvidia-smi,
git, image inspect) are not part of the plan and run even under --dry. Defaults live in invoke.yaml, the one place
for image names, registry, variants and base images; docker command lines are built in devtools/containers.py.
Each task is wiring: its flags (help= for every one), then one call into devtools (devtools/__init__.py has the
layers), then what it reports.
"""

from __future__ import annotations

import dataclasses
import shlex

from invoke import Collection, Exit, task

from devtools import containers, deploy, images, launch, services
from devtools import reproduce as rebuild
from devtools.checks import table
from devtools.doctor import run_checks
from devtools.nodes import Nodes


@task(
    help={
        "variant": "cpu | cuda (default cpu) | vllm-server (vLLM's server image, finetune:vllm-server: invoke serve "
        "--vllm)",
        "target": "runtime (training image) | dev (tools, JupyterLab: devcontainer, invoke lab); default runtime "
        "(vllm-server: its own target, serve-vllm)",
        "tag": "image tag (default: <variant> or <variant>-dev, under image.registry/image.name from invoke.yaml)",
        "push": "push to image.registry (builds with docker buildx)",
        "no_cache": "build every layer again (the download caches stay)",
        "platform": "target platform(s), comma separated, e.g. linux/amd64,linux/arm64 (several need buildx)",
        "ca_bundle": "CA bundle for a TLS-intercepting proxy: a build secret, never stored in a layer",
        "reproducible": "the same image digest on every rebuild of this commit: Podman with --timestamp and "
        "SOURCE_DATE_EPOCH (the commit's time); Docker 20.10's BuildKit cannot (README)",
    }
)
def build(
    c,
    variant="cpu",
    target=None,
    tag=None,
    push=False,
    no_cache=False,
    platform="",
    ca_bundle=None,
    reproducible=False,
):
    """Build a training image from docker/Dockerfile (pinned bases and locks from invoke.yaml)."""
    platforms = tuple(p for p in (platform or "").split(",") if p)
    epoch = None
    if reproducible:
        epoch = images.source_date_epoch(c)
        images.reproducible_client(c)
    target = target or containers.default_target(variant)
    images.build_image(c, containers.Build(variant, target, tag, platforms, push, no_cache, ca_bundle, epoch))


@task(
    name="verify-image",
    help={
        "variant": "cpu | cuda (default cpu)",
        "target": "runtime | dev (default runtime)",
        "workdir": "an empty folder for the two builds' storages and saved images (default: a new temporary one)",
        "bases": "an image archive (docker save / podman save) with the base images, loaded into each fresh storage "
        "instead of pulling them (where no registry is reachable)",
        "keep": "keep the storages and the two saved images (default: removed at the end)",
    },
)
def verify_image(c, variant="cpu", target="runtime", workdir=None, bases=None, keep=False):
    """Build the image twice from scratch (two empty Podman storages) and compare: exit 0 when the digests are
    equal, 1 naming the first layer and files that differ."""
    images.verify_image(c, variant, target, workdir, bases, keep)


@task(
    help={
        "run": "a run folder whose manifest records its image (trained with invoke train --docker in an image built "
        "with invoke build --reproducible)",
        "image_only": "compare the digests only; do not re-run the run in the rebuilt image",
        "bases": "load the base images from this archive into the empty storage (where no registry is reachable)",
        "workdir": "an empty folder for the worktree and the storage (default: a new temporary one)",
        "keep": "keep the worktree, the storage and the rebuilt image there",
    }
)
def reproduce(c, run, image_only=False, bases=None, workdir=None, keep=False):
    """Rebuild the image a run recorded (its commit and time, from scratch in an empty Podman storage), say whether
    its digest is the run's; when it is, re-run the run in it (finetune reproduce: metrics and image compared)."""
    rebuild.reproduce(c, run, bases, workdir, image_only, keep)


@task(
    iterable=["set_"],
    help={
        "config": "YAML config to train (default from invoke.yaml: configs/default.yaml)",
        "set_": launch.HELP["set_"],
        "local": "run in the local .venv, not in a container (same as --runtime local)",
        "docker": "run in the training image (same as --runtime docker); builds it first if missing",
        "runtime": "auto | docker | local (default from invoke.yaml: auto = docker when an engine answers)",
        "output_dir": "run directory (default runs/<name>)",
        "resume": "continue the run from its last complete checkpoint",
        "gpu": "the CUDA image with the host's GPUs (NVIDIA container toolkit); implies --docker",
        "gpus": "which GPUs with --gpu: all (default) or device ids as nvidia-smi numbers them, 0 or 0,2 (not a count)",
        "nproc": launch.HELP["nproc"],
        "variant": "image variant for --docker without --gpu: cpu (default) or cuda",
        "nnodes": "nodes (machines, or containers on one host) in the job: torchrun's c10d rendezvous (default 1)",
        "node_rank": "with --nnodes N: this node's number, 0 to N-1; node 0 hosts the rendezvous",
        "rdzv_endpoint": "with --nnodes N: node 0's HOST:PORT, the rendezvous every node joins (e.g. node0:29400)",
        "network": "Docker network of the container: host (one node per machine) or a user-defined network "
        "(several nodes on one host; node 0's container is named after the --rdzv-endpoint host)",
    },
)
def train(
    c,
    config=None,
    set_=None,
    local=False,
    docker=False,
    runtime=None,
    output_dir=None,
    resume=False,
    gpu=False,
    gpus="all",
    nproc=1,
    variant=None,
    nnodes=1,
    node_rank=None,
    rdzv_endpoint=None,
    network=None,
):
    """Fine-tune from a config (default: the embedded tiny default) and write runs/<name>/."""
    config, sets = config or c.finetune.config, tuple(set_ or ())
    asked = launch.Launch(config, sets, local, docker or gpu, runtime, output_dir, resume, gpu, gpus, nproc, variant)
    launch.check(asked)
    nodes = Nodes(nnodes, launch.node_rank(node_rank), rdzv_endpoint, network)
    launch.train(c, dataclasses.replace(asked, nodes=nodes))


@task(
    help={
        "variant": "cpu (default) | cuda",
        "gpu": "the CUDA dev image with the host's GPUs",
        "cmd": "command to run instead of an interactive bash",
    }
)
def shell(c, variant="cpu", gpu=False, cmd=None):
    """A shell in the dev image, the repository mounted at /workspace (as in the devcontainer)."""
    services.shell(c, variant, gpu, cmd)


@task(
    help={
        "fast": "skip the slow (real training) tests",
        "k": "only tests matching this pytest -k expression",
        "args": "extra pytest arguments, quoted",
        "docker": "run the tests inside the dev image (the repository mounted), not in .venv",
    }
)
def test(c, fast=False, k=None, args="", docker=False):
    """Run the test suite with the local environment's pytest, or inside the dev image with --docker."""
    markers = ["not slow"] if fast else []
    if docker:  # inside a container there is no engine for the container tests
        markers.append("not container")
    cmd = ["python" if docker else launch.venv_bin(c, "python"), "-m", "pytest", "-p", "no:cacheprovider"]
    if markers:
        cmd += ["-m", " and ".join(markers)]
    if k:
        cmd += ["-k", k]
    line = shlex.join(cmd) + (f" {args}" if args else "")
    if docker:
        services.shell(c, "cpu", False, line)
    else:
        c.run(line)


@task(
    help={
        "port": f"host port (default {containers.LAB_PORT})",
        "host": "host address to publish on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
        "gpu": "the CUDA dev image with the host's GPUs",
        "token": "the login token (default: $JUPYTER_TOKEN, else a new random one printed once with the URL); "
        "a flag is visible in `ps` and your shell history: prefer JUPYTER_TOKEN in the environment",
    }
)
def lab(c, port=containers.LAB_PORT, host="127.0.0.1", gpu=False, token=None):
    """JupyterLab in the dev image: the repository (notebooks/, runs/) at /workspace, token login always on."""
    services.lab(c, port, host, gpu, token)


@task(
    help={
        "port": f"host port (default {containers.TENSORBOARD_PORT})",
        "host": "host address (default 127.0.0.1: this machine only); TensorBoard has no login, so 0.0.0.0 shows "
        "every run to anyone who can reach the port (use an SSH tunnel instead)",
    }
)
def tensorboard(c, port=containers.TENSORBOARD_PORT, host="127.0.0.1"):
    """TensorBoard over runs/ (read-only) in the cpu dev image (the runtime images have the event writer only)."""
    services.tensorboard(c, port, host)


@task(
    help={
        "cpu": "skip the GPU checks (a CPU-only host)",
        "host": "also check a deploy host over SSH (USER@HOST; default deploy.host from invoke.yaml)",
    }
)
def doctor(c, cpu=False, host=None):
    """One table of checks, each failure with its fix: engine, BuildKit, GPU driver/toolkit, disk, shm, locks, SSH."""
    checks = run_checks(c, lambda cmd: images.probe(c, cmd), gpu=not cpu, host=host or c.deploy.host or None)
    print(table(checks), flush=True)
    failed = [ch.name for ch in checks if ch.state == "fail"]
    if failed:
        raise Exit(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", code=1)


@task(
    help={
        "volume": "also remove the Hugging Face cache volume (downloaded models)",
        "build_cache": "also prune BuildKit's build cache (downloads are fetched again on the next build)",
    }
)
def clean(c, volume=False, build_cache=False):
    """Remove the images this project built (by label), and optionally its HF cache volume and build cache."""
    ids = images.probe(c, f"{c.docker.client} images --quiet --filter label=org.finetune.target").stdout.split()
    if ids:
        c.run(f"{c.docker.client} image rm --force {' '.join(sorted(set(ids)))}")
    else:
        print("no finetune images to remove")
    if volume:
        c.run(f"{c.docker.client} volume rm --force {c.image.hf_cache_volume}")
    if build_cache:
        c.run(f"{c.docker.client} builder prune --force")


@task(
    help={
        "variant": "lock only this variant (cpu, cuda, dev, vllm-server); repeatable",
        "check": "only check freshness",
        "upgrade": "every package to the newest version its range allows (default: keep the pinned ones)",
    },
    iterable=["variant"],
)
def lock(c, variant=None, check=False, upgrade=False):
    """Regenerate the hashed lockfiles from environments/*/environment.yml (or --check that they are fresh)."""
    cmd = [launch.venv_bin(c, "python"), "environments/lock.py", *(a for v in variant or [] for a in ("--variant", v))]
    cmd += ["--check"] if check else []
    cmd += ["--upgrade"] if upgrade else []
    c.run(shlex.join(cmd))


@task(
    help={"variant": "locks to compare against (default: cpu and dev, what .venv is built from); repeatable"},
    iterable=["variant"],
)
def env(c, variant=None):
    """Show whether the local environment matches the locks, package by package; exit 1 on any difference."""
    cmd = [launch.venv_bin(c, "python"), "environments/lock.py", "--verify-env", *(variant or [])]
    c.run(shlex.join(cmd))


@task(
    positional=["name"],
    help={
        "name": "which benchmark: throughput (the tiny default config, CPU) or scale (real model shapes, GPU); "
        "benchmarks/README.md",
        "args": "extra arguments for it, quoted (see `python -m benchmarks NAME --help`)",
    },
)
def bench(c, name, args=""):
    """Tokens/s of our pipeline vs a plain Hugging Face Trainer (python -m benchmarks NAME): a table, a JSON report."""
    c.run(f"{launch.venv_bin(c, 'python')} -m benchmarks {shlex.quote(name)} {args}".strip())


@task(
    help={
        "run": "the run directory to export (default runs/default)",
        "out": "target folder (default: beside the run, <run>-hf or <run>-gguf)",
        "format": "hf (transformers folder, LoRA merged; the default) or gguf (one file for llama.cpp and Ollama)",
        "dtype": "hf only: bf16, fp16 or fp32 (default: as trained)",
        "quant": "gguf only: f16 (the default) or q8_0",
        "force": "replace a non-empty --out folder",
    }
)
def export(c, run="runs/default", out=None, format="hf", dtype=None, quant=None, force=False):
    """A finished run's model for other tools: finetune export in .venv (docs/serve.md)."""
    cmd = [launch.venv_bin(c, "finetune"), "export", run, "--format", format]
    cmd += ["--out", out] if out else []
    cmd += ["--dtype", dtype] if dtype else []
    cmd += ["--quant", quant] if quant else []
    cmd += ["--force"] if force else []
    c.run(shlex.join(cmd), pty=False)


@task(
    help={
        "model": "a run directory or an exported folder (default runs/default)",
        "port": f"port (default {containers.SERVE_PORT})",
        "host": "address (default 127.0.0.1: this machine only; any other needs an API key, or, in a container, gets "
        "a new one)",
        "api_key": "require 'Authorization: Bearer KEY' (default: $FINETUNE_API_KEY; in a container without one, a "
        "new key printed once); a flag is visible in `ps` and your shell history: prefer the variable",
        "docker": "in the CPU runtime image, the model folder mounted read-only (no .venv needed)",
        "gpu": "in the CUDA runtime image with the host's GPUs (transformers on the GPU; implies --docker)",
        "vllm": "vLLM's OpenAI server in its own image (finetune:vllm-server) with the host's GPUs (implies --gpu); a "
        "run is exported first to RUN-hf (finetune export --force: an earlier export there is replaced)",
    }
)
def serve(
    c,
    model="runs/default",
    port=containers.SERVE_PORT,
    host="127.0.0.1",
    api_key=None,
    docker=False,
    gpu=False,
    vllm=False,
):
    """An OpenAI-compatible API for a run's model: finetune serve in .venv, or in a container, or vLLM's server on
    the GPUs (docs/serve.md)."""
    if docker or gpu or vllm:
        services.serve_in_container(c, model, port, host, gpu, api_key, vllm)
        return
    cmd = [launch.venv_bin(c, "finetune"), "serve", model, "--host", host, "--port", str(port)]
    env = {"FINETUNE_API_KEY": api_key} if api_key else {}  # in the environment: not in the echoed plan or in ps
    c.run(shlex.join(cmd), pty=False, env=env)


ns = Collection(
    build, verify_image, reproduce, train, shell, test, lab, tensorboard, doctor, clean, lock, env, bench, export, serve
)
ns.add_collection(deploy.ns)


@task(
    help={
        "port": "port to listen on (default 5000)",
        "host": "address to bind (default 127.0.0.1: this machine only); the server has no login, so 0.0.0.0 shows "
        "and accepts every run to anyone who can reach the port (use an SSH tunnel instead)",
        "root": "folder for the SQLite database (mlflow.db) and the artifacts (default: <runs_dir>/mlflow)",
        "workers": "server worker processes (default 1: enough for a workstation's runs)",
    }
)
def mlflow(c, port=5000, host="127.0.0.1", root=None, workers=1):
    """An MLflow tracking server (the dev layer's mlflow): runs log to it with MLFLOW_TRACKING_URI=<the URL printed>
    and `tracking: [mlflow]` in the config (finetune.tracking); Ctrl-C stops it."""
    services.mlflow(c, port, host, root, workers)


ns.add_task(mlflow)
