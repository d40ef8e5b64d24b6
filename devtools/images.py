"""Image plumbing shared by tasks.py's tasks: quiet probes of the host, building an image with the pinned inputs,
making sure an image exists before it is run, and the GPU preflight. Every action goes through `c.run` (so
`invoke --dry` prints it); probes run even under --dry and print nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from invoke import Exit

from devtools import containers, engines
from devtools.containers import show
from devtools.gpu import gpu_runtime


def probe(c, cmd: str):
    """A probe, not part of the plan: it runs even under --dry and prints nothing."""
    return c.run(cmd, hide=True, warn=True, dry=False, echo=False, in_stream=False)


def docker_answers(c) -> bool:
    return engines.docker_info(c, ".ServerVersion", lambda cmd: probe(c, cmd)).ok


def image_facts(c, image: str) -> tuple[str, dict] | None:
    res = probe(c, f"{c.docker.client} image inspect --format '{{{{json .}}}}' {shlex.quote(image)}")
    if not res.ok:
        return None
    info = json.loads(res.stdout)
    info = info[0] if isinstance(info, list) else info  # Podman's {{json .}} is the list `image inspect` prints
    return info["Id"], info.get("Config", {}).get("Labels") or {}


def source_date_epoch(c) -> int:
    """SOURCE_DATE_EPOCH for a reproducible build: the environment's when set (the reproducible-builds.org
    convention), else the time of the commit built (`git log -1 --format=%ct`); exit 2 when neither gives one."""
    said = os.environ.get("SOURCE_DATE_EPOCH") or probe(c, "git log -1 --format=%ct").stdout.strip()
    if not said.isdigit():
        raise Exit(f"SOURCE_DATE_EPOCH {said!r}: allowed: seconds since 1970 (or a git checkout with a commit)", code=2)
    return int(said)


def reproducible_client(c) -> None:
    """docker.client becomes Podman for a reproducible build (containers.REPRODUCIBLE); exit 2 without Podman."""
    if engines.client(c, lambda cmd: probe(c, cmd)).kind == "podman":
        return
    if not probe(c, "podman --version").ok:
        raise Exit(f"--reproducible {containers.REPRODUCIBLE}: install podman (Debian: apt-get install podman)", code=2)
    c.docker.client = "podman"


def build_image(c, build: containers.Build, prefix: str = "", archive: str | None = None):
    """Build it (prefix: environment assignments shown before the command, e.g. TMPDIR=...); returns the tag. A
    reproducible build is then saved, its config normalized (devtools/imagediff.py: what names the build's own
    containers) and loaded back under its tag; archive: where that normalized image stays (else removed)."""
    revision = probe(c, "git rev-parse HEAD").stdout.strip() or "unknown"
    if revision != "unknown" and probe(c, "git status --porcelain --untracked-files=no").stdout.strip():
        revision += "-dirty"
    source = probe(c, "git remote get-url origin").stdout.strip()
    bundle = build.ca_bundle if build.ca_bundle is not None else c.image.ca_bundle
    if bundle and not Path(bundle).is_file():
        raise Exit(f"--ca-bundle {bundle}: no such file", code=2)
    client = engines.client(c, lambda cmd: probe(c, cmd))
    try:
        cmd = containers.build_command(
            c,
            dataclasses.replace(build, ca_bundle=bundle or None),
            uid=os.getuid(),
            gid=os.getgid(),
            revision=revision,
            source_url=source,
            podman=client.kind == "podman",
        )
    except ValueError as err:
        raise Exit(str(err), code=2) from None
    buildx = cmd[1 + len(build.storage)] == "buildx"
    if buildx and client.kind == "podman":
        stop(
            c,
            "several platforms or --push: not with Podman here (podman build --platform a,b --manifest NAME, then "
            "podman manifest push NAME); build one platform, or set docker.client to a Docker client with buildx",
        )
    elif buildx and not client.buildx:
        stop(c, f"several platforms or --push need docker buildx: {engines.buildx_fix(client, lambda x: probe(c, x))}")
    problem = engines.build_problem(c, lambda x: probe(c, x))  # before anything is built: one line with the fix
    if problem:
        stop(c, problem)
    # A Docker client before 23.0 uses the engine's BuildKit only when asked; Podman builds with Buildah either way.
    c.run(prefix + (show(cmd) if client.kind == "podman" else f"DOCKER_BUILDKIT=1 {show(cmd)}"))
    tag = cmd[cmd.index("--tag") + 1]
    if build.epoch is not None:
        own = show([c.docker.client, *build.storage])
        out = archive or f"{tempfile.gettempdir()}/finetune-reproducible-{tag.replace('/', '_').replace(':', '_')}.tar"
        c.run(f"{own} save --quiet --format docker-archive --output {shlex.quote(out + '.raw')} {shlex.quote(tag)}")
        c.run(f"{shlex.quote(sys.executable)} -m devtools.imagediff --normalize {show([out + '.raw', out])}")
        c.run(f"rm -f {shlex.quote(out + '.raw')}")
        c.run(f"{own} load --quiet --input {shlex.quote(out)}")
        if archive is None:
            c.run(f"rm -f {shlex.quote(out)}")
    return tag


def ensure_image(c, variant, target) -> containers.Image:
    """The image with its id and labels, built first when missing."""
    resolve_engine(c)
    image = containers.image_name(c, variant, target)
    facts = image_facts(c, image)
    if facts is None:
        print(f"image {image} not built yet: building it", flush=True)
        build_image(c, containers.Build(variant, target))
        facts = image_facts(c, image) or ("<image id after the build>", {})
    return containers.Image(image, *facts)


def gpu_check(c, gpu: bool) -> None:
    """Before anything is built: stop (exit 2, with the fix) when --gpu is asked for and the host cannot give one."""
    runtime = gpu_runtime(c, lambda cmd: probe(c, cmd)) if gpu else None
    if runtime and runtime.problem:
        stop(c, runtime.message())
    if runtime:
        c.docker.gpu_devices = runtime.devices  # auto resolved: cdi or gpus (containers.gpu_flags)


def resolve_engine(c) -> None:
    """docker.run_as `auto` becomes what this engine needs (engines.run_as): containers.py reads the resolved value
    when it writes a run's command line."""
    if c.docker.run_as == "auto":
        c.docker.run_as = engines.run_as(engines.engine(c, lambda cmd: probe(c, cmd)))


