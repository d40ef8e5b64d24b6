"""Docker command lines for tasks.py: image names, build arguments, and the `docker run` of a training container.

Pure functions over invoke's config (invoke.yaml) and facts probed from the host, so the exact commands can be
printed by `invoke --dry` and checked by tests without an engine. Probing (docker info, nvidia-smi, git) lives in
devtools/images.py and devtools/gpu.py, which pass the results in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from devtools.engines import NVIDIA_CDI_KIND, USER_FLAGS
from devtools.nodes import Nodes, launcher
from finetune.urls import strip_userinfo

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("runtime", "dev")
# Images of a server of their own: variant -> its docker/Dockerfile target. Each installs its own lock
# (environments/<variant>, a server kind in environments/spec.py) on the CUDA base, and is tagged with the variant
# alone (finetune:vllm-server). WARM_IMPORTS: what its env stage imports to write bytecode for (the Dockerfile's
# default is what a training run imports, which a server environment does not hold).
SERVERS = {"vllm-server": "serve-vllm"}
SERVER_WARM_IMPORTS = {"vllm-server": "import torch, transformers, vllm"}
WORKSPACE = "/workspace"  # the image's working directory: configs/, data/, runs/ live (or are mounted) here
LAB_PORT = 8888  # JupyterLab inside its container (`invoke lab`), and the host port it is published on by default
TENSORBOARD_PORT = 6006  # TensorBoard inside its container (`invoke tensorboard`), and its default host port
SERVE_PORT = 8000  # `finetune serve` inside its container (`invoke serve --docker`), and its default host port
MODEL_MOUNT = "/mnt/model"  # where `invoke serve --docker` mounts the run or exported folder, read-only
HF_CACHE = "/home/finetune/.cache/huggingface"  # the image's HF_HOME (docker/Dockerfile)
SECRETS = ["HF_TOKEN", "WANDB_API_KEY"]  # passed to containers by name when set on the host; never printed
# The host's thread settings, passed by name when set: torch in a container starts one OpenMP thread per core it
# sees, also where the user (or a test run of several workers) asked for fewer, and OpenMP threads that share cores
# with another busy process spin (two runs side by side on 2 cores: 6x slower than with one thread each).
THREADS = ["OMP_NUM_THREADS", "MKL_NUM_THREADS"]
HOST_ENV = SECRETS + THREADS  # what every local container gets by name from this host
# NVIDIA's advice for PyTorch in containers (NGC PyTorch release notes, "Running PyTorch"): share the host's IPC
# namespace (DataLoader workers exchange tensors through /dev/shm, 64 MB by default in Docker) and lift the
# locked-memory and stack limits.
GPU_RUN_FLAGS = ["--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]


def image_name(cfg, variant: str, target: str = "runtime", tag: str | None = None) -> str:
    """finetune:cpu, finetune:cuda-dev, or <registry>/finetune:<tag> when a registry is configured."""
    repo = cfg.image.name if not cfg.image.registry else f"{cfg.image.registry.rstrip('/')}/{cfg.image.name}"
    plain = target in ("runtime", SERVERS.get(variant))
    return f"{repo}:{tag or (variant if plain else f'{variant}-{target}')}"


def check_variant(cfg, variant: str) -> None:
    if variant not in cfg.image.variants and variant not in SERVERS:
        raise ValueError(f"--variant {variant!r}: allowed: {', '.join([*cfg.image.variants, *SERVERS])}")


def default_target(variant: str) -> str:
    """runtime, or a server variant's one target (vllm-server: serve-vllm)."""
    return SERVERS.get(variant, "runtime")


def check_target(variant: str, target: str) -> None:
    """A training variant builds runtime or dev; a server variant its own target only."""
    if target != SERVERS.get(variant, target) or (variant not in SERVERS and target not in TARGETS):
        servers = ", ".join(f"{v}: {t}" for v, t in SERVERS.items())
        raise ValueError(f"--target {target!r}: allowed: {', '.join(TARGETS)} (a server variant its own: {servers})")


def locks_for(variant: str, target: str) -> list[Path]:
    """The locks an image of this variant and target installs from, every platform's (one label for a multi-arch
    image): environments/<variant>/pip.*.lock, plus environments/dev/pip.*.lock for the dev target."""
    locks = sorted((REPO / "environments" / variant).glob("pip.*.lock"))
    if target == "dev":
        locks += sorted((REPO / "environments" / "dev").glob("pip.*.lock"))
    return locks


