"""The CPU build of torch for a platform whose +cpu wheel only PyTorch's index has, when that index is not reachable
(linux-aarch64 here): its sha256 from cpu/torch-cpu-wheels.sha256 (public sources cited there), its dependencies from
the same version's x86_64 +cpu wheel (torch's CPU wheels declare no platform-specific dependencies)."""

from __future__ import annotations

import os
import re
import sys
import zipfile
from pathlib import Path

from lockfile import TORCH_CPU_FIND_LINKS

HERE = Path(__file__).resolve().parent
TORCH_CPU_PINS = HERE / "cpu" / "torch-cpu-wheels.sha256"


def local_wheels(pattern: str) -> list[Path]:
    return [w for d in os.environ.get("PIP_FIND_LINKS", "").split() if Path(d).is_dir() for w in Path(d).glob(pattern)]


def torch_standin(requirements: list[str], platform: str, python: str) -> dict | None:
    """{"version", "sha256", "wheel", "deps"} of the +cpu torch wheel that stands in for the unreachable one.
    Returns None on linux-64, or when the wheel itself is at hand (then uv resolves it like any other)."""
    pin = next((r for r in requirements if re.match(r"torch==", r)), None)
    if pin is None or platform == "linux-64":
        return None
    version, tag = pin.split("==")[1].split("#")[0].strip(), "cp" + python.replace(".", "")
    wheel = f"torch-{version}+cpu-{tag}-{tag}-manylinux_2_28_{platform.split('-')[1]}.whl"
    if local_wheels(wheel):
        return None
    pins = dict(line.split()[::-1] for line in TORCH_CPU_PINS.read_text().splitlines() if line and line[0] != "#")
    if wheel not in pins:
        sys.exit(
            f"lock: {wheel} is not reachable and has no sha256 in {TORCH_CPU_PINS.name}: lock where "
            f"{TORCH_CPU_FIND_LINKS} is reachable, or add its digest there with its source"
        )
    x86 = local_wheels(f"torch-{version}+cpu-{tag}-{tag}-manylinux_2_28_x86_64.whl")
    if not x86:
        sys.exit(f"lock: need the x86_64 torch-{version}+cpu wheel (in PIP_FIND_LINKS) for its dependency metadata")
    with zipfile.ZipFile(x86[0]) as z:
        meta = z.read(f"torch-{version}+cpu.dist-info/METADATA").decode()
    deps = [
        m.group(1).strip() for m in re.finditer(r"^Requires-Dist: (.+)$", meta, re.M) if "extra ==" not in m.group(1)
    ]
    return {"version": f"{version}+cpu", "sha256": pins[wheel], "wheel": wheel, "deps": deps}


def note(standin: dict) -> str:
    """The lock's `# note:` on where the stand-in's hash and dependencies came from."""
    return (
        f"{standin['wheel']} (PyTorch's CPU index) was not reachable: its sha256 is from "
        f"cpu/{TORCH_CPU_PINS.name} (sources cited there), its dependencies from the x86_64 wheel's metadata"
    )
