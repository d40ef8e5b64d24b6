"""Data layouts x file formats (finetune.formats, finetune.datafiles, finetune.hfdata): each layout in each file
format reads into the right records; a hub id loads from a local HF cache with offline mode on, and an uncached one is
one line, exit 2; a bad row names its file and line (JSONL, CSV) or its row and column (JSON, parquet, arrow); and a
short real training run on each layout learns (slow).

Fixtures are written into tmp_path by the tests: parquet with pyarrow, arrow folders with `datasets`' save_to_disk,
and the hub cache with `datasets`' own builder, into the folder layout load_dataset keeps (`owner___name/default/...`),
as a download would leave it. No stand-ins: every reader and the cache lookup are the real libraries'.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULT_CONFIG, REPO, cli_env, explain, read_json, run_cli
from finetune.datafiles import read_records
from finetune.errors import DataError
from finetune.report import read_metrics

# Each layout: two rows, and what they must read as (Record fields other than line/row).
USER_ASSISTANT = [{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}]
LAYOUTS = {
    "messages": (
        [{"messages": USER_ASSISTANT}, {"messages": [{"role": "system", "content": "be brief"}, *USER_ASSISTANT]}],
        [{"messages": USER_ASSISTANT}, {"messages": [{"role": "system", "content": "be brief"}, *USER_ASSISTANT]}],
    ),
    "sharegpt": (
        [
            {"conversations": [{"from": "human", "value": "reverse: abc"}, {"from": "gpt", "value": "cba"}]},
            {
                "conversations": [
                    {"from": "system", "value": "be brief"},
                    {"from": "human", "value": "reverse: abc"},
                    {"from": "gpt", "value": "cba"},
                ]
            },
        ],
        [{"messages": USER_ASSISTANT}, {"messages": [{"role": "system", "content": "be brief"}, *USER_ASSISTANT]}],
    ),
    "alpaca": (
        [
            {"instruction": "reverse", "input": "abc", "output": "cba"},
            {"instruction": "say hi", "input": "", "output": "hi"},
        ],
        [
            {"messages": [{"role": "user", "content": "reverse\n\nabc"}, {"role": "assistant", "content": "cba"}]},
            {"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi"}]},
        ],
    ),
    "prompt_completion": (
        [{"prompt": "reverse: abc", "completion": "cba"}, {"prompt": "reverse: xy", "completion": "yx"}],
        [{"prompt": "reverse: abc", "completion": "cba"}, {"prompt": "reverse: xy", "completion": "yx"}],
    ),
    "text_label": (
        [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}],
        [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}],
    ),
}
NESTED = {"messages", "sharegpt"}  # lists of turns: a CSV cell cannot hold them


def write(rows: list[dict], kind: str, where: Path) -> Path:
    """rows as a file (or folder) of the given kind; returns its path."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path = where / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path = where / "data.json"
        path.write_text(json.dumps(rows, indent=1))
    elif kind == "csv":
        path = where / "data.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = where / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "arrow":
        import datasets

        path = where / "data_arrow"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(kind)
    return path


KINDS = ["jsonl", "json", "csv", "parquet", "arrow"]
CASES = [(layout, kind) for layout in LAYOUTS for kind in KINDS if not (layout in NESTED and kind == "csv")]
LINE_BASED = {"jsonl", "csv"}


def fields(record) -> dict:
    return {k: v for k, v in vars(record).items() if v is not None and k not in ("line", "row")}


def task_of(layout: str) -> str:
    return "classification" if layout == "text_label" else "causal_lm"


