"""No run ever lost (issue 12): run names, the config a run resumes with, checkpoints that validate before resume,
one writer per run directory, storage failures as one line, and kill -9 during checkpoint saves."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_CONFIG, REPO, SHORT, cli_env, read_json, rel_diff, run_cli, start_cli, wait_until
from finetune.trainer import STAGING
from forked_cli import ForkServer


@pytest.mark.parametrize("name", ["../lost", "/abs", "x*", "", "-x", ".hidden", "a b"])
def test_a_bad_run_name_is_one_line_naming_the_key(tmp_path, name):
    proc = run_cli("train", DEFAULT_CONFIG, "--set", f"name={name}", *SHORT, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "name" in line and "allowed" in line, line
    assert not (REPO / "lost").exists() and not Path("/abs").exists()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A finished short default run with checkpoints at steps 20, 40 and 60 (kept: limit 3)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", out, *SHORT,
        "--set", "training.save_steps=20", "--set", "training.save_total_limit=3",
    )  # fmt: skip
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst, symlinks=True)
    return dst


SAVED = [*SHORT, "--set", "training.save_steps=20", "--set", "training.save_total_limit=3"]


@pytest.mark.slow
def test_resume_refuses_a_changed_config_and_names_the_keys(tmp_path, saved_run):
    run = _copy(saved_run, tmp_path)
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *SAVED,
        "--set", "training.learning_rate=0.5", "--set", "seed=7", check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "\n" not in err and "training.learning_rate" in err and "seed" in err and "--allow-config-change" in err
    assert "0.5" in err and "7" in err
    same = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *SAVED, check=False)
    assert same.returncode == 0, same.stderr[-2000:]  # the same config resumes
    allowed = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *SAVED, "--set", "eval.max_samples=20",
        "--allow-config-change", check=False,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "eval.max_samples" in allowed.stdout + allowed.stderr  # said, not silent


@pytest.mark.slow
def test_every_checkpoint_records_its_files_sizes_and_digests(saved_run):
    import hashlib

    checkpoints = sorted(saved_run.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-20", "checkpoint-40", "checkpoint-60"]
    for ckpt in checkpoints:
        record = read_json(ckpt / "checkpoint.json")
        files = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {"checkpoint.json"}
        assert set(record["files"]) == files and {"model.safetensors", "optimizer.pt"} <= files
        for rel, facts in record["files"].items():
            data = (ckpt / rel).read_bytes()
            assert facts["size"] == len(data) and facts["sha256"] == hashlib.sha256(data).hexdigest(), rel


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "delete", "garble"])
def test_resume_skips_a_damaged_checkpoint_and_falls_back(tmp_path, saved_run, damage):
    run = _copy(saved_run, tmp_path)
    finished = read_json(run / "summary.json")
    (run / "summary.json").unlink()
    target = run / "checkpoint-60" / "optimizer.pt"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "delete":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *SAVED)
    said = proc.stdout + proc.stderr
    assert "checkpoint-60" in said and "skipped" in said and "optimizer.pt" in said, said[-3000:]
    assert "resuming from" in said and "checkpoint-40" in said
    resumed = read_json(run / "summary.json")
    assert resumed["steps"] == 60
    assert rel_diff(resumed["eval_loss"], finished["eval_loss"]) < 1e-4, (resumed["eval_loss"], finished["eval_loss"])


@pytest.mark.slow
def test_resume_from_the_checkpoint_at_max_steps_trains_no_extra_step(tmp_path, saved_run):
    """A crash after the last checkpoint (during the final evaluation) then --resume: the run ends at max_steps with
    the uninterrupted eval loss (the Trainer alone trained a 61st step: seen in a CI run of the kill -9 test)."""
    run = _copy(saved_run, tmp_path)
    finished = read_json(run / "summary.json")
    (run / "summary.json").unlink()
    shutil.rmtree(run / "model")
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", run, "--resume", *SAVED)
    assert "checkpoint-60" in proc.stdout
    resumed = read_json(run / "summary.json")
    assert resumed["steps"] == 60 and not list(run.glob("checkpoint-61"))
    assert rel_diff(resumed["eval_loss"], finished["eval_loss"]) < 1e-4, (resumed["eval_loss"], finished["eval_loss"])
    assert (run / "model" / "model.safetensors").exists()


def _start(out: Path, *extra) -> subprocess.Popen:
    return start_cli("train", DEFAULT_CONFIG, "--output-dir", out, *extra)


@pytest.mark.slow
def test_a_second_run_on_a_busy_run_directory_refuses(tmp_path):
    out = tmp_path / "busy"
    first = _start(out, *SHORT, "--set", "training.max_steps=100000")
    try:
        wait_until(lambda: (out / "metrics.jsonl").exists(), first, "first metrics", poll=0.05)
        second = run_cli("train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *SHORT, check=False, timeout=120)
        assert second.returncode == 75, second.stderr[-2000:]
        err = second.stderr.strip()
        assert "\n" not in err and str(first.pid) in err and "busy" in err, err
        assert first.poll() is None  # the first run is untouched
    finally:
        first.kill()
        first.communicate()
    # the lock died with its process (kill -9 included): a resume may take the directory over (5 steps: the
    # takeover is the point, not the training; the first run saved no checkpoint, so it starts from step 0)
    third = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *SHORT, "--set", "training.max_steps=5",
        "--allow-config-change", check=False,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"lock of pid {first.pid}" in third.stdout and "stale" in third.stdout, third.stdout[-2000:]


@pytest.fixture
def small_disk(tmp_path):
    """A real 9 MiB tmpfs: room for the run's first checkpoint (about 5 MiB) but not for a second one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(disk)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_with_exit_74_and_the_last_checkpoint_intact(tmp_path, small_disk):
    from finetune import checkpoints

    out = small_disk / "run"
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SAVED, check=False)
    assert proc.returncode == 74, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert err.startswith("finetune: error: "), err
    assert "write failed" in err and "full disk" in err and "MiB free" in err and str(out) in err and "--resume" in err
    assert [c.name for c in checkpoints.checkpoints(out)] == ["checkpoint-20"]
    assert checkpoints.problem(out / "checkpoint-20") is None
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())  # the partial one cleaned up
    moved = tmp_path / "bigger"
    shutil.copytree(out, moved)
    run_cli("train", DEFAULT_CONFIG, "--output-dir", moved, "--resume", *SAVED)
    assert read_json(moved / "summary.json")["steps"] == 60


