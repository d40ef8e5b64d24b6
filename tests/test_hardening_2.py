"""A run folder and its inputs cannot be turned against the user (issue 25): no write through a symlink, no tracker
password printed and no hang on an unreachable tracker, bounded records, a torn metrics.jsonl cut off on resume, a
larger max_steps honoured on resume, a copied run folder that evaluates anywhere, and write failures as one line.

The slow tests share one tiny finished run (4 steps, checkpoints at 2 and 4) and copy it: each trains only the steps
its point needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_CONFIG, REPO, cli_env, explain, read_json, run_cli

TINY = [
    "--set", "training.max_steps=4", "--set", "training.save_steps=2", "--set", "training.logging_steps=1",
    "--set", "training.batch_size=4", "--set", "eval.max_samples=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *TINY)
    return out


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, symlinks=True)
    return dst


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, explain(proc)
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("finetune: error: "), explain(proc)
    return line


@pytest.mark.slow
def test_resume_never_writes_through_a_symlink_in_the_run_folder(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for name in ("loss.png", "summary.json", "eval_samples.json", ".finetune.lock"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    (run / "summary.json.tmp").symlink_to(victim)  # a temporary name a writer may use
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *TINY, check=False)
    assert proc.returncode == 0, explain(proc)
    assert victim.read_text() == "precious\n"
    assert not (run / "loss.png").is_symlink() and (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(run / "summary.json")["steps"] == 4
    assert "symlink" in proc.stdout and "loss.png" in proc.stdout, proc.stdout[-2000:]


def test_appending_to_a_symlink_is_refused_in_one_line(tmp_path):
    from finetune import safefiles
    from finetune.errors import UserError

    victim = tmp_path / "victim"
    victim.write_text("x")
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(UserError, match=r"metrics.jsonl: is a symlink .*refused"):
        safefiles.append_line(tmp_path / "metrics.jsonl", "{}")
    assert victim.read_text() == "x"


@pytest.mark.slow
def test_an_unreachable_tracker_with_a_password_stops_in_one_line_and_prints_no_password(tmp_path):
    env = dict(cli_env(), MLFLOW_TRACKING_URI="http://user:S3cretPassw0rd@127.0.0.1:9")
    cmd = [sys.executable, "-m", "finetune", "train", str(DEFAULT_CONFIG), "--output-dir", str(tmp_path / "run")]
    started = time.time()
    proc = subprocess.run(
        [*cmd, *TINY, "--set", "tracking=[mlflow]"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert time.time() - started < 60
    assert "S3cretPassw0rd" not in proc.stdout + proc.stderr, explain(proc)
    assert proc.returncode == 69, explain(proc)
    line = _one_line(proc)
    assert "127.0.0.1:9" in line and "MLFLOW_TRACKING_URI" in line, line
    assert not list((tmp_path / "run").glob("checkpoint-*"))  # stopped before training


def test_the_manifest_command_carries_no_url_password():
    from finetune.manifest import build_manifest

    manifest = build_manifest({"seed": 1}, ["finetune", "--x", "https://me:tok@host/r.git"], [], 1)
    assert "tok" not in json.dumps(manifest["command"])


def _huge_file(path: Path, size: int) -> Path:
    normal = json.dumps({"prompt": "abc", "completion": "cba"}) + "\n"
    with path.open("w") as f:
        f.write(normal * 100)
        f.write(json.dumps({"prompt": "x" * size, "completion": "y"}) + "\n")  # line 101
        f.write(normal * 100)
    return path


def test_a_huge_record_is_one_line_with_file_and_line_and_memory_stays_bounded(tmp_path):
    import tracemalloc

    from finetune.config import load_config
    from finetune.errors import ConfigError, DataError
    from finetune.rundata import load_data

    path = _huge_file(tmp_path / "train.jsonl", 20_000_000)
    sets = [f"data.train_file={path}", "data.eval_file=null"]
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=rf"{path}:101: .*data.max_record_bytes") as err:
            load_data(load_config(DEFAULT_CONFIG, sets))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and "data.long_records: skip" in str(err.value)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 20 MB record"  # the limit (1 MB), not the record
    train, _, _ = load_data(load_config(DEFAULT_CONFIG, [*sets, "data.long_records=skip"]))
    assert len(train) == 200
    with pytest.raises(ConfigError, match=r"data.max_record_bytes: got 0; allowed"):
        load_config(DEFAULT_CONFIG, ["data.max_record_bytes=0"])


@pytest.mark.slow
def test_a_torn_last_line_of_metrics_is_cut_off_on_resume(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")  # as a kill -9 after checkpoint-2 leaves it
    for gone in ("checkpoint-4", "model"):
        shutil.rmtree(run / gone)
    (run / "summary.json").unlink()
    metrics = run / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    kept = [r for r in rows if json.loads(r)["step"] <= 2]
    metrics.write_text("\n".join(kept) + "\n" + rows[len(kept)][:15])  # the next row cut mid-way
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *TINY, check=False)
    assert proc.returncode == 0, explain(proc)
    assert "metrics.jsonl" in proc.stdout and "torn" in proc.stdout, proc.stdout[-2000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]  # every line a row
    assert 4 in steps and read_json(run / "summary.json")["steps"] == 4


@pytest.mark.slow
def test_resume_with_a_larger_max_steps_trains_on_to_the_new_end(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "run")
    more = [*TINY, "--set", "training.max_steps=6", "--allow-config-change"]
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *more, check=False)
    assert proc.returncode == 0, explain(proc)
    assert "training on from step 4 to step 6" in proc.stdout, proc.stdout[-2000:]  # said, not silent
    summary = read_json(run / "summary.json")
    assert summary["steps"] == 6 and summary["tokens_trained"] > 0, summary
    assert (run / "checkpoint-6").is_dir()
    fewer = [*TINY, "--set", "training.max_steps=3", "--allow-config-change"]
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *fewer, check=False)
    assert proc.returncode == 2 and "training.max_steps" in _one_line(proc), explain(proc)


@pytest.mark.slow
def test_a_copied_run_folder_evaluates_from_another_folder(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "other-disk" / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "finetune", "eval", str(run)]
    proc = subprocess.run(cmd, cwd=elsewhere, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["n"] == 4
    eval_copy = next((run / "data").iterdir())
    eval_copy.write_text(eval_copy.read_text()[::-1])  # a changed copy no longer matches the manifest's digest
    proc = subprocess.run(cmd, cwd=elsewhere, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "sha256" in _one_line(proc), explain(proc)


@pytest.fixture
def read_only(tmp_path):
    """A tmpfs mounted read-only (needs root), holding a folder `existing` made before the remount."""
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_write_failures_outside_checkpoints_are_one_line_with_exit_73_or_74(read_only, tiny_run):
    _copy(tiny_run, read_only / "copied")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    new = run_cli("train", DEFAULT_CONFIG, "--output-dir", read_only / "new", *TINY, check=False, timeout=120)
    assert new.returncode == 73, explain(new)
    line = _one_line(new)
    assert str(read_only / "new") in line and "Read-only file system" in line, line
    resumed = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", read_only / "copied", "--resume", *TINY, check=False, timeout=120
    )
    assert resumed.returncode == 74, explain(resumed)
    line = _one_line(resumed)
    assert str(read_only / "copied") in line and "Read-only file system" in line, line
