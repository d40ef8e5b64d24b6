#!/usr/bin/env python3
"""Every fact about the environments and images that more than one file states: its one source, the files that read
it from there, and the copies that cannot read it (a page in docs/, a Dockerfile ARG default, a cloud-init script) and
are checked against it here.

    python environments/facts.py     # each fact, its source, readers and copies; exit 1 naming every copy that differs

tests/test_environments.py runs the same check (test_every_copy_of_a_fact_agrees_with_its_one_source). To change a
fact, change its source, then the copies this names.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from spec import KINDS, LAYERS

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Found:
    where: str  # "docs/environments.md:12" or "invoke.yaml image.torch_find_links"
    value: Any


@dataclass
class Copy:
    path: str
    what: str  # where in the file, for people
    read: Callable[[str], list]  # the file's text -> [(line number or key, value)]
    # (found, source value) -> None when the copy agrees, else what is wrong
    problem: Callable[[Any, Any], str | None] = lambda found, value: None if found == value else f"{found}"

    def disagreements(self, root: Path, source: str, value) -> list[str]:
        path = root / self.path
        if not path.exists():
            return [f"{self.path}: missing ({self.what})"]
        found = [
            Found(f"{self.path}:{at}" if isinstance(at, int) else f"{self.path} {at}", v)
            for at, v in self.read(path.read_text())
        ]
        if not found:
            return [f"{self.path}: no {self.what} found (moved or reworded? update environments/facts.py)"]
        return [f"{f.where}: {why}, but {source} is {value}" for f in found if (why := self.problem(f.value, value))]


@dataclass
class Fact:
    name: str
    source: str  # file and place, for people
    value: Callable[[Path], Any]  # the repository root -> the value at the source
    copies: list = field(default_factory=list)
    readers: list = field(default_factory=list)  # files that read the source instead of stating the value
    shape: str | None = None  # a regex the source value must match

    def files(self) -> list[str]:
        return [self.source.split()[0], *(c.path for c in self.copies)]

    def disagreements(self, root: Path = REPO) -> list[str]:
        value = self.value(root)
        if self.shape and not re.fullmatch(self.shape, str(value)):
            return [f"{self.source}: {value} is not of the form {self.shape}"]
        return [d for c in self.copies for d in c.disagreements(root, self.source, value)]


# --- how values are read ------------------------------------------------------------------------------------------


def text_matches(pattern: str) -> Callable[[str], list]:
    """Group 1 of every match of a regex (multi-line mode), with its line number."""
    rx = re.compile(pattern, re.M)
    return lambda text: [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in rx.finditer(text)]


def in_text(path: str, what: str, pattern: str) -> Copy:
    """A copy found in a file's text by a regex (group 1: text_matches), the usual kind."""
    return Copy(path, what, text_matches(pattern))


def yaml_key(dotted: str) -> Callable[[str], list]:
    def read(text: str) -> list:
        node = yaml.safe_load(text)
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return []
            node = node[key]
        return [(dotted, str(node))]

    return read


def source_yaml(path: str, dotted: str) -> Callable[[Path], str]:
    return lambda root: yaml_key(dotted)((root / path).read_text())[0][1]


def source_text(path: str, pattern: str) -> Callable[[Path], str]:
    """Group 1 of the first match of a regex in a file."""
    return lambda root: text_matches(pattern)((root / path).read_text())[0][1]


def pip_requirements(text: str) -> list:
    deps = yaml.safe_load(text).get("dependencies") or []
    return [("pip:", [str(r) for d in deps if isinstance(d, dict) for r in d.get("pip", [])])]


def project_dependencies(text: str) -> list:
    import tomllib  # here, not at the top: ruff sorts it as stdlib or not by its target-version

    return [("[project].dependencies", list(tomllib.loads(text)["project"].get("dependencies", [])))]


# --- how a copy agrees with its source ----------------------------------------------------------------------------


def minor_of(found: str, value: str) -> str | None:
    """A copy that states X.Y of the source's X.Y.Z."""
    return None if found == ".".join(value.split(".")[:2]) else found


def within(found: str, value: str) -> str | None:
    """A copy that states a release of the source's series: 13.0.3 (or 13.0.3.2) of 13.0."""
    return None if found.startswith(value + ".") else found


def abbreviation_of_one(found: str, values) -> str | None:
    """docs/containers.md's shortened pin (`name:tag@sha256:7c74…`): the start of one of the sources' pins."""
    return None if any(v.startswith(found.rstrip("…")) for v in values) else found