def stop(c, problem: str) -> None:
    """Exit 2 with the problem; under --dry, say that a real run would stop here and go on printing the plan."""
    if not c.config.run.dry:
        raise Exit(problem, code=2)
    print(f"(dry run) a real run would stop here: {problem}", flush=True)


def verify_runroot(work: Path) -> Path:
    """Podman refuses a runroot (its locks and mounts) of more than 50 characters: a short folder named after work."""
    return Path(tempfile.gettempdir()) / f"finetune-verify-{hashlib.sha256(str(work).encode()).hexdigest()[:8]}"


def check_inputs(bases: str | None, workdir: str | None, holds: str = "") -> None:
    """verify-image's and reproduce's --bases (an archive) and --workdir (new or empty): exit 2 in one line."""
    if bases and not Path(bases).is_file():
        raise Exit(f"--bases {bases}: no such file (an image archive from docker save or podman save)", code=2)
    if workdir and Path(workdir).exists() and any(Path(workdir).iterdir()):
        raise Exit(f"--workdir {workdir}: not empty; allowed: a new or empty folder{holds}", code=2)


def work_folder(c, workdir: str | None, prefix: str) -> Path:
    """--workdir, else a new temporary folder (under --dry, its name only: nothing is made)."""
    if workdir:
        return Path(workdir).resolve()
    if c.config.run.dry:
        return Path(tempfile.gettempdir()) / f"{prefix}XXXXXXXX"
    return Path(tempfile.mkdtemp(prefix=prefix))


def verify_image(c, variant: str, target: str, workdir: str | None, bases: str | None, keep: bool) -> None:
    """Build the image twice from scratch, each in an empty Podman storage of its own (no layer cache, no cache
    mounts: fresh builder state) with the same inputs and SOURCE_DATE_EPOCH, save both, and compare them
    (devtools/imagediff.py): exit 0 when the digests are equal, 1 naming the first layer and the files that differ."""
    if target not in containers.TARGETS:
        raise Exit(f"--target {target!r}: allowed: {', '.join(containers.TARGETS)}", code=2)
    try:
        containers.check_variant(c, variant)
    except ValueError as err:
        raise Exit(str(err), code=2) from None
    if variant in containers.SERVERS:  # measured once by hand (docs/serve.md), too big to build twice here
        raise Exit(f"--variant {variant}: allowed: {', '.join(c.image.variants)} (the training images)", code=2)
    check_inputs(bases, workdir, " (both storages go there)")
    epoch = source_date_epoch(c)
    reproducible_client(c)
    work = work_folder(c, workdir, "finetune-verify-")
    print(f"verify-image: {variant} {target}, SOURCE_DATE_EPOCH={epoch}, two builds in {work}", flush=True)
    podman, saved = shlex.quote(c.docker.client), []
    run = verify_runroot(work)
    for n in ("1", "2"):
        storage = ("--root", f"{work}/{n}/storage", "--runroot", f"{run}/{n}")
        own = f"{podman} {show(list(storage))}"
        c.run(f"mkdir -p {shlex.quote(f'{work}/{n}/tmp')}")
        if bases:
            c.run(f"{own} load --quiet --input {shlex.quote(bases)}")
        build = containers.Build(variant, target, no_cache=True, epoch=epoch, storage=storage)
        # Buildah keeps cache mounts (the pip and conda download caches) in $TMPDIR/buildah-cache: one per build
        saved.append(f"{work}/{n}/image.tar")
        build_image(c, build, prefix=f"TMPDIR={shlex.quote(f'{work}/{n}/tmp')} ", archive=saved[-1])
    diff = c.run(f"{shlex.quote(sys.executable)} -m devtools.imagediff {show(saved)}", warn=True)
    if not keep:
        for n in ("1", "2"):  # its own storage's images (the layers' files belong to root), then the folders
            c.run(f"{podman} --root {work}/{n}/storage --runroot {run}/{n} rmi --all --force", warn=True)
        c.run(f"rm -rf {shlex.quote(str(work))} {run}")
    if diff is not None and diff.exited == 1:
        raise Exit("verify-image: the two builds differ (above: the first layer and its files)", code=1)
    if diff is not None and diff.exited:
        raise Exit(f"verify-image: the comparison failed (exit {diff.exited})", code=2)
