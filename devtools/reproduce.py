"""`invoke reproduce RUN` (issue 29): is this the environment that produced the run? The run's manifest records the
image it ran in (its digest and labels: the commit, the lock digest, SOURCE_DATE_EPOCH of a reproducible build). This
rebuilds that image the way `invoke verify-image` builds: from that commit (a git worktree of it, so its own
Dockerfile, locks and tasks.py), with that time, from scratch in an empty Podman storage of its own, and says whether
the digest is the recorded one. When it is, the run is re-run in the rebuilt image (`finetune reproduce`, which
compares the metrics, and the image once more from inside); when it is not, the first layer and files that differ
are named if the recorded image is still in your engine.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from invoke import Exit

from devtools import containers
from devtools.images import check_inputs, gpu_check, image_facts, probe, resolve_engine, verify_runroot, work_folder
from finetune.imageids import image_digest


def recorded_image(run: Path) -> dict:
    """The manifest's container section, or exit 2 saying why there is no image to rebuild."""
    path = run / "manifest.json"
    if not path.is_file():
        raise Exit(f"{run}: no manifest.json (not a run folder: finetune train writes one at its start)", code=2)
    image = json.loads(path.read_text()).get("container") or {}
    if not image.get("image_id"):
        raise Exit(f"{run}: made outside a container, so no image to rebuild: `finetune reproduce {run}`", code=2)
    return image


def rebuild_inputs(run: Path, image: dict) -> tuple[str, int, str, str]:
    """(commit, SOURCE_DATE_EPOCH, variant, target) from the image's labels; exit 2 when it cannot be rebuilt."""
    labels = image.get("labels") or {}
    name = f"{run}'s image ({image.get('image') or '?'} {image_digest(image['image_id'])})"
    epoch = labels.get("org.finetune.source-date-epoch", "")
    if not epoch.isdigit():
        raise Exit(
            f"{name} was not built with --reproducible: its digest cannot be rebuilt. Build with `invoke build "
            "--reproducible`, train in it, and reproduce that run",
            code=2,
        )
    revision = labels.get("org.opencontainers.image.revision", "unknown")
    if revision == "unknown" or revision.endswith("-dirty"):
        raise Exit(f"{name} was built from {revision}, not a commit: what it held cannot be checked out", code=2)
    uid = containers.build_user(os.getuid(), os.getgid())[0]
    if labels.get("org.finetune.uid") != str(uid):
        raise Exit(
            f"{name} was built for UID {labels.get('org.finetune.uid')} (its user is part of the image); you build "
            f"for UID {uid}: reproduce as the user who built it",
            code=2,
        )
    return revision, int(epoch), labels.get("org.finetune.variant", "cpu"), labels.get("org.finetune.target", "runtime")


def reproduce(c, run_dir: str, bases: str | None, workdir: str | None, image_only: bool, keep: bool) -> None:
    run = Path(run_dir)
    image = recorded_image(run)
    revision, epoch, variant, target = rebuild_inputs(run, image)
    if not probe(c, f"git cat-file -e {shlex.quote(revision)}^{{commit}}").ok:
        raise Exit(f"commit {revision} (the image's) is not in this clone: git fetch, then reproduce again", code=2)
    runs = (containers.REPO / c.finetune.runs_dir).resolve()
    if not image_only and not run.resolve().is_relative_to(runs):
        raise Exit(f"{run}: re-running in the image needs the run under {runs} (or --image-only)", code=2)
    check_inputs(bases, workdir)
    work = work_folder(c, workdir, "finetune-reproduce-").resolve()
    c.run(f"mkdir -p {work}/tmp && git worktree add --detach {work}/src {shlex.quote(revision)}")
    # docker/wheelhouse/ (not in git: a local copy of locked wheels) is an input too; every wheel there must match a
    # sha256 in the lock, so it supplies the same files or the build fails
    c.run(f"cp -a docker/wheelhouse/. {work}/src/docker/wheelhouse/")
    try:
        same = rebuild_and_compare(c, run, image, (revision, epoch, variant, target), work, bases, image_only)
    finally:
        if not keep:  # the storage's files belong to root and its images' layers: podman removes them first
            c.run(f"{work}/podman rmi --all --force >/dev/null; git worktree remove --force {work}/src", warn=True)
            c.run(f"rm -rf {work} {verify_runroot(work)}")
    if same is False:
        raise Exit("reproduce: the rebuilt image is not the run's (above)", code=1)