@pytest.mark.parametrize("fmt", ["auto", "explicit"])
@pytest.mark.parametrize("layout,kind", CASES)
def test_each_layout_in_each_file_format_reads_into_the_right_records(tmp_path, layout, kind, fmt):
    rows, expected = LAYOUTS[layout]
    path = write(rows, kind, tmp_path)
    records = read_records(path, task_of(layout), fmt=layout if fmt == "explicit" else "auto")
    assert [fields(r) for r in records] == expected
    if kind in LINE_BASED:  # the header is line 1 of a CSV
        assert [r.line for r in records] == ([2, 3] if kind == "csv" else [1, 2]) and records[0].row is None
    else:
        assert [r.row for r in records] == [0, 1]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_columns_map_other_names_onto_a_layout(tmp_path, kind):
    rows = [{"question": "reverse: abc", "answer": "cba", "id": 1}]
    path = write(rows, kind, tmp_path)
    mapping = {"prompt": "question", "completion": "answer"}
    for fmt in ("auto", "prompt_completion"):
        [record] = read_records(path, "causal_lm", fmt=fmt, columns=mapping)
        assert (record.prompt, record.completion) == ("reverse: abc", "cba")


def test_an_arrow_folder_with_splits_reads_the_configured_split(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"prompt": "a", "completion": "b"}]),
            "test": datasets.Dataset.from_list([{"prompt": "c", "completion": "d"}]),
        }
    ).save_to_disk(str(folder))
    assert read_records(folder, "causal_lm")[0].prompt == "a"
    assert read_records(folder, "causal_lm", split="test")[0].prompt == "c"
    with pytest.raises(DataError, match=r"no split 'dev' \(splits: train, test\); set data.split"):
        read_records(folder, "causal_lm", split="dev")


# --- bad rows: the location each kind of source can name ------------------------------------------------------------

GOOD_PC = {"prompt": "reverse: abc", "completion": "cba"}
BAD_PC = {"prompt": "reverse: xy", "completion": None}  # third row: no completion (a columnar file's null)
MISSING = "missing field 'completion' (expected 'messages', or 'prompt' and 'completion')"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "csv"])  # CSV cells are all strings: the test below
def test_a_bad_row_names_file_and_line_or_row_and_column(tmp_path, kind):
    path = write([GOOD_PC, GOOD_PC, BAD_PC], kind, tmp_path)
    with pytest.raises(DataError) as err:
        read_records(path, "causal_lm", fmt="prompt_completion")
    message = str(err.value)
    if kind == "jsonl":
        assert message == f"{path}:3: field 'completion' must be a string, got NoneType"  # as before: JSON has nulls
    else:
        assert message == f"{path}: row 2, column 'completion': {MISSING}"


# files whose text is wrong: (name, text, what the one error line says, with {path} for the file)
BAD_TEXT = {
    "csv_row_without_a_value": (
        "data.csv",
        "prompt,completion\nreverse: abc,cba\nreverse: xy\n",
        "{path}:3: missing field 'completion'",
    ),
    "invalid_json_array": (
        "data.json",
        '[\n {"prompt": "a", "completion": "b"},\n {"prompt": "c" "completion": "d"}\n]\n',
        "{path}:3: not valid JSON",
    ),
    "not_parquet": ("data.parquet", "not parquet\n", "{path}: cannot read as a parquet file: "),
}


@pytest.mark.parametrize("case", BAD_TEXT)
def test_a_bad_file_is_one_error_naming_its_line(tmp_path, case):
    name, text, expected = BAD_TEXT[case]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_records(path, "causal_lm")
    assert str(err.value).startswith(expected.format(path=path)), str(err.value)


def test_a_bad_turn_in_a_columnar_file_names_row_and_column(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}]
    path = write(rows, "parquet", tmp_path)
    with pytest.raises(DataError) as err:
        read_records(path, "causal_lm")
    assert str(err.value) == (
        f"{path}: row 0, column 'conversations': conversations[1].from is 'bot'; allowed: system, human, gpt"
    )


def test_columns_and_format_are_validated(tmp_path):
    from finetune.config import load_config
    from finetune.errors import ConfigError

    base = ["data.train_file=x.jsonl"]
    with pytest.raises(ConfigError, match=r"--set data.columns: 'question' is not a field of format prompt_completion"):
        load_config(DEFAULT_CONFIG, [*base, "data.format=prompt_completion", "data.columns={question: q}"])
    with pytest.raises(ConfigError, match=r"--set data.format: text_label does not apply to task causal_lm"):
        load_config(DEFAULT_CONFIG, [*base, "data.format=text_label"])
    with pytest.raises(ConfigError, match=r"--set data.format: got 'tsv'; allowed: one of 'auto', 'messages'"):
        load_config(DEFAULT_CONFIG, [*base, "data.format=tsv"])


