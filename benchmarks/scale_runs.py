#!/usr/bin/env python
"""One run of benchmarks/scale.py in its own subprocess: spawn() in the parent, worker() in the child.

A run is a spec (JSON): the pipeline ("ours": finetune.run.train; "plain": plain_trainer.train_plain), its config, the
warm-up steps and, for plain, the examples per step and accumulation. The child times the steps with StepClock, reads
the peak GPU memory, and writes a result: status "ok", "oom" (out of GPU memory) or "error", never a crash; the parent
adds "timeout" when the child takes longer than the limit. One process per run keeps each run's peak memory its own.

    python benchmarks/scale_runs.py SPEC.json     # the child: run SPEC, write its result to SPEC["result"]
    python benchmarks/scale_runs.py --environment # print versions, CPU/GPU and git commit as JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# --- the parent ---------------------------------------------------------------------------------------------------


def spawn(spec: dict, log_path: Path, timeout: float) -> dict:
    """Run one spec in a fresh subprocess with a time limit; its output goes to log_path. Returns the result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False, mode="w") as f:
        spec_path = Path(f.name)
        result_path = spec_path.with_suffix(".result.json")
        json.dump({**spec, "result": str(result_path)}, f)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(spec_path)]
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


def gpu_visible() -> bool:
    """Whether a CUDA GPU is there, without creating a CUDA context in this process."""
    import torch

    return torch.cuda.is_available()  # cudaGetDeviceCount: no context


def environment() -> dict:
    """Versions, CPU/GPU and git commit. With a GPU, read in a child process: a CUDA context in this parent would hold
    GPU memory for the whole benchmark and shrink what the runs can use."""
    if not gpu_visible():
        return read_environment()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--environment"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"reading the environment failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_environment() -> dict:
    import throughput

    env = throughput.environment()
    for dist in ("peft", "tokenizers", "liger-kernel", "bitsandbytes", "flash-attn", "triton"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    env["python_executable"] = sys.executable
    env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    return env


# --- the child ----------------------------------------------------------------------------------------------------


def timed_result(clock, summary: dict, resolved: dict | None) -> dict:
    """The clock's figures and the run summary's (both pipelines' summaries share these keys)."""
    return {
        **clock.result(),
        "begin": clock.begin,
        "tokens_trained": summary["tokens_trained"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "tokens_per_second_whole_run": summary["tokens_per_second"],
        "train_loss": summary["train_loss"],
        "resolved": resolved,
    }


def run_ours(spec: dict) -> dict:
    from scale_clock import StepClock

    from finetune import trainer as finetune_trainer
    from finetune.config import from_dict
    from finetune.run import train

    clock = StepClock(spec["warmup_steps"])
    original_init = finetune_trainer.FinetuneTrainer.__init__

    def init(self, *a, **kw):  # time our own trainer too: same callback as the plain run, our real-token count
        original_init(self, *a, **kw)
        clock.tokens = lambda state: self.tokens_trained
        self.add_callback(clock)
        if spec.get("profile"):
            from scale_profile import StepProfiler

            steps = min(2, spec["config"]["training"]["max_steps"] - spec["warmup_steps"])
            self.add_callback(StepProfiler(spec["profile"], spec["warmup_steps"], steps))

    finetune_trainer.FinetuneTrainer.__init__ = init
    # the final model save comes after the timed loop; skipping it only saves wall time (GBs for the big shapes)
    finetune_trainer.FinetuneTrainer.save_model = lambda self, *a, **kw: None
    cfg = from_dict(spec["config"], source=f"benchmarks/scale.py {spec['label']}")
    with tempfile.TemporaryDirectory(prefix="scale-ours-") as tmp:
        run_dir = Path(tmp) / "run"
        summary, code = train(cfg, run_dir, argv=["benchmarks/scale.py", spec["label"]])
        manifest = run_dir / "manifest.json"
        resolved = json.loads(manifest.read_text()).get("resolved") if manifest.exists() else None
    if code:
        raise RuntimeError(f"finetune run stopped with exit code {code}")
    return timed_result(clock, summary, resolved)


def run_plain(spec: dict) -> dict:
    import plain_trainer
    from scale_clock import StepClock

    from finetune.config import from_dict
    from finetune.tokenizer import load_tokenizer

    clock = StepClock(spec["warmup_steps"], tokens=lambda state: state.num_input_tokens_seen)
    cfg = from_dict(spec["config"], source=f"benchmarks/scale.py {spec['label']}")
    tokenizer = load_tokenizer(cfg.tokenizer.name_or_path)
    micro_batch = spec["examples_per_step"] // spec["grad_accum"]
    with tempfile.TemporaryDirectory(prefix="scale-plain-") as tmp:
        summary = plain_trainer.train_plain(
            cfg,
            spec["examples_per_step"],
            Path(tmp) / "run",
            tokenizer=tokenizer,
            callbacks=[clock],
            grad_accum=spec["grad_accum"],
        )
    resolved = {
        "attn_implementation": cfg.model.attn_implementation,
        "micro_batch": micro_batch,
        "grad_accum": spec["grad_accum"],
    }
    return timed_result(clock, summary, resolved)


def worker(spec_path: str) -> int:
    """Run a spec and write its result, with peak GPU memory; an exception (an OOM too) is a result, not a crash."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    entered = time.perf_counter()
    try:
        out = (run_ours if spec["pipeline"] == "ours" else run_plain)(spec)
        out["status"] = "ok"
        out["setup_seconds"] = out.pop("begin") - entered  # data, tokenizer, model, Trainer: before the first step
    except Exception as e:  # report, don't crash: an OOM or a missing package is a result here
        text = str(e).strip().splitlines()
        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
        out = {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {text[0][:400] if text else ''}"}
        traceback.print_exc()
    if torch.cuda.is_available():
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        out["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        stats = torch.cuda.memory_stats()
        out["alloc_retries"] = stats.get("num_alloc_retries")  # cudaFree-and-retry after a failed cudaMalloc
    else:
        out["peak_memory_gib"] = None
    Path(spec["result"]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":  # sys.path[0] is benchmarks/: plain_trainer, scale_clock, throughput import as they are
    if sys.argv[1:] == ["--environment"]:
        print(json.dumps(read_environment()))
        sys.exit(0)
    sys.exit(worker(sys.argv[1]))
