"""`finetune export`: a finished run's model as a folder other tools load. `hf`: the LoRA adapter (if any) merged into
its base, safetensors, the tokenizer with its chat template, generation_config.json and a model card, loadable by
`AutoModelForCausalLM` / `AutoTokenizer` with transformers alone; `gguf`: one file for llama.cpp and Ollama
(finetune.gguf_export).

The export is written into a staging folder beside the target and renamed into place when whole: a failure leaves
the target as it was (a non-empty one is replaced only with --force)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from finetune import checkpoints, safefiles
from finetune.card import model_card
from finetune.config import GENERATIVE_TASKS
from finetune.errors import UserError
from finetune.names import default_export_dir
from finetune.runmodel import GENERATE_MAX_NEW_TOKENS, load_model, load_run

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def check_target(out: Path, force: bool) -> None:
    """Refuse, before any work, a target that is a file or link, or a non-empty folder without --force."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out}: exists and is not a folder; give --out a folder to write the export into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: folder exists and is not empty; pass --force to replace it, or another --out")


def export_run(run_dir: Path, out: Path | None, fmt: str, dtype: str | None, quant: str, force: bool) -> Path:
    """Write the export of run_dir to out (default: beside the run) and return out."""
    from transformers.utils import logging as transformers_logging

    manifest, cfg = load_run(run_dir)
    transformers_logging.disable_progress_bar()  # loading and writing bars for a few files: the result line says it
    if fmt == "gguf" and cfg.task not in GENERATIVE_TASKS:
        raise UserError(f"{run_dir}: GGUF holds causal language models for llama.cpp; this run is {cfg.task}")
    out = Path(out) if out else default_export_dir(run_dir, fmt)
    check_target(out, force)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    safefiles.make_dir(out.parent)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        model, tokenizer = load_model(run_dir, cfg.task, merged=True, device="cpu")
        lora = (run_dir / "model" / "adapter_config.json").exists()
        if fmt == "hf":
            written = write_hf(model, tokenizer, cfg.task, staging, dtype)
        else:
            from finetune.gguf_export import write_gguf

            written = write_gguf(model, tokenizer, staging / f"{cfg.name}-{quant}.gguf", quant)
        card = {"format": fmt, "dtype": written, "lora_merged": lora}
        (staging / "README.md").write_text(model_card(manifest, summary, card))
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the export from the colleagues it is shared with
        with safefiles.write_errors(out):
            # out is at every moment the old folder or the whole new one (an old one moved aside, then removed)
            checkpoints.replace_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def write_hf(model, tokenizer, task: str, folder: Path, dtype: str | None) -> str:
    """The transformers folder; returns the dtype written."""
    import torch
    from transformers import GenerationConfig

    if dtype:
        model = model.to(getattr(torch, DTYPES[dtype]))
    model.config.use_cache = True  # training turned the KV cache off; generation wants it
    if task in GENERATIVE_TASKS:
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,  # greedy, as finetune generate and the run's exact-match eval decode
            max_new_tokens=GENERATE_MAX_NEW_TOKENS,
        )
    if context := getattr(model.config, "max_position_embeddings", None):
        tokenizer.model_max_length = context  # not the "unlimited" 1e30 of a tokenizer built from data
    model.save_pretrained(folder, max_shard_size="2GB")  # safetensors shards
    tokenizer.save_pretrained(folder)
    portable_tokenizer_class(folder / "tokenizer_config.json")
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors writes its files 0600: the export is meant to be shared
    return str(model.dtype).removeprefix("torch.")


def portable_tokenizer_class(path: Path) -> None:
    """transformers 5 names a tokenizers-backed tokenizer's class TokenizersBackend, which transformers 4 does not
    know; PreTrainedTokenizerFast is the same class under the name both read."""
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2) + "\n")
