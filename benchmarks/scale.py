#!/usr/bin/env python
"""Throughput at real model shapes: our pipeline (finetune.run.train) against a plain Hugging Face Trainer, at equal
real tokens per optimizer step, plus a table of which model sizes and methods fit on this GPU.

This file is the command line and main(); the pieces live next to it: scale_shapes.py (model shapes, parameter counts,
FLOPs, MFU), scale_plan.py (data, token budget, run configs), scale_experiments.py (the comparison of a model, the fit
table), scale_runs.py (the cases, as a run's subprocess runs them), scale_clock.py (the timing callback),
scale_report.py (JSON, tables).

    .venv/bin/python -m benchmarks scale --help
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.cli import add_out, add_set, parser
from benchmarks.machine import environment, gpu_visible
from benchmarks.scale_experiments import Invocation, compare_model, run_fit_table
from benchmarks.scale_plan import LEVERS, parse_sets
from benchmarks.scale_report import Report, header_line, print_saved, summary
from benchmarks.scale_shapes import FIT_MODELS, SHAPES, peak_flops

DESCRIPTION = """\
Train real model shapes (built from their published config.json numbers, random weights, no download) on synthetic
chat data and compare training throughput at EQUAL REAL (non-pad) TOKENS PER OPTIMIZER STEP:

  ours      finetune.run.train(cfg, run_dir): examples packed into rows of --seq-len tokens (data.max_length), the
            rows of one step in one micro-batch, plus the levers of each --variants entry
  plain     benchmarks/plain_trainer.py: a stock transformers Trainer as the examples write it: apply_chat_template,
            no packing, DataCollatorForSeq2Seq dynamic padding, sdpa attention, default optimizer (adamw_torch_fused),
            --plain-micro-batch examples per micro-batch and gradient accumulation up to the same tokens per step

Data: conversations of random vocabulary words (one word = one token) under the project's chat template, with
log-normal lengths (median about --median-tokens, shape --sigma, capped at min(4096, --seq-len)); a real
`tokenizers` tokenizer with exactly the model's vocabulary size. The median is scaled (0.8-1.2 in practice) so that
plain's micro-batch x accumulation examples carry ours' real tokens per step (rows per step x average packed row)
within 1%. The plain run's data is exactly --steps optimizer steps of examples (one epoch); ours packs the same
examples. Both bf16 mixed precision on a GPU (fp32 on CPU), fp32 weights
(full fine-tuning), no eval, no checkpoints, final save skipped, constant learning rate.

