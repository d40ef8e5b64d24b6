"""What benchmarks/scale.py trains: the data and token budget of each model shape, and the config of each run.

plan() writes synthetic chat data so that ours (packed rows) and the plain Trainer (micro-batch x accumulation padded
examples) train equal real (non-pad) tokens per optimizer step, and checks that both pipelines tokenize it to the
planned lengths. run_config() turns a plan into a finetune config; the levers of a variant ("base", "+flex+liger")
and the fit table's memory levers are layers of dotted config keys on top of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks import synthetic
from benchmarks.scale_shapes import SHAPES

# --- levers of our pipeline, by variant token ---------------------------------------------------------------------
LEVERS = {
    "sdpa": {"model.attn_implementation": "sdpa"},
    "flex": {"model.attn_implementation": "flex_attention"},
    "fa2": {"model.attn_implementation": "flash_attention_2"},
    "auto": {"model.attn_implementation": "auto"},
    "liger": {"training.liger_kernel": True},
    "compile": {"training.compile": True},
    "gc": {"training.gradient_checkpointing": True},
    "fused": {"training.optimizer": "adamw_fused"},
    "8bit": {"training.optimizer": "adamw_8bit"},
    "bf16w": {"model.dtype": "bfloat16"},
}
BASE = {"model.attn_implementation": "sdpa", "training.optimizer": "auto"}  # packing only, no lever
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all linear layers
LORA = {"lora.r": 16, "lora.alpha": 32, "lora.target_modules": LORA_TARGETS}
# memory levers for the fit table; micro-batch of 1 packed row, accumulation to the same tokens/step; sdpa attention
# (flex would compile for a minute or more per run: too long for a few steps)
FIT_LEVERS = {
    "full": {
        "training.gradient_checkpointing": True,
        "training.liger_kernel": True,
        "training.optimizer": "adamw_8bit",
    },
    "lora": {"training.gradient_checkpointing": True, "training.liger_kernel": True, "lora.enabled": True, **LORA},
    "qlora": {
        "training.gradient_checkpointing": True,
        "training.liger_kernel": True,
        "lora.enabled": True,
        "lora.quantization": "4bit",
        **LORA,
    },
}
FIT_METHODS = list(FIT_LEVERS)


# --- data and the token budget ------------------------------------------------------------------------------------


def pack_rows(lengths: list[int], seq_len: int) -> list[int]:
    """Real tokens per row when finetune.features.pack packs examples of these lengths (its own FFD, on stand-ins)."""
    from finetune import features

    rows = features.pack([{"input_ids": [0] * n, "labels": [0] * n} for n in lengths], seq_len)
    return [len(r["input_ids"]) for r in rows]


def plan(name: str, steps: int, args, work: Path, micro: int | None = None) -> dict:
    """Tokenizer, data file and token budget for one model shape: ours' rows per step, plain's examples per step
    (micro-batch x accumulation) and the data size (exactly `steps` plain steps), checked with the real tokenizer."""
    vocab = SHAPES[name]["vocab_size"]
    tok_dir = synthetic.save_tokenizer(vocab, work / "tokenizers" / f"vocab-{vocab}")
    cap = min(4096, args.seq_len)
    micro = micro or args.plain_micro_batch
    median, best, rows_per_step, accum = args.median_tokens, None, None, None
    for _ in range(12):  # rescale the median until `micro x accum` examples carry ours' tokens per step (within 1%)
        mean_guess = min(median * math.exp(args.sigma**2 / 2), cap)
        pool_size = int(1.3 * steps * args.tokens_per_step / mean_guess) + 8 * micro
        pool = synthetic.make_conversations(args.seed, pool_size, vocab, median, args.sigma, cap)
        lengths = [synthetic.conversation_tokens(c) for c in pool]
        if accum is None:  # fixed at the nearest whole numbers for the requested median; then only the median moves
            rows = pack_rows(lengths, args.seq_len)
            rows_per_step = max(1, round(args.tokens_per_step / (sum(rows) / len(rows))))
            accum = max(1, round(rows_per_step * sum(rows) / len(rows) / (micro * sum(lengths) / len(lengths))))
        n = steps * micro * accum
        if n > len(lengths):
            continue  # the pool is regenerated bigger: mean_guess was too high
        rows = pack_rows(lengths[:n], args.seq_len)
        ours_tokens = rows_per_step * sum(rows) / len(rows)
        plain_tokens = micro * accum * sum(lengths[:n]) / n
        diff = abs(ours_tokens - plain_tokens) / max(ours_tokens, plain_tokens)
        if best is None or diff < best["planned_difference"]:
            best = {
                "median": median,
                "conversations": pool[:n],
                "lengths": lengths[:n],
                "rows": rows,
                "ours_tokens": ours_tokens,
                "plain_tokens": plain_tokens,
                "planned_difference": diff,
            }
        if diff <= 0.01:
            break
        median *= ours_tokens / plain_tokens
    if best is None:
        raise SystemExit(f"{name}: could not plan the data")
    lengths, rows, n = best["lengths"], best["rows"], len(best["lengths"])
    data = synthetic.write_jsonl(best["conversations"], work / f"data-{name}-{n}x{args.seq_len}.jsonl")
    check_tokenization(name, tok_dir, data, best["conversations"], lengths, args.seq_len)
    return {
        "model": name,
        "tokenizer": str(tok_dir),
        "vocab_size": vocab,
        "train_file": str(data),
        "examples": n,
        "example_tokens_median": sorted(lengths)[n // 2],
        "median_parameter": best["median"],
        "median_scale": best["median"] / args.median_tokens,
        "example_tokens_mean": sum(lengths) / n,
        "example_tokens_max": max(lengths),
        "attention_span_T": synthetic.attention_span(lengths),
        "seq_len": args.seq_len,
        "ours_rows": len(rows),
        "ours_rows_per_step": rows_per_step,
        "ours_avg_row_tokens": sum(rows) / len(rows),
        "ours_tokens_per_step_planned": best["ours_tokens"],
        "plain_micro_batch": micro,
        "plain_grad_accum": accum,
        "plain_examples_per_step": micro * accum,
        "plain_tokens_per_step_planned": best["plain_tokens"],
        "planned_difference": best["planned_difference"],
        "steps": steps,
    }


def check_tokenization(name: str, tok_dir: Path, data: Path, conversations: list, lengths: list[int], seq_len: int):
    """The pipelines' own tokenization must give exactly the planned lengths (chat-template prefix logic included)."""
    from benchmarks import plain_trainer
    from finetune import datafiles, features
    from finetune.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tok_dir))
    assert len(tokenizer) == SHAPES[name]["vocab_size"], (len(tokenizer), SHAPES[name]["vocab_size"])
    ours, stats = features.tokenize_causal(tokenizer, datafiles.read_records(data, "causal_lm"), seq_len)
    if [len(e["input_ids"]) for e in ours] != lengths or stats["truncated"] or stats["dropped"]:
        raise SystemExit(f"{name}: finetune.features tokenized the synthetic data to other lengths than planned")
    plain = plain_trainer.tokenize_all(tokenizer, conversations, seq_len)
    if [len(e["input_ids"]) for e in plain] != lengths:
        raise SystemExit(f"{name}: the plain Trainer's tokenization differs from the planned lengths")


