"""`lock.py --verify-env`: does this interpreter hold exactly the packages of the given locks?"""

from __future__ import annotations

import sys
from importlib import metadata

import lockfile
from spec import lock_path


def environment_differences(variants_: list[str], platform: str) -> list[tuple[str, str | None, str | None]]:
    """Compare this interpreter's installed distributions with the union of the given locks.

    Returns (name, locked version, installed version) for every package that differs; empty means identical.
    The installer's own bootstrap (pip, setuptools, wheel) and this project are ignored unless a lock pins them.
    """
    locked: dict[str, str] = {}
    for variant in variants_:
        locked.update({p.key: p.version for p in lockfile.read(lock_path(variant, platform)).packages})
    installed = {lockfile.canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name in ("pip", "setuptools", "wheel", "finetune"):
        if name not in locked:
            installed.pop(name, None)
    return [
        (n, locked.get(n), installed.get(n))
        for n in sorted(set(locked) | set(installed))
        if locked.get(n) != installed.get(n)
    ]


def verify_env(variants_: list[str], platform: str) -> int:
    diffs = environment_differences(variants_, platform)
    where = f"{sys.prefix} against {' + '.join(f'{v}/pip.{platform}.lock' for v in variants_)}"
    if not diffs:
        print(f"ok: {where}: every package matches the locks")
        return 0
    print(f"{len(diffs)} difference(s): {where}")
    print(f"  {'package':<32}{'locked':<24}installed")
    for name, want, have in diffs:
        print(f"  {name:<32}{want or '-':<24}{have or '-'}")
    print("fix: make venv (rebuilds .venv from the locks), or relock if the change is intended")
    return 1
