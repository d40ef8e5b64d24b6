"""A LoRA run of a model built from a config keeps the base its adapter needs (issue 27, item 5): the random base
weights are not on any hub, so without them `generate` and `eval` retried the Hub and died with a traceback."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_generate_and_eval_load_a_lora_run_of_the_default_config_offline(lora_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub: everything the adapter needs is in the run folder
    assert (lora_run / "model" / "adapter_config.json").exists()  # an adapter, not full weights
    proc = run_cli("generate", lora_run, "reverse: hello", check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    result = json.loads(run_cli("eval", lora_run).stdout)
    summary = json.loads((lora_run / "summary.json").read_text())
    assert result["eval_accuracy"] == summary["eval_accuracy"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
