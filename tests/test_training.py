"""Real (tiny) training runs through the CLI: resume after SIGTERM, determinism and `reproduce`, torchrun with 2
processes, LoRA, classification with pretrained MiniLM vs random init (the default run whole: test_default_run.py)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import (
    DEFAULT_CONFIG,
    REPO,
    SHORT,
    cli_env,
    explain,
    read_json,
    rel_diff,
    run_cli,
    start_cli,
    wait_for_step,
)
from finetune.trainer import STAGING

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_then_resumed_matches_uninterrupted(tmp_path, reference_run, sig):
    out = tmp_path / "interrupted"
    proc = start_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SHORT)
    wait_for_step(out / "metrics.jsonl", 15, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert read_json(out / "summary.json")["status"] == "interrupted"
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 15 <= int(checkpoints[0].name.split("-")[1]) < 60
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())
    assert (checkpoints[0] / "trainer_state.json").exists() and (checkpoints[0] / "optimizer.pt").exists()

    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *SHORT)
    resumed, reference = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 60
    assert rel_diff(resumed["eval_loss"], reference["eval_loss"]) < 1e-4, (resumed["eval_loss"], reference["eval_loss"])


def test_half_written_checkpoint_is_ignored_on_resume(tmp_path, reference_run):
    """A crash while saving leaves only the staging folder; resume must neither use nor keep it."""
    out = tmp_path / "crashed"
    out.mkdir()
    junk = out / STAGING / "checkpoint-30"
    junk.mkdir(parents=True)
    (junk / "model.safetensors").write_bytes(b"truncated")
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *SHORT)
    assert not junk.exists()
    assert (
        rel_diff(read_json(out / "summary.json")["eval_loss"], read_json(reference_run / "summary.json")["eval_loss"])
        < 1e-4
    )


def test_existing_run_dir_needs_resume(reference_run):
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", reference_run, *SHORT, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_same_seed_same_metrics_and_reproduce(tmp_path, reference_run):
    proc = run_cli("reproduce", reference_run, "--output-dir", tmp_path / "again")
    assert "reproduced: metrics match exactly" in proc.stdout
    a, b = read_json(reference_run / "summary.json"), read_json(tmp_path / "again" / "summary.json")
    for key in ("steps", "train_loss", "eval_loss", "eval_accuracy", "tokens_trained"):
        assert a[key] == b[key], key


def test_reproduce_reports_a_mismatch(tmp_path, reference_run):
    """Guard against a `reproduce` that always says yes: a recorded eval loss that differs must be reported."""
    run = tmp_path / "tampered"
    shutil.copytree(reference_run, run)  # a copy of the shared short run: training one more proves nothing more
    summary = read_json(run / "summary.json")
    (run / "summary.json").write_text(json.dumps({**summary, "eval_loss": summary["eval_loss"] * 1.5}))
    proc = run_cli("reproduce", run, "--output-dir", tmp_path / "again", check=False)
    assert proc.returncode == 1 and "NOT reproduced" in proc.stdout


def test_reproduce_in_another_image_than_the_runs_fails_though_the_metrics_match(tmp_path, reference_run):
    """Issue 29: a run made in an image records its digest; re-run in another image, `reproduce` says so and exits 1
    (the same image: tests/container/test_reproduce_image.py, for real)."""
    run = tmp_path / "in-image"
    shutil.copytree(reference_run, run)
    manifest = read_json(run / "manifest.json")
    recorded = {"image_id": "sha256:" + "a" * 64, "image": "finetune:cpu", "labels": {"org.finetune.variant": "cpu"}}
    (run / "manifest.json").write_text(json.dumps({**manifest, "container": recorded}))
    env = cli_env() | {"FINETUNE_IMAGE_ID": "b" * 64, "FINETUNE_IMAGE": "finetune:cpu"}  # Podman's form: bare hex
    cmd = [sys.executable, "-m", "finetune", "reproduce", run, "--output-dir", tmp_path / "again"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, explain(proc)
    assert "reproduced: metrics match exactly" in proc.stdout
    line = f"image: NOT the run's: this one is sha256:{'b' * 64}, the run's was finetune:cpu sha256:{'a' * 64}"
    assert proc.stdout.rstrip().endswith(line + ", revision ?"), proc.stdout[-2000:]


def test_torchrun_two_processes_match_one(tmp_path, reference_run):
    out = tmp_path / "ddp"
    run_cli(
        "--nproc-per-node",
        "2",
        "-m",
        "finetune",
        "train",
        DEFAULT_CONFIG,
        "--output-dir",
        out,
        *SHORT,
        launcher=[sys.executable, "-m"],
        module="torch.distributed.run",
    )
    ddp, single = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert read_json(out / "manifest.json")["world_size"] == 2
    assert ddp["steps"] == single["steps"] == 60  # same global batch => same number of optimizer steps
    assert ddp["tokens_trained"] == single["tokens_trained"]
    assert rel_diff(ddp["eval_loss"], single["eval_loss"]) < 0.01, (ddp["eval_loss"], single["eval_loss"])


def test_lora_on_a_tiny_model_from_a_local_directory(tmp_path, reference_run):
    """LoRA on top of the reference run's saved model, loaded with from_pretrained from its directory."""
    out = tmp_path / "lora"
    model_dir = reference_run / "model"
    proc = run_cli(
        "train",
        DEFAULT_CONFIG,
        "--output-dir",
        out,
        *SHORT,
        "--set",
        "model.config=null",
        "--set",
        f"model.name_or_path={model_dir}",
        "--set",
        "tokenizer.build_from_data=false",
        "--set",
        "lora.enabled=true",
        "--set",
        "lora.r=8",
        "--set",
        "training.learning_rate=1e-2",
    )
    trainable, total = [
        int(x.replace(",", "")) for x in proc.stdout.split("parameters trainable")[0].split(", ")[-1].split(" of ")
    ]
    assert 0 < trainable < 0.2 * total
    assert (out / "model" / "adapter_config.json").exists()
    lora, base = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert lora["eval_loss"] < base["eval_loss"], (lora["eval_loss"], base["eval_loss"])
    run_cli("generate", out, "reverse: abc")  # the adapter loads back through PEFT
    assert json.loads(run_cli("eval", out).stdout)["eval_accuracy"] == pytest.approx(lora["eval_accuracy"])