def lock_digest(locks: list[Path]) -> str:
    """One sha256 over the locks (in order), for the image's org.finetune.lock-digest label."""
    h = hashlib.sha256()
    for path in locks:
        h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()


def build_user(uid: int, gid: int) -> tuple[int, int]:
    """The image user's UID/GID: the host user's, so files written to bind mounts are theirs; root maps to 1000."""
    return (uid, gid) if uid != 0 else (1000, 1000)


# Which engine builds an image bit for bit again, and why (README "Images anyone can rebuild"): Podman's
# `build --timestamp` sets every file's time in every layer and the image's created time; Docker 20.10's BuildKit
# (here) has no rewrite-timestamp (BuildKit 0.13+), so its layers keep the build's file times.
REPRODUCIBLE = "needs Podman (podman build --timestamp); Docker 20.10's BuildKit cannot rewrite file times"


@dataclass(frozen=True)
class Build:
    """The image a build asks for, as `invoke build` takes it (and ensure_image for a missing image): it travels from
    the task through images.build_image, which adds what it probes, to build_command."""

    variant: str = "cpu"
    target: str = "runtime"
    tag: str | None = None
    platforms: tuple[str, ...] = ()  # none: the engine's own; several: one multi-arch image (buildx)
    push: bool = False
    no_cache: bool = False
    ca_bundle: str | None = None  # a file; None: invoke.yaml's image.ca_bundle
    # A reproducible build (Podman only, REPRODUCIBLE): SOURCE_DATE_EPOCH, the commit's time, for `--timestamp`
    epoch: int | None = None
    storage: tuple[str, ...] = ()  # Podman's global flags for a storage of its own (--root DIR --runroot DIR)


def build_command(
    cfg, build: Build, *, uid: int, gid: int, revision: str, source_url: str, podman: bool = False
) -> list[str]:
    """`docker build` (one platform, local image) or `docker buildx build` (several platforms or --push); podman:
    `podman build` in Docker's image format (Buildah's default OCI format drops SHELL, which the Dockerfile's bash
    RUNs need)."""
    variant, target, platforms = build.variant, build.target, build.platforms
    check_variant(cfg, variant)
    check_target(variant, target)
    buildx = build.push or len(platforms) > 1
    if build.epoch is not None and (not podman or buildx):
        raise ValueError(f"--reproducible: {REPRODUCIBLE}; not with several platforms or --push")
    cmd = [cfg.docker.client, *build.storage, *(["buildx", "build"] if buildx else ["build"])]
    cmd += ["--file", cfg.image.dockerfile, "--target", target, "--tag", image_name(cfg, variant, target, build.tag)]
    if podman:
        cmd += ["--format", "docker"]
    if platforms:
        cmd += ["--platform", ",".join(platforms)]
    uid, gid = build_user(uid, gid)
    base = cfg.image.base_images
    args = {
        "VARIANT": variant,
        "MINIFORGE_IMAGE": base.miniforge,
        "CPU_BASE_IMAGE": base.cpu,
        "CUDA_BASE_IMAGE": base.cuda,
        "TORCH_FIND_LINKS": cfg.image.torch_find_links,
        "USER_UID": uid,
        "USER_GID": gid,
        "GIT_REVISION": revision,
        "LOCK_DIGEST": lock_digest(locks_for(variant, target)),
        "SOURCE_URL": strip_userinfo(source_url),  # a remote's user:token@ would be in ps, the label and manifests
        "APT_SNAPSHOT": cfg.image.apt_snapshot.date,
        "APT_SNAPSHOT_DEBIAN": cfg.image.apt_snapshot.debian,
        "APT_SNAPSHOT_UBUNTU": cfg.image.apt_snapshot.ubuntu,
    }
    if variant in SERVER_WARM_IMPORTS:
        args["WARM_IMPORTS"] = SERVER_WARM_IMPORTS[variant]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    # The facts that change per build, as --label from every client: applied when the image is committed, never from
    # a cached step (Podman 4.3.1's cache kept the LABEL step of an earlier GIT_REVISION/LOCK_DIGEST). The
    # Dockerfile's LABELs, from the same build args, serve builds made without invoke (plain docker build, CI).
    labels = {"org.opencontainers.image.revision": revision, "org.finetune.lock-digest": args["LOCK_DIGEST"]}
    labels["org.finetune.apt-snapshot"] = args["APT_SNAPSHOT"] or "none (the bases' own sources)"
    if build.epoch is not None:  # what `invoke reproduce` rebuilds with; and the mark of a reproducible build
        labels["org.finetune.source-date-epoch"] = str(build.epoch)
    cmd += [a for key, value in labels.items() for a in ("--label", f"{key}={value}")]
    if build.ca_bundle:  # a build secret: mounted for the RUNs that download, never stored in a layer
        cmd += ["--secret", f"id=ca-bundle,src={build.ca_bundle}"]
    if build.epoch is not None:  # every file time and the created time, and SOURCE_DATE_EPOCH for the RUNs
        cmd += ["--timestamp", str(build.epoch), "--build-arg", f"SOURCE_DATE_EPOCH={build.epoch}"]
    if build.no_cache:
        cmd.append("--no-cache")
    if buildx:
        cmd.append("--push" if build.push else "--load")
    return [*cmd, "."]


