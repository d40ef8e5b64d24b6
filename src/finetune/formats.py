"""Dataset layouts (data.format) and their column mapping (data.columns): each row becomes one of the Record shapes
in finetune.datafiles, so tokenization and training see the same records whatever the source looked like.

  messages           {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}   (OpenAI style)
  sharegpt           {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...]}
  alpaca             {"instruction": ..., "input": ... (optional), "output": ...}   -> a user turn, an assistant turn
  prompt_completion  {"prompt": ..., "completion": ...}
  text_label         {"text": ..., "label": ...}   (classification; columns default to data.text_field/label_field)

`auto` decides per row for causal_lm (a JSONL file may mix messages and prompt/completion rows, as it always could) and
is text_label for classification. `columns` renames: {prompt: question, completion: answer} reads the prompt from the
column "question". Where a row is wrong, Where names it: file and line for line-based files (JSONL, CSV), the row
index and the column otherwise (JSON arrays, parquet, arrow folders, hub datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune.errors import DataError

# the fields of each layout, in the order they are looked for; data.columns may rename any of them
FIELDS = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "input", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text_label": ("text", "label"),
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class Where:
    """Where a row came from: its file, and its 1-based line (line-based files) or 0-based row index (the others)."""

    source: str
    line: int | None = None
    row: int | None = None

    def error(self, message: str, column: str | None = None) -> DataError:
        if self.row is None:  # line-based: the message names the field itself, as it always has
            return DataError(self.source, self.line, message)
        column_part = f", column '{column}'" if column else ""
        return DataError(self.source, None, f"row {self.row}{column_part}: {message}")


class Layout:
    """How to turn one row (a dict) into a Record, for a task, a data.format and its data.columns."""

    def __init__(self, task: str, fmt: str = "auto", columns: dict | None = None, text="text", label="label"):
        self.task = task
        self.fmt = "text_label" if task == "classification" else fmt
        self.columns = {"text": text, "label": label, **(columns or {})}

    def col(self, field: str) -> str:
        return self.columns.get(field, field)

    def detect(self, row: dict) -> str | None:
        """The layout of a row under `auto`: the first whose key field the row has."""
        for fmt, keys in (
            ("messages", ("messages",)),
            ("sharegpt", ("conversations",)),
            ("alpaca", ("instruction", "output")),
            ("prompt_completion", ("prompt", "completion")),
        ):
            if any(self.col(k) in row for k in keys):
                return fmt
        return None

    def fields(self, row: dict, where: Where) -> dict:
        """The row as the keyword arguments of a datafiles.Record (messages, or prompt and completion, or text and
        label, plus where it came from)."""
        fmt = self.fmt if self.fmt != "auto" else self.detect(row)
        at = {"line": where.line, "row": where.row}
        if fmt == "text_label":
            allowed = f"fields '{self.col('text')}' and '{self.col('label')}'"
            text = self.string(row, "text", allowed, where)
            label = row.get(self.col("label"))
            if label is None or label == "":
                raise where.error(f"missing field '{self.col('label')}' (expected {allowed})", self.col("label"))
            return dict(**at, text=text, label=str(label))
        if fmt == "messages":
            return dict(**at, messages=self.chat(row, where, "messages", "role", "content", dict(zip(ROLES, ROLES))))
        if fmt == "sharegpt":
            return dict(**at, messages=self.chat(row, where, "conversations", "from", "value", SHAREGPT_ROLES))
        if fmt == "alpaca":
            allowed = f"fields '{self.col('instruction')}', '{self.col('output')}' and optionally '{self.col('input')}'"
            instruction = self.string(row, "instruction", allowed, where)
            extra = row.get(self.col("input")) or ""
            if not isinstance(extra, str):
                raise where.error(f"field '{self.col('input')}' must be a string", self.col("input"))
            user = f"{instruction}\n\n{extra}" if extra else instruction
            output = self.string(row, "output", allowed, where)
            return dict(**at, messages=[{"role": "user", "content": user}, {"role": "assistant", "content": output}])
        if fmt == "prompt_completion":
            allowed = f"'{self.col('messages')}', or '{self.col('prompt')}' and '{self.col('completion')}'"
            prompt = self.string(row, "prompt", allowed, where)
            return dict(**at, prompt=prompt, completion=self.string(row, "completion", allowed, where))
        raise where.error(
            "missing field 'messages' (or 'prompt' and 'completion'; or 'conversations' (ShareGPT), or 'instruction' "
            "and 'output' (Alpaca); data.columns maps other column names)"
        )

    def string(self, row: dict, field: str, allowed: str, where: Where) -> str:
        name = self.col(field)
        # a missing value in a columnar file (parquet, arrow) is a null; in JSONL a null stays the wrong type it is
        if name not in row or (row[name] is None and where.row is not None):
            raise where.error(f"missing field '{name}' (expected {allowed})", name)
        if not isinstance(row[name], str):
            raise where.error(f"field '{name}' must be a string, got {type(row[name]).__name__}", name)
        return row[name]

    def chat(self, row: dict, where: Where, field: str, role_key: str, text_key: str, roles: dict) -> list[dict]:
        """A conversation column as [{role, content}] in our roles; the last turn must be the assistant's."""
        name = self.col(field)
        turns = row.get(name)
        if not isinstance(turns, list) or not turns:
            raise where.error(f"field '{name}' must be a non-empty list of {{{role_key}, {text_key}}} objects", name)
        out = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
                raise where.error(f"{name}[{i}] must be an object with '{role_key}' and '{text_key}'", name)
            if turn[role_key] not in roles:
                raise where.error(f"{name}[{i}].{role_key} is {turn[role_key]!r}; allowed: {', '.join(roles)}", name)
            if not isinstance(turn[text_key], str):
                raise where.error(f"{name}[{i}].{text_key} must be a string", name)
            out.append({"role": roles[turn[role_key]], "content": turn[text_key]})
        if out[-1]["role"] != "assistant":
            raise where.error("the last message must be the assistant's (it is what the model learns)", name)
        return out


def check_columns(fmt: str, columns: dict) -> str | None:
    """What is wrong with a data.columns mapping for data.format (None: nothing)."""
    known = sorted({f for fields in FIELDS.values() for f in fields}) if fmt == "auto" else FIELDS[fmt]
    for key, value in columns.items():
        if key not in known:
            return f"{key!r} is not a field of format {fmt} (fields: {', '.join(known)})"
        if not isinstance(value, str) or not value:
            return f"{key}: the column name must be a non-empty string, got {value!r}"
    return None
