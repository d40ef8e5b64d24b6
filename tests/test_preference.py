"""dpo, kto and grpo runs that train (slow), each as short as its point allows, all started from the embedded default
run the suite trains once (conftest's shipped_run, what `make train` leaves: this file is in its xdist group):
DPO's held-out preference accuracy rises above its start and its run folder is whole; a DPO run stopped by SIGTERM
and resumed ends as the uninterrupted one; the same seed gives the same summary (`finetune reproduce`); DPO under
torchrun with 2 processes ends as the one-process run; KTO trains from single labelled completions and logs its KL,
and honours finetune.run.Hooks; GRPO calls a user reward with TRL's signature, logs its rewards, and stops in one line
naming the function, its checkpoints kept, when that reward raises.

Every run but KTO's (in this process, through finetune.run.train with Hooks, as the benchmarks run) is
`finetune.cli.main(argv)` in a process of its own, forked from one server that imported the CLI and TRL's trainers
once (tests/forked_cli.py): a started `python -m finetune` spends about 9 s of CPU importing them, more than most of
these runs train. The checks that need no training are in test_preference_input.py; the embedded configs' own
figures (60 steps, DPO 0.000 -> 0.920, KTO 0.000 -> 0.910) are measured in docs/preference.md, not here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest
from transformers import AutoTokenizer

from conftest import REPO, cli_env, fresh_generate, read_json, rel_diff, run_cli, wait_until
from finetune.report import read_metrics
from forked_cli import ForkServer

pytestmark = pytest.mark.slow

TRAINERS = ("finetune.prefrun", "trl.trainer.dpo_trainer", "trl.trainer.kto_trainer", "trl.trainer.grpo_trainer")
# DPO: 4 steps of 16 pairs, a checkpoint every 2, every step logged, 50 held-out pairs (from the default run, one
# step already lifts their preference accuracy from 0 to about 0.7)
DPO_STEPS = 4
SHORT_DPO = ["--set", f"training.max_steps={DPO_STEPS}", "--set", "training.save_steps=2",
             "--set", "training.logging_steps=1", "--set", "eval.max_samples=50"]  # fmt: skip
# A user reward (module:function): it writes what TRL called it with, and raises from step 3 (global_step 2) on
RECORDING_REWARD = """\
import json, os

def score(prompts, completions, trainer_state=None, **kwargs):
    with open(os.environ["REWARD_CALLS"], "a") as f:
        f.write(json.dumps({"step": trainer_state.global_step, "n": len(completions), "kwargs": sorted(kwargs),
                            "completion": completions[0], "reference": kwargs["reference"][0]}) + "\\n")
    if trainer_state.global_step >= 2:
        raise ValueError("the grader is down")
    return [0.0] * len(completions)
"""


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """A folder on the runs' PYTHONPATH holding recording_reward.py, and the file its calls are written to."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "recording_reward.py").write_text(RECORDING_REWARD)
    return folder, folder / "calls.jsonl"


@pytest.fixture(scope="module")
def forks(user_code):
    folder, calls = user_code
    env = dict(cli_env(), PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
               REWARD_CALLS=str(calls))  # fmt: skip
    server = ForkServer(REPO, env, preload=TRAINERS)
    yield server
    server.close()


def finetune(forks, log, *argv, code: int = 0) -> str:
    """Run `finetune ARGV` forked; return its output (stdout and stderr), failing unless it exits with `code`."""
    run = forks.start(list(argv), log)
    output, _ = run.communicate()
    assert run.returncode == code, f"finetune {' '.join(map(str, argv))} exited {run.returncode}\n{output[-5000:]}"
    return output


def printed_json(output: str) -> dict:
    """The JSON object a command printed last (indented, after any warnings)."""
    return json.loads(output[output.rindex("\n{\n") + 1 :] if not output.startswith("{\n") else output)


def train_args(config: str, out, base, *extra) -> list:
    return ["train", REPO / "configs" / config, "--output-dir", out, "--set", f"model.from_run={base}", *extra]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, forks, shipped_run):
    out = tmp_path_factory.mktemp("dpo") / "run"
    finetune(forks, out.parent / "train.log", *train_args("dpo.yaml", out, shipped_run, *SHORT_DPO))
    return out


