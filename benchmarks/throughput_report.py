"""The output of `python -m benchmarks throughput`: its JSON report (medians per case, the ratios, every run) and the
lines and table it prints at the end, from the report's data alone."""

from __future__ import annotations

import os

from benchmarks import report

LABELS = {"ours": "ours (finetune)", "plain": "plain Trainer"}  # the two cases compared, as the table names them

COLUMNS = [
    ("tokens/s", "tokens_per_second", ",.0f"),
    ("tokens/step", "tokens_per_step", ",.1f"),
    ("steps", "steps", "d"),
    ("train s", "train_seconds", ".1f"),
    ("wall s", "wall_seconds", ".1f"),
    ("eval loss", "eval_loss", ".4f"),
    ("eval loss (same eval)", "eval_loss_common", ".4f"),
]


def table(medians: dict) -> str:
    header = ["pipeline"] + [c[0] for c in COLUMNS]
    rows = [
        [LABELS[name]]
        + [report.fmt(m[key] if key != "steps" or m[key] is None else int(m[key]), spec) for _, key, spec in COLUMNS]
        for name, m in medians.items()
    ]
    return report.render(header, rows)


def summarize(args, cfg, env: dict, budget: dict, runs: list[dict], load_before) -> dict:
    """The JSON report: medians per case, the ratios, and every run."""
    keys = [k for _, k, _ in COLUMNS] + ["tokens_trained", "train_loss", "process_seconds"]
    medians = {n: {k: report.median([r.get(k) for r in runs if r["pipeline"] == n]) for k in keys} for n in LABELS}
    ours, plain = ([r for r in runs if r["pipeline"] == n] for n in LABELS)
    return {
        **report.stamp("throughput"),
        "config": args.config,
        "overrides": args.overrides,
        "threads": args.threads,
        "epochs": cfg.training.epochs,
        "repeat": args.repeat,
        "environment": {
            **env,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "torch_threads_per_run": sorted({r["torch_threads"] for r in runs}),
        },
        "token_budget": budget,
        "median": medians,
        "ratio_tokens_per_second": medians["ours"]["tokens_per_second"] / medians["plain"]["tokens_per_second"],
        "paired_ratios": [a["tokens_per_second"] / b["tokens_per_second"] for a, b in zip(ours, plain)],
        "same_vocabulary": len({r["vocab_sha"] for r in runs}) == 1,
        "runs": runs,
    }


def print_summary(data: dict) -> None:
    medians, repeat, env = data["median"], data["repeat"], data["environment"]
    print()
    print(table(medians))
    print()
    per_repeat = ", ".join(f"{p:.2f}" for p in data["paired_ratios"])
    print(
        f"ours / plain: {data['ratio_tokens_per_second']:.2f}x tokens/s"
        + (f" (median of {repeat} runs each; per-repeat ratios {per_repeat})" if repeat > 1 else "")
        + f"; train time ratio plain / ours {medians['plain']['train_seconds'] / medians['ours']['train_seconds']:.2f}x"
    )
    print(
        f"real tokens trained: ours {medians['ours']['tokens_trained']:,.0f}, "
        f"plain {medians['plain']['tokens_trained']:,.0f}; "
        f"same vocabulary: {'yes' if data['same_vocabulary'] else 'NO'}"
    )
    tps = [medians[n]["tokens_per_step"] for n in LABELS]
    if abs(tps[0] - tps[1]) > 0.05 * max(tps):
        print(f"warning: tokens/step differ by more than 5% ({tps[0]:,.1f} vs {tps[1]:,.1f})")
    if not data["same_vocabulary"]:
        print("warning: the two pipelines built different vocabularies")
    print(
        f"load average before {env['loadavg_before'][0]:.2f}, after {env['loadavg_after'][0]:.2f} "
        f"(on {env['cpu_count']} CPUs; above that, other processes competed for the CPU)"
    )
