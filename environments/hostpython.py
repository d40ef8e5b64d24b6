#!/usr/bin/env python3
"""Which CPython builds the host .venv (`make venv`): the X.Y the locks pin, found or provisioned, never guessed.

    python3 environments/hostpython.py [--uv PATH] LOCK...   # prints the interpreter to use; exit 1 with one line

The locks (and the images) are made for one CPython X.Y (their `# conda: python=` line): every wheel in them is
built for it. A host whose python3 is another version (Ubuntu 22.04: 3.10, 24.04: 3.12, Debian 13 and Fedora: 3.13,
macOS: 3.9) still gets that X.Y, in this order:
  1. the interpreter running this script, if it is X.Y;
  2. `pythonX.Y` on PATH (a distribution package, pyenv, Homebrew);
  3. uv (the pinned bootstrap copy the Makefile installs): `uv python find X.Y`, else `uv python install X.Y`, which
     downloads a standalone CPython build (python-build-standalone, from github.com) into uv's own folder.
If none works, one line on stderr names what was tried and the command that fixes it, and the exit status is 1.

Runs under any python3 from 3.9 on (macOS's own), so it uses nothing newer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import lockfile  # environments/lockfile.py: a script's own folder is first on its import path


def version_of(python: str) -> str | None:
    """X.Y of an interpreter, or None when it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def from_uv(uv: str, want: str) -> tuple[str | None, str]:
    """(path, "") of a CPython X.Y that uv finds or installs, else (None, uv's last line of error)."""

    def uv_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([uv, "python", *args], capture_output=True, text=True, timeout=900)

    # --system: never a virtual environment (the .venv being rebuilt, say), only real interpreters and uv's own
    found = uv_run("find", "--system", want)
    if found.returncode != 0:
        print(f"make: no CPython {want} here: downloading one with uv (uv python install {want})", file=sys.stderr)
        installed = uv_run("install", want)
        if installed.returncode != 0:
            said = [ln.strip() for ln in (installed.stderr + installed.stdout).splitlines() if ln.strip()]
            first = next((ln[len("error: ") :] for ln in said if ln.startswith("error: ")), "")
            last = said[-1].removeprefix("cause: ") if said else f"exit {installed.returncode}"
            return None, f"{first}: {last}" if first and first != last else last
        found = uv_run("find", "--system", want)
    path = found.stdout.strip()
    if found.returncode != 0 or version_of(path) != want:
        return None, f"uv python find {want} gave {path or 'nothing'}"
    return path, ""


def pick(locks: list[str], uv: str | None) -> int:
    want, lock = lockfile.python_of(locks)
    have = "{}.{}".format(*sys.version_info[:2])
    if have == want:
        print(sys.executable)
        return 0
    named = shutil.which(f"python{want}")
    if named and version_of(named) == want:
        print(named)
        return 0
    why = "uv is not installed (.bootstrap)"
    if uv and Path(uv).exists():
        path, why = from_uv(uv, want)
        if path:
            print(path)
            return 0
    print(
        f"make: the locks are made for CPython {want} ({lock}'s `# conda: python=`); {sys.executable} is {have}, "
        f"no python{want} is on PATH, and uv could not provide one ({why}). Fix: install CPython {want} (where "
        f"github.com is reachable: `.bootstrap/bin/uv python install {want}`; or your system's python{want} "
        f"package), then run make again (or `make PYTHON=/path/to/python{want} ...`)",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    uv = None
    if args[:1] == ["--uv"] and len(args) > 1:
        uv, args = args[1], args[2:]
    if not args:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        return pick(args, uv)
    except (OSError, lockfile.LockfileError) as err:
        print(f"make: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
