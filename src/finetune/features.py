"""Records to model inputs: tokenization with completion-only labels, optional packing, and the batch collator.

Packing puts several examples in one row and restarts `position_ids` at each example; with no attention mask,
transformers derives a block-diagonal causal mask from those position ids (masking_utils.find_packed_sequence_indices),
so packed examples never attend to each other. Fewer pad tokens is where most of the CPU speed comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finetune.datafiles import Record
from finetune.errors import ConfigError

IGNORE = -100


def render_prompt(tokenizer, record: Record) -> str:
    """The text a model is given at generation time: everything before the last completion."""
    if record.messages is not None:
        return tokenizer.apply_chat_template(record.messages[:-1], tokenize=False, add_generation_prompt=True)
    return record.prompt


def reference(record: Record) -> str:
    return record.messages[-1]["content"] if record.messages is not None else record.completion


def _segments(tokenizer, record: Record) -> list[tuple[str, bool]]:
    """Split an example into (text, trained) pieces: the loss is on assistant turns / the completion only."""
    if record.messages is None:
        return [(record.prompt, False), (record.completion + (tokenizer.eos_token or ""), True)]
    if not tokenizer.chat_template:
        raise ConfigError("the tokenizer has no chat template; use prompt/completion data or a chat tokenizer")
    pieces, done = [], ""
    for i, m in enumerate(record.messages):
        if m["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(record.messages[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(record.messages[: i + 1], tokenize=False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise ConfigError("the tokenizer's chat template does not render conversations prefix by prefix")
        pieces += [(prefix[len(done) :], False), (full[len(prefix) :], True)]
        done = full
    return pieces


def tokenize_causal(tokenizer, records: list[Record], max_length: int) -> tuple[list[dict], dict]:
    examples, stats = [], {"truncated": 0, "dropped": 0}
    for record in records:
        ids, labels = [], []
        for n, (text, trained) in enumerate(_segments(tokenizer, record)):
            piece = tokenizer(text, add_special_tokens=(n == 0 and record.messages is None))["input_ids"]
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        if len(ids) > max_length:
            stats["truncated"] += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE for label in labels[1:]):
            stats["dropped"] += 1  # nothing left to learn from after truncation
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, stats


def tokenize_classification(tokenizer, records: list[Record], labels: list[str], max_length: int) -> list[dict]:
    if not records:  # no eval file: fast tokenizers fail on an empty batch
        return []
    index = {name: i for i, name in enumerate(labels)}
    enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)
    return [{"input_ids": ids, "labels": index[r.label]} for ids, r in zip(enc["input_ids"], records)]


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """First-fit-decreasing bin packing of examples into rows of at most max_length tokens (deterministic)."""
    rows: list[dict] = []
    for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(ex["input_ids"])
        for row in rows:
            if len(row["input_ids"]) + n <= max_length:
                break
        else:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += ex["input_ids"]
        row["labels"] += ex["labels"]
        row["position_ids"] += list(range(n))
    return rows


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@dataclass
class Collator:
    """Right-pads a batch. Packed rows carry position_ids and no attention mask (see the module docstring).

    `num_tokens` (real, non-pad tokens) rides along for the throughput figure as a plain int (a tensor would be moved
    to the GPU and read back every step, a sync); the trainer removes it before forward. `pad_to` fixes the width
    (flex attention compiles once per row width; a packed row is nearly full anyway).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    pad_to: int | None = None

    def __call__(self, batch: list[dict]) -> dict:
        width = max(self.pad_to or 0, *(len(b["input_ids"]) for b in batch))
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in batch[0]
        seq_labels = not isinstance(batch[0]["labels"], list)
        out = {"input_ids": [], "labels": [], "position_ids" if packed else "attention_mask": []}
        for b in batch:
            n, pad = len(b["input_ids"]), width - len(b["input_ids"])
            out["input_ids"].append(b["input_ids"] + [self.pad_token_id] * pad)
            out["labels"].append(b["labels"] if seq_labels else b["labels"] + [IGNORE] * pad)
            if packed:  # the padding becomes its own "sequence" so that no real token attends to it
                out["position_ids"].append(b["position_ids"] + list(range(pad)))
            else:
                out["attention_mask"].append([1] * n + [0] * pad)
        tensors = {k: torch.tensor(v) for k, v in out.items()}
        tensors["num_tokens"] = sum(len(b["input_ids"]) for b in batch)
        return tensors
