"""In-process unit tests of finetune.config: load_config / from_dict, --set overrides and every error message.

Every ConfigError must be one line that says where (``file:line: dotted.key`` or ``--set dotted.key``) and what is
allowed, so a user can fix the config without reading code.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from finetune import cli
from finetune.config import (
    DataConfig,
    EvalConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    TokenizerConfig,
    TrainingConfig,
    from_dict,
    load_config,
)
from finetune.errors import ConfigError

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))

# A small valid config; the tests below append to it or replace single lines. Keep the key order: tests look
# lines up by content, never by a hard-coded number.
VALID = """\
name: tiny
task: causal_lm
seed: 1
model:
  config:
    model_type: llama
    hidden_size: 32
    num_hidden_layers: 1
tokenizer:
  build_from_data: true
data:
  train_file: data/reversal/train.jsonl
  max_length: 64
training:
  epochs: 3
  batch_size: 16
  grad_accum: 2
  learning_rate: 0.001
eval:
  max_new_tokens: 8
"""

SECTIONS = {
    "model": ModelConfig,
    "tokenizer": TokenizerConfig,
    "data": DataConfig,
    "lora": LoraConfig,
    "training": TrainingConfig,
    "eval": EvalConfig,
}


# --- helpers --------------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _line_of(path: Path, needle: str) -> int:
    """1-based number of the one line of the file that starts with needle (ignoring indentation)."""
    hits = [
        i for i, line in enumerate(path.read_text().splitlines(), start=1) if line.strip().startswith(needle.strip())
    ]
    assert len(hits) == 1, f"{needle!r} is on lines {hits} of {path}; the test needs exactly one"
    return hits[0]


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the base config"
    return text.replace(old, new)


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    _assert_one_line(message)
    return message


def _assert_one_line(message: str) -> None:
    assert message.strip(), "empty error message"
    assert "\n" not in message and "\r" not in message, f"error message is not one line: {message!r}"


def _allowed(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _assert_names_allowed(message: str, names: list[str]) -> None:
    assert "allowed" in message, message
    tail = message.split("allowed", 1)[1]
    missing = [n for n in names if n not in tail]
    assert not missing, f"allowed keys {missing} not listed in: {message}"


# --- the shipped configs --------------------------------------------------------------------------------------------


def test_there_are_shipped_configs_with_invokes_default_among_them_and_a_run_name_each():
    """The parametrized test below runs once per shipped config (none would pass silently); `invoke train` runs
    invoke.yaml's finetune.config when no --config is given; each config's name is its default run directory,
    runs/<name>, so two configs with one name would train into each other's runs."""
    assert SHIPPED, f"no configs/*.yaml under {REPO}"
    default = yaml.safe_load((REPO / "invoke.yaml").read_text())["finetune"]["config"]
    assert REPO / default in SHIPPED, f"invoke.yaml's finetune.config {default} is not among {SHIPPED}"
    names = [load_config(path).name for path in SHIPPED]
    assert len(set(names)) == len(names), f"shipped configs share a run name: {dict(zip(SHIPPED, names))}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    cfg = load_config(path)  # raises on any unknown key, wrong type or bad value
    # the data it names is in the repository (paths are relative to the repo root, where the CLI runs)
    for name in (cfg.data.train_file, cfg.data.eval_file):
        if name:
            assert (REPO / name).is_file(), f"{path.name} names {name}, which does not exist"


def test_default_config_values():
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert cfg.name == "default"
    assert cfg.task == "causal_lm"
    assert cfg.model.name_or_path is None
    assert cfg.model.config["model_type"] == "llama"
    assert cfg.tokenizer.build_from_data is True
    assert cfg.data.packing is True
    assert cfg.training.batch_size == 16
    assert cfg.training.learning_rate == pytest.approx(3e-3)
    assert isinstance(cfg.training.learning_rate, float)
    assert cfg.training.lr_scheduler == "cosine"
    assert cfg.training.grad_accum == 1  # not in the file: the dataclass default


