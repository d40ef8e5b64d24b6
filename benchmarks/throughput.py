"""Throughput benchmark: our pipeline (finetune.run.train) against a plain Hugging Face Trainer, same model and data.

    .venv/bin/python -m benchmarks throughput --help

Its cases are CASES, "ours" and "plain": run_case runs one in its own subprocess (benchmarks.worker); the parent plans
the token budget both train at, alternates the cases over --repeat, and reports their medians (throughput_report.py).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import report, worker
from benchmarks.cli import add_out, add_set, parser
from benchmarks.machine import REPO, environment
from benchmarks.throughput_report import LABELS, print_summary, summarize

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
  .venv/bin/python -m benchmarks throughput                        # the config's epochs (10 for default.yaml)
  .venv/bin/python -m benchmarks throughput --epochs 1             # quick check
  .venv/bin/python -m benchmarks throughput --repeat 3 --out /tmp/t.json
  .venv/bin/python -m benchmarks throughput --set training.save_steps=100000   # no checkpoints in either loop

Timings are only as quiet as the machine: close other work, and use --repeat 3 or more on a shared host.
Per-run logs go to <out folder>/logs/."""


def load_cfg(config: str, overrides: list[str], epochs: float | None):
    from finetune.config import load_config

    return load_config(config, [*overrides, *([f"training.epochs={epochs}"] if epochs is not None else [])])


# --- the cases, each in its own subprocess (benchmarks.worker) -----------------------------------------------------


def run_case(spec: dict) -> dict:
    """One case: spec has case ("ours" or "plain"), config, overrides, epochs, threads and examples_per_step."""
    import torch

    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    cfg = load_cfg(spec["config"], spec["overrides"], spec["epochs"])
    result = CASES[spec["case"]](cfg, spec)
    result["tokens_per_step"] = result["tokens_trained"] / result["steps"] if result["steps"] else None
    result["torch_threads"] = torch.get_num_threads()
    return result


def run_ours(cfg, spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks import plain_trainer
    from finetune.run import train
    from finetune.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        run_dir = Path(tmp) / "run"
        summary, code = train(cfg, run_dir, argv=["benchmarks throughput"])
        if code:
            raise RuntimeError(f"finetune run stopped with exit code {code}")
        tokenizer = load_tokenizer(str(run_dir / "tokenizer"))
        common = None
        if cfg.data.eval_file:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            model = AutoModelForCausalLM.from_pretrained(run_dir / "model").to(device)
            conversations = plain_trainer.read_chat_jsonl(cfg.data.eval_file)
            examples = plain_trainer.tokenize_all(tokenizer, conversations, cfg.data.max_length)
            common = plain_trainer.completion_loss(model, tokenizer, examples)
    keys = ["tokens_trained", "steps", "train_seconds", "tokens_per_second", "train_loss", "eval_loss"]
    return {
        **{k: summary[k] for k in keys},
        "eval_loss_common": common,
        "eval_accuracy": summary.get("eval_accuracy"),
        "wall_seconds": summary["wall_seconds"],
        "vocab_sha": plain_trainer.vocab_sha(tokenizer),
    }


def run_plain(cfg, spec: dict) -> dict:
    from benchmarks import plain_trainer

    with tempfile.TemporaryDirectory(prefix="bench-plain-") as tmp:
        return plain_trainer.train_plain(cfg, spec["examples_per_step"], Path(tmp) / "run")


CASES = {"ours": run_ours, "plain": run_plain}  # each case: (config, spec) -> its result, in its own process


# --- the parent: plan the token budget, run the cases, report ------------------------------------------------------


def token_budget(cfg) -> dict:
    """Real tokens per optimizer step in our pipeline, and the plain Trainer's examples per step that match it."""
    from benchmarks import plain_trainer
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


def run(case: str, args, examples_per_step: int, log_path: Path) -> dict:
    """One case in its own subprocess; a failed one stops the benchmark with the end of its log."""
    spec = {"module": "benchmarks.throughput", "case": case, "examples_per_step": examples_per_step}
    spec |= {k: getattr(args, k) for k in ("config", "overrides", "epochs", "threads")}
    result = worker.spawn(spec, log_path)
    if result["status"] != "ok":
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{LABELS[case]} run failed ({result['error']}); end of {log_path}:\n{tail}")
    return result


def main(args) -> int:
    os.chdir(REPO)  # the config's data paths are relative to the repository root
    cfg = load_cfg(args.config, args.overrides, args.epochs)
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
        for name in ["ours", "plain"] if i % 2 == 0 else ["plain", "ours"]:
            log_path = logs / f"throughput-{i + 1}-{name}.log"
            r = run(name, args, budget["plain_examples_per_step"], log_path)
            r.update(pipeline=name, repeat=i + 1, loadavg_1m_after=os.getloadavg()[0])
            runs.append(r)
            print(
                f"[bench] run {i + 1}/{args.repeat} {LABELS[name]:<15} {r['tokens_per_second']:>9,.0f} tokens/s"
                f"  {r['train_seconds']:7.1f} s train  {r['steps']} steps"
                f"  eval loss {report.fmt(r['eval_loss'], '.4f')}"
                f"  (log {log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path})",
                flush=True,
            )
    data = summarize(args, cfg, env, budget, runs, load_before)
    print_summary(data)
    report.write(out, data)
    print(f"wrote {out}")
    return 0


def parse_args(argv=None):
    p = parser("throughput", DESCRIPTION, EPILOG)
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
    add_out(p, "throughput")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch intra-op threads in both runs (default: torch's own choice, usually one per core); "
        "on a busy shared host fewer threads than cores can be much faster for both",
    )
    add_set(p, "override a config key for both pipelines, repeatable (as in `finetune train --set`)")
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


if __name__ == "__main__":  # `python benchmarks/throughput.py` as before `python -m benchmarks throughput`
    sys.exit(main(parse_args()))
