"""The experiments of benchmarks/scale.py, each a sequence of runs: the ours/plain comparison of one model shape, and
the fit table (which shapes x {full, lora, qlora} fit on this GPU).

compare_model runs the plain Trainer first, halving its micro-batch after an out-of-memory, then each variant of ours
on the same data. run_fit_table tries every shape x method, or with --quick, per method, the shapes from the largest
down until one fits. Every finished run is kept in the report, which is rewritten at once, and printed as one line.
Both read what one invocation shares from an Invocation.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.scale_plan import FIT_METHODS, base_config, fit_settings, plan, variant_settings, with_settings
from benchmarks.scale_report import Report, budget_line, run_line
from benchmarks.scale_shapes import SHAPES, add_flops_and_mfu, analytic_params
from benchmarks.worker import spawn


@dataclass(frozen=True)
class Invocation:
    """What every run of one `benchmarks scale` invocation shares: its flags, the --set overrides, the folders for
    planned data (work) and run logs, the report (budgets, runs, fit table, the GPU's peak FLOPs), whether a GPU is
    visible, and how a run is started (spawn: a subprocess; tests give a fake)."""

    args: argparse.Namespace
    overrides: dict
    work: Path
    logs: Path
    report: Report
    on_gpu: bool
    spawn: Callable = spawn

    def execute(self, spec: dict, log_name: str, method: str = "full") -> dict:
        """One run in its own subprocess (scale_runs.run_case); the result carries the spec's model, pipeline, label,
        method and config."""
        r = self.spawn({**spec, "module": "benchmarks.scale_runs"}, self.logs / log_name, self.args.worker_timeout)
        r.update(model=spec["model"], pipeline=spec["pipeline"], label=spec["label"], method=method,
                 config=spec["config"])  # fmt: skip
        return r


def record(r: dict, runs: list[dict], save, fit: bool = False) -> None:
    """Keep a finished run, rewrite the JSON (a stopped invocation keeps what it measured) and print its line."""
    runs.append(r)
    save(partial=True)
    print(run_line(r, fit=fit), flush=True)


def compare_model(name: str, run: Invocation) -> None:
    """Plain first, at the largest micro-batch of --plain-micro-batch (or the model's start, with --quick), half that,
    ... that does not run out of memory (each try re-plans the data for the same tokens per step); then each variant
    of ours on the final plan's data, each for --steps steps after --warmup-steps. --no-plain: ours only."""
    args, report, peak = run.args, run.report, run.report.peak
    steps, warmup = args.steps, args.warmup_steps
    micro, plain = args.plain_micro_batch_start.get(name, args.plain_micro_batch), None
    while True:
        b = report.budgets[name] = plan(name, steps, args, run.work, micro)
        print(budget_line(b), flush=True)
        base = base_config(b, args, steps)
        if args.no_plain:  # ours alone (a shape the plain Trainer cannot hold, a profile): no ratio
            break
        spec = {
            "pipeline": "plain",
            "label": f"plain Trainer mb{micro}",
            "config": with_settings(base, {"model.attn_implementation": "sdpa"}),
            "examples_per_step": b["plain_examples_per_step"],
            "grad_accum": b["plain_grad_accum"],
            "model": name,
            "warmup_steps": warmup,
        }
        r = run.execute(spec, f"scale-{name}-plain-mb{micro}.log")
        r["plain_micro_batch"] = micro
        if r["status"] == "ok":
            plain = add_flops_and_mfu(r, b, peak)
        record(r, report.runs, report.save)
        if r["status"] != "oom" or micro == 1:
            break
        micro //= 2
        print(f"[scale] {name}: the plain Trainer ran out of memory; again at micro-batch {micro}", flush=True)
    for v in args.variants:
        config = with_settings(base, run.overrides, variant_settings(v))
        spec = {"pipeline": "ours", "label": f"ours {v}", "config": config, "model": name, "warmup_steps": warmup}
        slug = v.replace("+", "p")  # a variant in file names
        if args.profile:  # the steps after warm-up under torch.profiler: a profile, not a speed figure
            spec["profile"] = str(Path(args.profile) / f"{name}-{slug}")
            spec["label"] += " (profiled)"
        r = run.execute(spec, f"scale-{name}-ours-{slug}.log")
        if r["status"] == "ok":
            add_flops_and_mfu(r, b, peak)
            if plain:
                r["plain_label"] = plain["label"]
                r["ratio_vs_plain"] = r["tokens_per_second"] / plain["tokens_per_second"]
                r["steady_ratio_vs_plain"] = r["steady_tokens_per_second"] / plain["steady_tokens_per_second"]
        record(r, report.runs, report.save)


def run_fit_table(run: Invocation) -> None:
    """Each --fit-models shape x {full, lora, qlora}; with --quick, per method, the shapes from the largest down until
    one fits: the largest that fits and the ones above it that did not."""

    args, report = run.args, run.report

    def fit(name: str, method: str) -> dict:
        b = report.budgets.get(f"fit:{name}") or plan(name, args.fit_steps, args, run.work)
        report.budgets[f"fit:{name}"] = b
        settings = fit_settings(method, b["ours_rows_per_step"], run.on_gpu)
        spec = {
            "pipeline": "ours",
            "label": f"fit {method}",
            "config": with_settings(base_config(b, args, args.fit_steps), run.overrides, settings),
            "model": name,
            "warmup_steps": min(1, args.fit_steps - 1),
        }
        r = run.execute(spec, f"scale-fit-{name}-{method}.log", method=method)
        if r["status"] == "ok":
            add_flops_and_mfu(r, b, report.peak)
        record(r, report.fits, report.save, fit=True)
        return r

    if not args.quick:
        for name in args.fit_models:
            for method in FIT_METHODS:
                fit(name, method)
        return
    largest_first = sorted(args.fit_models, key=lambda m: analytic_params(SHAPES[m])["total"], reverse=True)
    for method in FIT_METHODS:
        for name in largest_first:
            if fit(name, method)["status"] == "ok":
                break
