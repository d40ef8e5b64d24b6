#!/usr/bin/env python
"""Throughput benchmark: our pipeline (finetune.run.train) against a plain Hugging Face Trainer, same model and data.

Run from anywhere:  .venv/bin/python benchmarks/throughput.py --help
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # plain_trainer

PIPELINES = {"ours": "ours (finetune)", "plain": "plain Trainer"}

DESCRIPTION = """\
Train the same model on the same data twice, in one invocation, and compare training throughput:

  ours           finetune.run.train(cfg, run_dir): examples packed into rows of data.max_length tokens,
                 training.batch_size rows per optimizer step; a normal run (checkpoints, eval, metrics, and the
                 exact-match generation eval before and after training, which counts in wall s, not train s).
  plain Trainer  benchmarks/plain_trainer.py, written the way the transformers examples do it: apply_chat_template,
                 loss on the completion only, no packing, DataCollatorForSeq2Seq dynamic padding, a stock Trainer
                 with default dataloader settings.

Fairness: same tiny model built from the config's model.config with the same seed, same tokenizer (vocabulary
checked equal), same learning rate, schedule, warmup and epochs, the same in-loop work (log every logging_steps,
evaluate each epoch, checkpoint every save_steps). The plain Trainer's examples per step is computed from the
measured average tokens per example so that both train on the same number of real (non-pad) tokens per optimizer
step; both tokens/step figures are printed. tokens/s counts real tokens only (ours: its own count; plain: the
Trainer's include_num_input_tokens_seen="non_padding", i.e. the attention-mask sum over the batches trained) and
divides by train_runtime (the training loop only), so it does not matter that ours drops the last partial batch
of each epoch and the plain Trainer does not (its default). Each run is a fresh subprocess; with --repeat the order
alternates (ours, plain, plain, ours, ...) and the medians are reported. Each side's final eval loss is reported
(its own Trainer.evaluate, averaged over differently shaped batches, and "same eval": the per-token completion loss
on the unpacked eval set, computed the same way for both) so the reader can see the quality is comparable."""

EPILOG = """\
examples:
  .venv/bin/python benchmarks/throughput.py                        # the config's epochs (10 for default.yaml)
  .venv/bin/python benchmarks/throughput.py --epochs 1             # quick check
  .venv/bin/python benchmarks/throughput.py --repeat 3 --out /tmp/t.json
  .venv/bin/python benchmarks/throughput.py --set training.save_steps=100000   # no checkpoints in either loop

Timings are only as quiet as the machine: close other work, and use --repeat 3 or more on a shared host.
Per-run logs go to <out folder>/logs/."""


# --- helpers shared by the parent and the workers ------------------------------------------------------------------


def load_cfg(args):
    from finetune.config import load_config

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    return load_config(args.config, overrides)


def cpu_name() -> str:
    from finetune.manifest import cpu_model

    return cpu_model()


def environment() -> dict:
    import accelerate
    import torch
    import transformers

    gpu = torch.cuda.is_available()

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "cuda": torch.version.cuda if gpu else None,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "src")),
    }


# --- workers (one subprocess per run) -----------------------------------------------------------------------------


def run_ours(cfg) -> dict:
    import plain_trainer
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.run import train
    from finetune.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        run_dir = Path(tmp) / "run"
        summary, code = train(cfg, run_dir, argv=["benchmarks/throughput.py"])
        if code:
            raise SystemExit(f"finetune run stopped with exit code {code}")
        tokenizer = load_tokenizer(str(run_dir / "tokenizer"))
        common = None
        if cfg.data.eval_file:
            model = AutoModelForCausalLM.from_pretrained(run_dir / "model").to(
                "cuda" if torch.cuda.is_available() else "cpu"
            )
            examples = plain_trainer.tokenize_all(
                tokenizer, plain_trainer.read_chat_jsonl(cfg.data.eval_file), cfg.data.max_length
            )
            common = plain_trainer.completion_loss(model, tokenizer, examples)
    return {
        "tokens_trained": summary["tokens_trained"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "tokens_per_second": summary["tokens_per_second"],
        "train_loss": summary["train_loss"],
        "eval_loss": summary["eval_loss"],
        "eval_loss_common": common,
        "eval_accuracy": summary.get("eval_accuracy"),
        "wall_seconds": summary["wall_seconds"],
        "vocab_sha": plain_trainer.vocab_sha(tokenizer),
    }


def run_plain(cfg, examples_per_step: int) -> dict:
    import plain_trainer

    with tempfile.TemporaryDirectory(prefix="bench-plain-") as tmp:
        return plain_trainer.train_plain(cfg, examples_per_step, Path(tmp) / "run")


def worker(args) -> None:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = load_cfg(args)
    result = run_ours(cfg) if args.worker == "ours" else run_plain(cfg, args.examples_per_step)
    result["tokens_per_step"] = result["tokens_trained"] / result["steps"] if result["steps"] else None
    result["torch_threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result))


# --- the parent: plan the token budget, run the workers, report --------------------------------------------------


def token_budget(cfg) -> dict:
    """Real tokens per optimizer step in our pipeline, and the plain Trainer's examples per step that match it."""
    import plain_trainer

    from finetune import rundata

    if cfg.task != "causal_lm" or not cfg.model.config:
        raise SystemExit("this benchmark compares causal_lm runs whose model is built from model.config")
    train, evals, labels = rundata.load_data(cfg)
    if train[0].messages is None:
        raise SystemExit('the plain Trainer baseline expects chat data ({"messages": [...]})')
    tokenizer = rundata.make_tokenizer(cfg, Path(tempfile.gettempdir()) / "bench-no-run-dir", False, train + evals)
    rows, _, _ = rundata.make_datasets(cfg, tokenizer, train, evals, labels)
    row_tokens = sum(len(r["input_ids"]) for r in rows)
    rows_per_step = cfg.training.batch_size
    ours_per_step = rows_per_step * row_tokens / len(rows)

    plain_tok = plain_trainer.make_tokenizer([r.messages for r in train + evals])
    examples = plain_trainer.tokenize_all(plain_tok, [r.messages for r in train], cfg.data.max_length)
    example_tokens = sum(len(e["input_ids"]) for e in examples)
    avg = example_tokens / len(examples)
    per_step = max(1, round(ours_per_step / avg))
    return {
        "ours_rows": len(rows),
        "ours_rows_per_step": rows_per_step,
        "ours_avg_row_tokens": row_tokens / len(rows),
        "ours_tokens_per_step_planned": ours_per_step,
        "ours_epoch_tokens": row_tokens,
        "plain_examples": len(examples),
        "plain_avg_example_tokens": avg,
        "plain_examples_per_step": per_step,
        "plain_tokens_per_step_planned": per_step * avg,
        "plain_steps_per_epoch": math.ceil(len(examples) / per_step),
        "plain_epoch_tokens": example_tokens,
    }


def spawn(name: str, args, examples_per_step: int, log_path: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--result",
        str(result_path),
        "--config",
        args.config,
        "--examples-per-step",
        str(examples_per_step),
    ]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    for item in args.overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    try:
        with log_path.open("w") as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        if proc.returncode:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
            raise SystemExit(f"{PIPELINES[name]} run failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
        result = json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
    result["process_seconds"] = time.time() - started
    return result


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


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
        [PIPELINES[name]]
        + [fmt(m[key] if key != "steps" or m[key] is None else int(m[key]), spec) for _, key, spec in COLUMNS]
        for name, m in medians.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def main(args) -> int:
    os.chdir(REPO)  # the config's data paths are relative to the repository root
    cfg = load_cfg(args)
    out = Path(args.out)
    logs = out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    budget = token_budget(cfg)
    env = environment()
    load_before = os.getloadavg()
    print(
        f"[bench] {args.config}: {cfg.training.epochs:g} epoch(s), repeat {args.repeat}; "
        f"{env['cpu']} ({env['cpu_count']} CPUs, torch threads {args.threads or env['torch_threads']})"
        + (f", GPU {env['gpu']}" if env["gpu"] else "")
        + f"; load average {load_before[0]:.2f}",
        flush=True,
    )
    print(
        f"[bench] planned real tokens/step: ours {budget['ours_tokens_per_step_planned']:,.1f} "
        f"({budget['ours_rows_per_step']} packed rows of {budget['ours_avg_row_tokens']:.1f} tokens), "
        f"plain {budget['plain_tokens_per_step_planned']:,.1f} ({budget['plain_examples_per_step']} examples of "
        f"{budget['plain_avg_example_tokens']:.2f} tokens)",
        flush=True,
    )

    runs = []
    for i in range(args.repeat):
        order = ["ours", "plain"] if i % 2 == 0 else ["plain", "ours"]
        for name in order:
            log_path = logs / f"throughput-{i + 1}-{name}.log"
            r = spawn(name, args, budget["plain_examples_per_step"], log_path)
            r.update(pipeline=name, repeat=i + 1, loadavg_1m_after=os.getloadavg()[0])
            runs.append(r)
            print(
                f"[bench] run {i + 1}/{args.repeat} {PIPELINES[name]:<15} {r['tokens_per_second']:>9,.0f} tokens/s"
                f"  {r['train_seconds']:7.1f} s train  {r['steps']} steps  eval loss {fmt(r['eval_loss'], '.4f')}"
                f"  (log {log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path})",
                flush=True,
            )

    keys = [k for _, k, _ in COLUMNS] + ["tokens_trained", "train_loss", "process_seconds"]
    medians = {name: {k: median([r.get(k) for r in runs if r["pipeline"] == name]) for k in keys} for name in PIPELINES}
    ratio = medians["ours"]["tokens_per_second"] / medians["plain"]["tokens_per_second"]
    paired = [
        a["tokens_per_second"] / b["tokens_per_second"]
        for a, b in zip([r for r in runs if r["pipeline"] == "ours"], [r for r in runs if r["pipeline"] == "plain"])
    ]
    vocab_same = len({r["vocab_sha"] for r in runs}) == 1

    print()
    print(table(medians))
    print()
    print(
        f"ours / plain: {ratio:.2f}x tokens/s"
        + (
            f" (median of {args.repeat} runs each; per-repeat ratios {', '.join(f'{p:.2f}' for p in paired)})"
            if args.repeat > 1
            else ""
        )
        + f"; train time ratio plain / ours {medians['plain']['train_seconds'] / medians['ours']['train_seconds']:.2f}x"
    )
    print(
        f"real tokens trained: ours {medians['ours']['tokens_trained']:,.0f}, "
        f"plain {medians['plain']['tokens_trained']:,.0f}; same vocabulary: {'yes' if vocab_same else 'NO'}"
    )
    tps = [medians[n]["tokens_per_step"] for n in PIPELINES]
    if abs(tps[0] - tps[1]) > 0.05 * max(tps):
        print(f"warning: tokens/step differ by more than 5% ({tps[0]:,.1f} vs {tps[1]:,.1f})")
    if not vocab_same:
        print("warning: the two pipelines built different vocabularies")
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"(on {env['cpu_count']} CPUs; above that, other processes competed for the CPU)"
    )

    report = {
        "benchmark": "throughput",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "config": args.config,
        "overrides": args.overrides,
        "threads": args.threads,
        "epochs": cfg.training.epochs,
        "repeat": args.repeat,
        "environment": {
            **env,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "torch_threads_per_run": sorted({r["torch_threads"] for r in runs}),
        },
        "token_budget": budget,
        "median": medians,
        "ratio_tokens_per_second": ratio,
        "paired_ratios": paired,
        "same_vocabulary": vocab_same,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="benchmarks/throughput.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default="configs/default.yaml",
        help="run config for both pipelines (default: configs/default.yaml; chat data, model built from model.config)",
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="training epochs for both (default: the config's training.epochs); e.g. 1 for a quick run",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each pipeline N times, alternating the order, and report medians (default 1)",
    )
    p.add_argument(
        "--out",
        default=str(HERE / "results" / "throughput.json"),
        help="where to write the JSON report (default: benchmarks/results/throughput.json)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch intra-op threads in both runs (default: torch's own choice, usually one per core); "
        "on a busy shared host fewer threads than cores can be much faster for both",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for both pipelines, repeatable (as in `finetune train --set`)",
    )
    p.add_argument("--worker", choices=sorted(PIPELINES), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--examples-per-step", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.epochs is not None and args.epochs <= 0:
        p.error("--epochs must be > 0")
    args.config = str(Path(args.config).resolve())
    args.out = str(Path(args.out).resolve())
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.worker:
        os.chdir(REPO)
        worker(args)
    else:
        sys.exit(main(args))
