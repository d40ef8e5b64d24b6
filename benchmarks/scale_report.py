"""The output of benchmarks/scale.py: the JSON report, the progress line of each run, and the summary tables.

Report holds everything measured and rewrites the JSON after every run, so a stopped invocation keeps what it
measured. summary() renders the final tables from the report's data alone, which is how `scale.py --print FILE.json`
shows a saved report again exactly as the run printed it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.report import fmt, render, stamp, write
from benchmarks.scale_plan import FIT_METHODS
from benchmarks.scale_shapes import SHAPES, analytic_params

BUDGET_TOLERANCE = 0.05  # planned and measured real tokens per optimizer step: ours vs plain, relative
MFU_DEFINITION = {
    "flops_per_token": "4*N + 2*N_trainable + 12*L*H*Q*T (full fine-tuning: 6*N + 12*L*H*Q*T)",
    "N": "all parameters except an untied input embedding table (a tied embedding counts once, as the LM head)",
    "T": "sum(len_i^2)/sum(len_i) over the documents trained: each token attends within its own document",
    "peak": "dense (no sparsity) bf16 tensor-core peak of the GPU, by name; null when unknown or on CPU",
}


class Report:
    """The JSON report of one invocation: environment, settings, token budgets, comparison runs and fit-table runs."""

    def __init__(self, out: Path, environment: dict, settings: dict, peak: float | None):
        self.out, self.environment, self.settings, self.peak = out, environment, settings, peak
        self.budgets: dict = {}
        self.runs: list[dict] = []  # the ours/plain comparison
        self.fits: list[dict] = []  # the fit table
        self.started = time.time()

    def data(self, partial: bool) -> dict:
        return {
            **stamp("scale"),
            "environment": self.environment,
            "settings": self.settings,
            "peak_bf16_flops": self.peak,
            "mfu_definition": MFU_DEFINITION,
            "budgets": self.budgets,
            "budget_tolerance": BUDGET_TOLERANCE,
            "budget_checks": check_budgets(self.runs),
            "runs": self.runs,
            "fit_table": self.fits,
            "total_seconds": time.time() - self.started,
            "partial": partial,
        }

    def save(self, partial: bool) -> dict:
        return write(self.out, self.data(partial))


def check_budgets(comparison: list[dict]) -> list[dict]:
    """Measured real tokens per optimizer step of each of ours' runs against the plain run of the same model."""
    checks = []
    for name in dict.fromkeys(r["model"] for r in comparison):
        ok_runs = [r for r in comparison if r["model"] == name and r["status"] == "ok"]
        plain = next((r for r in ok_runs if r["pipeline"] == "plain"), None)
        for r in ok_runs:
            if plain is None or r["pipeline"] == "plain":
                continue
            a, b = r["tokens_per_step"], plain["tokens_per_step"]
            diff = abs(a - b) / max(a, b)
            checks.append({"model": name, "label": r["label"], "difference": diff, "ok": diff <= BUDGET_TOLERANCE})
    return checks


# --- text ---------------------------------------------------------------------------------------------------------


def header_line(environment: dict, settings: dict, peak: float | None) -> str:
    """The first line of a run: the machine, the versions and what will run."""
    gpu = environment["gpu"]
    return (
        f"[scale] {gpu or environment['cpu']}{'' if gpu else ' (CPU: MFU n/a, no timing claims)'}; "
        f"peak bf16 {fmt(peak and peak / 1e12, ',.1f', 'unknown')} TFLOPS; torch {environment['torch']}, "
        f"transformers {environment['transformers']}; seq-len {settings['seq_len']}, "
        f"{settings['tokens_per_step']:,} tokens/step"
        + (
            f"; comparison: {settings['steps']} steps ({settings['warmup_steps']} warm-up)"
            if settings["models"]
            else ""
        )
        + (f"; fit table: {settings['fit_steps']} steps (1 warm-up)" if settings["fit_table"] else "")
    )


def budget_line(b: dict) -> str:
    """What plan() chose for one model shape."""
    return (
        f"[scale] {b['model']}: {b['examples']} examples (median {b['example_tokens_median']}, mean "
        f"{b['example_tokens_mean']:.0f}, max {b['example_tokens_max']} tokens; T = {b['attention_span_T']:.0f}); "
        f"planned real tokens/step: ours {b['ours_tokens_per_step_planned']:,.0f} ({b['ours_rows_per_step']} "
        f"rows of {b['ours_avg_row_tokens']:,.0f}), plain {b['plain_tokens_per_step_planned']:,.0f} "
        f"({b['plain_micro_batch']} x {b['plain_grad_accum']} examples)"
    )


def status_text(run: dict) -> str:
    return {"oom": "OOM", "timeout": "timeout"}.get(run["status"], "error")


