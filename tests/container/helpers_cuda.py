"""The CUDA images (runtime and dev) built once per session through `invoke build --variant cuda`, as a user builds
them, with one more stand-in than the CPU images: tests/container/standin/cuda-base.Dockerfile, a STAND-IN for
nvidia/cuda:13.0.3-base-ubuntu24.04 (no registry is reachable from this project's CI machines). Every other stage,
and the NVIDIA wheels, as shipped: the pip layer downloads torch and the nvidia-*-cu13 wheels from PyPI (the cuda
lock's 124 wheels, 5.5 GB installed, the first time; BuildKit's pip cache mount keeps them for the next build).
Deselected by default (marker cuda_image); CI runs them in their own step when time is left.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import time

import pytest

from .helpers_engine import FIGURES, REPO, Engine, one_worker_at_a_time
from .helpers_workspace import Workspace

STANDIN_CUDA = "local/cuda-base-standin:13.0.3"
STANDIN_CUDA_DOCKERFILE = REPO / "tests" / "container" / "standin" / "cuda-base.Dockerfile"
DEBIAN_FOR_CUDA = "local/debian:trixie"  # glibc 2.41, the nearest Debian to Ubuntu 24.04's 2.39


def cuda_base_standin(engine: Engine) -> str:
    """The stand-in base image, made from the debootstrapped Debian trixie (docker/engine.sh base trixie)."""
    with one_worker_at_a_time("base-images"):
        base = subprocess.run(
            ["bash", str(REPO / "docker" / "engine.sh"), "base", "trixie"],
            env=engine.env,
            capture_output=True,
            text=True,
        )
    assert base.returncode == 0, base.stderr[-3000:]
    engine(
        "build",
        "--quiet",
        "--build-arg",
        f"BASE_IMAGE={DEBIAN_FOR_CUDA}",
        "--tag",
        STANDIN_CUDA,
        "--file",
        STANDIN_CUDA_DOCKERFILE,
        STANDIN_CUDA_DOCKERFILE.parent,
    )
    return STANDIN_CUDA


def image_figures(engine: Engine, image: str, pull: bool = True) -> dict:
    """Uncompressed size (the engine's), the pull size (what a registry stores, gzip-compressed layers: measured here
    as `docker save IMAGE | gzip -6`, gzip's default level; nothing is written to disk; None unless `pull`: gzip of
    a 6 GB image takes minutes on two cores) and the biggest layers."""
    size = engine.inspect(image)["Size"]
    compressed = None
    if pull:
        save = subprocess.Popen([engine.client, "save", image], env=engine.env, stdout=subprocess.PIPE)
        compressed = _gzip_size(save.stdout)
        assert save.wait() == 0, f"docker save {image} failed"
    history = engine("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image, "--human=false")
    layers = []
    for line in history.stdout.splitlines():
        nbytes, created_by = line.split("\t", 1)
        if int(nbytes):
            layers.append((int(nbytes), " ".join(created_by.split())[:90] or "(a base image layer)"))
    layers.sort(reverse=True)
    return {"image": image, "size": size, "compressed": compressed, "layers": layers}


def _gzip_size(stream) -> int:
    """Bytes of gzip(stream) at level 6, counted without writing them anywhere."""
    counter = _Counter()
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as gz:
        while chunk := stream.read(1 << 20):
            gz.write(chunk)
    return counter.n


class _Counter:
    n = 0

    def write(self, data) -> int:
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _build(workspace: Workspace, config, target: str, *flags: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = workspace.invoke("build", "--variant", "cuda", "--target", target, *flags, config=config, timeout=5400)
    return time.monotonic() - t0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def cuda_config(workspace: Workspace):
    """The workspace's invoke config with image.base_images.cuda pointing at the stand-in base."""
    if workspace.settings.get("image", {}).get("base_images"):  # the stand-ins are in use: no registry here
        return workspace.with_settings("cuda", {"base_images": {"cuda": cuda_base_standin(workspace.engine)}})
    return workspace.config


@pytest.fixture(scope="session")
def cuda_runtime_image(workspace: Workspace, cuda_config) -> dict:
    """Built twice: the first build as this engine's cache finds it (cold on a fresh engine: every wheel downloaded),
    then the same command again (every layer cached)."""
    first, log = _build(workspace, cuda_config, "runtime")
    again, _ = _build(workspace, cuda_config, "runtime")
    # pip's own lines say where each wheel came from: PyPI ("Downloading") or BuildKit's cache mount ("Using cached")
    fetched, cached = (
        len(re.findall(rf"^#\d+ [\d.]+ +{what} \S+\.whl", log, re.M)) for what in ("Downloading", "Using cached")
    )
    FIGURES[f"cuda runtime: session's first build s ({fetched} wheels downloaded, {cached} from cache)"] = round(
        first, 1
    )
    FIGURES["cuda runtime: rebuild s (all cached)"] = round(again, 1)
    return {**_measured(workspace.engine, "finetune:cuda", "cuda runtime"), "seconds": first, "log": log}


@pytest.fixture(scope="session")
def cuda_dev_image(workspace: Workspace, cuda_config, cuda_runtime_image: dict) -> dict:
    seconds, log = _build(workspace, cuda_config, "dev")
    FIGURES["cuda dev: build s (after runtime)"] = round(seconds, 1)
    # No pull size for the dev image: no test reads it (the pull-size aim is the runtime's), and its gzip took minutes
    return {**_measured(workspace.engine, "finetune:cuda-dev", "cuda dev", pull=False), "seconds": seconds, "log": log}


def _measured(engine: Engine, image: str, label: str, pull: bool = True) -> dict:
    """image_figures(image), recorded in FIGURES: sizes (the pull size if `pull`) and the three biggest layers."""
    figures = image_figures(engine, image, pull)
    FIGURES[f"{label}: image size MB"] = round(figures["size"] / 1e6)
    if pull:
        FIGURES[f"{label}: pull size MB (gzip -6)"] = round(figures["compressed"] / 1e6)
    for nbytes, created_by in figures["layers"][:3]:
        FIGURES[f"{label} layer {round(nbytes / 1e6)} MB"] = created_by[:60]
    return figures
