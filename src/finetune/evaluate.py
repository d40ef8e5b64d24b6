"""Task metrics: greedy-decoding exact match for causal LMs, accuracy for classifiers."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from finetune.datafiles import Record
from finetune.features import reference, render_prompt


@contextmanager
def decoding_attention(model):
    """sdpa while decoding: flex attention (picked for packed training rows) recompiles for every new length."""
    kind = getattr(model.config, "_attn_implementation", None)
    if kind == "flex_attention":
        model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if kind == "flex_attention":
            model.set_attn_implementation(kind)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, add_special_tokens: bool = False) -> list[str]:
    """Greedy completions for a batch of prompts (left-padded so that every prompt ends where generation starts)."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(
            model.device
        )
        with decoding_attention(model):
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
    finally:
        tokenizer.padding_side = side
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def exact_match(
    model, tokenizer, records: list[Record], max_new_tokens: int, batch_size: int
) -> tuple[float, list[dict]]:
    """Share of held-out prompts whose greedy completion equals the reference (whitespace-stripped)."""
    was_training = model.training
    model.eval()
    samples = []
    starts = range(0, len(records), batch_size)
    # disable=None turns the bar off when stderr is not a terminal (CI logs), instead of leaving \r residue
    for start in tqdm(starts, desc="exact match", disable=None, leave=False):
        batch = records[start : start + batch_size]
        prompts = [render_prompt(tokenizer, r) for r in batch]
        outputs = generate(model, tokenizer, prompts, max_new_tokens, add_special_tokens=batch[0].messages is None)
        for r, prompt, out in zip(batch, prompts, outputs):
            samples.append(
                {
                    "prompt": prompt,
                    "reference": reference(r),
                    "prediction": out,
                    "correct": out.strip() == reference(r).strip(),
                }
            )
    model.train(was_training)
    return (sum(s["correct"] for s in samples) / max(len(samples), 1)), samples


@torch.no_grad()
def accuracy(model, tokenizer, records: list[Record], labels: list[str], max_length: int, batch_size: int) -> float:
    """Share of records whose argmax label equals the reference label (a finished classifier, outside the Trainer)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        enc = tokenizer(
            [r.text for r in batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(model.device)
        predicted = model(**enc).logits.argmax(-1).tolist()
        correct += sum(labels[p] == r.label for p, r in zip(predicted, batch))
    model.train(was_training)
    return correct / max(len(records), 1)


def task_metric(model, tokenizer, cfg, metric: str, records: list[Record], labels) -> tuple[float | None, list[dict]]:
    """The run's task metric on its first eval.max_samples eval records, for training and `finetune eval` alike:
    (accuracy, samples) for exact_match, (accuracy, []) for accuracy, (None, []) for none."""
    records = records[: cfg.eval.max_samples]
    if metric == "exact_match":
        return exact_match(model, tokenizer, records, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    if metric == "accuracy":
        return accuracy(model, tokenizer, records, labels, cfg.data.max_length, cfg.eval.batch_size), []
    return None, []


def classification_accuracy(eval_pred) -> dict:
    """compute_metrics for the Trainer: logits → argmax → accuracy."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}