def test_valid_config_and_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, VALID))
    assert cfg.name == "tiny" and cfg.seed == 1
    assert cfg.model.config == {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1}
    assert cfg.training.epochs == 3.0 and isinstance(cfg.training.epochs, float)  # int in YAML, float field
    assert cfg.training.batch_size == 16 and cfg.training.grad_accum == 2
    assert cfg.data.eval_file is None
    assert cfg.lora == LoraConfig()  # section absent: all defaults
    assert cfg.eval.max_new_tokens == 8 and cfg.eval.batch_size == EvalConfig().batch_size


def test_float_written_as_1e_minus_3_in_the_file(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field must still take it as the number it means
    path = _write(tmp_path, _replace(VALID, "learning_rate: 0.001", "learning_rate: 1e-3"))
    cfg = load_config(path)
    assert cfg.training.learning_rate == pytest.approx(1e-3)
    assert isinstance(cfg.training.learning_rate, float)


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert str(path) in message
    assert "not found" in message


def test_config_errors_are_user_errors_with_exit_code_2(tmp_path, capsys):
    """finetune's handler turns a UserError into one line and exit code 2: a ConfigError must be one (anything else
    escapes as a traceback and exit 1). In process; tests/test_bad_input.py does the same end to end."""
    path = _write(tmp_path, VALID + "learning_rate: 0.1\n")
    expected = _error(path)
    code = cli.main(["train", str(path), "--output-dir", str(tmp_path / "run")])
    assert (code, capsys.readouterr().err) == (2, f"finetune: error: {expected}\n")
    assert not (tmp_path / "run").exists()


# --- unknown keys ---------------------------------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, VALID + "learning_rate: 0.1\n")
    message = _error(path)
    line = _line_of(path, "learning_rate: 0.1")
    assert line > 1
    assert message.startswith(f"{path}:{line}: learning_rate: unknown key"), message
    _assert_names_allowed(message, _allowed(RunConfig))


@pytest.mark.parametrize(
    "section, key",
    [
        ("training", "lr"),
        ("data", "trainfile"),
        ("model", "hidden_size"),
        ("tokenizer", "name"),
        ("eval", "metrics"),
        ("lora", "rank"),
    ],
)
def test_unknown_nested_key_names_file_line_dotted_key_and_allowed(tmp_path, section, key):
    text = VALID if f"\n{section}:\n" in VALID else VALID + f"{section}:\n  enabled: false\n"
    text = _replace(text, f"\n{section}:\n", f"\n{section}:\n  {key}: 5\n")
    path = _write(tmp_path, text)
    line = _line_of(path, f"  {key}: 5")
    message = _error(path)
    assert message.startswith(f"{path}:{line}: {section}.{key}: unknown key"), message
    _assert_names_allowed(message, _allowed(SECTIONS[section]))


def test_unknown_key_deep_in_the_file_gets_its_own_line(tmp_path):
    # the unknown key is the last line of a section that starts much earlier: the message must name the key's line
    path = _write(tmp_path, _replace(VALID, "  learning_rate: 0.001\n", "  learning_rate: 0.001\n  warmup: 0.1\n"))
    line = _line_of(path, "warmup: 0.1")
    assert line != _line_of(path, "training:")
    assert _error(path).startswith(f"{path}:{line}: training.warmup: unknown key")


def test_section_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, _replace(VALID, "eval:\n  max_new_tokens: 8\n", "eval: accuracy\n"))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'eval: accuracy')}: eval: must be a mapping"), message
    _assert_names_allowed(message.replace("with keys", "allowed"), _allowed(EvalConfig))


