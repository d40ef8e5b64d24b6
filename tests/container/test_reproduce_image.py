"""`invoke reproduce RUN` for real (issue 29): the CPU runtime image built with `invoke build --reproducible`, a short
run trained in it (`invoke train --docker`: the manifest records the image's digest and labels), then `invoke
reproduce` rebuilds that image from the recorded commit and time, from scratch in an empty Podman storage of its own,
finds the recorded digest, and re-runs the run in the rebuilt image, where `finetune reproduce` compares the metrics
and the image again. Rootful Podman with storages under this test's folder (the engine's default storage is never
touched), the checkout a root-owned copy as committed, the stand-in bases loaded from an archive (no registry here).
The refusals and the plan without an engine: tests/test_reproduce_task.py.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import explain
from devtools.images import verify_runroot

from .conftest import FIGURES
from .helpers_workspace import printed_run_dir, rootful_podman_checkout

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.podman_build]  # its own CI step


@pytest.fixture(scope="module")
def checkout(engine, standins, workspace, tmp_path_factory):
    top = tmp_path_factory.mktemp("reproduce")
    root = rootful_podman_checkout(workspace, top, "reproduce")
    # "your engine": rootful Podman on a storage of this test's own
    client = top / "podman"
    client.write_text(f'#!/bin/sh\nexec podman --root {top}/engine --runroot {verify_runroot(top)} "$@"\n')
    client.chmod(0o755)
    settings = {"docker": {"client": str(client)}, "image": dict(workspace.settings.get("image", {}))}
    args = []
    if standins:  # the stand-in bases: in "your engine" and, by --bases, in reproduce's empty storage
        names = list(standins["image"]["base_images"].values())
        engine("save", "--output", top / "bases.tar", *names)
        subprocess.run([client, "load", "--quiet", "--input", top / "bases.tar"], check=True, capture_output=True)
        settings["image"]["base_images"] = {k: f"localhost/{v}" for k, v in standins["image"]["base_images"].items()}
        args = ["--bases", str(top / "bases.tar")]
    config = top / "invoke-reproduce.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "INVOKE_", "SOURCE_DATE_EPOCH"))}
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # as tests/container/test_podman.py: torch's workers
    limits = f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]'
    (top / "containers.conf").write_text(f"[containers]\n{limits}\n")
    env["CONTAINERS_CONF"] = str(top / "containers.conf")
    invoke = [str(workspace.root.parent / "invoke-venv" / "bin" / "invoke"), "-f", str(config)]

    def run(*more, check=True):
        proc = subprocess.run([*invoke, *map(str, more)], cwd=root, env=env, capture_output=True, text=True)
        if check and proc.returncode:
            raise AssertionError(explain(proc))
        return proc

    yield root, args, run
    subprocess.run([client, "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(verify_runroot(top), ignore_errors=True)
    shutil.rmtree(top, ignore_errors=True)


def test_reproduce_rebuilds_the_runs_image_with_its_digest_and_reruns_the_run_in_it(checkout):
    root, bases, run = checkout
    t0 = time.monotonic()
    run("build", "--reproducible")
    FIGURES["reproduce: invoke build --reproducible (cpu runtime) s"] = round(time.monotonic() - t0, 1)
    trained = run("train", "--docker", "--set", "training.max_steps=4", "--set", "eval.max_samples=20")
    run_dir = printed_run_dir(trained.stdout, root)
    recorded = json.loads((run_dir / "manifest.json").read_text())["container"]
    assert recorded["labels"]["org.finetune.source-date-epoch"].isdigit(), recorded["labels"]
    digest = "sha256:" + recorded["image_id"].removeprefix("sha256:")

    t0 = time.monotonic()
    proc = run("reproduce", run_dir.relative_to(root), *bases, check=False)
    FIGURES["reproduce: rebuild from scratch, compare, re-run s"] = round(time.monotonic() - t0, 1)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert re.search(rf"^  recorded  {digest}\n  rebuilt   {digest}\n  the same image$", proc.stdout, re.M), out[-5000:]
    # one build, from scratch, with the recorded time (the nested `invoke build`'s echoed command)
    builds = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines() if " build --file " in line]
    epoch = recorded["labels"]["org.finetune.source-date-epoch"]
    assert len(builds) == 1 and "--no-cache" in builds[0] and f"--timestamp {epoch} " in builds[0], builds
    # the re-run, inside the rebuilt image: the metrics and the image compared there
    assert "reproduced: metrics match exactly" in proc.stdout, out[-5000:]
    assert f"image: the same as the run's ({digest})" in proc.stdout, out[-5000:]
    FIGURES["reproduce: cpu runtime digest"] = digest
