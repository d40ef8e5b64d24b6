"""Models: by hub id or local directory (`from_pretrained`), or built from a config for tiny runs; LoRA through
PEFT, QLoRA (a 4-bit or 8-bit frozen base) through bitsandbytes. Dtype and attention kernel come from resolve.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from finetune.config import RunConfig
from finetune.errors import ConfigError, LoadError
from finetune.resolve import Settings
from finetune.safefiles import write_errors


def _auto_class(task: str):
    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM  # dpo...: LMs


BASE = "base"  # a LoRA run's folder for the base it started from, when no hub id or directory names it


def build_model(
    cfg: RunConfig, settings: Settings, tokenizer, labels: list[str] | None = None, base_dir=None, lora: bool = True
):
    """The run's model; with LoRA on a model built from model.config, its fresh base weights are saved once to
    base_dir (the adapter names no base: without them, the run's model could never be loaded again). With lora=False
    the LoRA adapter is left to the caller (TRL's trainers take its config, so that their reference model is the base
    with the adapter disabled: lora_config)."""
    auto = _auto_class(cfg.task)
    load = {"attn_implementation": settings.attn_implementation, "dtype": getattr(torch, settings.dtype)}
    extra = {}
    if cfg.task == "classification":
        extra = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }
    if cfg.model.config:
        spec = dict(cfg.model.config)
        model_type = spec.pop("model_type")
        try:
            config = AutoConfig.for_model(model_type, **spec, **extra)
        except ValueError as e:
            raise ConfigError(f"model.config.model_type: {e}") from None
        config.vocab_size = len(tokenizer)
        config.pad_token_id, config.bos_token_id, config.eos_token_id = (
            tokenizer.pad_token_id,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )
        with torch.device(process_device(settings)):  # fresh weights made where they train, not in host RAM first
            model = auto.from_config(config, **load)
        if cfg.lora.enabled and base_dir is not None:
            keep_base(model, Path(base_dir))
        if cfg.lora.quantization:  # bitsandbytes quantizes while loading: save the fresh weights, load them back
            with tempfile.TemporaryDirectory(prefix="finetune-qbase-") as tmp:
                model.save_pretrained(tmp)
                del model
                model = auto.from_pretrained(tmp, **load, **_quantized(cfg, settings))
    else:
        try:
            model = auto.from_pretrained(
                cfg.model.source(), **load, **extra, **(_quantized(cfg, settings) if cfg.lora.quantization else {})
            )
        except OSError as e:
            raise LoadError(
                f"model.{'from_run' if cfg.model.from_run else 'name_or_path'}: cannot load {cfg.model.source()!r}: "
                f"{str(e).splitlines()[0]}"
            ) from None
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora.quantization:  # norms and head in fp32, input grads on for checkpointing (PEFT's QLoRA recipe)
        from peft import prepare_model_for_kbit_training

        if settings.device == "cpu":
            keep_training_layout(model)

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing and not cfg.training.fsdp
        )
    if cfg.lora.enabled and lora:
        model = apply_lora(cfg, model)
    return model


def _quantized(cfg: RunConfig, settings: Settings) -> dict:
    """from_pretrained arguments for a quantized frozen base, placed on this process's device."""
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    if cfg.lora.quantization == "4bit":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": process_device(settings)}}


def keep_training_layout(model) -> None:
    """Work around bitsandbytes 0.50's CPU backend: on a CPU with AVX512-BF16, a Linear4bit in eval mode repacks its
    weight in place for a faster inference kernel and never unpacks it, so training after an evaluation (ours runs
    exact match before training) reads the repacked bytes as NF4 and the loss climbs. Tested in test_levers.py."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def process_device(settings: Settings) -> str:
    """This process's device: under torchrun each process has its own GPU (LOCAL_RANK)."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if settings.device == "cuda" else "cpu"


def lora_config(cfg: RunConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if cfg.task == "classification" else TaskType.CAUSAL_LM,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
    )


def apply_lora(cfg: RunConfig, model):
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(cfg))
    except ValueError as e:
        raise ConfigError(f"lora.target_modules: {str(e).splitlines()[0]}") from None


def keep_base(model, base_dir: Path) -> None:
    """Save the base once (a resumed run rebuilds the same weights from the seed): into a staging folder renamed into
    place, so a crash never leaves half a base that a later load would take for whole."""
    if (base_dir / "config.json").exists():
        return
    staging = base_dir.with_name(f".{base_dir.name}.staging")
    with write_errors(base_dir):
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        os.replace(staging, base_dir)


def load_trained(model_dir: Path, task: str):
    """Load a run's final model (full weights or a LoRA adapter) for evaluation, generation, export or serving."""
    model_dir = Path(model_dir)
    adapter = model_dir / "adapter_config.json"
    if not adapter.exists():
        return _auto_class(task).from_pretrained(model_dir)
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, PeftModel

    if json.loads(adapter.read_text()).get("base_model_name_or_path"):  # a hub id or directory: PEFT loads it
        auto = AutoPeftModelForSequenceClassification if task == "classification" else AutoPeftModelForCausalLM
        return auto.from_pretrained(model_dir)
    base_dir = model_dir.parent / BASE  # a base built from model.config: the run kept it
    if not (base_dir / "config.json").exists():
        raise LoadError(
            f"{model_dir}: a LoRA adapter whose base was built from model.config and not kept (a run made before "
            f"the base was saved in {BASE}/): train it again to use it"
        )
    return PeftModel.from_pretrained(_auto_class(task).from_pretrained(base_dir), model_dir)


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
