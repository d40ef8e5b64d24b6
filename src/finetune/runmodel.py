"""A finished run, loaded: its manifest and config, and its final model (LoRA merged on request) with its tokenizer,
for `finetune eval`, `generate`, `export` and `serve`; or an exported folder (`finetune export`), for `serve`."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.errors import UserError

# How many tokens a completion may have when the caller does not say: `finetune generate`'s default, the exported
# generation_config.json's and the server's, so all three complete a prompt the same way.
GENERATE_MAX_NEW_TOKENS = 64


def require_generative(run_dir: Path, task: str, command: str) -> None:
    """One line when `command` (generate, serve) is given a run whose model does not generate text."""
    from finetune.config import GENERATIVE_TASKS

    if task not in GENERATIVE_TASKS:
        allowed = ", ".join(GENERATIVE_TASKS)
        raise UserError(f"{run_dir}: {command} needs a causal language model ({allowed}); this run is {task}")


def load_run(run_dir: Path):
    """(manifest, config) of a run directory; one line when it is not one."""
    from finetune.config import from_dict, upgrade_manifest_config

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    return manifest, from_dict(upgrade_manifest_config(manifest["config"]), str(manifest_path))


def load_model(run_dir: Path, task: str, merged: bool = False, device=None):
    """(model in eval mode, tokenizer) of a finished run; merged: a LoRA adapter folded into its base (plain
    transformers weights, no PEFT wrapper)."""
    from finetune.modeling import load_trained, pick_device
    from finetune.tokenizer import load_tokenizer

    model_dir = run_dir / "model"
    if not model_dir.exists():
        raise UserError(f"{run_dir}: no final model (the run did not finish; resume it with finetune train --resume)")
    model = load_trained(model_dir, task)
    if merged and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.to(device or pick_device()).eval(), load_tokenizer(str(model_dir))


def load_export(folder: Path, device=None):
    """(model in eval mode, tokenizer) of a `finetune export --format hf` folder, or any causal-LM folder."""
    from transformers import AutoModelForCausalLM

    from finetune.modeling import pick_device
    from finetune.tokenizer import load_tokenizer

    if not (folder / "config.json").exists():
        raise UserError(f"{folder}: neither a run directory (manifest.json) nor an exported model (config.json)")
    model = AutoModelForCausalLM.from_pretrained(folder)
    return model.to(device or pick_device()).eval(), load_tokenizer(str(folder))
