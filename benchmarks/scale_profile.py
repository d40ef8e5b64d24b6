"""The profiler of benchmarks/scale.py --profile DIR: where one training step's time goes (imported only by the run's
subprocess).

StepProfiler records the steps after warm-up with torch.profiler (CPU and CUDA activities) and writes, into DIR:
  trace.json.gz      the Chrome trace (open in https://ui.perfetto.dev or chrome://tracing)
  ops.txt            torch's table of operators by self device time (self CPU time on a machine without a GPU)
  breakdown.json     kernel time by kind (matmul, attention, fused Liger/Triton, elementwise and norms, optimizer,
                     communication, copies), the GPU-busy share of the profiled wall time, and the top kernels
A profiled run's tokens/s carries the profiler's overhead: scale.py labels it "profiled", not a speed figure.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

# Kernel kinds, first match wins (CUDA kernel names: cuBLAS/CUTLASS GEMMs, PyTorch's native kernels, Triton's).
KINDS = [
    ("matmul", r"gemm|nvjet|cutlass|sm90_xmma|cublas|wgmma|splitk"),
    ("attention", r"flash|flex|attention|fmha|triton_tem_fused"),
    ("optimizer", r"multi_tensor|adam|foreach"),
    ("communication", r"nccl|all_reduce|allgather|reduce_scatter"),
    ("copies", r"memcpy|memset|copy_|cat|fill"),
    ("cross-entropy", r"cross_entropy|log_softmax|nll_loss|liger.*(ce|cross)"),
    ("norms and activations", r"rms|norm|silu|swiglu|gelu|rope|rotary|softmax"),
    ("other Triton", r"^triton_"),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other elementwise and reductions")


class StepProfiler(TrainerCallback):
    """Profile global steps (start, start + steps]: begins before step start+1, ends after step start+steps."""

    def __init__(self, out_dir: str | Path, start: int, steps: int = 2):
        self.out = Path(out_dir)
        self.start, self.steps = start, steps
        self.prof = None
        self.began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.prof is None and state.global_step == self.start:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
            self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step == self.start + self.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall = time.perf_counter() - self.began
            self.prof.__exit__(None, None, None)
            self.write(wall)
            self.prof = None

    def write(self, wall: float) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        raw = self.out / "trace.json"
        self.prof.export_chrome_trace(str(raw))
        trace = json.loads(raw.read_text())
        with raw.open("rb") as src, gzip.open(self.out / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        averages = self.prof.key_averages()
        sort = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        table = averages.table(sort_by=sort, row_limit=40, max_name_column_width=70)
        (self.out / "ops.txt").write_text(table)
        (self.out / "breakdown.json").write_text(json.dumps(breakdown(trace, wall, self.steps), indent=1))


def breakdown(trace: dict, wall: float, steps: int) -> dict:
    """Device-kernel seconds by kind (from the Chrome trace's "kernel" events: stable across torch versions), their
    share of the profiled wall time, and the 15 longest kernels."""
    kernels: dict[str, float] = {}
    for e in trace.get("traceEvents", []):
        if e.get("cat") == "kernel" and "dur" in e:
            kernels[e["name"]] = kernels.get(e["name"], 0.0) + float(e["dur"])  # microseconds
    by_kind: dict[str, float] = {}
    for name, us in kernels.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + us
    busy = sum(kernels.values()) / 1e6
    return {
        "profiled_steps": steps,
        "wall_seconds": wall,
        "kernel_seconds": busy,
        "gpu_busy_share": busy / wall if wall and kernels else None,  # < 1: the GPU waited on the CPU (launches, syncs)
        "seconds_by_kind": {k: v / 1e6 for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_kernels": [
            {"name": n[:160], "seconds": us / 1e6, "kind": kind_of(n)}
            for n, us in sorted(kernels.items(), key=lambda kv: -kv[1])[:15]
        ],
    }
