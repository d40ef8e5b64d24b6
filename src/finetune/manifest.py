"""The run manifest: everything needed to know how a run was made and to make it again."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import finetune
from finetune.imageids import image_digest
from finetune.urls import strip_userinfo

PACKAGES = ["finetune", "torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "numpy"]
PACKAGES += ["trl", "datasets"]  # dpo, kto and grpo train through them (not imported: read from their metadata)
LOCK_GLOB = "environments/*/*.lock*"  # the pinned-environment lockfiles, where the repository has them


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(*args, cwd) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(root: Path) -> dict:
    commit = _git("rev-parse", "HEAD", cwd=root)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def repo_root() -> Path:
    """The checkout this package runs from (for git and lockfiles); the working directory as a fallback."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "src" / "finetune").exists():
            return parent
    return Path.cwd()


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["finetune"] = finetune.__version__  # installed or a source tree (the images): read in one place
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpus[0] if gpus else None,
        "gpu_count": len(gpus),
        "cuda": torch.version.cuda if gpus else None,
    }


def container() -> dict | None:
    """Inside a container the image id and labels cannot be read from within; `invoke train` passes them in."""
    if not (Path("/.dockerenv").exists() or os.environ.get("FINETUNE_IMAGE_ID")):
        return None
    labels = json.loads(os.environ.get("FINETUNE_IMAGE_LABELS") or "null")
    return {
        "image_id": os.environ.get("FINETUNE_IMAGE_ID"),
        "image": os.environ.get("FINETUNE_IMAGE"),
        "labels": _safe_labels(labels) if labels else None,
    }


def image_verdict(recorded: dict | None, current: dict | None) -> tuple[str, bool | None]:
    """`finetune reproduce`'s image line: is the re-run in the image the run recorded (manifest container, issue 29)?
    (line, True: the same digest | False: another | None: not checked: either side outside a container)."""
    if not recorded or not recorded.get("image_id"):
        return "image: the run was made outside a container: no image to compare", None
    was = image_digest(recorded["image_id"])
    labels = recorded.get("labels") or {}
    built = f"{recorded.get('image') or 'image'} {was}, revision {labels.get('org.opencontainers.image.revision', '?')}"
    if not current or not current.get("image_id"):
        return (
            f"image: the run's was {built}; this re-run is outside a container, so the image is not compared "
            "(invoke reproduce RUN rebuilds it from that commit and re-runs in it)",
            None,
        )
    now = image_digest(current["image_id"])
    if now == was:
        return f"image: the same as the run's ({was})", True
    return f"image: NOT the run's: this one is {now}, the run's was {built}", False


def _safe_labels(labels: dict) -> dict:
    """The image's labels without URL credentials: an image built from a remote like https://user:token@host/...
    before tasks.py stripped them carries the token in org.opencontainers.image.source."""
    return {key: strip_userinfo(value) if isinstance(value, str) else value for key, value in labels.items()}


def lock_digests(root: Path) -> dict:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.glob(LOCK_GLOB)) if p.is_file()}


def build_manifest(config: dict, argv: list[str], data_files: list[str], world_size: int) -> dict:
    root = repo_root()
    return {
        "config": config,
        "seed": config["seed"],
        "command": [strip_userinfo(a) for a in argv],  # a --set with a URL may carry a password
        "cwd": os.getcwd(),
        "runtime": os.environ.get("FINETUNE_RUNTIME", "local"),
        "world_size": world_size,
        "git": git_info(root),
        "versions": versions(),
        "locks": lock_digests(root),
        "data": {f: sha256_file(Path(f)) for f in data_files if f and Path(f).is_file()},
        "hardware": hardware(),
        "container": container(),
    }
