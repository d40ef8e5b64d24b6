"""Reading training data into validated records, with errors that name the file and line (line-based files) or the
row and column (the others). The entry point for every source; layouts and column mapping are finetune.formats'.

Sources (data.train_file / data.eval_file):
  .jsonl (and any other suffix), .csv   read here, line by line, without importing `datasets` (fast, exact lines)
  .json                                 a JSON array of objects (rows by index), or JSON lines (as .jsonl)
  .parquet, a save_to_disk folder, a hub dataset id (data.split, data.subset)    finetune.hfdata, through `datasets`

Record shapes, by task:
  causal_lm       {"messages": [{"role": ..., "content": ...}, ...]}   (chat; the last turn is the assistant's)
                  {"prompt": "...", "completion": "..."}                (plain prompt/completion)
  classification  {"text": "...", "label": "..."}                       (field names set in data.text_field/label_field)
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import DataError
from finetune.formats import Layout, Where

# A name that is not a local path and reads as a hub dataset id ("owner/name" or a bare "name"): loaded by `datasets`
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
FILE_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt"}
# data.max_record_bytes' default: a JSON line longer than this is an error (or skipped: data.long_records). A line is
# read at most this far, so one huge record cannot take the memory (a 20 MB line once cost 7.7 GB resident)
MAX_RECORD_BYTES = 1_000_000


@dataclass
class Record:
    line: int | None  # 1-based line in the source file (line-based files), for error messages and debugging
    messages: list[dict] | None = None
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None
    label: str | None = None
    row: int | None = None  # 0-based row index, for the sources that have no lines (finetune.formats.Where)


def _rows(path: Path, lines: bool = False, limit: int = MAX_RECORD_BYTES, skip_long: bool = False):
    """Yield (line_number, dict) from a JSONL or CSV file (lines: JSON lines whatever the suffix). A JSON line longer
    than `limit` bytes is an error, or skipped with a line (skip_long); either way it is never held whole."""
    if not path.is_file():
        raise DataError(path, None, "data file not found")
    if path.suffix.lower() == ".csv" and not lines:
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for row in reader:  # a short row's missing cells (None) are missing fields, not values
                    yield reader.line_num, {k: v for k, v in row.items() if v is not None}
        except UnicodeDecodeError as e:
            raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        except csv.Error as e:
            raise DataError(path, reader.line_num, f"not valid CSV ({e})") from None
        return
    with path.open("rb") as f:
        for number, data in enumerate(iter(lambda: f.readline(limit + 1), b""), start=1):
            if len(data.rstrip(b"\n")) > limit:
                too_long = f"a record longer than data.max_record_bytes={limit:,} bytes"
                if not skip_long:
                    raise DataError(path, number, f"{too_long}: raise the limit, or skip such records with "
                                    "data.long_records: skip")  # fmt: skip
                while data and not data.endswith(b"\n"):  # the rest of the line, a MiB at a time
                    data = f.readline(1 << 20)
                print(f"[finetune] {path}:{number}: skipped, {too_long} (data.long_records: skip)", flush=True)
                continue
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


def _json_rows(path: Path, limit: int, skip_long: bool):
    """A .json file: a JSON array of objects (row index), or JSON lines (line numbers) as `datasets` also reads it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):  # one object per line
            for number, obj in _rows(path, True, limit, skip_long):
                yield Where(str(path), line=number), obj
            return
        raise DataError(path, e.lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(path, None, f"expected a JSON array of objects, got {type(data).__name__}")
    for index, obj in enumerate(data):
        where = Where(str(path), row=index)
        if not isinstance(obj, dict):
            raise where.error(f"expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def reader_of(source: str) -> str:
    """Which reader a source goes to: "datasets" (a parquet file, a save_to_disk folder: finetune.hfdata), "hub" (a
    hub dataset id, also through `datasets`), "json" (a .json file) or "lines" (JSONL, CSV and any other file).
    The one place of this choice: the reader follows it, and resolve() checks `datasets` is there before any work."""
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_dir() or (suffix == ".parquet" and path.is_file()):
        return "datasets"
    if path.is_file() and suffix == ".json":
        return "json"
    if path.is_file() or suffix in FILE_SUFFIXES or not HUB_ID.fullmatch(source):
        return "lines"
    return "hub"


def sources_rows(source: str, split: str, subset: str | None, limit: int = MAX_RECORD_BYTES, skip_long: bool = False):
    """Yield (Where, row dict) from any supported source (see the module docstring); limit and skip_long: _rows'."""
    path, reader = Path(source), reader_of(source)
    if reader == "datasets":
        from finetune import hfdata  # imports `datasets` (seconds): only for the sources that need it

        yield from hfdata.rows(path, split)
    elif reader == "json":
        yield from _json_rows(path, limit, skip_long)
    elif reader == "lines":
        for number, obj in _rows(path, False, limit, skip_long):
            yield Where(str(path), line=number), obj
    else:
        from finetune import hfdata

        yield from hfdata.hub_rows(source, split, subset)


def read_records(
    path: str | Path,
    task: str,
    text_field: str = "text",
    label_field: str = "label",
    fmt: str = "auto",
    columns: dict | None = None,
    split: str = "train",
    subset: str | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
    skip_long: bool = False,
) -> list[Record]:
    layout = Layout(task, fmt, columns, text_field, label_field)
    rows = sources_rows(str(path), split, subset, max_record_bytes, skip_long)
    records = [Record(**layout.fields(obj, where)) for where, obj in rows]
    if not records:
        raise DataError(path, None, "the dataset is empty (no examples)")
    return records


def read_config_data(data, task: str, which: str = "train") -> list[Record]:
    """The records of data.train_file (which="train") or data.eval_file ("eval") of a DataConfig."""
    source = data.train_file if which == "train" else data.eval_file
    split = data.split if which == "train" else data.eval_split
    return read_records(
        source, task, data.text_field, data.label_field, data.format, data.columns, split, data.subset,
        data.max_record_bytes, data.long_records == "skip",
    )  # fmt: skip


def check_labels(records: list[Record], labels: list[str], path) -> None:
    allowed = set(labels)
    for r in records:
        if r.label not in allowed:
            message = f"label {r.label!r} is not in the label set [{', '.join(labels)}]"
            raise Where(str(path), r.line, r.row).error(message, "label" if r.row is not None else None)
