#!/usr/bin/env python3
"""Generate and check the hashed pip lockfiles of every environment variant.

    python environments/lock.py                 # regenerate every lock
    python environments/lock.py --variant cpu   # one variant
    python environments/lock.py --variant cpu --variant dev --platform osx-arm64   # one platform's locks
    python environments/lock.py --check         # exit 1, naming variant and change, if any lock is stale
    python environments/lock.py --upgrade       # every package to the newest version its range allows

A relock keeps each version the lock already pins while the requirements still allow it, so editing one line
changes only what that line needs; --upgrade re-resolves everything.

Each `environments/<variant>/environment.yml` is the file a person edits (conda-forge only, top-level dependencies,
a `pip:` section). For every platform it lists, its pip layer is resolved by `uv pip compile --generate-hashes` into
`environments/<variant>/pip.<platform>.lock`, installable with `pip install --require-hashes --no-deps -r`.
A layer variant (spec.LAYERS: dev on cpu) is resolved together with its base and constrained by the
base's lock, and its lock holds only the packages the base does not have.

The conda layer (python, pip) would be locked by conda-lock, but conda-forge is not reachable from where this was
built: this script says so plainly and keeps the exact pins written in environment.yml.
Nothing here is ever written by hand.
Every lock records the digest of its inputs: environment file, tool and version, platform, python, base lock.

The jobs live in modules beside this one: lockfile.py (the lock format: parse, header, write; also what the Makefile
reads), spec.py (environment.yml and the input digest), resolve.py (uv pip compile), standin.py (aarch64's +cpu
torch), freshness.py (--check), installed.py (--verify-env), facts.py (every fact stated in more than one file).
"""

from __future__ import annotations

import argparse
import platform as platform_module
import sys

from freshness import check
from installed import verify_env
from resolve import UV_PLATFORMS, compile_lock, uv_version
from spec import load_env, variants

# This machine's lock platform, as the Makefile picks it from `uname -s` / `uname -m`.
UNAME_PLATFORMS = {
    ("Linux", "x86_64"): "linux-64",
    ("Linux", "aarch64"): "linux-aarch64",
    ("Linux", "arm64"): "linux-aarch64",
    ("Darwin", "arm64"): "osx-arm64",
}
HOST_PLATFORM = UNAME_PLATFORMS.get((platform_module.system(), platform_module.machine()), "linux-64")


def conda_layer(selected: list[str]) -> None:
    for variant in selected:
        env = load_env(variant)
        if env["conda"]:
            print(
                f"conda layer of {variant}: conda-forge is not reachable from here, so it is not conda-locked; "
                f"the exact pins in environment.yml stand: {', '.join(env['conda'])}"
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", choices=variants(), help="lock only this variant (repeatable)")
    p.add_argument("--check", action="store_true", help="verify that every lock matches its environment.yml")
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="resolve every package afresh (default: keep the versions the lock pins where the ranges allow)",
    )
    p.add_argument(
        "--verify-env",
        nargs="*",
        metavar="VARIANT",
        help="compare this interpreter's packages with these locks (default: cpu dev) and list differences",
    )
    p.add_argument(
        "--platform",
        choices=sorted(UV_PLATFORMS),
        help=f"lock only this platform; for --verify-env, the locks to compare with (default: {HOST_PLATFORM})",
    )
    a = p.parse_args(argv)
    if a.verify_env is not None:
        return verify_env(a.verify_env or ["cpu", "dev"], a.platform or HOST_PLATFORM)
    selected = a.variant or variants()
    tool = uv_version()
    if a.check:
        return check(selected, tool)
    ordered = sorted(selected, key=lambda v: load_env(v)["layer_of"] is not None)  # bases before layers
    for variant in ordered:
        for platform in load_env(variant)["platforms"]:
            if a.platform in (None, platform):
                compile_lock(variant, platform, tool, a.upgrade)
    conda_layer(selected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
