"""The `finetune` command: train, eval, generate, export, serve, reproduce.

Errors the user can fix (bad config, bad data) print one line and exit with code 2; a GPU lost mid-run is one line
with its cause and fix, exit 69; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path

from finetune.errors import UserError, gpu_lost
from finetune.runmodel import GENERATE_MAX_NEW_TOKENS, load_model, load_run, require_generative
from finetune.urls import strip_userinfo

EPILOG = """examples:
  finetune train configs/default.yaml
  finetune train configs/default.yaml --set training.epochs=2 --set training.learning_rate=1e-3
  finetune train configs/default.yaml --resume               # continue the latest runs/default* after Ctrl-C
  finetune train configs/default.yaml --output-dir runs/exp1 --resume
  torchrun --nproc-per-node 2 -m finetune train configs/default.yaml     # several processes, same global batch
  finetune eval runs/default
  finetune generate runs/default "reverse: hello"
  finetune export runs/default --out exports/default          # transformers folder; --format gguf for llama.cpp
  finetune serve runs/default --port 8000                       # OpenAI-compatible API on 127.0.0.1
  finetune reproduce runs/default

exit codes: 0 ok; 2 bad config, data or run directory; 73 the run directory cannot be created; 74 a write failed
(disk full, read-only: the last complete checkpoint is intact); 75 the run directory is busy (another run writes it);
69 the GPU stopped answering mid-run (a container that lost its GPU: the line says the fix) or the tracking server
does not answer; 128+N stopped by signal N (a checkpoint was saved; use --resume)"""

COMPARED = ["steps", "train_loss", "eval_loss", "eval_accuracy"]  # what `reproduce` requires to match exactly


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune",
        description="Fine-tune language models reproducibly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train from a YAML config", description="Train from a YAML config.")
    t.add_argument("config", help="YAML config file, e.g. configs/default.yaml")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted), repeatable: --set training.epochs=3",
    )
    t.add_argument("--output-dir", help="run directory (default: runs/<name>, or runs/<name>-<n> if that exists)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint that validates (default run dir: the latest runs/<name>*); "
        "refused when the config differs from the run's manifest.json",
    )
    t.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue although the config differs from the run's (the differences are printed)",
    )
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    e = sub.add_parser("eval", help="evaluate a finished run's model on its eval data")
    e.add_argument("run_dir")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    g = sub.add_parser("generate", help="greedy-generate a completion from a run's model")
    g.add_argument("run_dir")
    g.add_argument("prompt", help="the user message (chat-format runs) or raw prompt text")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=GENERATE_MAX_NEW_TOKENS,
        help=f"generation length limit (default {GENERATE_MAX_NEW_TOKENS})",
    )
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    x = sub.add_parser(
        "export",
        help="write a run's model for other tools: transformers folder (LoRA merged) or GGUF",
        description="Write a finished run's model as a folder that other tools load (docs/serve.md).",
    )
    x.add_argument("run_dir")
    x.add_argument("--out", help="target folder (default: beside the run, <run>-hf or <run>-gguf)")
    x.add_argument("--format", choices=["hf", "gguf"], default="hf", help="hf: transformers/safetensors (default); "
                   "gguf: one file for llama.cpp and Ollama")  # fmt: skip
    x.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="hf: weights' dtype (default: as trained)")
    x.add_argument("--quant", choices=["f16", "q8_0"], default="f16", help="gguf: tensor type (default f16)")
    x.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    x.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    v = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP API for a run's or an export's model",
        description="Serve /v1/models, /v1/completions and /v1/chat/completions (streaming too) for a run's model.",
    )
    v.add_argument("model_dir", metavar="RUN_OR_EXPORT", help="a run directory or a finetune export --format hf folder")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "any other needs an API key)")  # fmt: skip
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $FINETUNE_API_KEY)")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    r = sub.add_parser(
        "reproduce", help="re-run a run from its manifest; compare metrics, and the image when both ran in one"
    )
    r.add_argument("run_dir")
    r.add_argument("--output-dir", help="where the re-run goes (default: <run_dir>-reproduce)")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def cmd_train(args) -> int:
    from finetune.config import load_config

    cfg = load_config(args.config, args.overrides)  # before importing torch: config errors answer at once
    body = preference_body(cfg)  # dpo, kto, grpo: every data row checked, before torch and trl are imported
    from finetune.run import train

    if note := no_gpu_note():
        print(note, flush=True)
    run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(cfg.name, args.resume)
    _, code = train(
        cfg, run_dir, resume=args.resume, argv=sys.argv, allow_config_change=args.allow_config_change, body=body
    )
    return code


def preference_body(cfg):
    """The run body of a dpo, kto or grpo config (finetune.prefrun.run_body) after its cheap checks; None for SFT."""
    from finetune.config import PREFERENCE_TASKS

    if cfg.task not in PREFERENCE_TASKS:
        return None
    from finetune.prefdata import check

    check(cfg)
    from finetune.prefrun import run_body

    return run_body


def no_gpu_note() -> str | None:
    """One line when a CUDA build (the cuda image, or torch built for CUDA) sees no GPU: the run goes on, on the CPU,
    and without the line that is easy to miss (a container started without --gpus looks like a slow GPU run)."""
    import torch

    labels = json.loads(os.environ.get("FINETUNE_IMAGE_LABELS") or "null") or {}
    cuda_build = labels.get("org.finetune.variant") == "cuda" or torch.version.cuda
    if not cuda_build or torch.cuda.is_available() or os.environ.get("RANK", "0") != "0":
        return None
    where = "the cuda image" if labels.get("org.finetune.variant") == "cuda" else "torch"
    return (
        f"[finetune] no GPU is visible: {where} (CUDA {torch.version.cuda or '?'}) runs on the CPU; on a GPU host "
        "start it with a GPU (invoke train --gpu, or docker run --gpus all)"
    )


def default_run_dir(name: str, resume: bool, root: Path = Path("runs")) -> Path:
    """runs/<name>, or runs/<name>-<n> when taken; with --resume, the most recent of them."""
    runs = [p for p in root.glob(f"{name}*") if p.is_dir() and re.fullmatch(rf"{re.escape(name)}(-\d+)?", p.name)]
    if resume:
        return max(runs, key=lambda p: p.stat().st_mtime) if runs else root / name
    n, candidate = 1, root / name
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def cmd_eval(args) -> int:
    from finetune.config import PREFERENCE_TASKS
    from finetune.evaluate import task_metric
    from finetune.resolve import resolve_metric
    from finetune.rundata import load_eval_data

    run_dir = Path(args.run_dir)
    manifest, cfg = load_run(run_dir)
    metric = (manifest.get("resolved") or {}).get("metric") or resolve_metric(cfg)  # as the run decided it
    if cfg.task in PREFERENCE_TASKS:  # the reference model or the reward functions: finetune.prefeval
        from finetune.prefeval import rescore
        from finetune.rundata import eval_source

        print(json.dumps(rescore(cfg, run_dir, eval_source(cfg, run_dir, manifest), metric), indent=2))
        return 0
    model, tokenizer = load_model(run_dir, cfg.task)
    evals, labels = load_eval_data(cfg, run_dir, manifest, model.config.id2label)
    if not evals:
        raise UserError(f"{run_dir}: the run has no data.eval_file to evaluate on")
    acc, samples = task_metric(model, tokenizer, cfg, metric, evals, labels)
    n = 0 if metric == "none" else len(evals[: cfg.eval.max_samples])
    print(json.dumps({"eval_accuracy": acc, "metric": metric, "n": n}, indent=2))
    return 0


def cmd_generate(args) -> int:
    from finetune.evaluate import generate

    run_dir = Path(args.run_dir)
    _, cfg = load_run(run_dir)
    require_generative(run_dir, cfg.task, "generate")
    model, tokenizer = load_model(run_dir, cfg.task)
    if tokenizer.chat_template:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
        )
        print(generate(model, tokenizer, [prompt], args.max_new_tokens)[0])
    else:
        print(generate(model, tokenizer, [args.prompt], args.max_new_tokens, add_special_tokens=True)[0])
    return 0


def cmd_export(args) -> int:
    from finetune.export import export_run

    if args.format == "hf" and args.quant != "f16":
        raise UserError("--quant applies to --format gguf; --format hf takes --dtype")
    if args.format == "gguf" and args.dtype:
        raise UserError("--dtype applies to --format hf; --format gguf takes --quant f16|q8_0")
    out = export_run(Path(args.run_dir), args.out, args.format, args.dtype, args.quant, args.force)
    print(f"exported {args.run_dir} ({args.format}) to {out}")
    return 0


def cmd_serve(args) -> int:
    from finetune.serve import serve

    return serve(Path(args.model_dir), args.host, args.port, args.api_key or os.environ.get("FINETUNE_API_KEY"))


def cmd_reproduce(args) -> int:
    from finetune.manifest import container, image_verdict
    from finetune.run import train

    run_dir = Path(args.run_dir)
    manifest, cfg = load_run(run_dir)
    before_path = run_dir / "summary.json"
    if not before_path.exists():
        raise UserError(f"{run_dir}: no summary.json to compare with (the run did not finish)")
    before = json.loads(before_path.read_text())
    if manifest.get("git", {}).get("dirty"):
        print("[finetune] note: the original run was made from a dirty tree; code may differ", flush=True)
    image_line, same_image = image_verdict(manifest.get("container"), container())
    print(f"[finetune] {image_line}", flush=True)
    out = Path(args.output_dir or f"{str(run_dir).rstrip('/')}-reproduce")
    after, code = train(cfg, out, argv=sys.argv, body=preference_body(cfg))
    if code:
        return code
    rows = [(k, before.get(k), after.get(k), before.get(k) == after.get(k)) for k in COMPARED]
    print(f"\n{'metric':<15}{'original':>22}{'reproduced':>22}  match")
    for k, a, b, same in rows:
        print(f"{k:<15}{a!s:>22}{b!s:>22}  {'yes' if same else 'NO'}")
    ok = all(r[3] for r in rows)
    print("reproduced: metrics match exactly" if ok else "NOT reproduced: metrics differ")
    print(image_line)  # again under the table: the verdict's two halves together
    return 0 if ok and same_image is not False else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers = {
        "train": cmd_train,
        "eval": cmd_eval,
        "generate": cmd_generate,
        "export": cmd_export,
        "serve": cmd_serve,
        "reproduce": cmd_reproduce,
    }
    try:
        return handlers[args.command](args)
    except Exception as e:  # a UserError, or a lost GPU outside the trainer's steps (loading, saving): one line
        error = e if isinstance(e, UserError) else gpu_lost(e)
        _close_progress_bars()
        if error is None or args.debug:  # the traceback, without the password a URL in it may carry
            print(strip_userinfo("".join(traceback.format_exception(e))), file=sys.stderr, end="")
            return 1
        print(f"finetune: error: {strip_userinfo(str(error))}", file=sys.stderr)
        return error.exit_code


def _close_progress_bars() -> None:
    """Finish an interrupted progress bar first: otherwise tqdm redraws it at exit, after (below) the error line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
