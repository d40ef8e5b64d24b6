"""dpo, kto and grpo without training (seconds in all): their config keys validated like every key, bad rows and bad
rewards ending in one line, and trl kept out of SFT runs' imports. The runs that train are in test_preference.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from finetune import rewards
from finetune.config import RewardConfig, load_config
from finetune.errors import ConfigError, RewardError

PREFIX = "finetune: error: "

DPO_YAML = """\
name: pref
task: {task}
model:
  from_run: runs/never-made
data:
  train_file: {train}
training:
  max_steps: 2
  batch_size: 4
{extra}"""

PAIR = {"prompt": "reverse: abc", "chosen": "cba", "rejected": "cab"}
CHAT_PAIR = {
    "prompt": [{"role": "user", "content": "reverse: ab"}],
    "chosen": [{"role": "assistant", "content": "ba"}],
    "rejected": [{"role": "assistant", "content": "bb"}],
}


def write_config(tmp_path: Path, task: str, rows: list, extra: str = "") -> Path:
    train = tmp_path / "train.jsonl"
    train.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    path = tmp_path / "run.yaml"
    path.write_text(DPO_YAML.format(task=task, train=train, extra=extra))
    return path


# --- config: every key validated, file:line: key: got X; allowed: Y ---------------------------------------------------


@pytest.mark.parametrize(
    "task, extra, line, key, says",
    [
        ("dpo", "reward:\n  functions: [exact_match]\n", 11, "reward.functions", "allowed: none for task dpo"),
        ("grpo", "", 1, "reward.functions", "got none; allowed: a list of exact_match"),
        ("grpo", "reward:\n  functions: [nope]\n", 11, "reward.functions", "got 'nope'; allowed:"),
        ("grpo", "reward:\n  functions: [exact_match]\n  weights: [1, 2]\n", 12, "reward.weights", "one per function"),
        ("grpo", "reward:\n  functions: [format]\n", 10, "reward.pattern", "the format reward needs one"),
        (
            "grpo",
            "reward:\n  functions: [exact_match]\ngrpo:\n  num_generations: 3\n",
            9,
            "training.batch_size",
            "a multiple of grpo.num_generations",
        ),  # fmt: skip
        (
            "grpo",
            "reward:\n  functions: [exact_match]\ngrpo:\n  num_generations: 1\n",
            13,
            "grpo.num_generations",
            "an integer >= 2",
        ),  # fmt: skip
        ("dpo", "preference:\n  beta: 0\n", 11, "preference.beta", "got 0.0; allowed: a number > 0"),
        (
            "grpo",
            "reward:\n  functions: [exact_match]\npreference:\n  beta: -0.1\n",
            13,
            "preference.beta",
            "got -0.1; allowed: a number >= 0 for task grpo (0: no reference model)",
        ),  # fmt: skip
        ("dpo", "eval:\n  metric: exact_match\n", 11, "eval.metric", "allowed for task dpo: auto, none, preference"),
        ("kto", "tokenizer:\n  build_from_data: true\n", 11, "tokenizer.build_from_data", "keeps the tokenizer"),
    ],
)
def test_preference_keys_are_validated_with_file_line_and_allowed_values(tmp_path, task, extra, line, key, says):
    path = write_config(tmp_path, task, [PAIR], extra)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:{line}: {key}: ") or str(e.value).startswith(f"{path}: {key}: ")
    assert says in str(e.value)


def test_from_run_is_for_the_preference_tasks_and_excludes_the_other_model_keys(tmp_path):
    path = write_config(tmp_path, "causal_lm", [PAIR], "tokenizer:\n  name_or_path: x\n")
    with pytest.raises(ConfigError, match=r":4: model.from_run: applies to tasks dpo, kto, grpo"):
        load_config(path)
    path = write_config(tmp_path, "dpo", [PAIR])
    with pytest.raises(ConfigError, match="set exactly one of"):
        load_config(path, ["model.name_or_path=gpt2"])


def test_grpo_may_leave_the_reference_model_out_with_beta_zero(tmp_path):
    """TRL's GRPO default: beta 0 keeps no reference model (no KL term, no second copy); DPO and KTO need beta > 0."""
    grpo = "reward:\n  functions: [exact_match]\npreference:\n  beta: 0\ngrpo:\n  num_generations: 4\n"
    path = write_config(tmp_path, "grpo", [PAIR], grpo)
    assert load_config(path).preference.beta == 0