# --- wrong types and values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, dotted, shown, allowed",
    [
        ("batch_size: 16", 'batch_size: "big"', "training.batch_size", "'big'", "an integer"),
        ("batch_size: 16", "batch_size: true", "training.batch_size", "True", "an integer"),  # a bool is not an int
        ("batch_size: 16", "batch_size: 16.5", "training.batch_size", "16.5", "an integer"),
        ("epochs: 3", "epochs: many", "training.epochs", "'many'", "a number"),
        ("max_length: 64", "max_length: [64]", "data.max_length", "[64]", "an integer"),
        (
            "build_from_data: true",
            "build_from_data: sometimes",
            "tokenizer.build_from_data",
            "'sometimes'",
            "true/false",
        ),
        ("name: tiny", "name: [a, b]", "name", "['a', 'b']", "a string"),
        ("max_new_tokens: 8", "max_new_tokens: lots", "eval.max_new_tokens", "'lots'", "an integer"),
    ],
)
def test_wrong_type_names_the_value_and_what_is_allowed(tmp_path, old, new, dotted, shown, allowed):
    path = _write(tmp_path, _replace(VALID, old, new))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, new)}: {dotted}: "), message
    assert shown in message
    assert f"allowed: {allowed}" in message, message


def test_optional_field_says_null_is_allowed(tmp_path):
    path = _write(tmp_path, _replace(VALID, "epochs: 3", "max_steps: ten"))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'max_steps: ten')}: training.max_steps: got 'ten'"), message
    assert "an integer or null" in message


def test_list_field_of_the_wrong_type(tmp_path):
    path = _write(tmp_path, VALID + "lora:\n  target_modules: q_proj\n")
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'target_modules')}: lora.target_modules: got 'q_proj'")
    assert "a list of a string" in message


def test_wrong_literal_task_names_the_choices(tmp_path):
    path = _write(tmp_path, _replace(VALID, "task: causal_lm", "task: regression"))
    message = _error(path)
    assert message.startswith(f"{path}:2: task: got 'regression'"), message
    assert "allowed: one of 'causal_lm', 'classification'" in message


@pytest.mark.parametrize(
    "old, new, dotted, choices",
    [
        (
            "epochs: 3",
            "lr_scheduler: step",
            "training.lr_scheduler",
            ["linear", "cosine", "constant", "constant_with_warmup"],
        ),
        ("epochs: 3", "precision: fp8", "training.precision", ["auto", "fp32", "bf16", "fp16"]),
        (
            "max_new_tokens: 8",
            "metric: bleu",
            "eval.metric",
            ["auto", "exact_match", "accuracy", "preference_accuracy", "mean_reward", "none"],
        ),
    ],
)
def test_wrong_literal_in_a_section_names_every_choice(tmp_path, old, new, dotted, choices):
    path = _write(tmp_path, _replace(VALID, old, new))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, new)}: {dotted}: got "), message
    for choice in choices:
        assert repr(choice) in message, f"{choice} missing from: {message}"


@pytest.mark.parametrize(
    "old, dotted, outside, inside, allowed",
    [
        pytest.param("batch_size: 16", "training.batch_size", ["0", "-3"], ["1"], "an integer >= 1", id="batch_size"),
        pytest.param(
            "learning_rate: 0.001", "training.learning_rate", ["0.0", "-1.0"], ["1.0e-09"], "a number > 0", id="lr"
        ),
        pytest.param("epochs: 3", "training.warmup_ratio", ["1.0", "-0.1"], ["0.0", "0.99"], "0 <= x < 1", id="warmup"),
        pytest.param("max_length: 64", "data.max_length", ["7", "0"], ["8"], "an integer >= 8", id="max_length"),
    ],
)
def test_out_of_range_value_names_its_line_and_the_range(tmp_path, old, dotted, outside, inside, allowed):
    """Values just past the bound fail with the bound in the message; the values at the bound load."""
    base = _replace(VALID, "grad_accum: 2", "grad_accum: 1")  # batch_size 1 must not fail on divisibility
    section, key = dotted.split(".")
    for value in outside:
        path = _write(tmp_path, _replace(base, old, f"{key}: {value}"))
        line = _line_of(path, f"{key}: {value}")
        assert _error(path) == f"{path}:{line}: {dotted}: got {value}; allowed: {allowed}"
    for value in inside:
        cfg = load_config(_write(tmp_path, _replace(base, old, f"{key}: {value}")))
        assert getattr(getattr(cfg, section), key) == yaml.safe_load(value)


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, _replace(VALID, "  max_length: 64\n", "  max_length: [64\n"))
    message = _error(path)
    assert message.startswith(f"{path}:"), message
    assert "not valid YAML" in message
    line = int(message[len(str(path)) + 1 :].split(":", 1)[0])
    assert line >= _line_of(path, "max_length: [64")  # where the parser noticed, never before the broken line