Measured: tokens/s = real tokens / seconds over the steps after --warmup-steps (a callback in both trainers
synchronizes the GPU and reads each trainer's own real-token count at the end of step k and at the last step);
"steady" tokens/s leaves out the timed steps that took over 3x the median step (stalls: a recompilation, an allocator
retry), whose count and seconds are reported; setup s = data, tokenizer, model and Trainer before the first step;
peak GPU memory = torch.cuda.max_memory_allocated() in the run's process; MFU = model FLOPs per token x tokens/s /
the GPU's dense BF16 peak, with FLOPs per token = 6N + 12*L*H*Q*T (full) or 4N + 2*N_trainable + 12*L*H*Q*T
(LoRA: frozen weights get no weight gradient), where N counts every parameter except an untied input embedding table
(a tied one counts once, as the LM head), L layers, H query heads, Q head dim, and T = sum(len^2) / sum(len) over the
documents trained (each token attends within its own document, packed or padded). MFU is n/a on CPU and on GPUs
missing from the peak table. Each run is a fresh subprocess with a time limit."""

EPILOG = """\
examples:
  # CPU smoke test (what tests/test_benchmark_scale.py runs; about 30 s on 2 cores, no timing claims):
  .venv/bin/python -m benchmarks scale --model tiny --steps 3 --seq-len 256 --median-tokens 40 --tokens-per-step 512
  python -m benchmarks scale                            # GPU: qwen2.5-0.5b and llama-3.2-1b, default variants (~7 min)
  python -m benchmarks scale --no-compare --fit-table   # GPU: only the fit table (~7.5 min on an H100)
  python -m benchmarks scale --fit-table                # both (~15 min on an H100)
  python -m benchmarks scale --quick                    # gpu_check.sh's trimmed comparison (~4 min planned)
  python -m benchmarks scale --quick --no-compare --fit-table       # and its trimmed fit table (~2.5 min planned)
  python -m benchmarks scale --print benchmarks/results/scale.json  # a saved report's tables again; runs nothing
  python -m benchmarks scale --model qwen2.5-0.5b --variants base,+flex,+liger,+flex+liger+compile

variants: comma-separated; each is "base" or base plus levers joined with "+" (e.g. "+flex+liger"). base = packing
with sdpa attention and the auto optimizer (adamw_fused on GPU). Levers:
""" + "\n".join(f"  {k:8} {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in LEVERS.items())


# Defaults by machine. --quick trims the GPU ones for gpu_check.sh (planned in benchmarks/README.md from the per-run
# times of the H100 runs of 2026-11-25): 6 steps instead of 10, no +flex variant (95 s and 44 s, most of it
# compilation), and the plain Trainer of llama-3.2-1b starts at micro-batch 2 (at 4 it ran out of memory after 40 s)
# take the comparison from about 7 minutes to about 4; run_fit_table's search takes the fit table from 7.5 to 2.5.
DEFAULTS = {"plain_micro_batch": 4, "plain_micro_batch_start": {}, "worker_timeout": 300}
GPU_DEFAULTS = {
    "model": ["qwen2.5-0.5b", "llama-3.2-1b"],
    "steps": 10,
    "warmup_steps": 3,
    "variants": "base,+flex,+flex+liger",
}
CPU_DEFAULTS = {"model": ["tiny"], "steps": 3, "warmup_steps": 1, "variants": "base"}
QUICK_GPU = {
    "steps": 6,
    "variants": "base,+flex+liger",
    "plain_micro_batch_start": {"llama-3.2-1b": 2},
    "worker_timeout": 120,
}


def settings(args) -> dict:
    """The invocation's settings, as the JSON report records them."""
    return {
        "models": [] if args.no_compare else args.model,
        "variants": args.variants,
        "overrides": args.overrides,
        "seq_len": args.seq_len,
        "tokens_per_step": args.tokens_per_step,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "median_tokens": args.median_tokens,
        "sigma": args.sigma,
        "plain_micro_batch": args.plain_micro_batch,
        "plain_micro_batch_start": args.plain_micro_batch_start,
        "seed": args.seed,
        "fit_table": args.fit_table,
        "fit_models": args.fit_models if args.fit_table else [],
        "fit_steps": args.fit_steps,
        "worker_timeout_s": args.worker_timeout,
        "quick": args.quick,
        "no_plain": args.no_plain,
        "profile": args.profile,
    }


def main(args) -> int:
    if args.print_files:
        return print_saved(args.print_files)
    out = Path(args.out)
    work, logs = out.parent / "scale-work", out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    overrides = parse_sets(args.overrides)
    env = environment()
    on_gpu = bool(env["gpu"])
    peak = peak_flops(env["gpu"]) if on_gpu else None
    report = Report(out, env, settings(args), peak)
    print(header_line(env, report.settings, peak), flush=True)
    run = Invocation(args, overrides, work, logs, report, on_gpu)
    if not args.no_compare:
        for name in args.model:
            compare_model(name, run)
    if args.fit_table:
        run_fit_table(run)
    print(summary(report.save(partial=False)))
    print(f"wrote {out} ({time.time() - report.started:.0f} s in all)")
    return 0


def parse_args(argv=None):
    p = parser("scale", DESCRIPTION, EPILOG)
    runs = p.add_argument_group("what runs")
    runs.add_argument(
        "--model",
        action="append",
        choices=sorted(SHAPES),
        help="model shape to compare, repeatable (default: qwen2.5-0.5b and llama-3.2-1b on a GPU, tiny on CPU)",
    )
    runs.add_argument(
        "--variants",
        help="comma-separated lever sets of ours, each run separately, "
        'e.g. "base,+flex,+flex+liger,+flex+liger+compile" '
        "(default: base,+flex,+flex+liger on a GPU, base,+flex+liger with --quick, base on CPU); "
        "see the list of levers below",
    )
    add_set(
        runs,
        "config override for ours (every variant and the fit table), repeatable, e.g. --set training.liger_kernel=true",
    )
    runs.add_argument(
        "--quick",
        action="store_true",
        help="the trimmed preset of benchmarks/gpu_check.sh: on a GPU 6 steps (3 warm-up), variants base,+flex+liger, "
        "llama-3.2-1b's plain Trainer from micro-batch 2 and 120 s per run; the fit table tries each method from the "
        "largest --fit-models shape down and stops at the first that fits. Flags given explicitly still win. "
        "Planned times: benchmarks/README.md",
    )
    runs.add_argument(
        "--no-plain",
        action="store_true",
        help="run only ours' variants (no plain Trainer, no ratio): a shape too big for the plain Trainer, a profile",
    )
    budget = p.add_argument_group("steps, data and the token budget")
    budget.add_argument(
        "--steps",
        type=int,
        help="optimizer steps per run, warm-up included (default: 10 on GPU, 6 with --quick, 3 on CPU)",
    )
    budget.add_argument(
        "--warmup-steps",
        type=int,
        help="steps left out of tokens/s (compilation, autotuning; default 3 on GPU, 1 on CPU)",
    )
    budget.add_argument(
        "--seq-len", type=int, default=4096, help="packed row length for ours, data.max_length (default 4096)"
    )
    budget.add_argument(
        "--tokens-per-step",
        type=int,
        help="real tokens per optimizer step for both pipelines (default: 4 rows' worth, 4 x --seq-len)",
    )
    budget.add_argument(
        "--plain-micro-batch",
        type=int,
        metavar="N",
        help="per-device batch of the plain Trainer (default 4, for every model: with --quick on a GPU llama-3.2-1b "
        "starts at 2; halved after an out-of-memory); gradient accumulation makes up the tokens per step and the "
        "lengths' median is scaled so that the budgets match within 1%%",
    )
    budget.add_argument("--median-tokens", type=float, default=400, help="median tokens per example (default 400)")
    budget.add_argument("--sigma", type=float, default=1.0, help="log-normal shape of the lengths (default 1.0)")
    budget.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    fit = p.add_argument_group("the fit table")
    fit.add_argument("--fit-table", action="store_true", help="also try each --fit-models shape x {full, lora, qlora}")
    fit.add_argument("--no-compare", action="store_true", help="skip the ours/plain comparison (with --fit-table)")
    fit.add_argument(
        "--fit-models",
        default=",".join(FIT_MODELS),
        help=f"comma-separated shapes for the fit table (default {','.join(FIT_MODELS)})",
    )
    fit.add_argument(
        "--fit-steps", type=int, default=3, help="optimizer steps per fit-table run, 1 of them warm-up (default 3)"
    )
    out = p.add_argument_group("profile, limits and output")
    out.add_argument(
        "--profile",
        metavar="DIR",
        help="profile 2 steps after warm-up of each ours run with torch.profiler: DIR/<model>-<variant>/ gets "
        "trace.json.gz, ops.txt and breakdown.json (kernel time by kind, GPU-busy share); such runs are labelled "
        "'profiled' (the profiler's overhead is in their tokens/s)",
    )
    out.add_argument(
        "--worker-timeout",
        type=float,
        metavar="S",
        help="seconds each run's subprocess may take (default 300, 120 with --quick on a GPU)",
    )
    add_out(out, "scale", "; logs go to <its folder>/logs/")
    out.add_argument(
        "--print",
        dest="print_files",
        nargs="+",
        metavar="FILE.json",
        help="print the tables of saved reports (this script's --out files) again and exit; runs nothing",
    )
    args = p.parse_args(argv)
    if args.print_files:
        return args
    on_gpu = gpu_visible()
    defaults = {
        **DEFAULTS,
        **(GPU_DEFAULTS if on_gpu else CPU_DEFAULTS),
        **(QUICK_GPU if on_gpu and args.quick else {}),
    }
    if args.plain_micro_batch is not None:  # given: every model's plain Trainer starts there
        defaults["plain_micro_batch_start"] = {}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.tokens_per_step = args.tokens_per_step or 4 * args.seq_len
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variants:
        bad = [t for t in v.split("+") if t and t != "base" and t not in LEVERS]
        if bad or (v.split("+")[0] not in ("", "base")):
            p.error(f"--variants {v}: unknown lever {bad or v}; allowed: base, then +{', +'.join(LEVERS)}")
    args.fit_models = [m.strip() for m in args.fit_models.split(",") if m.strip()]
    for m in args.fit_models:
        if m not in SHAPES:
            p.error(f"--fit-models {m}: unknown shape; allowed: {', '.join(SHAPES)}")
    if args.seq_len < 64:
        p.error("--seq-len must be >= 64")
    if args.steps < 2:
        p.error("--steps must be >= 2 (one warm-up step at least)")
    if args.warmup_steps >= args.steps:
        p.error(f"--warmup-steps {args.warmup_steps} must be less than --steps {args.steps}")
    if args.fit_steps < 2:
        p.error("--fit-steps must be >= 2")
    args.out = str(Path(args.out).resolve())
    args.profile = str(Path(args.profile).resolve()) if args.profile else None
    return args


if __name__ == "__main__":  # `python benchmarks/scale.py` as before `python -m benchmarks scale`
    sys.exit(main(parse_args()))