def same_requirements(found: list, value: list) -> str | None:
    missing, extra = sorted(set(value) - set(found)), sorted(set(found) - set(value))
    return "; ".join([*(f"lacks {r}" for r in missing), *(f"adds {r}" for r in extra)]) or None


def includes_requirements(found: list, value: list) -> str | None:
    """The cuda variant: every runtime requirement, exactly as written, plus GPU-only packages of its own."""
    return "; ".join(f"lacks {r}" for r in sorted(set(value) - set(found))) or None


# --- the facts ----------------------------------------------------------------------------------------------------

CPU_ENV = "environments/cpu/environment.yml"
VLLM_ENV = "environments/vllm-server/environment.yml"
IMAGE_PIN = r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}"
# every lock but a layer's (a layer takes its base's python) carries the pin in its `# conda:` header
LOCKS_WITH_PYTHON = [str(p.relative_to(REPO)) for p in sorted(REPO.glob("environments/*/pip.*.lock"))]
LOCKS_WITH_PYTHON = [p for p in LOCKS_WITH_PYTHON if p.split("/")[1] not in LAYERS]


def build_arg(name: str, key: str, arg: str, shape: str, reads: str = "") -> Fact:
    """invoke.yaml's image.KEY, passed by `invoke build` as --build-arg ARG; the Dockerfile's ARG default copies it."""
    return Fact(
        name,
        f"invoke.yaml image.{key}",
        source_yaml("invoke.yaml", f"image.{key}"),
        [in_text("docker/Dockerfile", f"ARG {arg} default", rf"^ARG {arg}=(\S+)$")],
        readers=[
            f"devtools/containers.py (build_command: --build-arg{reads}, what `invoke build` and the tests build)"
        ],
        shape=shape,
    )


def base_image(name: str, arg: str) -> Fact:
    return build_arg(f"base image: {name}", f"base_images.{name}", arg, IMAGE_PIN)


