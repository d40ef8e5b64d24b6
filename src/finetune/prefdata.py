"""The rows of dpo, kto and grpo runs, read and checked before any model or heavy import (no torch, no datasets).

Each row becomes the dict TRL's trainer takes, in TRL's own layouts (its "standard" strings or its "conversational"
message lists, one kind per file):

  dpo  (and the held-out pairs of dpo and kto)  {"prompt": ..., "chosen": ..., "rejected": ...}
  kto                                           {"prompt": ..., "completion": ..., "label": true | false}
  grpo                                          {"prompt": ..., "<reward.reference_field>": ... (optional)}
                                                or {"messages": [...]}: the turns before a last assistant turn are the
                                                prompt, that turn's content the reference

A prompt is a string or a list of {role, content} messages; a completion (chosen, rejected, completion) is then a
string or a list of assistant messages. The files are read by finetune.datafiles (JSONL, CSV, JSON, parquet, hub
ids), so a bad row is one line naming its file and line (or row and column), as for SFT data.
"""

from __future__ import annotations

import re
from pathlib import Path

from finetune.config import config_error
from finetune.datafiles import sources_rows
from finetune.errors import DataError
from finetune.formats import ROLES, Where
from finetune.rewards import user_code

LAYOUTS = {
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "grpo": ("prompt",),
}


def check(cfg) -> None:
    """What can be checked before torch and trl are imported (the CLI calls it first): every row of the data files,
    one line saying that the run will call code of the user's, and the run it starts from (model.from_run)."""
    read_rows(cfg, "train")
    if cfg.data.eval_file:
        read_rows(cfg, "eval")
    if names := user_code(cfg.reward):
        print(f"[finetune] reward.functions calls your code: {', '.join(names)} (imported as Python modules)",
              flush=True)  # fmt: skip
    check_from_run(cfg)


def check_from_run(cfg) -> None:
    """model.from_run must be a finished run (its model/ holds the final weights and tokenizer); if it is not, say
    which command makes it."""
    run = cfg.model.from_run
    if run and not (Path(run) / "model" / "config.json").is_file():
        made_by = f"`finetune train CONFIG --output-dir {run}`"
        if Path(run) == Path("runs/default"):
            made_by = "`make train`"
        elif partly := re.fullmatch(r"runs/default-(\d+)", Path(run).as_posix()):  # the default, its first N steps
            made_by = (f"`finetune train configs/default.yaml --set training.max_steps={partly[1]} "
                       f"--output-dir {run}`")  # fmt: skip
        raise config_error(cfg, "model.from_run", f"{run} is not a finished run (no {run}/model/config.json): make "
                           f"it first with {made_by}")  # fmt: skip


def read_rows(cfg, which: str = "train") -> list[dict]:
    """The rows of data.train_file (which="train") or data.eval_file ("eval") for cfg.task, in TRL's layout.
    Held-out rows of dpo and kto are pairs (the dpo layout): preference accuracy compares chosen with rejected."""
    d = cfg.data
    source, split = (d.train_file, d.split) if which == "train" else (d.eval_file, d.eval_split)
    layout = "dpo" if cfg.task == "kto" and which == "eval" else cfg.task
    reference = cfg.reward.reference_field
    rows, kind = [], None
    for where, row in sources_rows(source, split, d.subset, d.max_record_bytes, d.long_records == "skip"):
        out = grpo_row(row, where, reference) if layout == "grpo" else pair_row(row, where, LAYOUTS[layout])
        row_kind = "conversational" if isinstance(out["prompt"], list) else "standard"
        if kind is not None and row_kind != kind:
            raise where.error(f"field 'prompt' is {row_kind} here, {kind} in the rows above; allowed: one layout "
                              "per file (strings, or message lists)", "prompt")  # fmt: skip
        kind = row_kind
        rows.append(out)
    if not rows:
        raise DataError(source, None, "the dataset is empty (no examples)")
    return rows


def pair_row(row: dict, where: Where, fields: tuple[str, ...]) -> dict:
    """A dpo row (prompt, chosen, rejected) or a kto row (prompt, completion, label)."""
    expected = "fields " + ", ".join(f"'{f}'" for f in fields)
    prompt = text_or_messages(row, "prompt", where, expected)
    out = {"prompt": prompt}
    for name in fields[1:]:
        if name == "label":
            if not isinstance(row.get("label"), bool):
                got = "missing" if "label" not in row else f"{row['label']!r}"
                raise where.error(f"label: got {got}; allowed: true (desirable) or false (undesirable)", "label")
            out["label"] = row["label"]
            continue
        value = text_or_messages(row, name, where, expected)
        if isinstance(value, list) != isinstance(prompt, list):
            raise where.error(f"field '{name}' must be {'a message list' if isinstance(prompt, list) else 'a string'}"
                              ", as 'prompt' is", name)  # fmt: skip
        if isinstance(value, list) and any(m["role"] != "assistant" for m in value):
            raise where.error(f"field '{name}' must hold assistant messages only (it is the completion)", name)
        out[name] = value
    return out


def grpo_row(row: dict, where: Where, reference: str) -> dict:
    """A grpo prompt, with its reference when the row has one (the built-in rewards compare against it)."""
    if "prompt" not in row and "messages" in row:
        turns = messages(row["messages"], "messages", where)
        if turns[-1]["role"] == "assistant":
            turns, answer = turns[:-1], turns[-1]["content"]
            if not turns:
                raise where.error("field 'messages' has no turn before the assistant's (the prompt)", "messages")
            return {"prompt": turns, reference: answer}
        return {"prompt": turns}
    prompt = text_or_messages(row, "prompt", where, "field 'prompt' (or 'messages')")
    if reference not in row:
        return {"prompt": prompt}
    if not isinstance(row[reference], str):
        raise where.error(f"field '{reference}' must be a string, got {type(row[reference]).__name__}", reference)
    return {"prompt": prompt, reference: row[reference]}


def text_or_messages(row: dict, name: str, where: Where, expected: str):
    if name not in row or (row[name] is None and where.row is not None):  # a columnar file's missing value is null
        raise where.error(f"missing field '{name}' (expected {expected})", name)
    value = row[name]
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return messages(value, name, where)
    raise where.error(f"field '{name}' must be a string or a list of messages, got {type(value).__name__}", name)


def messages(turns, name: str, where: Where) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise where.error(f"field '{name}' must be a non-empty list of {{role, content}} objects", name)
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise where.error(f"{name}[{i}] must be an object with 'role' and 'content'", name)
        if turn["role"] not in ROLES:
            raise where.error(f"{name}[{i}].role: got {turn['role']!r}; allowed: {', '.join(ROLES)}", name)
        if not isinstance(turn["content"], str):
            raise where.error(f"{name}[{i}].content must be a string", name)
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def prompt_text(tokenizer, prompt) -> str:
    """The text a model is given for a prompt of either kind (a message list through the chat template)."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


def completion_text(tokenizer, completion) -> str:
    """A completion as the tokens that follow the prompt: the assistant turns as the chat template ends them, or the
    string with the end-of-sequence token (as TRL adds it)."""
    if isinstance(completion, list):
        full = tokenizer.apply_chat_template([{"role": "user", "content": ""}, *completion], tokenize=False)
        head = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
        return full[len(head) :]
    return completion + (tokenizer.eos_token or "")
