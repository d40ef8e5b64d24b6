"""Checkpoints that prove they are whole: sealed at save time, validated before resume, storage failures as one line.

Sealing (after the Trainer wrote a checkpoint into the staging folder, before it is renamed into place): every file
is fsynced and listed in `checkpoint.json` with its size and sha256, then the record and the folders are fsynced. A
hard reset after the rename therefore finds either the whole checkpoint or, without the rename, none.

Validation (on --resume): the newest `checkpoint-<step>` whose record matches every file is used; a newer one that
does not (a file missing, short, or changed; no record) is skipped with the reason, and the next older one is tried.
Checkpoints written before records existed (no `checkpoint.json` but a `trainer_state.json`) are accepted as before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path

from finetune.errors import StorageError
from finetune.manifest import sha256_file

RECORD = "checkpoint.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR pattern


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(ckpt: Path) -> None:
    """fsync every file, then write and fsync checkpoint.json (sizes and digests) and the folders."""
    files = {}
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != RECORD):
        fsync_path(path)
        files[path.relative_to(ckpt).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    record = ckpt / RECORD
    with record.open("w") as f:
        json.dump({"version": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for folder in sorted({p.parent for p in ckpt.rglob("*")} | {ckpt}, key=lambda p: -len(p.parts)):
        fsync_path(folder)


def problem(ckpt: Path) -> str | None:
    """None when the checkpoint is whole, otherwise what is wrong with it (names the file)."""
    record = ckpt / RECORD
    if not record.exists():
        if (ckpt / "trainer_state.json").exists():
            return None  # saved before checkpoints were sealed: accepted as before
        return f"no {RECORD} and no trainer_state.json"
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{RECORD} unreadable ({e})"
    for rel, facts in files.items():
        path = ckpt / rel
        if not path.is_file():
            return f"{rel} missing"
        if path.stat().st_size != facts["size"]:
            return f"{rel} has {path.stat().st_size:,} bytes, {facts['size']:,} recorded"
        if sha256_file(path) != facts["sha256"]:
            return f"{rel} does not match its recorded sha256"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-<step> folders, newest (highest step) first."""
    found = [p for p in run_dir.iterdir() if p.is_dir() and _STEP.match(p.name)] if run_dir.is_dir() else []
    return sorted(found, key=lambda p: -int(_STEP.match(p.name).group(1)))


def saved_step(ckpt: Path) -> int:
    """The step the checkpoint was saved at (its trainer_state's global_step)."""
    return json.loads((ckpt / "trainer_state.json").read_text()).get("global_step", 0)


def saved_max_steps(ckpt: Path) -> int:
    """The end step of the run that saved the checkpoint (its trainer_state's max_steps)."""
    return json.loads((ckpt / "trainer_state.json").read_text()).get("max_steps", 0)


def latest_valid(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest whole checkpoint or None, [(skipped checkpoint, why)...])."""
    skipped = []
    for ckpt in checkpoints(run_dir):
        why = problem(ckpt)
        if why is None:
            return ckpt, skipped
        skipped.append((ckpt, why))
    return None, skipped


def replace_into_place(staged: Path, final: Path) -> None:
    """Rename `staged` to `final`; an existing `final` (the same step saved again) is moved aside first and removed
    only once the new one is in place, so some complete copy exists at every moment."""
    aside = final.with_name(f".replaced-{final.name}")
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.replace(final, aside)
    os.replace(staged, final)
    fsync_path(final.parent)
    if aside.exists():
        shutil.rmtree(aside)


def rotate(run_dir: Path, keep: int | None) -> None:
    """Remove all but the newest `keep` checkpoints. Each is first renamed out of the checkpoint-<step> pattern and
    only then deleted, so a crash mid-delete never leaves a half checkpoint that looks like one."""
    if not keep or keep <= 0:
        return
    for ckpt in checkpoints(run_dir)[keep:]:
        doomed = ckpt.with_name(f".deleting-{ckpt.name}")
        os.replace(ckpt, doomed)
        shutil.rmtree(doomed)


def recover(run_dir: Path) -> None:
    """After a crash: finish what rotate and replace_into_place were doing. A step moved aside whose new copy never
    arrived is put back; anything else moved aside or being deleted goes."""
    for left in sorted(run_dir.glob(".replaced-checkpoint-*")) + sorted(run_dir.glob(".deleting-checkpoint-*")):
        name = left.name.split("-", 1)[1]
        if left.name.startswith(".replaced-") and not (run_dir / name).exists():
            os.replace(left, run_dir / name)
        else:
            shutil.rmtree(left)


def _is_storage_failure(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG)
    # torch.save reports a failed write as RuntimeError from its zip writer ("[enforce fail at inline_container.cc]
    # ... unexpected pos" or "PytorchStreamWriter failed writing file ...: file write failed")
    text = str(e)
    return isinstance(e, RuntimeError) and ("inline_container" in text or "file write failed" in text)


def _free(path: Path) -> str:
    for p in [path, *path.parents]:
        if p.exists():
            return f"{shutil.disk_usage(p).free / 2**20:,.1f} MiB free there"
    return "free space unknown"


@contextlib.contextmanager
def storage_errors(path: Path, cleanup: Path | None = None):
    """Turn a failed write under `path` into one StorageError line (the path, the error, the free space); remove the
    partial `cleanup` folder first so nothing half-written stays behind."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not _is_storage_failure(e):
            raise
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror
        else:  # torch's zip writer does not say why: a full disk is the usual cause
            reason = f"torch: {str(e).strip().splitlines()[0][:160]}; usually a full disk"
        raise StorageError(
            f"{path}: write failed ({reason}); {_free(path)}. The last complete checkpoint is intact: "
            "free space or fix permissions, then continue with --resume"
        ) from e