# A fresh interpreter with transformers alone (finetune and PEFT blocked): the exported classifier scores a JSONL file.
CLASSIFY = """
import json, sys
sys.modules["finetune"] = sys.modules["peft"] = None
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, data = sys.argv[1], sys.argv[2]
tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
rows = [json.loads(line) for line in open(data)]
with torch.no_grad():
    batch = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
    predicted = model(**batch).logits.argmax(-1).tolist()
right = sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, rows))
print(json.dumps([type(model).__name__, model.config.id2label, right / len(rows)]))
"""


def test_pretrained_minilm_beats_random_init_on_held_out_words_and_exports(tmp_path, minilm_dir):
    common = ["--set", "eval.metric=accuracy", "--set", "training.epochs=3"]
    cfg = REPO / "configs" / "classification.yaml"
    run_cli("train", cfg, "--output-dir", tmp_path / "pretrained", *common, "--set", f"model.name_or_path={minilm_dir}")
    random_init = (
        "{model_type: bert, hidden_size: 384, num_hidden_layers: 6, num_attention_heads: 12, intermediate_size: 1536}"
    )
    run_cli(
        "train",
        cfg,
        "--output-dir",
        tmp_path / "random",
        *common,
        "--set",
        "model.name_or_path=null",
        "--set",
        f"model.config={random_init}",
        "--set",
        f"tokenizer.name_or_path={minilm_dir}",
        "--set",
        "training.learning_rate=5e-4",
    )
    pre, rnd = read_json(tmp_path / "pretrained" / "summary.json"), read_json(tmp_path / "random" / "summary.json")
    assert pre["eval_accuracy"] >= 0.85, pre
    assert pre["eval_accuracy"] >= rnd["eval_accuracy"] + 0.2, (pre["eval_accuracy"], rnd["eval_accuracy"])
    rescored = json.loads(run_cli("eval", tmp_path / "pretrained").stdout)  # the saved model, scored again
    assert rescored["metric"] == "accuracy" and rescored["eval_accuracy"] == pytest.approx(pre["eval_accuracy"])
    # exported (issue 27), the classifier and its label names load with transformers alone and score the same
    run_cli("export", tmp_path / "pretrained", "--out", tmp_path / "export")
    proc = subprocess.run([sys.executable, "-c", CLASSIFY, tmp_path / "export", REPO / "data/sentiment/eval.jsonl"],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, explain(proc, "the fresh transformers-only process")
    name, id2label, accuracy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert name == "BertForSequenceClassification" and id2label == {"0": "negative", "1": "positive"}, id2label
    assert accuracy == pytest.approx(pre["eval_accuracy"]), (accuracy, pre["eval_accuracy"])


def test_classification_without_an_eval_file_trains_and_says_there_is_no_eval(tmp_path, minilm_dir):
    """Found by reading (issue 16's helper): an empty eval list reached the tokenizer and crashed with IndexError."""
    cfg = REPO / "configs" / "classification.yaml"
    out = tmp_path / "no-eval"
    sets = [f"model.name_or_path={minilm_dir}", "data.eval_file=null", "training.epochs=1"]
    proc = run_cli("train", cfg, "--output-dir", out, *(a for s in sets for a in ("--set", s)))
    summary = read_json(out / "summary.json")
    assert summary["status"] == "completed" and summary["eval_loss"] is None, summary
    assert "Traceback" not in proc.stdout + proc.stderr
