"""torch.compile in our own images (issue 14): the dev image has what inductor and Triton compile with, and a
compiled fine-tune really compiles there; the CPU runtime image has no compiler (its size budget), and a run that
asks for compile stops at once with the one line that points at the dev image. Also what the compilers cost in
size and build time (docker/Dockerfile, "compilers"). Harness and stand-ins: conftest.py."""

from __future__ import annotations

import json
import math
import re
import shlex
import time

import pytest

from .conftest import FIGURES

pytestmark = [pytest.mark.container, pytest.mark.slow]

# A short fine-tune of the default config with torch.compile on (the brief of issue 14, item 3)
COMPILE_RUN = [
    "finetune",
    "train",
    "configs/default.yaml",
    "--set",
    "training.compile=true",
    "--set",
    "training.max_steps=30",
    "--set",
    "training.save_steps=1000",
    "--set",
    "eval.max_samples=20",
]
# The layers of docker/Dockerfile's cc and cxx stages, as `docker history` shows their instructions
COMPILER_LAYERS = {
    "gcc + libc6-dev": re.compile(r"/mnt/install gcc libc6-dev(\s|$)"),  # docker/apt/install (issue 29)
    "g++": re.compile(r"/mnt/install g\+\+(\s|$)"),
    "torch C++ headers": re.compile(r"COPY /opt/cxx-headers/ /"),
}


def layer_sizes(engine, image: str) -> dict[str, int]:
    """Bytes of the compiler layers in image (absent ones: 0)."""
    rows = engine("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", image).stdout
    sizes = dict.fromkeys(COMPILER_LAYERS, 0)
    for size, created_by in (row.split("\t", 1) for row in rows.splitlines() if "\t" in row):
        for name, pattern in COMPILER_LAYERS.items():
            if pattern.search(created_by):
                sizes[name] += int(size)
    return sizes


def step_seconds(log: str, stage: str) -> float | None:
    """Seconds BuildKit's plain progress reports for the RUN/COPY steps of one stage (None: all cached)."""
    found = re.findall(r"^#(\d+) \[([^\]]+)\] (?:RUN|COPY)", log, re.M)
    steps = {n for n, name in found if name.startswith(stage)}
    done = [float(s) for n, s in re.findall(r"^#(\d+) DONE ([\d.]+)s$", log, re.M) if n in steps]
    return round(sum(done), 1) if done else None


def test_compilers_ship_in_the_dev_image_only_and_what_they_cost(workspace, runtime_image, dev_image):
    engine = workspace.engine
    dev, runtime = layer_sizes(engine, dev_image["image"]), layer_sizes(engine, runtime_image["image"])
    assert all(dev.values()), dev  # cc and cxx stages both under the dev image
    assert not any(runtime.values()), runtime  # and neither under the cpu runtime
    for name, size in dev.items():
        FIGURES[f"cpu dev: + {name} MB"] = round(size / 1e6)
    FIGURES["cpu dev: compilers in all MB"] = round(sum(dev.values()) / 1e6)
    for stage in ("cc", "cxx"):  # in this session's first dev build (cached: built by an earlier session)
        FIGURES[f"cpu dev: {stage} stage build s"] = step_seconds(dev_image["log"], stage + " ") or "cached"
    FIGURES["cpu dev: without compilers MB"] = round((dev_image["size"] - sum(dev.values())) / 1e6)
    warm = workspace.build("dev")  # BuildKit's cache warm: the compiler stages are not run again
    FIGURES["cpu dev: rebuild s (cache warm)"] = round(warm["seconds"], 1)
    assert step_seconds(warm["log"], "cc ") is None and step_seconds(warm["log"], "cxx ") is None
    out = engine("run", "--rm", dev_image["image"], "bash", "-c", TOOLS).stdout.split()
    assert out == ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/g++", "/usr/bin/c++", "True", "launcher-ok"], out


# In the dev image: the four compiler names, torch's C++ headers (inductor), and what the cc stage (the cuda
# runtime's compiler) must do for Triton: build a C extension against /opt/env's Python.h with `cc` and import it.
TOOLS = r"""set -e
for t in cc gcc g++ c++; do command -v $t; done
python -c 'import os, torch.utils.cpp_extension as e; print(all(os.path.isdir(d) for d in e.include_paths()))'
cd "$(mktemp -d)"
cat > launcher.c <<'EOF'
#include <Python.h>
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "launcher", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_launcher(void) { return PyModule_Create(&m); }
EOF
cc -O3 -shared -fPIC -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" launcher.c \
   -o launcher$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
python -c 'import launcher; print("launcher-ok")'
"""


def test_a_compiled_fine_tune_compiles_and_trains_in_the_cpu_dev_image(workspace, dev_image):
    """`invoke shell` (the devcontainer's view: the checkout at /workspace). The inductor cache goes to the bind mount,
    so the test sees the kernels g++ built; with compile off, or inductor falling back, there would be none."""
    out, cache = "runs/compile-dev", "runs/compile-dev-inductor"
    cmd = f"TORCHINDUCTOR_CACHE_DIR=/workspace/{cache} {shlex.join(COMPILE_RUN)} --output-dir {out}"
    t0 = time.monotonic()
    proc = workspace.invoke("shell", "--cmd", cmd)
    FIGURES["compiled 30-step run in cpu dev, wall s"] = round(time.monotonic() - t0, 1)
    summary = json.loads((workspace.root / out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30, summary
    assert math.isfinite(summary["train_loss"]) and summary["train_loss"] > 0, summary
    # Inductor's C++ kernels: <hash>.main.cpp (including its cpp_prefix.h, so torch's headers were found) next to
    # the <hash>.main.so g++ built from it. The ISA probes it also compiles do not count.
    kernels = [
        cpp
        for cpp in (workspace.root / cache).rglob("*.cpp")
        if "cpp_prefix.h" in cpp.read_text() and cpp.with_suffix(".so").is_file()
    ]
    FIGURES["compiled run: C++ kernels built"] = len(kernels)
    assert kernels, f"no compiled inductor kernel under {cache}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_the_cpu_runtime_image_has_no_compiler_and_a_compiled_run_stops_with_one_line(workspace, runtime_image):
    image = runtime_image["image"]
    found = workspace.engine("run", "--rm", image, "bash", "-c", "command -v cc gcc g++ c++ clang clang++; true")
    assert found.stdout.strip() == "", found.stdout  # the size decision: see docker/Dockerfile, "compilers"
    t0 = time.monotonic()
    proc = workspace.engine("run", "--rm", image, *COMPILE_RUN, "--output-dir", "/tmp/compile-run", check=False)
    FIGURES["compiled run in cpu runtime: exit 2 after s"] = round(time.monotonic() - t0, 1)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, lines[-20:])
    assert len(lines) == 1, lines
    assert "training.compile: " in lines[0] and "C++ compiler" in lines[0] and "dev image" in lines[0], lines[0]
