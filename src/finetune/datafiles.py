"""Reading training data files (JSONL or CSV) into validated records, with errors that name the file and line.

Record shapes, by task:
  causal_lm       {"messages": [{"role": ..., "content": ...}, ...]}   (chat; the last turn is the assistant's)
                  {"prompt": "...", "completion": "..."}                (plain prompt/completion)
  classification  {"text": "...", "label": "..."}                       (field names set in data.text_field/label_field)
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    line: int  # 1-based line in the source file, for error messages and debugging
    messages: list[dict] | None = None
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None
    label: str | None = None


def _rows(path: Path):
    """Yield (line_number, dict) from a JSONL or CSV file."""
    if not path.is_file():
        raise DataError(path, None, "data file not found")
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for row in reader:
                    yield reader.line_num, row
        except UnicodeDecodeError as e:
            raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        except csv.Error as e:
            raise DataError(path, reader.line_num, f"not valid CSV ({e})") from None
        return
    with path.open("rb") as f:
        for number, data in enumerate(f, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, number, f"not UTF-8 text ({e.reason} at column {e.start + 1})") from None
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(path, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(path, number, f"expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def _string_field(path, number, obj, name, allowed):
    if name not in obj:
        raise DataError(path, number, f"missing field '{name}' (expected {allowed})")
    value = obj[name]
    if not isinstance(value, str):
        raise DataError(path, number, f"field '{name}' must be a string, got {type(value).__name__}")
    return value


def _chat_record(path, number, obj) -> Record:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(path, number, "field 'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(path, number, f"messages[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(path, number, f"messages[{i}].role is {m['role']!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(path, number, f"messages[{i}].content must be a string")
    if messages[-1]["role"] != "assistant":
        raise DataError(path, number, "the last message must be the assistant's (it is what the model learns)")
    return Record(line=number, messages=[{"role": m["role"], "content": m["content"]} for m in messages])


def read_records(path: str | Path, task: str, text_field: str = "text", label_field: str = "label") -> list[Record]:
    path = Path(path)
    records = []
    for number, obj in _rows(path):
        if task == "classification":
            allowed = f"fields '{text_field}' and '{label_field}'"
            text = _string_field(path, number, obj, text_field, allowed)
            if label_field not in obj or obj[label_field] in (None, ""):
                raise DataError(path, number, f"missing field '{label_field}' (expected {allowed})")
            records.append(Record(line=number, text=text, label=str(obj[label_field])))
        elif "messages" in obj:
            records.append(_chat_record(path, number, obj))
        elif "prompt" in obj or "completion" in obj:
            allowed = "'messages', or 'prompt' and 'completion'"
            prompt = _string_field(path, number, obj, "prompt", allowed)
            completion = _string_field(path, number, obj, "completion", allowed)
            records.append(Record(line=number, prompt=prompt, completion=completion))
        else:
            raise DataError(path, number, "missing field 'messages' (or 'prompt' and 'completion')")
    if not records:
        raise DataError(path, None, "the dataset is empty (no examples)")
    return records


def check_labels(records: list[Record], labels: list[str], path) -> None:
    allowed = set(labels)
    for r in records:
        if r.label not in allowed:
            raise DataError(path, r.line, f"label {r.label!r} is not in the label set [{', '.join(labels)}]")
