"""Invoke tasks: `invoke --list`, `invoke --help TASK`, `invoke --dry TASK` prints the plan without running it.

Every command goes through `c.run`, so `--dry` shows the whole plan. Defaults live in invoke.yaml.
"""

from __future__ import annotations

import shlex

from invoke import Collection, Exit, task

RUNTIMES = ("auto", "docker", "local")


def _venv_bin(c, tool: str) -> str:
    return f"{c.finetune.venv}/bin/{tool}"


def _docker_answers(c) -> bool:
    """A probe, not part of the plan: it runs even under --dry."""
    return c.run("docker info --format '{{.ServerVersion}}'", hide=True, warn=True, dry=False, echo=False).ok


def choose_runtime(c, runtime: str | None, local: bool) -> tuple[str, str]:
    runtime = "local" if local else (runtime or c.finetune.runtime)
    if runtime not in RUNTIMES:
        raise Exit(f"--runtime {runtime!r}: allowed: {', '.join(RUNTIMES)}", code=2)
    if runtime == "docker":
        raise Exit(
            "--runtime docker: the training image is not part of this checkout yet (docker/ arrives with the "
            "container images); use --local",
            code=2,
        )
    if runtime == "auto":
        engine = (
            "a Docker engine answers, but no training image is defined yet"
            if _docker_answers(c)
            else "no Docker engine answers"
        )
        return "local", f"auto: {engine}"
    return "local", "--local" if local else "--runtime local"


@task(
    iterable=["set_"],
    help={
        "config": "YAML config to train (default from invoke.yaml: configs/default.yaml)",
        "set_": "override a config key, repeatable: --set training.epochs=2 --set seed=1",
        "local": "run in the local .venv, not in a container (same as --runtime local)",
        "runtime": "auto | docker | local (default from invoke.yaml: auto)",
        "output_dir": "run directory (default runs/<name>)",
        "resume": "continue the run from its last complete checkpoint",
    },
)
def train(c, config=None, set_=None, local=False, runtime=None, output_dir=None, resume=False):
    """Fine-tune from a config (default: the embedded tiny default) and write runs/<name>/."""
    chosen, why = choose_runtime(c, runtime, local)
    print(f"runtime: {chosen} ({why})", flush=True)
    args = ["train", config or c.finetune.config, *(a for s in set_ or [] for a in ("--set", s))]
    if output_dir:
        args += ["--output-dir", output_dir]
    if resume:
        args.append("--resume")
    c.run(f"FINETUNE_RUNTIME={chosen} {_venv_bin(c, 'finetune')} {shlex.join(args)}")


@task(
    help={
        "fast": "skip the slow (real training) tests",
        "k": "only tests matching this pytest -k expression",
        "args": "extra pytest arguments, quoted",
    }
)
def test(c, fast=False, k=None, args=""):
    """Run the test suite with the local environment's pytest."""
    cmd = [_venv_bin(c, "python"), "-m", "pytest"]
    if fast:
        cmd += ["-m", "not slow"]
    if k:
        cmd += ["-k", k]
    c.run(shlex.join(cmd) + (f" {args}" if args else ""))


@task(
    help={"variant": "lock only this variant (cpu, cuda, dev); repeatable", "check": "only check freshness"},
    iterable=["variant"],
)
def lock(c, variant=None, check=False):
    """Regenerate the hashed lockfiles from environments/*/environment.yml (or --check that they are fresh)."""
    cmd = [_venv_bin(c, "python"), "environments/lock.py", *(a for v in variant or [] for a in ("--variant", v))]
    if check:
        cmd.append("--check")
    c.run(shlex.join(cmd))


@task(
    help={"variant": "locks to compare against (default: cpu and dev, what .venv is built from); repeatable"},
    iterable=["variant"],
)
def env(c, variant=None):
    """Show whether the local environment matches the locks, package by package; exit 1 on any difference."""
    cmd = [_venv_bin(c, "python"), "environments/lock.py", "--verify-env", *(variant or [])]
    c.run(shlex.join(cmd))


@task(help={"args": "extra arguments for benchmarks/throughput.py, quoted (see its --help)"})
def bench(c, args=""):
    """Tokens/s of our pipeline vs a plain Hugging Face Trainer on the same model and data."""
    c.run(f"{_venv_bin(c, 'python')} benchmarks/throughput.py {args}".strip())


ns = Collection(train, test, lock, env, bench)