def test_a_dpo_run_generates_and_exports_like_a_supervised_one(dpo_run, shipped_run, tmp_path, forks):
    """What a user does after DPO (issue 27's commands on issue 26's runs): `finetune generate` answers, and the
    exported folder, loaded by transformers alone in a fresh process, completes the prompt the same way, its model
    card naming the run it started from. Found by trying it: generate, export's generation config and serve took only
    task causal_lm and refused these runs, and the card failed on a model with neither name_or_path nor config."""
    said = finetune(forks, tmp_path / "generate.log", "generate", dpo_run, "reverse: hello").strip().splitlines()[-1]
    finetune(forks, tmp_path / "export.log", "export", dpo_run, "--out", tmp_path / "hf")
    classes, completion = fresh_generate(tmp_path / "hf", "reverse: hello")
    assert classes.endswith("LlamaForCausalLM") and completion == said, (classes, completion, said)
    assert read_json(tmp_path / "hf" / "generation_config.json")["do_sample"] is False
    assert f"| base model | the final model of the run {shipped_run} |" in (tmp_path / "hf" / "README.md").read_text()


def test_dpo_learns_to_prefer_the_right_reversal_and_writes_the_run_folder(dpo_run, shipped_run):
    summary = read_json(dpo_run / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == DPO_STEPS
    assert summary["metric"] == "preference_accuracy"
    assert summary["initial_eval_accuracy"] == 0.0  # the policy is the reference: every implicit reward is 0
    assert summary["eval_accuracy"] > summary["initial_eval_accuracy"] and summary["eval_reward_margin"] > 0, summary
    metrics = read_metrics(dpo_run / "metrics.jsonl")
    assert metrics[0] == {"step": 0, "before": {"eval_accuracy": 0.0, "eval_reward_margin": 0.0}}
    assert any("rewards/margins" in m for m in metrics) and any("loss" in m for m in metrics)
    manifest = read_json(dpo_run / "manifest.json")
    assert manifest["config"]["model"]["from_run"] == str(shipped_run)
    assert (dpo_run / "loss.png").exists() and (dpo_run / "model" / "config.json").exists()
    ours, theirs = (AutoTokenizer.from_pretrained(p) for p in (dpo_run / "tokenizer", shipped_run / "model"))
    assert ours.get_vocab() == theirs.get_vocab() and ours.chat_template == theirs.chat_template  # the starting run's
    assert sorted(p.name for p in dpo_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_finetune_eval_scores_a_dpo_run_again_as_its_summary_does(dpo_run, shipped_run, tmp_path, forks):
    """`finetune eval` on the saved policy against its reference, the starting run's model built again: the held-out
    preference accuracy and margin of summary.json (issue 26: it refused these runs). A copy whose starting run is
    gone: one line that names it (the check training does)."""
    summary = read_json(dpo_run / "summary.json")
    again = printed_json(finetune(forks, tmp_path / "eval.log", "eval", dpo_run))
    assert again["metric"] == "preference_accuracy" and again["n"] == 50, again
    assert again["eval_accuracy"] == summary["eval_accuracy"], (again, summary)
    assert again["eval_reward_margin"] == pytest.approx(summary["eval_reward_margin"], rel=1e-4), (again, summary)
    moved = tmp_path / "moved"
    shutil.copytree(dpo_run, moved, ignore=shutil.ignore_patterns("checkpoint-*"))
    manifest = read_json(moved / "manifest.json")
    manifest["config"]["model"]["from_run"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    last = finetune(forks, tmp_path / "gone.log", "eval", moved, code=2).strip().splitlines()[-1]
    assert last.startswith("finetune: error: ") and f"model.from_run: {tmp_path / 'gone'} is not a finished run" in last


def test_dpo_resumed_after_sigterm_ends_as_the_uninterrupted_run(tmp_path, forks, dpo_run, shipped_run):
    """SIGTERM as soon as the held-out start is measured (metrics.jsonl's step-0 row): the run finishes the step it
    is in, checkpoints and stops; --resume trains the rest."""
    out = tmp_path / "interrupted"
    args = train_args("dpo.yaml", out, shipped_run, *SHORT_DPO)
    run = forks.start(args, tmp_path / "interrupted.log")
    wait_until(lambda: (out / "metrics.jsonl").exists(), run, "the step-0 row", timeout=300)
    os.kill(run.pid, signal.SIGTERM)
    output, _ = run.communicate()
    assert run.returncode == 128 + signal.SIGTERM, output[-5000:]
    stopped = read_json(out / "summary.json")
    assert stopped["status"] == "interrupted" and stopped["steps"] < DPO_STEPS, stopped
    finetune(forks, tmp_path / "resume.log", *args, "--resume")
    resumed, reference = read_json(out / "summary.json"), read_json(dpo_run / "summary.json")
    assert resumed["steps"] == reference["steps"] == DPO_STEPS
    assert resumed["initial_eval_accuracy"] == reference["initial_eval_accuracy"]  # kept in metrics.jsonl's step 0
    assert resumed["eval_accuracy"] == reference["eval_accuracy"]
    assert rel_diff(resumed["eval_reward_margin"], reference["eval_reward_margin"]) < 1e-4


def test_dpo_same_seed_same_summary(tmp_path, forks, dpo_run):
    output = finetune(forks, tmp_path / "reproduce.log", "reproduce", dpo_run, "--output-dir", tmp_path / "again")
    assert "reproduced: metrics match exactly" in output
    a, b = read_json(dpo_run / "summary.json"), read_json(tmp_path / "again" / "summary.json")
    for key in ("steps", "train_loss", "eval_accuracy", "eval_reward_margin"):
        assert a[key] == b[key], key


def test_dpo_under_torchrun_with_two_processes_matches_one(tmp_path, dpo_run, shipped_run):
    """The same global batch of pairs over 2 processes (8 each): the same optimizer steps and held-out figures as the
    one-process run, measured by the main process only; the manifest says 2."""
    out = tmp_path / "ddp"
    args = ["--nproc-per-node", "2", "-m", "finetune", *train_args("dpo.yaml", out, shipped_run, *SHORT_DPO)]
    run_cli(*args, launcher=[sys.executable, "-m"], module="torch.distributed.run", timeout=600)
    ddp, single = read_json(out / "summary.json"), read_json(dpo_run / "summary.json")
    assert read_json(out / "manifest.json")["world_size"] == 2
    assert ddp["steps"] == single["steps"] == DPO_STEPS
    assert ddp["initial_eval_accuracy"] == single["initial_eval_accuracy"]
    assert abs(ddp["eval_accuracy"] - single["eval_accuracy"]) <= 0.04, (ddp["eval_accuracy"], single["eval_accuracy"])
    assert rel_diff(ddp["eval_reward_margin"], single["eval_reward_margin"]) < 0.05


def test_kto_trains_from_single_labelled_completions_and_honours_the_run_hooks(tmp_path, shipped_run, monkeypatch):
    """KTO's layout, its KL term logged, the metric before and after (its rise: docs/preference.md). Run in this
    process through finetune.run.train with Hooks, as the benchmarks call it: trainer_ready gets TRL's trainer before
    the first step, and save_model=False leaves model/ out, as it does for SFT."""
    from finetune.cli import preference_body
    from finetune.config import load_config
    from finetune.run import Hooks, train

    monkeypatch.chdir(REPO)  # the config's data paths, as `finetune train` reads them from the repository
    overrides = [f"model.from_run={shipped_run}", "training.max_steps=2", "training.logging_steps=1",
                 "eval.max_samples=50"]  # fmt: skip
    cfg = load_config(REPO / "configs" / "kto.yaml", overrides)
    ready = []
    hooks = Hooks(trainer_ready=lambda trainer: ready.append((type(trainer).__mro__, trainer.state.global_step)),
                  save_model=False)  # fmt: skip
    out = tmp_path / "kto"
    summary, code = train(cfg, out, argv=["finetune", "train", "configs/kto.yaml"], hooks=hooks,
                          body=preference_body(cfg))  # fmt: skip
    assert code == 0 and summary["status"] == "completed" and summary["steps"] == 2, summary
    assert summary["metric"] == "preference_accuracy"
    assert summary["initial_eval_accuracy"] == 0.0 and summary["eval_accuracy"] is not None, summary
    assert any("kl" in m for m in read_metrics(out / "metrics.jsonl"))
    assert read_json(out / "summary.json")["steps"] == 2 and (out / "loss.png").exists()
    [(mro, step)] = ready
    assert step == 0 and any(c.__module__.startswith("trl.") and c.__name__ == "KTOTrainer" for c in mro), mro
    assert not (out / "model").exists()  # hooks.save_model=False


def test_grpo_calls_a_user_reward_as_trl_does_and_stops_in_one_line_when_it_raises(
    tmp_path, forks, shipped_run, user_code
):
    """recording_reward:score beside the built-in char_match, 2 completions of 2 prompts a step, a checkpoint each
    step: the held-out start (3 prompts) and steps 1 and 2 call it with the data's columns and TRL's (trainer_state
    at global_step 0, 0, 1) and log both rewards; at step 3 it raises: one line naming it, exit 2, checkpoint-2 kept."""
    _, calls = user_code
    out = tmp_path / "grpo"
    output = finetune(
        forks, tmp_path / "grpo.log",
        *train_args("grpo.yaml", out, shipped_run,
                    "--set", "reward.functions=[recording_reward:score, char_match]", "--set", "reward.weights=null",
                    "--set", "training.save_steps=1", "--set", "training.max_steps=4",
                    "--set", "training.logging_steps=1", "--set", "grpo.num_generations=2",
                    "--set", "grpo.max_completion_length=8",
                    "--set", "training.batch_size=4", "--set", "eval.max_samples=3", "--set", "eval.max_new_tokens=8"),
        code=2,
    )  # fmt: skip
    assert "[finetune] reward.functions calls your code: recording_reward:score" in output
    last = output.strip().splitlines()[-1]
    assert last == "finetune: error: reward recording_reward:score raised ValueError: the grader is down", output
    assert (out / "checkpoint-2" / "checkpoint.json").exists() and not (out / "checkpoint-3").exists()
    seen = [json.loads(line) for line in calls.read_text().splitlines()]
    held_out, training = [c for c in seen if c["n"] == 3], [c for c in seen if c["n"] == 4]  # 3 rows; 2 x 2 per step
    assert [c["step"] for c in held_out] == [0] and [c["step"] for c in training] == [0, 1, 2], seen
    assert all({"completion_ids", "reference"} <= set(c["kwargs"]) for c in training), training
    # conversational prompts (the user turn of the reversal data): each completion a list of messages, as TRL passes it
    assert all(c["completion"][0]["role"] == "assistant" and c["reference"] for c in seen), seen
    metrics = read_metrics(out / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and set(metrics[0]["before"]) == {"eval_accuracy", "eval_exact_match"}, metrics
    logged = [m for m in metrics if m.get("step") in (1, 2) and "reward" in m]
    assert len(logged) == 2, metrics
    assert all("rewards/char_match/mean" in m and "rewards/recording_reward:score/mean" in m for m in logged), logged


def test_a_grpo_run_completes_and_finetune_eval_scores_it_again(tmp_path, forks, shipped_run):
    """One GRPO step with the shipped config's rewards; `finetune eval` calls them again on greedy completions of the
    held-out prompts: summary.json's mean reward and exact-match share (issue 26: it refused these runs)."""
    out = tmp_path / "grpo"
    finetune(
        forks, tmp_path / "grpo.log",
        *train_args("grpo.yaml", out, shipped_run, "--set", "training.max_steps=1", "--set", "grpo.num_generations=2",
                    "--set", "grpo.max_completion_length=8", "--set", "training.batch_size=4",
                    "--set", "eval.max_samples=3", "--set", "eval.max_new_tokens=8"),
    )  # fmt: skip
    summary = read_json(out / "summary.json")
    assert summary["status"] == "completed" and summary["metric"] == "mean_reward", summary
    again = printed_json(finetune(forks, tmp_path / "eval.log", "eval", out))
    assert again["metric"] == "mean_reward" and again["n"] == 3, again
    assert again["eval_accuracy"] == pytest.approx(summary["eval_accuracy"]), (again, summary)
    assert again["eval_exact_match"] == summary["eval_exact_match"], (again, summary)
