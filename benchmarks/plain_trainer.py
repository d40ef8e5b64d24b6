"""The baseline for benchmarks/throughput.py: fine-tuning written the way the Hugging Face transformers examples do it.

Chat examples tokenized with `tokenizer.apply_chat_template`, loss on the assistant completion only (labels -100 on
the prompt), no packing, dynamic padding per batch with `DataCollatorForSeq2Seq`, a stock `Trainer` with default
dataloader settings. Nothing from finetune is used for training; finetune is used only to read the run config (so
that model, learning rate, schedule and epochs are the same) and to build the same character tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)

from finetune.tokenizer import build_char_tokenizer

IGNORE = -100


def read_chat_jsonl(path) -> list[list[dict]]:
    """The conversations of a chat JSONL file ({"messages": [...]} per line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]


def vocab_sha(tokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def make_tokenizer(conversations):
    return build_char_tokenizer(m["content"] for conv in conversations for m in conv)


def tokenize(tokenizer, messages: list[dict], max_length: int) -> dict:
    """input_ids/attention_mask/labels for one conversation; labels are -100 on everything before the last answer."""
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]
    assert full[: len(prompt)] == prompt, "chat template does not render the prompt as a prefix"
    labels = [IGNORE] * len(prompt) + full[len(prompt) :]
    full, labels = full[:max_length], labels[:max_length]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}


def tokenize_all(tokenizer, conversations, max_length: int) -> list[dict]:
    examples = [tokenize(tokenizer, c, max_length) for c in conversations]
    return [e for e in examples if any(label != IGNORE for label in e["labels"][1:])]


def build_model(model_config: dict, tokenizer, attn_implementation: str):
    spec = dict(model_config)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    model.config.use_cache = False
    return model


@torch.no_grad()
def completion_loss(model, tokenizer, examples: list[dict], batch_size: int = 50) -> float:
    """Mean cross-entropy per completion token over `examples` (unpacked, padded, with an attention mask).

    The same function scores both pipelines' final models, so this figure is comparable across them even though each
    pipeline's own Trainer eval loss is averaged over differently shaped batches (packed rows vs padded examples).
    """
    was_training = model.training
    model.eval()
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE)
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(examples[start : start + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        total += losses.item()
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def train_plain(
    cfg, examples_per_step: int, output_dir: Path, tokenizer=None, callbacks=None, grad_accum: int = 1
) -> dict:
    """Train the baseline; `cfg` is a finetune RunConfig (causal_lm, chat data, model built from model.config).

    `tokenizer`: use this one (with a chat template) instead of building the character tokenizer from the data;
    `callbacks`: extra TrainerCallbacks (benchmarks/scale.py times the steps after warm-up with one);
    `grad_accum`: examples_per_step is reached in that many micro-batches (it must divide examples_per_step).
    """
    per_device, rest = divmod(examples_per_step, grad_accum)
    if rest or per_device < 1:
        raise ValueError(f"grad_accum {grad_accum} does not divide examples_per_step {examples_per_step}")
    started = time.time()
    set_seed(cfg.seed)
    train_conv = read_chat_jsonl(cfg.data.train_file)
    eval_conv = read_chat_jsonl(cfg.data.eval_file) if cfg.data.eval_file else []
    tokenizer = tokenizer if tokenizer is not None else make_tokenizer(train_conv + eval_conv)
    train_ds = tokenize_all(tokenizer, train_conv, cfg.data.max_length)
    eval_ds = tokenize_all(tokenizer, eval_conv, cfg.data.max_length)

    set_seed(cfg.seed)
    # the stock choice: sdpa (transformers' default), whatever our config's "auto" would pick
    attn = "sdpa" if cfg.model.attn_implementation == "auto" else cfg.model.attn_implementation
    model = build_model(cfg.model.config, tokenizer, attn)
    t = cfg.training
    gpu = torch.cuda.is_available()
    bf16 = t.precision == "bf16" or (t.precision == "auto" and gpu and torch.cuda.is_bf16_supported())
    args = TrainingArguments(
        output_dir=str(output_dir),
        seed=cfg.seed,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # < 1: a ratio
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        # the same in-loop work as the finetune run: log, evaluate each epoch, checkpoint every save_steps
        logging_steps=t.logging_steps,
        eval_strategy="epoch" if eval_ds else "no",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        bf16=bf16,
        fp16=t.precision == "fp16",
        include_num_input_tokens_seen="non_padding",  # attention_mask sum over the batches actually trained
        report_to="none",
    )
    trainer = Trainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=train_ds,
        eval_dataset=eval_ds or None,
        data_collator=DataCollatorForSeq2Seq(
            tokenizer, model=model, label_pad_token_id=IGNORE, pad_to_multiple_of=8 if gpu else None
        ),
        callbacks=callbacks,
    )
    result = trainer.train()
    tokens = trainer.state.num_input_tokens_seen
    runtime = result.metrics["train_runtime"]
    eval_loss = trainer.evaluate()["eval_loss"] if eval_ds else None
    return {
        "tokens_trained": int(tokens),
        "steps": trainer.state.global_step,
        "train_seconds": runtime,
        "tokens_per_second": tokens / runtime if runtime else None,
        "train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "eval_loss_common": completion_loss(model, tokenizer, eval_ds) if eval_ds else None,
        "examples_per_step": examples_per_step,
        "steps_per_epoch_expected": math.ceil(len(train_ds) / examples_per_step),
        "vocab_sha": vocab_sha(tokenizer),
        "wall_seconds": time.time() - started,
    }
