"""The cases of benchmarks/scale.py, as its run's subprocess runs them (benchmarks.worker calls run_case).

A case is a spec (JSON): the pipeline ("ours": finetune.run.train; "plain": plain_trainer.train_plain), its config,
the warm-up steps and, for plain, the examples per step and accumulation. Both trainers are timed by the same
callback, StepClock: the plain Trainer takes it as a callback, ours through finetune.run.Hooks (its public hook for
this, so the benchmark measures the program users run, not a patched one).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.scale_clock import StepClock


def run_case(spec: dict) -> dict:
    """Run one pipeline; setup_seconds is what came before the first step (data, tokenizer, model, Trainer)."""
    entered = time.perf_counter()
    out = (run_ours if spec["pipeline"] == "ours" else run_plain)(spec)
    out["setup_seconds"] = out.pop("begin") - entered
    return out


def timed_result(clock: StepClock, summary: dict, resolved: dict | None) -> dict:
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
    from finetune.config import from_dict
    from finetune.run import Hooks, train

    clock = StepClock(spec["warmup_steps"])

    def trainer_ready(trainer):  # the same clock as the plain run, reading our trainer's own real-token count
        clock.tokens = lambda state: trainer.tokens_trained
        trainer.add_callback(clock)
        if spec.get("profile"):
            from benchmarks.scale_profile import StepProfiler

            steps = min(2, spec["config"]["training"]["max_steps"] - spec["warmup_steps"])
            trainer.add_callback(StepProfiler(spec["profile"], spec["warmup_steps"], steps))

    # the final model save comes after the timed loop; leaving it out only saves wall time (GBs for the big shapes)
    hooks = Hooks(trainer_ready=trainer_ready, save_model=False)
    cfg = from_dict(spec["config"], source=f"benchmarks scale {spec['label']}")
    with tempfile.TemporaryDirectory(prefix="scale-ours-") as tmp:
        run_dir = Path(tmp) / "run"
        summary, code = train(cfg, run_dir, argv=["benchmarks scale", spec["label"]], hooks=hooks)
        manifest = run_dir / "manifest.json"
        resolved = json.loads(manifest.read_text()).get("resolved") if manifest.exists() else None
    if code:
        raise RuntimeError(f"finetune run stopped with exit code {code}")
    return timed_result(clock, summary, resolved)


def run_plain(spec: dict) -> dict:
    from benchmarks import plain_trainer
    from finetune.config import from_dict
    from finetune.tokenizer import load_tokenizer

    clock = StepClock(spec["warmup_steps"], tokens=lambda state: state.num_input_tokens_seen)
    cfg = from_dict(spec["config"], source=f"benchmarks scale {spec['label']}")
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