def gpu_flags(gpus: str, devices: str = "gpus") -> list[str]:
    """The GPUs for a container: all, or device ids as nvidia-smi numbers them (0, 0,2). devices "cdi": as CDI
    devices from NVIDIA's CDI spec (`--device nvidia.com/gpu=0`), the way Podman (only) and Docker 25+ take them;
    otherwise Docker's --gpus (the NVIDIA runtime). Docker reads a bare number there as a count (`--gpus 0`: zero
    GPUs, `--gpus 2`: any two), so ids always go as "device=..."."""
    if gpus == "all":
        spec = gpus
    elif re.fullmatch(r"\d+(,\d+)*", gpus):
        spec = f'"device={gpus}"'  # the quotes: the comma would split docker's --gpus value into fields
    else:
        raise ValueError(f"--gpus {gpus!r}: allowed: all, or device ids as nvidia-smi numbers them (0 or 0,2)")
    if devices == "cdi":  # NVIDIA's spec names each GPU by its index, and "all"
        return [a for i in gpus.split(",") for a in ("--device", f"{NVIDIA_CDI_KIND}={i}")] + GPU_RUN_FLAGS
    return ["--gpus", spec, *GPU_RUN_FLAGS]


def container_path(host: Path, root: Path, runs_dir: str, *, writable: bool = False) -> tuple[str, list[str]]:
    """Where a host path is seen inside the container, and the extra mount that makes it visible (if any). Under
    configs/, data/ or runs/ it is already there; anywhere else exactly that file or folder is mounted, read-only
    unless writable: never its parent, which may be the home folder or / (a --config in ~ must not expose ~)."""
    host = host.resolve()
    for inside in ("configs", "data", runs_dir):
        base = (root / inside).resolve()
        if host == base or base in host.parents:
            return f"{WORKSPACE}/{host.relative_to(root.resolve())}", []
    return f"/mnt/host{host}", ["--volume", f"{host}:/mnt/host{host}{'' if writable else ':ro'}"]


# The operating system's folders: a run may not write into them or anywhere under them.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")
# Folders that hold other people's or the system's files: a run may not be one of them (a folder inside is fine).
SHARED_FOLDERS = ("/home", "/media", "/mnt", "/opt", "/root", "/run", "/snap", "/srv", "/tmp", "/var")


def check_output_dir(value: str, repo: Path, home: Path) -> None:
    """Refuse (ValueError, one line) an --output-dir that a run must not take over: in a container it is mounted
    read-write, and a run writes and replaces files in it."""
    path = Path(value).resolve()
    why = None
    if path == Path("/"):
        why = "the root folder"
    elif path == home.resolve():
        why = "your home folder"
    elif path == repo.resolve():
        why = "the repository root"
    elif any(path == Path(t) or Path(t) in path.parents for t in SYSTEM_TREES) or str(path) in SHARED_FOLDERS:
        why = "a system folder"
    elif path in home.resolve().parents or path in repo.resolve().parents:
        why = "a folder that holds your home folder or the repository"
    if why:
        raise ValueError(f"--output-dir {value}: {why}; allowed: a folder for runs, e.g. runs/NAME or a new folder")