FACTS = [
    Fact(
        "python",
        f"{CPU_ENV} python=",
        source_text(CPU_ENV, r"^\s*- python=(\S+)"),
        [
            *(
                in_text(f"environments/{variant}/environment.yml", "python= pin", r"^\s*- python=(\S+)")
                for variant in sorted(KINDS)
                if variant != "cpu" and variant not in LAYERS  # a layer takes its base's python
            ),
            *(
                in_text(lock, "`# conda: python=` header line", r"^# conda: python=(\S+)$")
                for lock in LOCKS_WITH_PYTHON
            ),
            *(
                Copy(doc, "CPython X.Y", text_matches(r"CPython (\d+\.\d+)\b"), minor_of)
                for doc in ("docs/environments.md", "docs/testing.md")
            ),
        ],
        readers=[
            "environments/lock.py (lock header, uv's --python-version)",
            "Makefile (hostpython.py: the CPython make venv finds or provisions)",
            ".github/workflows/images.yml (lockfile.py python-version: setup-python's version)",
            "docker/Dockerfile, deploy/skypilot.yaml (conda create from the lock's `# conda:` lines)",
        ],
        shape=r"\d+\.\d+\.\d+",
    ),
    Fact(
        "torch",
        f"{CPU_ENV} torch==",
        source_text(CPU_ENV, r"^\s*- torch==([^\s#]+)"),
        [
            in_text("environments/cuda/environment.yml", "torch== pin", r"^\s*- torch==([^\s#]+)"),
            in_text("docs/environments.md", "torch version", r"(?:`torch==|\()(\d+\.\d+\.\d+)(?:\+cpu`|: CUDA)"),
        ],
        readers=["pyproject.toml (checked by runtime dependencies)", "tests/test_environments.py (the locks' torch)"],
    ),
    Fact(
        "vLLM",
        f"{VLLM_ENV} vllm==",
        source_text(VLLM_ENV, r"^\s*- vllm==([^\s#]+)"),
        [
            *(in_text(doc, "vLLM X.Y.Z", r"vLLM (\d+\.\d+\.\d+)") for doc in ("docs/serve.md", "docs/containers.md")),
            in_text("docs/environments.md", "`vllm==X.Y.Z`", r"`vllm==(\d+\.\d+\.\d+)`"),
        ],
        readers=["environments/lock.py (the vllm lock's input)", "docker/Dockerfile serve-vllm (through the lock)"],
        shape=r"\d+\.\d+\.\d+",
    ),
    Fact(
        "torch CPU wheel index",
        "environments/lockfile.py TORCH_CPU_FIND_LINKS",
        source_text("environments/lockfile.py", r'^TORCH_CPU_FIND_LINKS = "(.+)"$'),
        [
            Copy("invoke.yaml", "image.torch_find_links", yaml_key("image.torch_find_links")),
            in_text("docker/Dockerfile", "ARG TORCH_FIND_LINKS default", r"^ARG TORCH_FIND_LINKS=(\S+)$"),
            in_text(
                "docs/environments.md",
                "`https://download.pytorch.org/...`",
                r"`(https://download\.pytorch\.org/[^`]*)`",
            ),
        ],
        readers=["Makefile (lockfile.py torch-find-links)", "environments/resolve.py, environments/standin.py"],
        shape=r"https://\S+/",
    ),
    Fact(
        "CUDA version",
        "invoke.yaml cuda.version",
        source_yaml("invoke.yaml", "cuda.version"),
        [
            Copy(
                "invoke.yaml",
                "image.base_images.cuda tag",
                lambda t: [(k, v.split(":")[1].split("-")[0]) for k, v in yaml_key("image.base_images.cuda")(t)],
                within,
            ),
            Copy(
                "environments/cuda/pip.linux-64.lock",
                "nvidia-cuda-runtime==",
                text_matches(r"^nvidia-cuda-runtime==(\S+) "),
                within,
            ),
            in_text("deploy/cloud-init.yaml", "CUDA X.Y in the host check", r"CUDA (\d+\.\d+) images"),
            *(in_text(doc, "CUDA X.Y", r"CUDA (\d+\.\d+)\b") for doc in ("docs/environments.md", "docs/gpu.md")),
        ],
        readers=["devtools/doctor.py, devtools/gpu.py (through invoke's config)"],
        shape=r"\d+\.\d+",
    ),
    Fact(
        "minimum NVIDIA driver",
        "invoke.yaml cuda.min_driver",
        source_yaml("invoke.yaml", "cuda.min_driver"),
        [
            in_text("deploy/cloud-init.yaml", "driver >= X in the host check", r"need >= ([\d.]+)\)"),
            in_text("docs/environments.md", "driver >= X", r">= (\d+\.\d+\.\d+)"),
        ],
        readers=["devtools/doctor.py, devtools/gpu.py (through invoke's config)"],
        shape=r"\d+\.\d+(\.\d+)?",
    ),
    *(
        build_arg(f"apt snapshot: {key}", f"apt_snapshot.{key}", arg, shape, " and the org.finetune.apt-snapshot label")
        for key, arg, shape in (
            ("date", "APT_SNAPSHOT", r"\d{8}T\d{6}Z"),
            ("debian", "APT_SNAPSHOT_DEBIAN", r"https?://\S+"),
            ("ubuntu", "APT_SNAPSHOT_UBUNTU", r"https?://\S+"),
        )
    ),
    base_image("miniforge", "MINIFORGE_IMAGE"),
    base_image("cpu", "CPU_BASE_IMAGE"),
    base_image("cuda", "CUDA_BASE_IMAGE"),
    Fact(
        "base images as the docs show them",
        "invoke.yaml image.base_images",
        lambda root: list(yaml.safe_load((root / "invoke.yaml").read_text())["image"]["base_images"].values()),
        [
            Copy(
                "docs/containers.md",
                "`name:tag@sha256:…`",
                text_matches(r"`([\w./-]+:[\w.-]+@sha256:[0-9a-f]+…?)`"),
                abbreviation_of_one,
            )
        ],
    ),
    Fact(
        "runtime dependencies",
        f"{CPU_ENV} pip:",
        lambda root: pip_requirements((root / CPU_ENV).read_text())[0][1],
        [
            Copy("pyproject.toml", "[project].dependencies", project_dependencies, same_requirements),
            Copy("environments/cuda/environment.yml", "pip:", pip_requirements, includes_requirements),
        ],
        readers=["environments/lock.py (the cpu lock's inputs)"],
    ),
]


def disagreements(root: Path = REPO) -> list[str]:
    return [d for fact in FACTS for d in fact.disagreements(root)]


def main() -> int:
    for fact in FACTS:
        print(f"{fact.name}: {fact.source}")
        for reader in fact.readers:
            print(f"  read by   {reader}")
        for copy in fact.copies:
            print(f"  copied in {copy.path} ({copy.what})")
    problems = disagreements()
    for problem in problems:
        print(f"DIFFERS {problem}")
    print(
        f"{len(problems)} cop{'y differs' if len(problems) == 1 else 'ies differ'} from their source"
        if problems
        else "ok: every copy agrees with its source"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
