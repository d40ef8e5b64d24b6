"""Images anyone can rebuild bit for bit (issue 29), for real: `invoke verify-image` builds the CPU runtime image twice
from scratch, each in an empty Podman storage of its own (rootful Podman, storages under a folder of this test: the
engine's default storage is never touched), and the two digests are equal; one byte changed in an input (a data file
the image copies) gives another digest, and the comparison names the layer and the file.

The checkout is a root-owned copy of the harness's workspace, as committed; the stand-in bases (docker save from the
harness's engine) are loaded into each fresh storage (`--bases`), since no registry is reachable. Skipped, in one line,
where the tests do not run as root or Podman does not answer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import explain
from devtools.images import verify_runroot

from .conftest import FIGURES
from .helpers_workspace import rootful_podman_checkout

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.podman_build]  # its own CI step


def digests(out: str) -> list[str]:
    return re.findall(r"^image [12]: (sha256:[0-9a-f]{64})", out, re.MULTILINE)


@pytest.fixture(scope="module")
def checkout(engine, standins, workspace, tmp_path_factory):
    top = tmp_path_factory.mktemp("verify-image")
    root = rootful_podman_checkout(workspace, top, "verify-image")
    settings = {"docker": {"client": "podman"}, "image": dict(workspace.settings.get("image", {}))}
    args = []
    if standins:  # the stand-in bases, loaded into each fresh storage under fully qualified names
        names = list(standins["image"]["base_images"].values())
        engine("save", "--output", top / "bases.tar", *names)
        settings["image"]["base_images"] = {k: f"localhost/{v}" for k, v in standins["image"]["base_images"].items()}
        args = ["--bases", str(top / "bases.tar")]
    config = top / "invoke-verify.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "INVOKE_", "SOURCE_DATE_EPOCH"))}
    invoke = [str(workspace.root.parent / "invoke-venv" / "bin" / "invoke"), "-f", str(config)]

    def run(*more, check=True):
        proc = subprocess.run([*invoke, *map(str, more)], cwd=root, env=env, capture_output=True, text=True)
        if check and proc.returncode not in (0, 1):
            raise AssertionError(explain(proc))
        return proc

    return root, top, args, run


def test_verify_image_builds_the_cpu_runtime_twice_from_scratch_with_equal_digests(checkout):
    root, top, bases, run = checkout
    t0 = time.monotonic()
    proc = run("verify-image", *bases, "--workdir", top / "same", "--keep")
    FIGURES["verify-image cpu runtime: two builds, save, compare s"] = round(time.monotonic() - t0, 1)
    out = proc.stdout + proc.stderr
    found = digests(proc.stdout)
    assert proc.returncode == 0 and len(found) == 2 and found[0] == found[1], out[-4000:]
    FIGURES["verify-image cpu runtime: digest"] = found[0]
    assert out.count("--no-cache") == 2 and out.count("--timestamp") == 2, out[-3000:]


def test_one_byte_changed_in_an_input_gives_another_digest_and_names_the_file(checkout):
    root, top, bases, run = checkout
    same = top / "same"
    if not (same / "1" / "image.tar").exists():
        pytest.skip("needs the images the equal-digest test kept")
    data = next(p for p in sorted((root / "data").rglob("*")) if p.is_file())  # copied into the image's last layers
    raw = bytearray(data.read_bytes())
    raw[-2] = ord("x") if raw[-2] != ord("x") else ord("y")
    data.write_bytes(bytes(raw))
    env_storage = ["--root", same / "1" / "storage", "--runroot", verify_runroot(same) / "1"]
    # the same storage, its layer cache warm: only the layers after the changed input are built again
    epoch = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=root, capture_output=True, text=True).stdout
    podman = ["podman", *map(str, env_storage)]
    plan = re.sub(r"\x1b\[[0-9;]*m", "", run("--dry", "build", "--reproducible").stdout).splitlines()
    build = next(line for line in plan if " build " in line).replace("podman build", " ".join([*podman, "build"]), 1)
    proc = subprocess.run(
        build, shell=True, cwd=root, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(top)}
    )
    assert proc.returncode == 0, explain(proc)
    assert f"--timestamp {epoch.strip()}" in build
    changed = top / "changed.tar"
    subprocess.run([*podman, "save", "--format", "docker-archive", "--output", f"{changed}.raw", "finetune:cpu"])
    diff = ["python3", "-m", "devtools.imagediff"]
    subprocess.run([*diff, "--normalize", f"{changed}.raw", changed], cwd=root, check=True)
    cmp = subprocess.run([*diff, same / "1" / "image.tar", changed], cwd=root, capture_output=True, text=True)
    found = digests(cmp.stdout)
    assert cmp.returncode == 1 and len(found) == 2 and found[0] != found[1], cmp.stdout + cmp.stderr
    FIGURES["verify-image: one byte changed in a data file, digest"] = found[1]
    assert "first layer that differs" in cmp.stdout and str(data.relative_to(root)) in cmp.stdout, cmp.stdout
    for n in ("1", "2"):
        subprocess.run(["podman", "--root", same / n / "storage", "--runroot", verify_runroot(same) / n, "rmi", "-af"])
    shutil.rmtree(verify_runroot(same), ignore_errors=True)
    shutil.rmtree(top, ignore_errors=True)
