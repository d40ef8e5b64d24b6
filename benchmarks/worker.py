"""One case of a benchmark in its own subprocess: spawn() in the parent, the child below.

A case is a spec (JSON): "module", the benchmark module whose run_case(spec) runs it, and whatever that function
reads. The child runs it, reads the peak GPU memory, and writes a result: status "ok", "oom" (out of GPU memory) or
"error", never a crash; the parent adds "timeout" when the child takes longer than the limit. One process per case
keeps each case's peak memory, imports and CUDA state its own.

    python -m benchmarks.worker SPEC.json     # the child: run SPEC, write its result to SPEC["result"]
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.machine import REPO


def spawn(spec: dict, log_path: Path, timeout: float | None = None) -> dict:
    """Run one spec in a fresh subprocess, with a time limit; its output goes to log_path. Returns the result, with
    process_seconds and log added."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False, mode="w") as f:
        spec_path = Path(f.name)
        result_path = spec_path.with_suffix(".result.json")
        json.dump({**spec, "result": str(result_path)}, f)
    cmd = [sys.executable, "-m", "benchmarks.worker", str(spec_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    try:
        with log_path.open("w") as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        if result_path.exists():
            result = json.loads(result_path.read_text())
        else:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-5:])
            result = {"status": "error", "error": f"worker exited {proc.returncode} without a result: {tail.strip()}"}
    except subprocess.TimeoutExpired:
        result = {"status": "timeout", "error": f"no result within {timeout:.0f} s (--worker-timeout)"}
    finally:
        spec_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)
    result["process_seconds"] = time.time() - started
    result["log"] = str(log_path)
    return result


def run(spec_path: str) -> int:
    """Run a spec and write its result, with peak GPU memory; an exception (an OOM too) is a result, not a crash."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        out = importlib.import_module(spec["module"]).run_case(spec)
        out["status"] = "ok"
    except Exception as e:  # report, don't crash: an OOM or a missing package is a result here
        text = str(e).strip().splitlines()
        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
        out = {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {text[0][:400] if text else ''}"}
        traceback.print_exc()
    if torch.cuda.is_available():
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        out["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        out["alloc_retries"] = torch.cuda.memory_stats().get("num_alloc_retries")  # cudaFree-and-retry after an OOM
    else:
        out["peak_memory_gib"] = None
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
