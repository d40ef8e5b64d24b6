"""What a lock is made from: environments/<variant>/environment.yml, the file a person edits, and the digest of
every input that `lock.py --check` compares with a lock's `# input-digest:`.

The digest covers what the file says (its parsed name, channels, platforms, conda pins and pip requirements), not how
it is worded: a comment can be fixed without a relock, which would re-resolve every range against today's PyPI.

Each environment.yml is conda-forge only, with top-level dependencies and a `pip:` section. Every variant is declared
in KINDS, whose kind sets the rules it is locked and checked by. A layer variant (LAYERS: dev on cpu) is installed on
top of its base's lock and locked against it; it takes its base's Python.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import lockfile
import yaml
from lockfile import python_version

HERE = Path(__file__).resolve().parent
# What each variant is. The kind decides its rules:
#   runtime  what a training run imports (cpu, cuda): one list of packages (environments/facts.py: the cuda list holds
#            the cpu list); torch is the version the cpu environment pins, the +cpu build where the variant is cpu
#   layer    installed on top of its base's lock (LAYERS) and locked against it: only what the base lacks
#   server   a program of its own in an image of its own (vllm-server: docker/Dockerfile's serve-vllm): its pip list
#            pins that one program exactly, which brings its own torch (PyPI's: the CUDA build on linux) and the
#            rest; none of our packages are in it, so it needs none of the runtime's versions
# Not "vllm": a folder environments/vllm is a namespace package `vllm` wherever environments/ is on the import path
# (pytest's pythonpath), and TRL then takes vLLM for installed and fails to import its GRPO trainer.
KINDS = {"cpu": "runtime", "cuda": "runtime", "dev": "layer", "vllm-server": "server"}
LAYERS = {"dev": "cpu"}  # a layer is installed on top of its base's lock and locked against it
# Platforms no image is built for, only the host .venv (`make venv`): the variants it installs are locked for them
# as well as for environment.yml's `platforms:` (the image platforms).
HOST_ONLY_PLATFORMS = {"osx-arm64": ("cpu", "dev")}


def variants() -> list[str]:
    found = sorted(p.parent.name for p in HERE.glob("*/environment.yml"))
    undeclared = [v for v in found if v not in KINDS]
    if undeclared:
        sys.exit(f"lock: environments/{undeclared[0]}/ is not declared: add it to KINDS in environments/spec.py")
    return found


def plus_cpu_torch(variant: str) -> bool:
    """Whether the variant's torch is PyTorch's CPU build (+cpu wheels, not on PyPI): cpu and the layers on it."""
    return LAYERS.get(variant, variant) == "cpu"


def lock_path(variant: str, platform: str) -> Path:
    return HERE / variant / f"pip.{platform}.lock"


def load_env(variant: str) -> dict:
    path = HERE / variant / "environment.yml"
    env = yaml.safe_load(path.read_text())
    deps = env.get("dependencies") or []
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    conda = [d for d in deps if isinstance(d, str)]
    layer_of = LAYERS.get(variant)
    python = python_version(load_env(layer_of)["conda"] if layer_of else conda)
    if python is None:
        sys.exit(f"lock: {path.relative_to(HERE.parent)} pins no python (a conda dependency python=X.Y.Z)")
    if KINDS.get(variant) == "server" and not (len(pip) == 1 and "==" in str(pip[0])):
        sys.exit(f"lock: {path.relative_to(HERE.parent)}: a server environment pins its one program (name==version)")
    return {
        "path": path,
        "parsed": env,
        "pip": [str(p) for p in pip],
        "conda": conda,
        "platforms": env.get("platforms", ["linux-64"]) + [p for p, vs in HOST_ONLY_PLATFORMS.items() if variant in vs],
        "layer_of": layer_of,
        "python": python,
    }


def input_digest(env: dict, platform: str, tool: str, base_lock: Path | None) -> str:
    parts = {
        "environment.yml": env["parsed"],
        "tool": f"uv {tool}",
        "platform": platform,
        "python": env["python"],
        # the base lock's pins and hashes, not its header (whose own digest would chain every comment edit along)
        "base_lock": hashlib.sha256(lockfile.body(lockfile.read(base_lock).packages).encode()).hexdigest()
        if base_lock
        else None,
    }
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
