"""`finetune eval` and training share one evaluation (issue 13): the same metric (eval.metric, as resolved for the
run), the same eval.max_samples, the same figure."""

from __future__ import annotations

import json

import pytest

from conftest import DEFAULT_CONFIG, SHORT, read_json, run_cli

pytestmark = pytest.mark.slow


def test_eval_of_a_finished_run_repeats_its_summary_accuracy(reference_run):
    result = json.loads(run_cli("eval", reference_run).stdout)
    summary = read_json(reference_run / "summary.json")
    assert result["metric"] == summary["metric"] == "exact_match"
    assert result["n"] == 50  # eval.max_samples of the run (SHORT sets 50 of 200)
    assert result["eval_accuracy"] == summary["eval_accuracy"]


def test_eval_follows_the_runs_metric_setting(tmp_path):
    out = tmp_path / "no-metric"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SHORT, "--set", "eval.metric=none")
    summary = read_json(out / "summary.json")
    assert summary["metric"] == "none" and summary["eval_accuracy"] is None
    result = json.loads(run_cli("eval", out).stdout)
    assert result["metric"] == "none" and result["eval_accuracy"] is None and result["n"] == 0, result
