"""`lock.py --check`: is every lock made from its environment.yml as it is now? If not, say what changed."""

from __future__ import annotations

import lockfile
from spec import HERE, input_digest, load_env, lock_path


def check(selected: list[str], tool: str) -> int:
    stale = 0
    for variant in selected:
        env = load_env(variant)
        for platform in env["platforms"]:
            path = lock_path(variant, platform)
            name = f"{variant} ({platform})"
            if not path.exists():
                print(
                    f"STALE {name}: {path.relative_to(HERE.parent)} is missing; run `invoke lock --variant {variant}`"
                )
                stale += 1
                continue
            lock = lockfile.read(path)
            base = lock_path(env["layer_of"], platform) if env["layer_of"] else None
            if lock.field("input-digest") == input_digest(env, platform, tool, base):
                print(f"ok    {name}")
                continue
            why = why_stale(env, lock, tool, base)
            print(f"STALE {name}: {why}; run `invoke lock --variant {variant}` and commit the lock")
            stale += 1
    return 1 if stale else 0


def why_stale(env: dict, lock: lockfile.Lock, tool: str, base) -> str:
    now = env["pip"] + [f"conda {c}" for c in env["conda"]]
    then = lock.values("input") + [f"conda {c}" for c in lock.conda]
    added, removed = sorted(set(now) - set(then)), sorted(set(then) - set(now))
    why = "; ".join([*(f"added {a}" for a in added), *(f"removed {r}" for r in removed)])
    if why:
        return why
    if lock.field("tool") != f"uv {tool}":
        return f"the tool changed (lock made with {lock.field('tool')}, now uv {tool})"
    return "its base lock changed" if base else "environment.yml changed outside its pip list"