# --- end to end: exit 2, one line -----------------------------------------------------------------------------------


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, explain(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("finetune: error: "), explain(proc)
    return lines[0]


def test_a_bad_parquet_row_is_exit_2_with_row_and_column(tmp_path):
    path = write([GOOD_PC, GOOD_PC, BAD_PC], "parquet", tmp_path)
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", tmp_path / "run", "--set", f"data.train_file={path}",
        check=False, timeout=300,
    )  # fmt: skip
    line = one_error_line(proc)
    assert line.endswith(f"{path}: row 2, column 'completion': {MISSING}"), line


# --- hub ids, offline -------------------------------------------------------------------------------------------------

HUB_ROWS = [{"prompt": "reverse: abc", "completion": "cba"}, {"prompt": "reverse: xy", "completion": "yx"}]


def cache_hub_dataset(hf_home: Path, repo_id: str, rows: list[dict]) -> None:
    """Write rows into hf_home's datasets cache the way load_dataset(repo_id) leaves a downloaded dataset:
    `datasets`' own builder, with the repo id, into <namespace>___<name>/default/0.0.0/<hash>/."""
    import datasets
    from datasets.packaged_modules.generator.generator import Generator

    def generate():
        yield from rows

    namespace, name = repo_id.split("/")
    builder = Generator(
        cache_dir=str(hf_home / "datasets"), dataset_name=name, repo_id=repo_id, config_id="default",
        hash="0123456789abcdef", generator=generate, split=datasets.Split.TRAIN,
    )  # fmt: skip
    builder.download_and_prepare()
    assert (hf_home / "datasets" / f"{namespace}___{name}" / "default").is_dir()


def offline_env(hf_home: Path) -> dict:
    env = cli_env()
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    env.pop("HF_DATASETS_CACHE", None)
    return env


def test_a_hub_id_loads_from_the_local_cache_offline(tmp_path):
    hf_home = tmp_path / "hf"
    cache_hub_dataset(hf_home, "someone/tiny-reversal", HUB_ROWS)
    code = (
        "from finetune.datafiles import read_records; "
        "print([(r.prompt, r.completion, r.row) for r in read_records('someone/tiny-reversal', 'causal_lm')])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=offline_env(hf_home), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip() == "[('reverse: abc', 'cba', 0), ('reverse: xy', 'yx', 1)]"


def test_an_uncached_hub_id_offline_is_one_line_saying_how_to_get_it(tmp_path):
    hf_home = tmp_path / "hf"
    cache_hub_dataset(hf_home, "someone/tiny-reversal", HUB_ROWS)  # a cache, but not of the id asked for
    cmd = [sys.executable, "-m", "finetune", "train", DEFAULT_CONFIG, "--output-dir", tmp_path / "run"]
    cmd += ["--set", "data.train_file=someone/not-cached", "--set", "data.eval_file=null"]
    proc = subprocess.run(cmd, cwd=REPO, env=offline_env(hf_home), capture_output=True, text=True, timeout=300)
    line = one_error_line(proc)
    assert line.startswith("finetune: error: someone/not-cached: not a local file or folder, and hub dataset "), line
    assert f"not in the local cache {hf_home / 'datasets'} (offline: HF_HUB_OFFLINE=1)" in line, line
    assert "datasets.load_dataset('someone/not-cached', split='train')" in line and "HF_HUB_OFFLINE=0" in line, line


# --- a short real training run on each layout (slow) ------------------------------------------------------------------

REVERSAL = [json.loads(line) for line in (REPO / "data/reversal/train.jsonl").read_text().splitlines()[:480]]


def letters_by_half(n: int) -> list[dict]:
    """Classification a tiny random-init model learns in a few steps: words of a-m are "low", of n-z "high" (the
    default sentiment data needs a pretrained model: from scratch its loss stays at ln 2 for 30 steps)."""
    import random

    rng = random.Random(0)
    halves = {"low": "abcdefghijklm", "high": "nopqrstuvwxyz"}
    rows = []
    for i in range(n):
        label = ("low", "high")[i % 2]
        rows.append({"text": "".join(rng.choice(halves[label]) for _ in range(rng.randint(4, 10))), "label": label})
    return rows


def as_layout(layout: str) -> list[dict]:
    """The default reversal data (letters_by_half for text_label) in the given layout."""
    if layout == "text_label":
        return letters_by_half(320)
    out = []
    for row in REVERSAL:
        user, assistant = (m["content"] for m in row["messages"])
        out.append(
            {
                "messages": row,
                "sharegpt": {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]},
                "alpaca": {"instruction": "reverse", "input": user.removeprefix("reverse: "), "output": assistant},
                "prompt_completion": {"prompt": user + "\n", "completion": assistant},
            }[layout]
        )
    return out


