"""Resolve one variant's pip layer for one platform with `uv pip compile --generate-hashes` and write its lock."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lockfile
import standin as torch_cpu
from spec import HERE, input_digest, load_env, lock_path, plus_cpu_torch

# conda platform name -> the wheel platform uv resolves for (torch 2.13 wheels are manylinux_2_28; macOS 11+)
UV_PLATFORMS = {
    "linux-64": "x86_64-manylinux_2_28",
    "linux-aarch64": "aarch64-manylinux_2_28",
    "osx-arm64": "aarch64-apple-darwin",
}
# macOS release the osx locks are resolved for (uv reads MACOSX_DEPLOYMENT_TARGET; its default, 13.0, is older than
# torch 2.13's only macOS wheel, macosx_14_0_arm64): the osx-arm64 lock needs macOS 14 (Sonoma) or later.
MACOS_TARGET = "14.0"
# Where the CPU build of torch is PyTorch's +cpu wheel (on Linux, PyPI's torch is a CUDA build). On macOS PyPI's
# torch is the CPU (and MPS) build itself: no +cpu wheel, no stand-in, no extra index.
PLUS_CPU_TORCH = {"linux-64", "linux-aarch64"}


def uv_version() -> str:
    out = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("lock: uv is not installed in this environment (it comes with the dev layer: make venv)")
    return out.stdout.split()[1]


def compile_lock(variant: str, platform: str, tool: str, upgrade: bool = False) -> Path:
    """Resolve and write one lock. Versions already in the lock are kept where the requirements still allow them
    (uv prefers the pins of an existing output file), so a relock after one edit changes only what that edit needs;
    `upgrade` resolves every package afresh to the newest version its range allows."""
    env = load_env(variant)
    requirements, base_lock = list(env["pip"]), None
    if env["layer_of"]:
        base = load_env(env["layer_of"])
        base_lock = lock_path(env["layer_of"], platform)
        if not base_lock.exists():
            sys.exit(f"lock: {variant} is a layer of {env['layer_of']}: lock {env['layer_of']} first")
        requirements = base["pip"] + requirements
    standin = None
    if plus_cpu_torch(variant) and platform in PLUS_CPU_TORCH:  # the cpu lock and its layers
        standin = torch_cpu.torch_standin(requirements, platform, env["python"])
    if standin:  # resolve everything else, torch's own dependencies included, then add torch with its pinned hash
        requirements = [r for r in requirements if not r.startswith("torch==")] + standin["deps"]
    find_links = [f for f in os.environ.get("PIP_FIND_LINKS", "").split() if f]
    with tempfile.TemporaryDirectory() as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join(requirements) + "\n")
        out_lock = Path(tmp) / "out.lock"
        if not upgrade and lock_path(variant, platform).exists():  # uv's preferences: the versions it already has;
            # pins only: uv would copy an output file's hashes unchecked, and they must come from the index every time
            out_lock.write_text("".join(f"{p.pin}\n" for p in lockfile.read(lock_path(variant, platform)).packages))
        cmd = [
            sys.executable,
            "-m",
            "uv",
            "pip",
            "compile",
            str(req_in),
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--python-version",
            env["python"],
            "--python-platform",
            UV_PLATFORMS[platform],
            "--quiet",
            "-o",
            str(out_lock),
        ]
        if platform == "linux-64" and plus_cpu_torch(variant):  # torch's CPU build: +cpu wheels, not PyPI's CUDA one
            for link in find_links or [lockfile.TORCH_CPU_FIND_LINKS]:
                cmd += ["--find-links", link]
        if standin:  # other packages depend on torch: keep uv from resolving PyPI's (CUDA) build for them
            overrides = Path(tmp) / "overrides.txt"
            overrides.write_text('torch ; sys_platform == "never"\n')
            cmd += ["--override", str(overrides)]
        if base_lock:
            constraints = Path(tmp) / "constraints.txt"
            pins = [p.pin for p in lockfile.read(base_lock).packages if not (standin and p.key == "torch")]
            constraints.write_text("\n".join(pins) + "\n")
            cmd += ["--constraint", str(constraints)]
        print("$", " ".join(cmd[2:]), flush=True)
        env_vars = dict(os.environ, MACOSX_DEPLOYMENT_TARGET=MACOS_TARGET) if platform.startswith("osx-") else None
        subprocess.run(cmd, check=True, env=env_vars)
        packages = lockfile.parse(out_lock.read_text(), "uv pip compile's output").packages
    if base_lock:  # keep only what the base lock does not already pin
        skip = lockfile.read(base_lock).by_name()
        packages = [p for p in packages if p.key not in skip]
    notes = []
    if standin and not base_lock:  # a layer's torch is its base lock's
        torch = f"torch=={standin['version']}"
        packages.append(lockfile.Package("torch", standin["version"], [standin["sha256"]], [f"{torch} \\"]))
        packages[-1].lines.append(f"    --hash=sha256:{standin['sha256']}")
        packages.sort(key=lambda p: p.name.lower())
        notes = [torch_cpu.note(standin)]
    header = lockfile.header(
        env=str(env["path"].relative_to(HERE.parent)),
        notes=notes,
        tool=tool,
        platform=platform,
        conda=env["conda"],
        inputs=env["pip"],
        digest=input_digest(env, platform, tool, base_lock),
    )
    out = lock_path(variant, platform)
    lock = lockfile.write(out, header, packages)
    print(f"wrote {out.relative_to(HERE.parent)} ({len(lock.packages)} packages)")
    return out