def test_config_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, "- name: x\n- task: causal_lm\n")
    message = _error(path)
    assert message.startswith(f"{path}:1: "), message
    assert "mapping" in message


# --- --set overrides -----------------------------------------------------------------------------------------------


def test_set_overrides_are_parsed_as_yaml_values(tmp_path):
    path = _write(tmp_path, VALID)
    cfg = load_config(
        path,
        [
            "training.epochs=2",
            "training.max_steps=5",
            "training.learning_rate=1e-3",
            "data.packing=true",
            "name=other",
            "data.labels=[b, a]",
            "model.config.hidden_size=64",
        ],
    )
    assert cfg.training.epochs == 2 and isinstance(cfg.training.epochs, float)
    assert cfg.training.max_steps == 5 and isinstance(cfg.training.max_steps, int)
    assert cfg.training.learning_rate == pytest.approx(1e-3) and isinstance(cfg.training.learning_rate, float)
    assert cfg.data.packing is True
    assert cfg.name == "other"
    assert cfg.data.labels == ["b", "a"]
    assert cfg.model.config == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1}
    # untouched keys keep the file's values
    assert cfg.training.batch_size == 16 and cfg.data.max_length == 64


def test_set_empty_value_is_null_and_last_set_wins(tmp_path):
    path = _write(
        tmp_path, VALID.replace("  max_length: 64\n", "  max_length: 64\n  eval_file: data/reversal/eval.jsonl\n")
    )
    assert load_config(path).data.eval_file == "data/reversal/eval.jsonl"
    cfg = load_config(path, ["data.eval_file=", "training.epochs=2", "training.epochs=4"])
    assert cfg.data.eval_file is None
    assert cfg.training.epochs == 4


def test_set_creates_a_section_absent_from_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, VALID), ["lora.enabled=true", "lora.r=4"])
    assert cfg.lora.enabled is True and cfg.lora.r == 4


@pytest.mark.parametrize(
    "override, starts, contains",
    [
        ("training.lr=1", "--set training.lr: unknown key", _allowed(TrainingConfig)),
        ("lr=1", "--set lr: unknown key", _allowed(RunConfig)),
        ("training.batch_size=big", "--set training.batch_size: got 'big'", ["allowed: an integer"]),
        ("task=regression", "--set task: got 'regression'", ["'causal_lm'", "'classification'"]),
        ("training.epochs", "--set training.epochs: expected key=value", []),
        ("training.epochs.x=1", "--set training.epochs.x: ", ["not a section"]),
        ("training.grad_accum=0", "--set training.grad_accum: got 0", ["allowed: an integer >= 1"]),
        ("training=5", "--set training: must be a mapping", []),
    ],
)
def test_bad_set_names_set_and_the_key(tmp_path, override, starts, contains):
    path = _write(tmp_path, VALID)
    message = _error(path, [override])
    assert message.startswith(starts), message
    assert str(path) not in message  # the culprit is the command line, not the file
    for text in contains:
        assert text in message, f"{text!r} missing from: {message}"


@pytest.mark.parametrize(
    "override, key",
    [
        pytest.param("foo.bar=1", "foo"),
        pytest.param("training.foo.bar=1", "training.foo"),
    ],
)
def test_bad_nested_set_blames_the_command_line(tmp_path, override, key):
    path = _write(tmp_path, VALID)
    message = _error(path, [override])
    assert message.startswith(f"--set {key}: unknown key"), message


# --- cross-field rules ----------------------------------------------------------------------------------------------


# the model section's body in VALID
MODEL_CONFIG = "  config:\n    model_type: llama\n    hidden_size: 32\n    num_hidden_layers: 1\n"
ONE_MODEL = "set exactly one of model.name_or_path (hub id or directory), model.config (build from scratch) and "