def _holds_a_file(folder: Path) -> bool:
    """Whether a file lies anywhere under `folder` (the staging folder: a save in progress), read while the trainer
    writes it. The save can land during the read: its checkpoint-<n> folder, listed, is renamed into place before it
    is read. os.walk passes over a folder that vanished (pathlib's rglob raised FileNotFoundError, a CI failure), so a
    landed save counts as what it is, no save in progress; a file seen before it vanished still counts."""
    return any(files for _, _, files in os.walk(folder))


# A save every step, 60 in all: room for the 24 kills also when a busy machine lets some kills land a few saves late
# (with a save every 2 steps, 30 saves, run (p) of tests/README.md reached the last one after 21 kills)
FAULT = [*SHORT, "--set", "training.save_steps=1", "--set", "training.save_total_limit=2"]
FAULT_TRIALS = 24  # kill -9 at this many random points of checkpoint saves (the issue asks for at least 20)


@pytest.mark.slow
def test_kill_9_at_random_points_of_checkpoint_saves_never_loses_the_run(tmp_path):
    """The trainer is SIGKILLed at a random moment after a checkpoint save begins (the staging folder appears),
    FAULT_TRIALS times, each time resumed with --resume. After every kill, every checkpoint in place must validate;
    the run then finishes with the final eval loss of an uninterrupted run with the same settings (1e-4).
    The killed runs are forked from one process that imported the CLI once (tests/forked_cli.py: the same
    `finetune.cli.main`, without 24 times 7 s of imports), a server of their own here: their output goes to one log
    the test reads while they run."""
    import random

    from finetune import checkpoints

    rng = random.Random(12)
    reference = tmp_path / "reference"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", reference, *FAULT)
    out, staging, landed = tmp_path / "faulted", tmp_path / "faulted" / STAGING, []
    server = ForkServer(REPO, cli_env())
    # How long after a save begins a kill may land: a save of this model takes about 0.1 s on a quiet machine (24 kills
    # at 0-0.12 s: about half mid-save). Under load a save took longer than that every time, so no checkpoint ever
    # landed and the final run had nothing to resume (seen with a full suite and image builds beside it): the reach
    # doubles after three kills in a row that all hit a save in progress.
    reach = 0.12
    for trial in range(FAULT_TRIALS):  # 60 saves: 24 kills fit even if some land a few saves late
        before = {c.name for c in checkpoints.checkpoints(out)} if out.exists() else set()
        assert "checkpoint-60" not in before, f"the run reached its last checkpoint after {trial} kills"
        started = time.time()
        proc = server.start(["train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *FAULT], tmp_path / "trial.log")

        def saving(started=started) -> bool:  # a save of this process: what a killed trial left is older
            try:
                return any(p.stat().st_ctime >= started for p in staging.iterdir())
            except FileNotFoundError:
                return False

        try:
            wait_until(saving, proc, f"a save in trial {trial}", poll=0.05)
            time.sleep(rng.uniform(0.0, reach))
            mid_save = _holds_a_file(staging)
            proc.kill()
        finally:
            proc.communicate()
        assert proc.returncode == -9, f"trial {trial}: the run ended by itself ({proc.returncode})"
        now = [c.name for c in checkpoints.checkpoints(out)]
        broken = {c: checkpoints.problem(out / c) for c in now if checkpoints.problem(out / c)}
        assert not broken, f"trial {trial}: a checkpoint in place does not validate: {broken}"
        landed.append("mid-save" if mid_save else ("after the rename" if set(now) - before else "between saves"))
        if landed[-3:] == ["mid-save"] * 3:  # a busy machine saves slower: reach past a save's end again
            reach *= 2
    server.close()
    summary = {k: landed.count(k) for k in sorted(set(landed))}
    left = [c.name for c in checkpoints.checkpoints(out)]
    print(f"\n[fault test] {FAULT_TRIALS} kills: {summary}, reach {reach} s; then {left}")
    # not vacuous: many kills hit a save in progress (about half of them here)
    assert summary.get("mid-save", 0) >= FAULT_TRIALS // 4, summary
    final = run_cli("train", DEFAULT_CONFIG, "--output-dir", out, "--resume", *FAULT)
    assert "resuming from" in final.stdout
    done, ref = read_json(out / "summary.json"), read_json(reference / "summary.json")
    assert done["steps"] == ref["steps"] == 60
    assert rel_diff(done["eval_loss"], ref["eval_loss"]) < 1e-4, (done["eval_loss"], ref["eval_loss"])


def _fake_checkpoints(run_dir: Path, steps) -> None:
    from finetune import checkpoints

    for step in steps:
        ckpt = run_dir / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        for name in ("model.safetensors", "optimizer.pt", "trainer_state.json"):
            (ckpt / name).write_bytes(os.urandom(64))
        checkpoints.seal(ckpt)


def test_a_crash_in_the_middle_of_rotation_leaves_only_whole_checkpoints(tmp_path, monkeypatch):
    """Rotation deletes old checkpoints; a kill while it deletes must not leave a half one named checkpoint-<n>
    (transformers' rotation deleted in place; found by reading it while a CI failure of the kill -9 test was
    investigated, not seen in a run: this test makes the crash happen)."""
    from finetune import checkpoints

    _fake_checkpoints(tmp_path, [5, 10, 15])
    real_rmtree = shutil.rmtree

    def killed_midway(path, *a, **k):  # deletes one file, then the process "dies"
        next(p for p in Path(path).iterdir() if p.is_file()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.rotate(tmp_path, 2)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert all(checkpoints.problem(c) is None for c in checkpoints.checkpoints(tmp_path))
    checkpoints.recover(tmp_path)  # what the next run does first
    assert [c.name for c in checkpoints.checkpoints(tmp_path)] == ["checkpoint-15", "checkpoint-10"]
    assert not list(tmp_path.glob(".deleting-*"))


def test_a_crash_while_replacing_a_step_puts_the_old_copy_back(tmp_path):
    from finetune import checkpoints

    _fake_checkpoints(tmp_path, [10])
    os.replace(tmp_path / "checkpoint-10", tmp_path / ".replaced-checkpoint-10")  # killed before the new one arrived
    checkpoints.recover(tmp_path)
    assert checkpoints.problem(tmp_path / "checkpoint-10") is None and not list(tmp_path.glob(".replaced-*"))
