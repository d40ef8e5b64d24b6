"""What a benchmark ran on: Python and package versions, CPU and GPU, torch threads, the git commit.

environment() reads it in a child process when a GPU is visible: a CUDA context in the benchmark's parent would hold
GPU memory for the whole invocation and shrink what the runs can use.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# versions recorded besides torch, transformers and accelerate (None when not installed)
DISTRIBUTIONS = ("peft", "tokenizers", "liger-kernel", "bitsandbytes", "flash-attn", "triton")


def gpu_visible() -> bool:
    """Whether a CUDA GPU is there, without creating a CUDA context in this process."""
    import torch

    return torch.cuda.is_available()  # cudaGetDeviceCount: no context


def git(*cmd: str) -> str | None:
    try:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def read_environment() -> dict:
    """The environment, read in this process (a CUDA context when a GPU is there)."""
    import accelerate
    import torch
    import transformers

    from finetune.manifest import cpu_model

    gpu = torch.cuda.is_available()
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "cuda": torch.version.cuda if gpu else None,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "src")),
    }
    for dist in DISTRIBUTIONS:
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    env["python_executable"] = sys.executable
    env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    return env


def environment() -> dict:
    """The environment; with a GPU, read by a child process (`python -m benchmarks.machine`)."""
    if not gpu_visible():
        return read_environment()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.machine"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"reading the environment failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(read_environment()))
