"""The one place a run writes its own files (manifest, metrics, summary, plot, samples, tracker ids, lock): never
through a symlink, and a failed write is one line with the path and the cause.

Run folders are shared, copied, unpacked from archives and mounted into containers, so any name in one may be a link
planted to make the run overwrite a file elsewhere. A whole file is written to a new temporary file beside it (created
with O_EXCL, which never follows a link) and renamed over the name: a link there is replaced, its target untouched,
and the replacement is said in one line. An append-only file (metrics.jsonl) is opened with O_NOFOLLOW: a link there
is refused in one line, since replacing it would lose the rows it points at.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from finetune.errors import StorageError, UserError


class CannotCreate(StorageError):
    """The run folder itself cannot be made (read-only file system, no permission)."""

    exit_code = 73  # EX_CANTCREAT (sysexits.h)


class LinkRefused(UserError):
    """A file of the run folder is a symlink where replacing it would lose data."""


@contextlib.contextmanager
def write_errors(path: Path, error: type[StorageError] = StorageError):
    """An OSError while writing `path` becomes one line: the path and the cause (exit 74, or 73 for CannotCreate)."""
    try:
        yield
    except OSError as e:
        raise error(
            f"{path}: write failed ({e.strerror or e}); fix the file system or permissions, then --resume"
        ) from e


def make_dir(path: Path) -> None:
    """mkdir -p, failing as one CannotCreate line (exit 73)."""
    with write_errors(path, CannotCreate):
        path.mkdir(parents=True, exist_ok=True)


def _said_if_link(path: Path) -> None:
    if path.is_symlink():
        print(
            f"[finetune] {path} was a symlink (to {os.readlink(path)}): replaced by a file, its target unchanged",
            flush=True,
        )


def write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole: a temporary file beside it, then a rename over it (a reader never sees half a file)."""
    with write_errors(path):
        _said_if_link(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL: no link
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the run's files from the colleagues it is shared with
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def append_line(path: Path, line: str) -> None:
    """Append one line (append-only files): O_NOFOLLOW, so a link is refused instead of written through."""
    if path.is_symlink():  # O_NOFOLLOW below refuses it too (ELOOP); this says why in words
        raise LinkRefused(
            f"{path}: is a symlink (to {os.readlink(path)}); writing through it refused: put the file itself there"
        )
    with write_errors(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def open_lock(path: Path):
    """The run folder's lock file, opened read-write without following a link (a link there is replaced, said)."""
    with write_errors(path):
        if path.is_symlink():
            _said_if_link(path)
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "r+")


def cut_torn_tail(path: Path) -> None:
    """An append-only JSON-lines file whose last line a crash cut short (no newline at the end): cut that line off,
    and say so, before anything is appended after it."""
    if path.is_symlink() or not path.is_file():
        return
    with write_errors(path), path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start = size
        while start > 0:  # back, a MiB at a time, to the last newline (0: the file is one torn line)
            end, start = start, max(start - (1 << 20), 0)
            f.seek(start)
            if (found := f.read(end - start).rfind(b"\n")) >= 0:
                start += found + 1
                break
        f.truncate(start)
    print(f"[finetune] {path}: its last line was torn (a crash mid-write): {size - start} bytes cut off", flush=True)