def run_line(r: dict, fit: bool = False) -> str:
    """The progress line of a finished run (a fit-table run's is shorter)."""
    if r["status"] != "ok":
        text = f"{status_text(r)}: {r.get('error', '')}"
        if fit and r.get("peak_memory_gib"):
            text += f" (peak {r['peak_memory_gib']:.1f} GiB)"
    else:
        text = (
            f"{r['tokens_per_second']:>10,.0f} tokens/s  MFU {fmt(r['mfu'], '.1%', 'n/a')}  "
            f"peak {fmt(r.get('peak_memory_gib'), '.1f', 'n/a')} GiB"
        )
        if not fit:
            text += (
                f"  {r['tokens_per_step']:,.0f} tokens/step  steady {r['steady_tokens_per_second']:,.0f}  "
                f"stalls {r['timed']['stalled_steps']}  setup {r['setup_seconds']:.0f} s  "
                f"alloc retries {r.get('alloc_retries')}"
            )
    where = f"fit {r['model']} {r['method']:<5}" if fit else f"{r['model']} {r['label']:<24}"
    return f"[scale] {where} {text}  ({r['process_seconds']:.0f} s)"


def ratio(value: float | None) -> str:
    return fmt(value, ".2f") + ("x" if value else "")


def comparison_table(runs: list[dict], on_gpu: bool) -> str:
    header = ["model", "pipeline", "tokens/s", "MFU", "peak GiB", "tokens/step", "ours/plain"]
    header += ["steady tok/s", "steady ours/plain", "stalls", "setup s"]
    rows = []
    for r in runs:
        if r["status"] != "ok":
            row = [r["model"], r["label"], status_text(r), "", fmt(r.get("peak_memory_gib"), ".1f")]
            rows.append(row + [""] * (len(header) - len(row)))
            continue
        timed = r.get("timed") or {}
        stalls = f"{timed.get('stalled_steps', 0)}/{timed.get('steps', 0)}"
        if timed.get("stalled_steps"):
            stalls += f" ({timed['stalled_seconds']:.0f} s)"
        rows.append(
            [
                r["model"],
                r["label"],
                fmt(r["tokens_per_second"], ",.0f"),
                fmt(r["mfu"], ".1%", "n/a"),
                fmt(r.get("peak_memory_gib"), ".1f", "n/a" if not on_gpu else "-"),
                fmt(r["tokens_per_step"], ",.0f"),
                ratio(r.get("ratio_vs_plain")),
                fmt(r.get("steady_tokens_per_second"), ",.0f"),
                ratio(r.get("steady_ratio_vs_plain")),
                stalls,
                fmt(r.get("setup_seconds"), ".0f"),
            ]
        )
    return render(header, rows, left=2)


def fit_table(runs: list[dict]) -> str:
    header = ["model", "params", *FIT_METHODS]
    by = {(r["model"], r["method"]): r for r in runs}
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        cells = []
        for m in FIT_METHODS:
            r = by.get((model, m))
            if r is None:
                cells.append("")
            elif r["status"] == "ok":
                cells.append(f"{r['tokens_per_second']:,.0f} tok/s, {fmt(r.get('peak_memory_gib'), '.1f', 'n/a')} GiB")
            elif r["status"] == "oom":
                cells.append(f"OOM (peak {fmt(r.get('peak_memory_gib'), '.1f')} GiB)")
            else:
                cells.append(status_text(r))
        rows.append([model, f"{analytic_params(SHAPES[model])['total'] / 1e9:.2f}B", *cells])
    return render(header, rows, left=2)


def summary(report: dict) -> str:
    """The tables printed at the end of a run, from the report's data alone (`scale.py --print` shows them again)."""
    settings, peak = report["settings"], report["peak_bf16_flops"]
    lines = [""]
    if report["runs"]:
        lines += [comparison_table(report["runs"], bool(report["environment"]["gpu"])), ""]
        lines.append(
            "tokens/s: real (non-pad) tokens over the steps after warm-up; MFU: model FLOPs per token "
            "(6N + 12*L*H*Q*T, N = all parameters except an untied input embedding, T = sum(len^2)/sum(len) over the "
            f"documents) x tokens/s / dense bf16 peak ({fmt(peak and peak / 1e12, ',.1f', 'n/a')} TFLOPS); "
            "peak GiB: torch.cuda.max_memory_allocated"
        )
        lines += [
            f"warning: {c['model']} {c['label']}: real tokens/step differ from plain by {c['difference']:.1%}"
            for c in report["budget_checks"]
            if not c["ok"]
        ]
    if report["fit_table"]:
        search = "; --quick: per method, from the largest shape down until one fits" if settings.get("quick") else ""
        lines += [
            "",
            f"fit table ({settings['fit_steps']} steps, micro-batch 1 row of {settings['seq_len']} tokens, "
            f"accumulation to {settings['tokens_per_step']:,} tokens/step; gradient checkpointing, liger, "
            f"8-bit AdamW for full, LoRA r=16 on all linear layers, QLoRA 4-bit NF4 base; "
            f"memory = peak allocated{search}):",
            fit_table(report["fit_table"]),
        ]
    return "\n".join(lines)


def print_saved(paths: list[str]) -> int:
    """Print the summary tables of saved reports (`scale.py --print`); runs nothing."""
    for i, path in enumerate(paths):
        report = json.loads(Path(path).read_text())
        env = report["environment"]
        state = "partial: the invocation stopped before its end" if report.get("partial") else "complete"
        print(("\n" if i else "") + f"{path}: {env['gpu'] or env['cpu']}, {report['created']}, {state}")
        print(summary(report))
    return 0
