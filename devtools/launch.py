"""`invoke train`: where a run starts (this host's .venv or a training container) and the command that starts it.

A Launch is what the task was asked, its flags checked before anything is probed or built (check, node_rank: a bad
flag is one line, exit 2); train() chooses the runtime, prints it, and starts the run through `c.run`, so
`invoke --dry train` prints the plan.
The docker command line itself is devtools/containers.py's; the image comes from devtools/images.py.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from invoke import Exit

from devtools import containers, images
from devtools.containers import show
from devtools.nodes import Nodes, launcher

RUNTIMES = ("auto", "docker", "local")
# The flags `invoke train` shares with `invoke deploy`, said once.
HELP = {
    "set_": "override a config key, repeatable: --set training.epochs=2 --set seed=1",
    "nproc": "processes per container: torchrun --nproc-per-node N inside it (one per GPU)",
}


def venv_bin(c, tool: str) -> str:
    """A tool of the local environment (invoke.yaml's finetune.venv)."""
    return f"{c.finetune.venv}/bin/{tool}"


@dataclass(frozen=True)
class Launch:
    """What `invoke train` was asked: the config and its overrides, where to run and how many processes."""

    config: str
    sets: tuple[str, ...] = ()
    local: bool = False
    docker: bool = False  # --docker, or --gpu (which runs in the CUDA image)
    runtime: str | None = None  # None: invoke.yaml's finetune.runtime
    output_dir: str | None = None
    resume: bool = False
    gpu: bool = False
    gpus: str = "all"
    nproc: int = 1
    variant: str | None = None
    nodes: Nodes = Nodes()

    def cli_args(self) -> list[str]:
        """The finetune command's arguments, the output folder aside (its path differs inside a container)."""
        args = ["train", self.config, *(a for s in self.sets for a in ("--set", s))]
        return args + (["--resume"] if self.resume else [])


def check(launch: Launch) -> None:
    """The flags that are wrong whatever the runtime: one line and exit 2, before anything is probed or built."""
    try:
        containers.gpu_flags(launch.gpus)
        if launch.output_dir:
            containers.check_output_dir(launch.output_dir, containers.REPO, Path.home())
    except ValueError as err:
        raise Exit(str(err), code=2) from None
    if launch.nproc < 1:
        raise Exit(f"--nproc {launch.nproc}: allowed: 1 or more", code=2)


def node_rank(value) -> int | None:
    """--node-rank as a number (invoke passes a flag without a default as text)."""
    if value is not None and not str(value).isdigit():
        raise Exit(f"--node-rank {value!r}: allowed: a number, 0 to --nnodes minus 1", code=2)
    return None if value is None else int(value)


def choose_runtime(c, runtime: str | None, local: bool, docker: bool) -> tuple[str, str]:
    """local or docker, and why (the flag, or what `auto` found)."""
    if local and docker:
        raise Exit("--local and --docker: choose one", code=2)
    runtime = "local" if local else "docker" if docker else (runtime or c.finetune.runtime)
    if runtime not in RUNTIMES:
        raise Exit(f"--runtime {runtime!r}: allowed: {', '.join(RUNTIMES)}", code=2)
    if runtime == "auto":
        if images.docker_answers(c):
            return "docker", "auto: a Docker engine answers"
        return "local", "auto: no Docker engine answers"
    return runtime, "--local" if local else "--docker/--gpu" if docker else f"--runtime {runtime}"


def train(c, launch: Launch) -> None:
    """Choose the runtime, say which, and start the run in .venv or in a container (its flags checked first)."""
    chosen, why = choose_runtime(c, launch.runtime, launch.local, launch.docker)
    if launch.gpu and chosen != "docker":
        raise Exit("--gpu runs in the CUDA image: drop --local/--runtime local", code=2)
    try:
        launch.nodes.check(chosen)
    except ValueError as err:
        raise Exit(str(err), code=2) from None
    print(f"runtime: {chosen} ({why})", flush=True)
    if chosen == "local":  # never with --gpu (refused above)
        train_local(c, launch)
    else:
        train_in_container(c, launch)


def train_local(c, launch: Launch) -> None:
    program = launcher(launch.nproc, launch.nodes)
    program[0] = venv_bin(c, program[0])  # finetune or torchrun: .venv's
    out = ["--output-dir", launch.output_dir] if launch.output_dir else []
    c.run(f"FINETUNE_RUNTIME=local {shlex.join(program + launch.cli_args() + out)}")


def train_in_container(c, launch: Launch) -> None:
    images.gpu_check(c, launch.gpu)  # before any build: a missing GPU runtime is reported first
    image = images.ensure_image(c, "cuda" if launch.gpu else launch.variant or "cpu", "runtime")
    args = launch.cli_args()
    args[1], mounts = containers.container_path(Path(launch.config), containers.REPO, c.finetune.runs_dir)
    if launch.output_dir:
        where = Path(launch.output_dir)
        inside, extra = containers.container_path(where, containers.REPO, c.finetune.runs_dir, writable=True)
        args += ["--output-dir", inside]
        mounts += extra
        if extra:  # mounted itself, so it must exist: docker would create it as root
            c.run(f"mkdir -p {shlex.quote(str(where.resolve()))}")
    if not c.config.run.dry:
        (containers.REPO / c.finetune.runs_dir).mkdir(exist_ok=True)  # yours: docker would create it as root
    cmd = containers.run_command(
        c,
        image,
        args,
        name=f"finetune-train-{os.getpid()}",
        gpus=launch.gpus if launch.gpu else None,
        nproc=launch.nproc,
        extra_mounts=mounts,
        nodes=launch.nodes,
    )
    c.run(show(cmd), pty=False)