def rebuild_and_compare(c, run: Path, image: dict, inputs: tuple, work: Path, bases, image_only: bool) -> bool | None:
    """Rebuild, compare, and re-run when the same: True | False (another digest) | None (dry run)."""
    revision, epoch, variant, target = inputs
    # A Podman of its own: an empty storage (no layer cache), whatever client invoke.yaml names
    podman = work / "podman"
    script = f'#!/bin/sh\nexec podman --root {work}/storage --runroot {verify_runroot(work)} "$@"\n'
    c.run(f"printf %s {shlex.quote(script)} > {podman} && chmod 755 {podman}")
    if bases:
        c.run(f"{podman} load --quiet --input {shlex.quote(bases)}")
    # That commit's own `invoke build` (its invoke.yaml: its pins and apt snapshot), with your overrides (~/, env, and
    # the -f file invoke was started with, if any) and docker.client this Podman: in a -f file of its own, since
    # invoke ranks a -f file above the environment
    given = getattr(c.config, "_runtime_path", None)
    settings = (yaml.safe_load(Path(given).read_text()) or {}) if given else {}
    settings["docker"] = {**settings.get("docker", {}), "client": str(podman)}
    c.run(f"printf %s {shlex.quote(yaml.safe_dump(settings))} > {work}/invoke.yaml")
    nested = [sys.executable, "-m", "invoke", "-f", f"{work}/invoke.yaml", "build", "--variant", variant]
    nested += ["--target", target, "--tag", f"reproduce-{variant}", "--reproducible", "--no-cache"]
    env = f"SOURCE_DATE_EPOCH={epoch} TMPDIR={work}/tmp PYTHONPATH={work}/src/src"
    c.run(f"cd {work}/src && {env} {shlex.join(nested)}")
    tag = containers.image_name(c, variant, target, f"reproduce-{variant}")
    rebuilt = probe(c, f"{podman} image inspect --format '{{{{.Id}}}}' {tag}").stdout.strip()
    if not rebuilt and not c.config.run.dry:
        raise Exit(f"reproduce: the rebuild left no image {tag} in {work}/storage (its log is above)", code=2)
    was, now = image_digest(image["image_id"]), image_digest(rebuilt) if rebuilt else "(dry run: not built)"
    print(f"reproduce: {run}'s image, rebuilt from {revision[:12]} with SOURCE_DATE_EPOCH={epoch} in {work}")
    print(f"  recorded  {was}\n  rebuilt   {now}")
    same = None if c.config.run.dry else now == was
    verdict = {True: "the same image", False: "NOT the same image", None: "(dry run) a real run compares them here"}
    print(f"  {verdict[same]}", flush=True)
    if same is False:
        explain_difference(c, image["image_id"], podman, tag, work)
    elif not image_only:
        rerun(c, run, podman, tag, variant, work)
    return same


def explain_difference(c, recorded_id: str, podman: Path, tag: str, work: Path) -> None:
    """The first layer and files that differ (devtools/imagediff.py), if the recorded image is still in your engine."""
    client = shlex.quote(c.docker.client)
    if image_facts(c, recorded_id) is None:
        print("  (the recorded image is no longer in your engine: no layer comparison)", flush=True)
        return
    c.run(f"{client} save --output {work}/recorded.tar {recorded_id}")
    c.run(f"{podman} save --quiet --format docker-archive --output {work}/rebuilt.tar {tag}")
    c.run(f"{shlex.quote(sys.executable)} -m devtools.imagediff {work}/recorded.tar {work}/rebuilt.tar", warn=True)


def rerun(c, run: Path, podman: Path, tag: str, variant: str, work: Path) -> None:
    """`finetune reproduce` in the rebuilt image, loaded into your engine under its own tag (finetune:cpu untouched)."""
    c.run(f"{podman} save --quiet --format docker-archive --output {work}/rebuilt.tar {tag}")
    c.run(f"{shlex.quote(c.docker.client)} load --quiet --input {work}/rebuilt.tar && rm -f {work}/rebuilt.tar")
    facts = (None if c.config.run.dry else image_facts(c, tag)) or ("<the rebuilt image's id>", {})
    gpu = variant != "cpu"
    gpu_check(c, gpu)
    resolve_engine(c)  # docker.run_as auto: what this engine needs for the run's files to be yours
    inside, mounts = containers.container_path(run, containers.REPO, c.finetune.runs_dir, writable=True)
    cmd = containers.run_command(
        c,
        containers.Image(tag, *facts),
        ["reproduce", inside],
        name=f"finetune-reproduce-{os.getpid()}",
        gpus="all" if gpu else None,
        nproc=1,
        extra_mounts=mounts,
    )
    c.run(containers.show(cmd), pty=False)
