"""dpo, kto and grpo runs that train (slow): each learns from the short SFT run the suite shares (conftest's
reference_run, 60 steps of the default), a DPO run stopped by SIGTERM and resumed ends as the uninterrupted one, the
same seed gives the same summary, and a reward that raises mid-run stops it in one line with its checkpoint kept.
The checks that need no training are in test_preference_input.py."""

from __future__ import annotations

import signal
import textwrap

import pytest
from transformers import AutoTokenizer

from conftest import REPO, read_json, rel_diff, run_cli, start_cli, wait_for_step
from finetune.report import read_metrics

pytestmark = pytest.mark.slow

# The embedded configs' 60 steps, checkpoints every 10 steps, held-out pairs cut to 100.
DPO_STEPS = 60
SHORT_PREFERENCE = ["--set", f"training.max_steps={DPO_STEPS}", "--set", "training.save_steps=10",
                    "--set", "eval.max_samples=100"]  # fmt: skip


def from_run(base) -> list[str]:
    return ["--set", f"model.from_run={base}"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, reference_run):
    out = tmp_path_factory.mktemp("dpo") / "run"
    run_cli("train", REPO / "configs" / "dpo.yaml", "--output-dir", out, *from_run(reference_run), *SHORT_PREFERENCE)
    return out


def test_dpo_learns_to_prefer_the_right_reversal_and_writes_the_run_folder(dpo_run, reference_run):
    summary = read_json(dpo_run / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == DPO_STEPS
    assert summary["metric"] == "preference_accuracy"
    assert summary["initial_eval_accuracy"] == 0.0  # the policy is the reference: every implicit reward is 0
    # From this 60-step SFT base (exact match 0) DPO reached 0.64 in 60 steps when this test was written; from the
    # finished runs/default the embedded config reaches 0.92 (docs/preference.md): that figure is measured, not here
    assert summary["eval_accuracy"] >= 0.6 and summary["eval_reward_margin"] > 0, summary
    metrics = read_metrics(dpo_run / "metrics.jsonl")
    assert any("rewards/margins" in m for m in metrics) and any("loss" in m for m in metrics)
    assert metrics[0] == {"step": 0, "before": {"eval_accuracy": 0.0, "eval_reward_margin": 0.0}}
    manifest = read_json(dpo_run / "manifest.json")
    assert manifest["config"]["model"]["from_run"] == str(reference_run)
    assert (dpo_run / "loss.png").exists() and (dpo_run / "model" / "config.json").exists()
    ours, theirs = (AutoTokenizer.from_pretrained(p) for p in (dpo_run / "tokenizer", reference_run / "model"))
    assert ours.get_vocab() == theirs.get_vocab() and ours.chat_template == theirs.chat_template  # the starting run's
    assert sorted(p.name for p in dpo_run.glob("checkpoint-*")) == ["checkpoint-50", "checkpoint-60"]


def test_dpo_resumed_after_sigterm_ends_as_the_uninterrupted_run(tmp_path, dpo_run, reference_run):
    out = tmp_path / "interrupted"
    args = ("train", REPO / "configs" / "dpo.yaml", "--output-dir", out, *from_run(reference_run), *SHORT_PREFERENCE)
    proc = start_cli(*args)
    wait_for_step(out / "metrics.jsonl", 25, proc, timeout=600)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert read_json(out / "summary.json")["status"] == "interrupted"
    run_cli(*args, "--resume")
    resumed, reference = read_json(out / "summary.json"), read_json(dpo_run / "summary.json")
    assert resumed["steps"] == reference["steps"] == DPO_STEPS
    assert resumed["initial_eval_accuracy"] == reference["initial_eval_accuracy"]  # kept in metrics.jsonl's step 0
    assert resumed["eval_accuracy"] == reference["eval_accuracy"]
    assert rel_diff(resumed["eval_reward_margin"], reference["eval_reward_margin"]) < 1e-4


def test_dpo_same_seed_same_summary(tmp_path, dpo_run):
    proc = run_cli("reproduce", dpo_run, "--output-dir", tmp_path / "again")
    assert "reproduced: metrics match exactly" in proc.stdout
    a, b = read_json(dpo_run / "summary.json"), read_json(tmp_path / "again" / "summary.json")
    for key in ("steps", "train_loss", "eval_accuracy", "eval_reward_margin"):
        assert a[key] == b[key], key


def test_kto_trains_from_single_labelled_completions_into_the_same_run_folder(tmp_path, reference_run):
    """KTO's layout, its KL term logged and the metric before and after. Not its rise: from this 60-step SFT base it
    reached 0.48 in 60 steps (from runs/default the embedded config reaches 0.91, docs/preference.md)."""
    out = tmp_path / "kto"
    run_cli("train", REPO / "configs" / "kto.yaml", "--output-dir", out, *from_run(reference_run), *SHORT_PREFERENCE)
    summary = read_json(out / "summary.json")
    assert summary["status"] == "completed" and summary["metric"] == "preference_accuracy"
    assert summary["initial_eval_accuracy"] == 0.0 and summary["eval_accuracy"] is not None, summary
    assert any("kl" in m for m in read_metrics(out / "metrics.jsonl"))
    assert (out / "model" / "config.json").exists()


def test_a_reward_that_raises_mid_run_stops_it_in_one_line_with_its_checkpoint_kept(
    tmp_path, reference_run, monkeypatch
):
    """A user reward (module:function, importable through PYTHONPATH) that raises at step 3; 2 steps were saved."""
    (tmp_path / "flaky_reward.py").write_text(textwrap.dedent("""\
        def score(prompts, completions, trainer_state=None, **kwargs):
            if trainer_state.global_step >= 2:
                raise ValueError("the grader is down")
            return [0.0] * len(completions)
    """))  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # run_cli's subprocess gets this process's environment
    proc = run_cli(
        "train", REPO / "configs" / "grpo.yaml", "--output-dir", tmp_path / "out", *from_run(reference_run),
        "--set", "reward.functions=[flaky_reward:score]", "--set", "reward.weights=null",
        "--set", "training.save_steps=1", "--set", "training.max_steps=4", "--set", "grpo.num_generations=2",
        "--set", "training.batch_size=4", "--set", "eval.max_samples=4", check=False,
    )  # fmt: skip
    assert "[finetune] reward.functions calls your code: flaky_reward:score" in proc.stdout
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "finetune: error: reward flaky_reward:score raised ValueError: the grader is down", proc.stderr
    assert (tmp_path / "out" / "checkpoint-2" / "checkpoint.json").exists()
