"""The embedded default run, as `make train` runs it: it learns the task, and writes every artifact a run promises
(summary, manifest, metrics, plot, tensorboard events, checkpoints, a model and tokenizer that `generate` loads).
The run is the session's shipped_run (tests/conftest.py), which the export and serve tests read too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import DEFAULT_CONFIG, REPO, read_json, run_cli
from finetune.report import read_metrics

pytestmark = pytest.mark.slow


def test_default_run_learns_and_writes_every_artifact(shipped_run):
    out = shipped_run
    stdout = (out.parent / "train.stdout").read_text()
    summary = read_json(out / "summary.json")
    assert summary["status"] == "completed"
    assert summary["initial_eval_accuracy"] <= 0.05, "the untrained model should score about 0"
    assert summary["eval_accuracy"] >= 0.90, summary
    for key in ("steps", "train_loss", "eval_loss", "tokens_per_second", "wall_seconds"):
        assert summary[key] is not None and summary[key] > 0, key
    assert f"run dir       {out}" in stdout  # the human summary names the run directory

    manifest = read_json(out / "manifest.json")
    assert manifest["config"]["name"] == "default" and manifest["seed"] == 42
    assert manifest["command"][1:3] == ["train", str(DEFAULT_CONFIG)]
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["hardware"]["cpu_count"] >= 1 and manifest["hardware"]["gpu_count"] == 0
    assert set(manifest["data"]) == {"data/reversal/train.jsonl", "data/reversal/eval.jsonl"}
    cpu_lock = REPO / "environments" / "cpu" / "pip.linux-64.lock"
    assert manifest["locks"]["environments/cpu/pip.linux-64.lock"] == hashlib.sha256(cpu_lock.read_bytes()).hexdigest()
    assert manifest["runtime"] == "local"
    if Path("/.dockerenv").exists():  # this test host is itself a container: detected, image not passed in
        assert manifest["container"] == {"image": None, "image_id": None, "labels": None}
    else:
        assert manifest["container"] is None

    metrics = read_metrics(out / "metrics.jsonl")
    assert any("loss" in m for m in metrics) and any("eval_loss" in m for m in metrics)
    assert (out / "loss.png").stat().st_size > 10_000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list(out.glob("checkpoint-*"))
    tok = AutoTokenizer.from_pretrained(out / "model")  # saved with the run, loadable with AutoTokenizer
    assert tok.chat_template
    assert run_cli("generate", out, "reverse: hello").stdout.strip() == "olleh"