@pytest.mark.parametrize(
    "old, new, key_line, dotted, rule",
    [
        pytest.param("model:\n", "model:\n  name_or_path: gpt2\n", "model:", "model", ONE_MODEL, id="model-both"),
        pytest.param(MODEL_CONFIG, "  attn_implementation: eager\n", "model:", "model", ONE_MODEL, id="model-neither"),
        pytest.param(
            "    model_type: llama\n", "", "config:", "model.config", "needs a model_type", id="model.config-type"
        ),
        pytest.param(
            "build_from_data: true",
            "build_from_data: false",
            "tokenizer:",
            "tokenizer",
            "set tokenizer.name_or_path or tokenizer.build_from_data: true",
            id="tokenizer",
        ),
        pytest.param(
            "  train_file: data/reversal/train.jsonl\n", "", "data:", "data.train_file", "is required", id="train_file"
        ),
    ],
)
def test_cross_field_error_on_a_section_names_its_key_line_and_the_rule(tmp_path, old, new, key_line, dotted, rule):
    """The error is on the line of the section's key (its value is a block on the following lines), names the dotted
    key and says the rule that was broken."""
    path = _write(tmp_path, _replace(VALID, old, new))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, key_line)}: {dotted}: {rule}"), message


def test_model_name_or_path_alone_is_valid(tmp_path):
    cfg = load_config(_write(tmp_path, _replace(VALID, MODEL_CONFIG, "  name_or_path: some/model\n")))
    assert cfg.model.name_or_path == "some/model" and cfg.model.config is None


def test_batch_size_must_be_divisible_by_grad_accum(tmp_path):
    path = _write(tmp_path, _replace(VALID, "grad_accum: 2", "grad_accum: 3"))
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'batch_size: 16')}: training.batch_size: "), message
    assert "16" in message and "divisible" in message and "grad_accum=3" in message


@pytest.mark.parametrize("batch_size, grad_accum", [(16, 1), (16, 4), (16, 16), (6, 3)])
def test_divisible_batch_size_is_valid(tmp_path, batch_size, grad_accum):
    cfg = load_config(
        _write(tmp_path, VALID), [f"training.batch_size={batch_size}", f"training.grad_accum={grad_accum}"]
    )
    assert (cfg.training.batch_size, cfg.training.grad_accum) == (batch_size, grad_accum)


def test_packing_only_for_causal_lm(tmp_path):
    text = _replace(
        _replace(VALID, "task: causal_lm", "task: classification"), "max_length: 64", "max_length: 64\n  packing: true"
    )
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'packing: true')}: data.packing: "), message
    assert "causal_lm" in message
    assert load_config(path, ["data.packing=false"]).task == "classification"
    assert load_config(path, ["task=causal_lm"]).data.packing is True


def test_packing_set_on_the_command_line_is_blamed_on_set(tmp_path):
    path = _write(tmp_path, _replace(VALID, "task: causal_lm", "task: classification"))
    message = _error(path, ["data.packing=true"])
    assert message.startswith("--set data.packing: "), message
    assert "causal_lm" in message


@pytest.mark.parametrize("task, metric", [("causal_lm", "accuracy"), ("classification", "exact_match")])
def test_metric_must_fit_the_task(tmp_path, task, metric):
    path = _write(tmp_path, _replace(VALID, "max_new_tokens: 8", f"metric: {metric}"))
    message = _error(path, [f"task={task}"])
    assert message.startswith(f"{path}:{_line_of(path, 'metric:')}: eval.metric: "), message
    assert metric in message and task in message


# --- the line of a key whose value is a block on the following lines ----------------------------------------------


def test_line_of_an_unknown_section_is_the_key_line(tmp_path):
    path = _write(tmp_path, VALID + "optimizer:\n\n  # comment\n  lr: 0.1\n")
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'optimizer:')}: optimizer: unknown key"), message


def test_line_of_a_block_list_of_the_wrong_type_is_the_key_line(tmp_path):
    path = _write(tmp_path, VALID + "lora:\n  target_modules:\n    - 1\n    - 2\n")
    message = _error(path)
    assert message.startswith(f"{path}:{_line_of(path, 'target_modules:')}: lora.target_modules: got [1, 2]"), message


