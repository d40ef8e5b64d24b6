"""`invoke reproduce RUN` without an engine (issue 29): its refusals, each one line with exit 2 (no manifest, a run
made outside a container, an image not built with --reproducible, from a dirty tree, for another UID, a commit this
clone lacks, a run outside runs/), and its plan under `invoke --dry` with a FAKE podman client: a worktree of the
image's commit, that commit's own `invoke build --reproducible --no-cache` with the recorded SOURCE_DATE_EPOCH in an
empty storage, then `finetune reproduce` in the rebuilt image. The real one: tests/container/test_reproduce_image.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
from test_reproducible import fake_podman

from conftest import REPO, invoke

HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
UID = str(os.getuid() or 1000)  # root builds for UID 1000 (devtools/containers.py build_user)
LABELS = {
    "org.finetune.source-date-epoch": "1764900000",
    "org.opencontainers.image.revision": HEAD,
    "org.finetune.uid": UID,
    "org.finetune.variant": "cpu",
    "org.finetune.target": "runtime",
}


@pytest.fixture
def run_dir():
    """A run folder under the checkout's runs/ (where a re-run in the image sees it); removed after."""
    run = REPO / "runs" / f"reproduce-test-{uuid.uuid4().hex[:8]}"
    run.mkdir(parents=True)

    def write(container: dict | None):
        (run / "manifest.json").write_text(json.dumps({"container": container}))
        return run.relative_to(REPO)

    yield write
    shutil.rmtree(run, ignore_errors=True)


def image(**labels) -> dict:
    return {"image_id": "sha256:" + "a" * 64, "image": "finetune:cpu", "labels": {**LABELS, **labels}}


@pytest.mark.parametrize(
    "container, expected",
    [
        (None, "made outside a container, so no image to rebuild: `finetune reproduce {run}`"),
        (
            image(**{"org.finetune.source-date-epoch": None}),
            "{run}'s image (finetune:cpu sha256:" + "a" * 64 + ") was not built with --reproducible: its digest "
            "cannot be rebuilt. Build with `invoke build --reproducible`, train in it, and reproduce that run",
        ),
        (
            image(**{"org.opencontainers.image.revision": HEAD + "-dirty"}),
            f"was built from {HEAD}-dirty, not a commit: what it held cannot be checked out",
        ),
        (
            image(**{"org.finetune.uid": "4242"}),
            "was built for UID 4242 (its user is part of the image); you build for UID",
        ),
        (
            image(**{"org.opencontainers.image.revision": "f" * 40}),
            f"commit {'f' * 40} (the image's) is not in this clone: git fetch, then reproduce again",
        ),
    ],
)
def test_what_cannot_be_rebuilt_stops_in_one_line(tmp_path, run_dir, container, expected):
    if container and container["labels"]["org.finetune.source-date-epoch"] is None:
        del container["labels"]["org.finetune.source-date-epoch"]
    run = run_dir(container)
    proc = invoke(fake_podman(tmp_path), "reproduce", run)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected.format(run=run) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "fake.log").exists() or "build" not in (tmp_path / "fake.log").read_text()


def test_no_manifest_and_a_run_outside_runs_stop_in_one_line(tmp_path):
    proc = invoke(fake_podman(tmp_path), "reproduce", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"{tmp_path}: no manifest.json (not a run folder: finetune train writes one at its start)"
    )
    (tmp_path / "manifest.json").write_text(json.dumps({"container": image()}))
    proc = invoke(fake_podman(tmp_path), "reproduce", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"{tmp_path}: re-running in the image needs the run under {REPO / 'runs'} (or --image-only)"
    )


def test_dry_plan_rebuilds_the_commit_from_scratch_with_the_recorded_time_then_reruns_in_it(tmp_path, run_dir):
    run = run_dir(image())
    proc = invoke(fake_podman(tmp_path), "--dry", "reproduce", run, "--workdir", tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    work = tmp_path / "w"
    assert lines[0] == f"mkdir -p {work}/tmp && git worktree add --detach {work}/src {HEAD}"
    assert lines[1] == f"cp -a docker/wheelhouse/. {work}/src/docker/wheelhouse/"  # locked wheels, not in git
    build = next(line for line in lines if " -m invoke " in line)
    assert build.startswith(f"cd {work}/src && SOURCE_DATE_EPOCH=1764900000 TMPDIR={work}/tmp ")
    # a Podman of its own (the empty storage below), in a -f file: invoke ranks -f above INVOKE_* variables
    assert f"-m invoke -f {work}/invoke.yaml build --variant cpu --target runtime --tag reproduce-cpu" in build
    assert f"client: {work}/podman" in proc.stdout
    assert build.endswith(" --reproducible --no-cache")
    assert f"exec podman --root {work}/storage --runroot " in proc.stdout
    assert f"  recorded  sha256:{'a' * 64}" in lines
    rerun = next(line for line in lines if " run --rm " in line)
    assert rerun.endswith(f"finetune:reproduce-cpu finetune reproduce /workspace/{run}")
    assert lines[-1] == f"rm -rf {work} " + lines[-1].split()[-1] and "finetune-verify-" in lines[-1]
    # --image-only: the same rebuild and comparison, no re-run
    only = invoke(fake_podman(tmp_path), "--dry", "reproduce", run, "--image-only", "--workdir", tmp_path / "w")
    assert only.returncode == 0 and " run --rm " not in only.stdout and "--no-cache" in only.stdout
