"""Bad input, end to end: `python -m finetune train ...` as a subprocess, the way a user meets it.

Every user error must exit with code 2 and print exactly one line to stderr, `finetune: error: <where>: <what>`,
with no traceback; `finetune --debug train ...` shows the traceback instead. All of these fail before training.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import explain, run_cli
from finetune import datafiles
from finetune.config import load_config

PREFIX = "finetune: error: "

# tiny causal LM built from a config (no download), character tokenizer built from the data
CAUSAL_YAML = """\
name: bad-input
task: causal_lm
model:
  config: {{model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
           num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 64}}
tokenizer:
  build_from_data: true
data:
  train_file: {train}
  max_length: 64
training:
  max_steps: 2
  batch_size: 4
  logging_steps: 1
"""

# tiny bert classifier built from a config, with an explicit label set
CLASSIFICATION_YAML = """\
name: bad-labels
task: classification
model:
  config: {{model_type: bert, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
           num_attention_heads: 2, max_position_embeddings: 64}}
tokenizer:
  build_from_data: true
data:
  train_file: {train}
  labels: [neg, pos]
  max_length: 32
training:
  max_steps: 2
  batch_size: 4
  logging_steps: 1
"""

GOOD = [
    '{"prompt": "reverse: abc", "completion": "cba"}',
    '{"messages": [{"role": "user", "content": "reverse: xy"}, {"role": "assistant", "content": "yx"}]}',
    '{"prompt": "reverse: hello", "completion": "olleh"}',
]


# --- helpers --------------------------------------------------------------------------------------------------------


def _train(config, output_dir: Path, *extra: str, debug: bool = False) -> subprocess.CompletedProcess:
    debug_flag = ["--debug"] if debug else []  # a global flag: it goes before the subcommand
    return run_cli(*debug_flag, "train", config, "--output-dir", output_dir, *extra, timeout=300, check=False)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _causal_config(tmp_path: Path, train: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CAUSAL_YAML.format(train=train))
    return path


def _assert_user_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2, stderr exactly one `finetune: error: ...` line holding every expected text, no traceback."""
    report = explain(proc)
    assert "Traceback" not in proc.stderr, report
    assert proc.returncode == 2, report
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"stderr must be exactly one line\n{report}"
    assert proc.stderr == lines[0] + "\n", report
    line = lines[0]
    assert line.startswith(PREFIX), report
    for text in expected:
        assert text in line, f"{text!r} not in the error line\n{report}"
    assert "[finetune]" not in proc.stdout, f"training started before the error\n{report}"
    return line[len(PREFIX) :]


# --- the cases: each writes its files into tmp_path and returns (config, [texts the error line must hold]) ----------


def _malformed_jsonl(tmp_path):
    # a blank line before the bad one: the line number must count every line of the file, blank ones included
    train = _write_lines(tmp_path / "train.jsonl", [GOOD[0], "", GOOD[1], '{"prompt": "x", "completion": }', GOOD[2]])
    return _causal_config(tmp_path, train), [f"{train}:4: ", "not valid JSON"]


def _missing_field(tmp_path):
    train = _write_lines(tmp_path / "train.jsonl", [GOOD[0], GOOD[1], '{"prompt": "reverse: abc"}', GOOD[2]])
    return _causal_config(tmp_path, train), [f"{train}:3: ", "missing field 'completion'"]


