"""Image plumbing shared by tasks.py's tasks: quiet probes of the host, building an image with the pinned inputs,
making sure an image exists before it is run, and the GPU preflight. Every action goes through `c.run` (so
`invoke --dry` prints it); probes run even under --dry and print nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
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


def build_image(c, build: containers.Build):
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
    if cmd[1] == "buildx" and client.kind == "podman":
        stop(
            c,
            "several platforms or --push: not with Podman here (podman build --platform a,b --manifest NAME, then "
            "podman manifest push NAME); build one platform, or set docker.client to a Docker client with buildx",
        )
    elif cmd[1] == "buildx" and not client.buildx:
        stop(c, f"several platforms or --push need docker buildx: {engines.buildx_fix(client, lambda x: probe(c, x))}")
    problem = engines.build_problem(c, lambda x: probe(c, x))  # before anything is built: one line with the fix
    if problem:
        stop(c, problem)
    # A Docker client before 23.0 uses the engine's BuildKit only when asked; Podman builds with Buildah either way.
    c.run(show(cmd) if client.kind == "podman" else f"DOCKER_BUILDKIT=1 {show(cmd)}")
    return cmd[cmd.index("--tag") + 1]


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