@dataclass(frozen=True)
class Image:
    """A built image as a run's manifest records it (images.ensure_image probes it): name, id and labels."""

    name: str
    id: str
    labels: dict


def run_command(
    cfg,
    image: Image,
    cli_args: list[str],
    *,
    name: str,
    gpus: str | None,
    nproc: int,
    extra_mounts: list[str],
    nodes: Nodes | None = None,
) -> list[str]:
    """`docker run` of one training container (see container_args), with the secrets set on this host; as one node
    of several, on its network under the name the other nodes reach it by (see Nodes)."""
    name = (nodes.container_name() if nodes else None) or name
    cmd = [cfg.docker.client, "run", "--rm", "--name", name, *(nodes.docker_args() if nodes else [])]
    cmd += container_args(cfg, str(REPO), image, passthrough_env(HOST_ENV), gpus) + extra_mounts
    return [*cmd, image.name, *launcher(nproc, nodes), *cli_args]


def container_args(cfg, root: str, image: Image, env_names: list[str], gpus: str | None) -> list[str]:
    """What every training container gets: configs and data read-only and runs/ read-write from `root`, the HF cache
    on a named volume, the image facts for the manifest, secrets by name only (docker reads each value from its own
    environment: never on a command line or in `ps`), and the GPUs or a sized /dev/shm."""
    runs = cfg.finetune.runs_dir
    args = ["--volume", f"{root}/configs:{WORKSPACE}/configs:ro", "--volume", f"{root}/data:{WORKSPACE}/data:ro"]
    args += ["--volume", f"{root}/{runs}:{WORKSPACE}/{runs}"]
    facts = {"FINETUNE_RUNTIME": "docker", "FINETUNE_IMAGE": image.name, "FINETUNE_IMAGE_ID": image.id}
    facts["FINETUNE_IMAGE_LABELS"] = json.dumps(image.labels, sort_keys=True, separators=(",", ":"))
    args += [a for key, value in facts.items() for a in ("--env", f"{key}={value}")]
    return args + _cache_secrets_devices(cfg, env_names, gpus)


def serve_container_args(cfg, model: Path, gpu: bool, key_name: str = "FINETUNE_API_KEY") -> list[str]:
    """A server's container (`finetune serve` in the runtime image, vLLM's in its own): only the model's folder,
    read-only (a LoRA run holds its base in RUN/base/, an export is whole), the API key by name (key_name: the
    variable that server reads), and what every container gets."""
    args = ["--volume", f"{model}:{MODEL_MOUNT}:ro", "--env", key_name, "--env", "HF_HUB_OFFLINE=1"]
    return args + _cache_secrets_devices(cfg, passthrough_env(HOST_ENV), "all" if gpu else None)


def dev_container_args(cfg, gpu: bool) -> list[str]:
    """A dev container as the devcontainer makes it (`invoke shell`, `test --docker`, `lab`): the repository at
    /workspace with its src/ on PYTHONPATH (your edits, not the image's copy), plus what every container gets."""
    args = ["--volume", f"{REPO}:{WORKSPACE}", "--env", f"PYTHONPATH={WORKSPACE}/src"]
    return args + _cache_secrets_devices(cfg, passthrough_env(HOST_ENV), "all" if gpu else None)


def _cache_secrets_devices(cfg, env_names: list[str], gpus: str | None) -> list[str]:
    """The HF cache volume, secrets by name, and the GPUs or a sized /dev/shm: common to every container."""
    # cfg.docker: the engine facts resolved for the engine that runs it (images.resolve_engine, images.gpu_check on
    # this host; deploy gives its remote host's)
    args = ["--volume", f"{cfg.image.hf_cache_volume}:{HF_CACHE}", *USER_FLAGS.get(cfg.docker.run_as, [])]
    args += [a for var in env_names for a in ("--env", var)]
    return args + (gpu_flags(gpus, cfg.docker.gpu_devices) if gpus else ["--shm-size", cfg.image.shm_size])


def passthrough_env(names: list[str]) -> list[str]:
    """The secret/environment names set on this host that should reach the container (values stay out of argv)."""
    return [n for n in names if os.environ.get(n)]


def show(cmd: list[str]) -> str:
    return shlex.join(cmd)