def _empty_dataset(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("")
    return _causal_config(tmp_path, train), [f"{train}: ", "empty"]


def _label_outside_label_set(tmp_path):
    train = _write_lines(
        tmp_path / "train.jsonl",
        [
            '{"text": "good film", "label": "pos"}',
            '{"text": "bad film", "label": "neg"}',
            '{"text": "a film", "label": "neutral"}',
            '{"text": "great film", "label": "pos"}',
        ],
    )
    config = tmp_path / "run.yaml"
    config.write_text(CLASSIFICATION_YAML.format(train=train))
    return config, [f"{train}:3: ", "'neutral'", "neg, pos"]


def _missing_data_file(tmp_path):
    train = tmp_path / "no-such-dir" / "train.jsonl"
    return _causal_config(tmp_path, train), [f"{train}: ", "not found"]


def _missing_config_file(tmp_path):
    config = tmp_path / "no-such-config.yaml"
    return config, [f"{config}: ", "not found"]


def _unknown_config_key(tmp_path):
    train = _write_lines(tmp_path / "train.jsonl", GOOD)
    config = _causal_config(tmp_path, train)
    config.write_text(config.read_text().replace("  batch_size: 4\n", "  batch_size: 4\n  lr: 0.01\n"))
    line = config.read_text().splitlines().index("  lr: 0.01") + 1
    return config, [f"{config}:{line}: training.lr: unknown key", "allowed:", "learning_rate"]


CASES = {
    "malformed_jsonl": _malformed_jsonl,
    "missing_field": _missing_field,
    "empty_dataset": _empty_dataset,
    "label_outside_label_set": _label_outside_label_set,
    "missing_data_file": _missing_data_file,
    "missing_config_file": _missing_config_file,
    "unknown_config_key": _unknown_config_key,
}


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, case):
    config, expected = CASES[case](tmp_path)
    out = tmp_path / "run"
    proc = _train(config, out)
    _assert_user_error(proc, *expected)
    # nothing of a run was written: no manifest, tokenizer or checkpoint
    assert not (out / "manifest.json").exists()
    assert not (out / "tokenizer").exists()
    assert not list(out.glob("checkpoint-*"))


def test_label_case_would_otherwise_be_valid(tmp_path):
    """The classification config is valid, and so is its data once the stray label is fixed: the only fault the
    end-to-end case above has is the label outside the label set."""
    config, _ = _label_outside_label_set(tmp_path)
    cfg = load_config(config)
    assert cfg.task == "classification" and cfg.data.labels == ["neg", "pos"]
    assert cfg.model.config["model_type"] == "bert" and cfg.tokenizer.build_from_data
    records = datafiles.read_records(cfg.data.train_file, cfg.task, cfg.data.text_field, cfg.data.label_field)
    assert [r.label for r in records] == ["pos", "neg", "neutral", "pos"]
    fixed = [r for r in records if r.label != "neutral"]
    datafiles.check_labels(fixed, cfg.data.labels, cfg.data.train_file)  # raises on a bad label


def test_debug_shows_the_traceback(tmp_path):
    config, expected = _malformed_jsonl(tmp_path)
    proc = _train(config, tmp_path / "run", debug=True)
    report = explain(proc)
    assert proc.returncode not in (0, 2), report  # an uncaught exception, not the handled exit
    assert "Traceback (most recent call last)" in proc.stderr, report
    assert "DataError" in proc.stderr, report
    for text in expected:
        assert text in proc.stderr, report
    assert PREFIX not in proc.stderr, report


def test_bad_set_on_the_command_line(tmp_path):
    train = _write_lines(tmp_path / "train.jsonl", GOOD)
    proc = _train(_causal_config(tmp_path, train), tmp_path / "run", "--set", "training.batch_size=big")
    _assert_user_error(proc, "--set training.batch_size: got 'big'", "an integer")


def test_data_file_that_is_not_utf8(tmp_path):
    train = tmp_path / "train.jsonl"
    bad = '{"prompt": "caf\xe9", "completion": "x"}'.encode("latin-1")
    train.write_bytes(GOOD[0].encode() + b"\n" + bad + b"\n")
    proc = _train(_causal_config(tmp_path, train), tmp_path / "run")
    column = bad.index(b"\xe9") + 1  # 1-based, in bytes: where the decoder stopped on line 2
    where = _assert_user_error(proc, f"{train}:2: ")
    assert where == f"{train}:2: not UTF-8 text (invalid continuation byte at column {column})", where


def test_a_model_that_cannot_be_loaded_is_one_line_naming_the_key(tmp_path):
    from conftest import DEFAULT_CONFIG

    missing = tmp_path / "no-such-model"
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", tmp_path / "run", "--set", "model.config=null",
        "--set", f"model.name_or_path={missing}", "--set", "tokenizer.build_from_data=true", check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, explain(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("finetune: error: model.name_or_path: cannot load") and str(missing) in last, last
