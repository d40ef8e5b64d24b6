"""Opening a run directory: one writer at a time, the config a resume continues with, the checkpoint it starts from.

The lock is an flock(2) on `<run dir>/.finetune.lock`, held by the main process for the whole run. The kernel
releases it when that process ends, however it ends (kill -9 included), so a lock file left behind is never "held":
the next run takes it over and says so. The file holds the holder's host, pid and start time, for the message a
second run prints when it finds the directory busy. (flock works across containers that bind-mount the same folder
on one host, and on NFS as a POSIX lock.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from finetune import checkpoints, safefiles
from finetune.config import RunConfig, from_dict, upgrade_manifest_config
from finetune.errors import UserError
from finetune.trainer import STAGING

LOCK = ".finetune.lock"


class RunDirError(UserError):
    """The run directory cannot be used as asked: it exists without --resume, its config differs, it is broken."""


class RunDirBusy(UserError):
    """Another process is writing this run directory."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later


def _lock(run_dir: Path):
    """Take the run directory's lock (returns the open file that holds it), or raise RunDirBusy."""
    path = run_dir / LOCK
    f = safefiles.open_lock(path)  # held open for the whole run: closing it releases the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise RunDirBusy(
            f"{run_dir}: busy, being written by {holder} (lock {path}); wait for that run, stop it, "
            "or use another --output-dir"
        ) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
        print(f"[finetune] {run_dir}: lock of {previous} was stale (that process is gone): taken over", flush=True)
    with safefiles.write_errors(path):
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        f.flush()
    return f


def _contents(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix == "model." and k == "config"):  # model.config is one value
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(cfg: RunConfig, run_dir: Path) -> list[str]:
    """'key: before -> now' for each config key that differs from the run's manifest (none without a manifest)."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return []
    before = _flatten(from_dict(upgrade_manifest_config(json.loads(manifest.read_text())["config"])).to_dict())
    now = _flatten(cfg.to_dict())
    return [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]


def _resume_point(cfg: RunConfig, run_dir: Path, allow_config_change: bool, main: bool) -> str | None:
    changes = config_changes(cfg, run_dir)
    if changes and not allow_config_change:
        raise RunDirError(
            f"{run_dir}: --resume with a config that differs from the run's manifest.json ({'; '.join(changes)}); "
            "use the run's config, a new --output-dir, or --allow-config-change"
        )
    if changes and main:
        print(f"[finetune] resuming with a changed config (--allow-config-change): {'; '.join(changes)}", flush=True)
    checkpoint, skipped = checkpoints.latest_valid(run_dir)
    if main:
        for ckpt, why in skipped:
            print(f"[finetune] {ckpt.name} skipped: {why}", flush=True)
        if checkpoint is not None:
            print(f"[finetune] resuming from {checkpoint}", flush=True)
        elif skipped:
            raise RunDirError(
                f"{run_dir}: no whole checkpoint to resume from ({len(skipped)} damaged, listed above); "
                "move them away to start over"
            )
        else:
            print(f"[finetune] no checkpoint in {run_dir}: starting from scratch", flush=True)
    return str(checkpoint) if checkpoint else None


def refuse_linked_folders(run_dir: Path) -> None:
    """The folders a run writes into (or deletes) must be its own: a symlinked one would send the model, the
    checkpoints or their cleanup elsewhere."""
    own = [run_dir / name for name in ("model", "base", "tokenizer", "tensorboard", STAGING)]
    for folder in own + checkpoints.checkpoints(run_dir):
        if folder.is_symlink():
            raise RunDirError(
                f"{folder}: is a symlink (to {os.readlink(folder)}); a run writes only into its own folders: "
                "replace it with a copy of the folder"
            )


@contextlib.contextmanager
def open_run_dir(cfg: RunConfig, run_dir: Path, resume: bool, allow_config_change: bool, main: bool):
    """Create or reopen the run directory under its lock; yields the checkpoint to resume from (None: fresh)."""
    if not resume and _contents(run_dir):
        raise RunDirError(
            f"{run_dir}: run directory exists; pass --resume to continue it or --output-dir for a new one"
        )
    safefiles.make_dir(run_dir)
    lock = None
    if main:  # under torchrun the main process holds the lock for all ranks
        created = not (run_dir / LOCK).exists()
        lock = _lock(run_dir)
        if not resume and _contents(run_dir):  # another run got here first, between the check and the lock
            lock.close()
            if created:
                (run_dir / LOCK).unlink(missing_ok=True)
            raise RunDirError(f"{run_dir}: run directory exists; pass --resume to continue it")
    try:
        if main:
            refuse_linked_folders(run_dir)
            checkpoints.recover(run_dir)  # a rotation or a same-step replace that a crash interrupted
            safefiles.cut_torn_tail(run_dir / "metrics.jsonl")  # a crash mid-row: appending after it would join rows
        checkpoint = _resume_point(cfg, run_dir, allow_config_change, main) if resume else None
        if main and (run_dir / STAGING).exists():
            shutil.rmtree(run_dir / STAGING)  # a checkpoint that a crash left unfinished
        yield checkpoint
    finally:
        if lock is not None:  # emptied first: a lock file with a holder in it means that holder did not end cleanly
            lock.truncate(0)
            lock.close()