# --- from_dict (used to reload a run's manifest) -------------------------------------------------------------------


def test_from_dict_round_trips_to_dict():
    cfg = load_config(REPO / "configs" / "default.yaml", ["data.labels=[x, y]", "training.max_steps=7"])
    again = from_dict(cfg.to_dict(), "manifest.json")
    assert again == cfg


def test_from_dict_minimal_and_defaults():
    cfg = from_dict({"model": {"name_or_path": "gpt2"}, "data": {"train_file": "t.jsonl"}})
    assert cfg.model.name_or_path == "gpt2"
    assert cfg.training == TrainingConfig() and cfg.eval == EvalConfig()


@pytest.mark.parametrize(
    "data, starts, contains",
    [
        (
            {"model": {"name_or_path": "gpt2"}, "data": {"train_file": "t.jsonl"}, "trainer": {}},
            "trainer: unknown key",
            _allowed(RunConfig),
        ),
        (
            {"model": {"name_or_path": "gpt2"}, "data": {"train_file": "t.jsonl", "evalfile": "e"}},
            "data.evalfile: unknown key",
            _allowed(DataConfig),
        ),
        (
            {"model": {"name_or_path": "gpt2"}, "data": {"train_file": "t.jsonl"}, "training": {"batch_size": "big"}},
            "training.batch_size: got 'big'",
            ["an integer"],
        ),
        (
            {"model": {"name_or_path": "gpt2", "config": {"model_type": "llama"}}, "data": {"train_file": "t.jsonl"}},
            "model: set exactly one",
            [],
        ),
    ],
)
def test_from_dict_errors_name_the_source_and_key(data, starts, contains):
    message = _from_dict_error(data)
    where, what = _source_and_rest(message)
    assert where == "manifest.json", message  # a dict has no line numbers: none made up
    assert what.startswith(starts), message
    for text in contains:
        assert text in what, f"{text!r} missing from: {message}"


def test_from_dict_error_makes_up_no_line_number():
    """A dict (a run's manifest.json, read as JSON) has no line numbers: the message must not invent one."""
    data = {"model": {"name_or_path": "gpt2"}, "data": {"train_file": "t.jsonl"}, "trainer": {}}
    where, _ = _source_and_rest(_from_dict_error(data))
    assert where == "manifest.json"


def _from_dict_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "manifest.json")
    message = str(info.value)
    _assert_one_line(message)
    return message


def _source_and_rest(message: str) -> tuple[str, str]:
    """`manifest.json[:LINE]: key: what` -> (`manifest.json[:LINE]`, `key: what`)."""
    match = re.fullmatch(r"(manifest\.json(?::\d+)?): (.*)", message)
    assert match, f"expected 'manifest.json: ...', got: {message}"
    return match.group(1), match.group(2)


# --- YAML the loader must not crash on (a crash leaks a traceback and exit code 1 from the CLI) ---------------------


def test_empty_yaml_value_is_null(tmp_path):
    path = _write(tmp_path, _replace(VALID, "  max_length: 64\n", "  max_length: 64\n  eval_file:\n"))
    assert load_config(path).data.eval_file is None


def test_unsupported_yaml_tag_is_a_config_error(tmp_path):
    # not on line 1: that is also the line a message falls back to when it knows none
    path = _write(tmp_path, _replace(VALID, "max_length: 64", "max_length: !!python/name:os.system"))
    line = _line_of(path, "max_length: !!python")
    assert line > 1
    message = _error(path)
    assert message.startswith(f"{path}:{line}: not valid YAML ("), message
    assert "python/name:os.system" in message, message


def test_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "run.yaml"
    data = VALID.replace("name: tiny", "name: caf\xe9").encode("latin-1")
    path.write_bytes(data)
    byte = data.index("\xe9".encode("latin-1"))  # where the decoder stops: the byte, counted from 0
    assert _error(path) == f"{path}: not UTF-8 text (invalid continuation byte at byte {byte})"
