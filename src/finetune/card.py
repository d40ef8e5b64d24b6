"""The model card (README.md) of an exported model, written from the run's manifest and summary: what it was tuned
from, on which data (with digests), with which config, how it scored before and after, and what made it (the locks'
digests, the git commit, the image id). Hub-style YAML front matter first, so the Hub and other tools read it."""

from __future__ import annotations

import json


def _base(config: dict) -> str:
    model = config["model"]
    if model.get("from_run"):  # a preference run (dpo, kto, grpo) that started from an earlier run's final model
        return f"the final model of the run {model['from_run']}"
    if model.get("name_or_path"):
        return model["name_or_path"]
    return f"built from model.config ({(model.get('config') or {}).get('model_type')}), random init"


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(manifest: dict, summary: dict, export: dict) -> str:
    """README.md text. export: {"format", "dtype", "lora_merged", "files"} as the exporter wrote them."""
    config = manifest["config"]
    container = manifest.get("container") or {}
    front = ["---", "library_name: transformers" if export["format"] == "hf" else "library_name: gguf"]
    if config["model"]["name_or_path"]:
        front.append(f"base_model: {config['model']['name_or_path']}")
    front += ["tags:", "- finetune", f"- {config['task']}", "---", ""]
    data = manifest.get("data") or {}
    metric = summary.get("metric") or "metric"
    lines = [
        *front,
        f"# {config['name']}",
        "",
        f"Fine-tuned with the finetune workspace ({config['task']}); exported as {export['format']} "
        f"({export['dtype']}){', LoRA merged into the base' if export.get('lora_merged') else ''}.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {_base(config)} |",
        f"| steps | {_figure(summary.get('steps'))} |",
        f"| train loss | {_figure(summary.get('train_loss'))} |",
        f"| eval loss | {_figure(summary.get('eval_loss'))} |",
        f"| {metric} before -> after | {_figure(summary.get('initial_eval_accuracy'))} -> "
        f"{_figure(summary.get('eval_accuracy'))} |",
        f"| git commit | {(manifest.get('git') or {}).get('commit')}"
        f"{' (dirty tree)' if (manifest.get('git') or {}).get('dirty') else ''} |",
        f"| image id | {container.get('image_id') or 'none (trained outside a container)'} |",
        f"| transformers, torch | {manifest['versions'].get('transformers')}, {manifest['versions'].get('torch')} |",
        "",
        "## Data (sha256)",
        "",
        *([f"- `{name}`: `{digest}`" for name, digest in data.items()] or ["- (not recorded)"]),
        "",
        "## Locks (sha256)",
        "",
        *([f"- `{name}`: `{digest}`" for name, digest in (manifest.get("locks") or {}).items()] or ["- (none)"]),
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