def test_the_embedded_configs_load():
    for name in ("dpo", "kto", "grpo"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.task == name and cfg.model.from_run


# --- bad rows: one line, exit 2, before torch is imported -----------------------------------------------------------


@pytest.mark.parametrize(
    "task, rows, where, says",
    [
        ("dpo", [PAIR, {"prompt": "reverse: x", "chosen": "x"}], 2, "missing field 'rejected'"),
        ("dpo", [CHAT_PAIR, PAIR], 2, "field 'prompt' is standard here, conversational in the rows above"),
        ("dpo", [{**CHAT_PAIR, "chosen": "ba"}], 1, "field 'chosen' must be a message list, as 'prompt' is"),
        ("dpo", [{**CHAT_PAIR, "rejected": [{"role": "user", "content": "x"}]}], 1, "assistant messages only"),
        ("dpo", ["not json"], 1, "not valid JSON"),
        ("kto", [{"prompt": "a", "completion": "b", "label": "yes"}], 1, "label: got 'yes'; allowed: true"),
        ("grpo", [{"messages": [{"role": "bot", "content": "x"}]}], 1, "messages[0].role: got 'bot'; allowed:"),
        ("grpo", [{"question": "x"}], 1, "missing field 'prompt' (expected field 'prompt' (or 'messages'))"),
    ],
)
def test_a_bad_row_is_one_line_with_file_and_line_before_any_training(tmp_path, task, rows, where, says):
    extra = "reward:\n  functions: [exact_match]\n" if task == "grpo" else ""
    if task == "grpo":
        extra += "grpo:\n  num_generations: 2\n"
    path = write_config(tmp_path, task, rows, extra)
    proc = run_cli("train", path, "--output-dir", tmp_path / "out", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(PREFIX), proc.stderr
    assert f"{tmp_path / 'train.jsonl'}:{where}: " in proc.stderr and says in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()  # stopped before the run folder, the model and trl


def test_a_missing_starting_run_names_the_command_that_makes_it(tmp_path):
    path = write_config(tmp_path, "dpo", [PAIR])
    proc = run_cli("train", path, "--set", "model.from_run=runs/default-nowhere", check=False, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "model.from_run: runs/default-nowhere is not a finished run" in proc.stderr
    assert "make it first with `finetune train CONFIG --output-dir runs/default-nowhere`" in proc.stderr


def test_a_missing_partly_trained_default_run_names_its_exact_command(tmp_path, monkeypatch):
    """configs/grpo.yaml starts from runs/default-200, the default trained 200 steps: the line gives that command."""
    from finetune.prefdata import check_from_run

    cfg = load_config(write_config(tmp_path, "dpo", [PAIR]), ["model.from_run=runs/default-200"])
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with pytest.raises(ConfigError) as e:
        check_from_run(cfg)
    assert str(e.value).endswith("make it first with `finetune train configs/default.yaml --set "
                                 "training.max_steps=200 --output-dir runs/default-200`")  # fmt: skip


# --- rewards: TRL's signature, checked on every call ------------------------------------------------------------------


def reward_cfg(**kw) -> RewardConfig:
    return RewardConfig(**{"functions": ["exact_match"], **kw})


def test_builtin_rewards_score_strings_and_messages():
    cfg = reward_cfg(functions=["exact_match", "char_match", "format", "length_penalty"], pattern="[a-z]+")
    exact, chars, fmt, length = rewards.load(cfg)
    completions = ["cba", [{"role": "assistant", "content": "cbx "}], "CB"]
    reference = ["cba", "cba", "cba"]
    assert exact(prompts=[""] * 3, completions=completions, reference=reference) == [1.0, 0.0, 0.0]
    assert chars(prompts=[""] * 3, completions=completions, reference=reference) == [1.0, 2 / 3, 0.0]
    assert fmt(prompts=[""] * 3, completions=completions, reference=reference) == [1.0, 1.0, 0.0]
    assert length(prompts=[""] * 3, completions=completions, reference=reference) == [0.0, 0.0, -1 / 3]


def test_a_reward_without_its_reference_column_says_which_column():
    (exact,) = rewards.load(reward_cfg(reference_field="answer"))
    with pytest.raises(RewardError, match="exact_match compares with the column 'answer'"):
        exact(prompts=["p"], completions=["c"], reference=["c"])


@pytest.mark.parametrize(
    "returns, says",
    [
        (lambda c: 1 / 0, "reward mine raised ZeroDivisionError: division by zero"),
        (lambda c: [0.5] * (len(c) - 1), "reward mine returned 1 values; allowed: a list of 2 numbers"),
        (lambda c: ["1"] * len(c), "reward mine returned '1' for completion 0; allowed: a finite number"),
        (lambda c: [float("nan")] * len(c), "returned nan for completion 0"),
        (lambda c: 0.5, "reward mine returned float; allowed: a list of 2 numbers"),
    ],
)
def test_a_reward_that_raises_or_returns_a_non_number_is_one_line_naming_it(returns, says):
    checked = rewards.checked("mine", lambda prompts, completions, **kw: returns(completions))
    with pytest.raises(RewardError) as e:
        checked(prompts=["a", "b"], completions=["x", "y"])
    assert str(e.value) == says or says in str(e.value)
    assert "\n" not in str(e.value)


def test_user_code_is_named_and_a_missing_module_is_one_line():
    cfg = reward_cfg(functions=["exact_match", "no_such_module_26:score", "json:nope"])
    assert rewards.user_code(cfg) == ["no_such_module_26:score", "json:nope"]
    with pytest.raises(ConfigError, match=r"reward.functions: no_such_module_26:score: cannot import"):
        rewards.load(cfg)
    with pytest.raises(ConfigError, match="json has no function nope"):
        rewards.load(reward_cfg(functions=["json:nope"]))
    (dumps,) = rewards.load(reward_cfg(functions=["json:dumps"]))
    assert dumps.__name__ == "json:dumps"  # TRL logs rewards/<__name__>/mean


def test_a_config_naming_user_code_says_so_in_one_line_at_start(tmp_path, capsys):
    from finetune.prefdata import check

    path = write_config(tmp_path, "grpo", [{"prompt": "p"}], "reward:\n  functions: [mymodule:score]\n")
    with pytest.raises(ConfigError, match="model.from_run: runs/never-made is not a finished run"):
        check(load_config(path, ["grpo.num_generations=2"]))  # the line comes first, then the missing starting run
    assert (
        capsys.readouterr().out
        == "[finetune] reward.functions calls your code: mymodule:score (imported as Python modules)\n"
    )


# --- trl only when a preference task runs -----------------------------------------------------------------------------


def imports_of(path: Path) -> set[tuple[str, bool]]:
    """(module, at top level) for each import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {(n, id(node) in top) for n in names}
    return found


def test_trl_is_imported_only_inside_prefrun_and_prefrun_only_when_a_preference_task_runs():
    sources = {p.stem: imports_of(p) for p in (REPO / "src" / "finetune").glob("*.py")}
    importers = {name for name, found in sources.items() if any(m.split(".")[0] == "trl" for m, _ in found)}
    assert importers == {"prefrun"}
    assert ("trl", True) not in sources["prefrun"]  # inside build_trainer
    prefrun_importers = {name for name, found in sources.items() if any(m == "finetune.prefrun" for m, _ in found)}
    assert prefrun_importers == {"cli"} and ("finetune.prefrun", True) not in sources["cli"]