# --- run configs --------------------------------------------------------------------------------------------------


def parse_sets(items: list[str]) -> dict:
    """--set KEY=VALUE items as {dotted key: YAML value}."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item}: expected KEY=VALUE, e.g. --set training.liger_kernel=true")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def base_config(budget: dict, args, steps: int) -> dict:
    """The run config both pipelines start from (ours reads all of it, plain_trainer the model/data/training keys)."""
    return {
        "name": f"scale-{budget['model']}",
        "task": "causal_lm",
        "seed": args.seed,
        "model": {"config": dict(SHAPES[budget["model"]])},
        "tokenizer": {"name_or_path": budget["tokenizer"]},
        "data": {"train_file": budget["train_file"], "max_length": args.seq_len, "packing": True},
        "training": {
            "max_steps": steps,
            "batch_size": budget["ours_rows_per_step"],
            "learning_rate": 1e-5,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "logging_steps": steps,  # one loss read-back, at the end, in both
            "save_steps": 10**9,
            "precision": "auto",
        },
        "eval": {"metric": "none"},
    }


def variant_settings(variant: str) -> dict:
    """The dotted config keys of a variant: BASE, then each "+lever" in order."""
    settings = dict(BASE)
    for token in variant.split("+"):
        if token and token != "base":
            settings.update(LEVERS[token])
    return settings


def fit_settings(method: str, rows_per_step: int, on_gpu: bool) -> dict:
    """The fit table's settings: the method's memory levers, 1 packed row per micro-batch, sdpa attention."""
    settings = {**FIT_LEVERS[method], "training.grad_accum": rows_per_step, "model.attn_implementation": "sdpa"}
    if not on_gpu:
        settings["training.liger_kernel"] = False  # GPU-only kernels: the CPU path is a smoke test
    return settings


def with_settings(config: dict, *layers: dict) -> dict:
    """A copy of `config` with each layer's dotted keys set, later layers last."""
    config = json.loads(json.dumps(config))
    for layer in layers:
        for dotted, value in layer.items():
            node = config
            *parents, last = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
    return config