# each layout in a different file format, so every reader feeds a real run
TRAIN_KIND = {
    "messages": "parquet",
    "sharegpt": "arrow",
    "alpaca": "json",
    "prompt_completion": "csv",
    "text_label": "jsonl",
}
CLASSIFIER = (
    "model.config={model_type: bert, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 2, max_position_embeddings: 64}"
)


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_short_run_on_each_layout_learns(tmp_path, layout):
    path = write(as_layout(layout), TRAIN_KIND[layout], tmp_path)
    evals = None
    if layout == "text_label":  # an eval file: without one classification fails in features.tokenize_classification
        evals = write(letters_by_half(32), "jsonl", tmp_path / "eval")
    sets = [f"data.train_file={path}", f"data.eval_file={evals or 'null'}", f"data.format={layout}"]
    sets += ["training.max_steps=30"]
    sets += ["training.logging_steps=5", "training.save_steps=1000", "training.warmup_ratio=0"]
    if layout == "text_label":
        sets += ["task=classification", CLASSIFIER, "data.packing=false", "data.max_length=32"]
        sets += ["training.learning_rate=3e-3", "training.batch_size=16"]
    out = tmp_path / "run"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *[a for s in sets for a in ("--set", s)], timeout=600)
    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    assert len(losses) >= 5 and read_json(out / "summary.json")["status"] == "completed"
    assert losses[-1] < 0.9 * losses[0], losses  # it learns: 30 steps took 15-21% off here


# --- an environment without `datasets` (one of your own: `make venv` and every image have it) -----------------------


@pytest.mark.parametrize("which", ["train_file", "eval_file"])
@pytest.mark.parametrize("source", ["data.parquet", "saved_folder", "someone/some-dataset"])
def test_a_source_that_needs_datasets_stops_before_any_work_where_it_is_missing(tmp_path, monkeypatch, which, source):
    """resolve() names the key, the package, where it is and the fix, instead of an ImportError mid-run."""
    import finetune.resolve as resolve_module
    from finetune.config import ConfigError, load_config

    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    (tmp_path / "saved_folder").mkdir()
    value = source if "/" in source else str(tmp_path / source)
    monkeypatch.setattr(resolve_module, "has_package", lambda name: name != "datasets")
    cfg = load_config(DEFAULT_CONFIG, [f"data.{which}={value}"])
    with pytest.raises(
        ConfigError,
        match=rf"data\.{which}: {re.escape(value)} is read with the datasets package, "
        r"which is not installed here \(`make venv` and the images have it\): pip install datasets, or convert it to "
        "JSONL$",
    ):
        resolve_module.resolve(cfg, cuda=False)


def test_jsonl_and_csv_sources_do_not_need_datasets(monkeypatch):
    import finetune.resolve as resolve_module
    from finetune.config import load_config

    monkeypatch.setattr(resolve_module, "has_package", lambda name: name != "datasets")
    assert resolve_module.resolve(load_config(DEFAULT_CONFIG), cuda=False).device == "cpu"
