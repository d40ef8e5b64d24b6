"""Experiment tracking (finetune.tracking) against the real things: a real MLflow tracking server started the way
docs/tracking.md says (`invoke mlflow`, on a free port, its SQLite store and artifacts in tmp_path), read back with
MlflowClient; W&B in offline mode (no account), read back from the run's own .wandb record log. One short training run
logs to both (slow); the checks on the config are quick.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import DEFAULT_CONFIG, REPO, cli_env, explain, free_port, invoke_program, read_json
from finetune.config import load_config
from finetune.errors import ConfigError
from finetune.report import read_metrics
from finetune.tracking import flatten, provenance


def wait_for_health(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.poll() is None, f"the MLflow server exited: {server.communicate()}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no MLflow server at {url} within {timeout}s")


def wandb_records(path: Path):
    """The protobuf records of a .wandb file: W&B's record log is LevelDB's log format (a 7-byte header ':W&B',
    magic, version; 32 KiB blocks of chunks with a crc/length/type header; types FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A real MLflow server (`invoke mlflow`), then one short default run with tracking [tensorboard, mlflow, wandb]
    (W&B offline). Yields (run dir, tracking URI)."""
    tmp = tmp_path_factory.mktemp("tracking")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # its own process group: stopped below with everything it started
        [invoke_program(), "mlflow", "--port", str(port), "--root", str(tmp / "mlflow")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_health(url, server)
        out = tmp / "run"
        env = dict(cli_env(), MLFLOW_TRACKING_URI=url, WANDB_MODE="offline", WANDB_SILENT="true")
        env.pop("WANDB_API_KEY", None)
        sets = ["training.max_steps=20", "training.logging_steps=5", "training.save_steps=1000"]
        sets += ["eval.max_samples=20", "tracking=[tensorboard, mlflow, wandb]"]
        cmd = [sys.executable, "-m", "finetune", "train", str(DEFAULT_CONFIG), "--output-dir", str(out)]
        proc = subprocess.run(
            cmd + [a for s in sets for a in ("--set", s)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, explain(proc)
        yield out, url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group of the server this fixture started
        server.communicate(timeout=60)


@pytest.mark.slow
def test_mlflow_server_gets_params_metrics_artifacts_and_tags(tracked_run):
    from mlflow.tracking import MlflowClient

    out, url = tracked_run
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("default")  # the config's name
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == read_json(out / "tracking.json")["mlflow_run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"

    manifest = read_json(out / "manifest.json")
    expected_params = flatten(manifest["config"])
    assert run.data.params == expected_params  # every resolved config key, as the manifest records it
    assert run.data.params["training.max_steps"] == "20"

    logged = {m["step"]: m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m}
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert history == pytest.approx(logged) and sorted(logged) == [5, 10, 15, 20]
    summary = read_json(out / "summary.json")
    assert run.data.metrics["summary.eval_loss"] == pytest.approx(summary["eval_loss"])

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"loss.png", "manifest.json", "summary.json"}
    local = Path(client.download_artifacts(run.info.run_id, "manifest.json", str(out.parent / "dl")))
    assert json.loads(local.read_text()) == manifest

    tags = {k: v for k, v in run.data.tags.items() if k.startswith("finetune.")}
    assert tags == {f"finetune.{k}": v for k, v in provenance(manifest).items()}
    assert tags["finetune.git_commit"] == manifest["git"]["commit"] and len(tags["finetune.lock_digest"]) == 64


@pytest.mark.slow
def test_wandb_offline_run_folder_holds_config_metrics_and_files(tracked_run):
    out, _ = tracked_run
    [folder] = (out / "wandb").glob("offline-run-*")
    records = list(wandb_records(next(folder.glob("run-*.wandb"))))
    manifest = read_json(out / "manifest.json")

    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["training.max_steps"] == "20" and config["finetune.git_commit"] == str(manifest["git"]["commit"])
    assert f"git_commit={manifest['git']['commit']}"[:64] in run.tags

    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            if "loss" in items:
                history[r.history.step.num] = items["loss"]
    logged = {m["step"]: m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m}
    assert history == pytest.approx(logged)

    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({(u.key or ".".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update})
    assert summary["status"] == "completed" and summary["eval_loss"] == pytest.approx(
        read_json(out / "summary.json")["eval_loss"]
    )
    for name in ("loss.png", "manifest.json", "summary.json"):
        assert (folder / "files" / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.slow
def test_tensorboard_gets_metrics_config_tags_summary_and_plot_in_one_file(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = tracked_run
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not (out / "runs").exists()  # the final evaluation's log once opened a second writer there
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "eval/loss"} <= set(tags["scalars"]) and tags["images"] == ["loss.png"]
    assert {f"{name}/text_summary" for name in ("config", "tags", "summary", "manifest")} <= set(tags["tensors"])


def test_tracking_is_validated():
    assert load_config(DEFAULT_CONFIG).tracking == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"--set tracking: got 'neptune'; allowed: one of 'tensorboard', 'mlflow'"):
        load_config(DEFAULT_CONFIG, ["tracking=[neptune]"])
    with pytest.raises(ConfigError, match=r"--set tracking: got \['mlflow', 'mlflow'\]; name each tracker once"):
        load_config(DEFAULT_CONFIG, ["tracking=[mlflow, mlflow]"])


def test_trackers_are_checked_against_this_machine_with_the_levers(monkeypatch):
    """resolve() checks each tracker (its package, where it logs) with every lever, before any run directory exists."""
    from finetune.resolve import resolve

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"--set tracking: mlflow logs to the server MLFLOW_TRACKING_URI names"):
        resolve(load_config(DEFAULT_CONFIG, ["tracking=[mlflow]"]), cuda=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve(load_config(DEFAULT_CONFIG, ["tracking=[mlflow]"]), cuda=False).device == "cpu"


def test_mlflow_without_a_server_is_one_line_exit_2(tmp_path):
    env = cli_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "finetune", "train", str(DEFAULT_CONFIG), "--output-dir", str(tmp_path / "run")]
    proc = subprocess.run([*cmd, "--set", "tracking=[mlflow]"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, explain(proc)
    assert proc.stderr == (
        "finetune: error: --set tracking: mlflow logs to the server MLFLOW_TRACKING_URI names: start one with "
        "`invoke mlflow`, then set it\n"
    ), explain(proc)


def test_tensorboard_without_its_writer_package_stops_before_any_work(monkeypatch):
    """The default tracker writes with tensorboardX: where it is missing (seen on a lent GPU machine on 2026-12-04:
    every run died after loading its model with ModuleNotFoundError), resolve() says so in one line with both ways
    out, before any run directory exists."""
    from finetune.resolve import resolve

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed: find_spec answers None
    with pytest.raises(
        ConfigError,
        match=r"default.yaml:\d+: tracking: tensorboard needs the tensorboardX package.*"
        r"pip install tensorboardX, or train without it: --set tracking=\[\]",
    ):
        resolve(load_config(DEFAULT_CONFIG), cuda=False)
    assert resolve(load_config(DEFAULT_CONFIG, ["tracking=[]"]), cuda=False).device == "cpu"
