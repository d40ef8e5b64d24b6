"""A new user on a fresh machine: a plain Debian container (tests/container/newcomer/Dockerfile: the suite's python3,
venv, pip, git, make, CA certificates; a non-root user; no Docker) clones this repository and runs the README's
first-screen commands exactly as written there.

- Debian 12 (its python3 is the CPython the locks are made for): `make train` and `make test` both exit 0 and print
  their figures. `make test` runs as written, with the tier picked by pytest's PYTEST_ADDOPTS: the fast tier
  (-m "not slow": what a fresh machine can get wrong is the bootstrap, the collection of every test module and the
  tests that touch the host; the slow tier's training runs are the same runs the main suite makes, so a second
  machine's worth of them proves nothing new). Marked `newcomer` (a few minutes); plain `make test` deselects it,
  CI runs it as its own step (`make test ARGS="-m newcomer"`).
- Debian 13 (only Python 3.13): `make train` trains (uv downloaded a CPython 3.11) or stops with one line naming the
  fix; never a traceback. Here it is the line: uv's CPython builds come from github.com, which is not reachable.

Stand-ins for what this machine cannot reach, named: the Debian bases are debootstrapped (docker/engine.sh base
SUITE) instead of pulled; PyTorch's CPU wheel index is replaced by this machine's wheel folder (/opt/wheels, mounted,
PIP_FIND_LINKS); the host's CA bundle is mounted so pip and uv reach PyPI through this machine's TLS proxy. Without
the stand-ins (FINETUNE_TEST_STANDINS=0, the GitHub workflow) Debian 12 is the pinned image of invoke.yaml, the indexes
are the real ones, and the Debian 13 case is skipped (no Debian 13 image is pinned).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_environments import locked_python

from .conftest import FIGURES, REPO, Engine
from .helpers_engine import ENGINE_SH, one_worker_at_a_time

pytestmark = [pytest.mark.container, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
WHEELS = Path("/opt/wheels")  # stand-in for https://download.pytorch.org/whl/cpu (the +cpu torch wheel)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # stand-in: this machine's CA bundle (its TLS proxy)
WANT = locked_python()  # the X.Y the locks are made for (the python fact's source)
# The fast tier's marker expression, read where it is defined: the Makefile's `test-fast` recipe.
FAST_TIER = re.search(r'^test-fast:.*\n\t.* -m "([^"]+)"', (REPO / "Makefile").read_text(), re.M).group(1)


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments dropped: what a new user types."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def fresh_machine(engine: Engine, suite: str, standins: dict) -> str:
    """The newcomer image on Debian <suite>: with the stand-ins, local/debian:<suite> (debootstrapped); without them
    (a machine that reaches Docker Hub, e.g. the GitHub workflow), Debian 12 is the pinned image the CPU runtime is
    built on (invoke.yaml image.base_images.cpu, the one place that pins it)."""
    if standins:
        with one_worker_at_a_time("base-images"):
            subprocess.run(["bash", str(ENGINE_SH), "base", suite], env=engine.env, check=True, capture_output=True)
        base = f"local/debian:{suite}"
    elif suite == "bookworm":
        base = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["base_images"]["cpu"]
    else:
        pytest.skip(f"no pinned Debian {suite} image in invoke.yaml: this case runs with the stand-ins")
    tag = f"local/newcomer:{suite}"
    engine("build", "--quiet", "--build-arg", f"BASE={base}", "--tag", tag, HERE / "newcomer")
    return tag


def as_newcomer(engine: Engine, image: str, script: str, timeout: int, standins: dict) -> subprocess.CompletedProcess:
    """bash -c SCRIPT as the non-root user in a fresh container of image, after cloning the committed repository.
    The container is named so that a timeout removes it (a killed `docker run` client leaves it running) and still
    shows how far it got."""
    reach = []  # what stands in for the PyTorch CPU index and the registry's TLS (none where the network is real)
    if standins:
        if not WHEELS.is_dir():
            pytest.skip(f"needs the +cpu torch wheel folder {WHEELS} (the stand-in for PyTorch's CPU index)")
        reach = [
            "--volume", f"{WHEELS}:{WHEELS}:ro", "--env", f"PIP_FIND_LINKS={WHEELS}",
            "--volume", f"{CA_BUNDLE}:/etc/ssl/host-ca.crt:ro",
            "--env", "SSL_CERT_FILE=/etc/ssl/host-ca.crt", "--env", "PIP_CERT=/etc/ssl/host-ca.crt",
        ]  # fmt: skip
    # /src belongs to the host user, not the newcomer: git refuses to read it unless it is named safe (/src/.git too)
    clone = "git config --global --add safe.directory /src/.git && git clone --quiet /src finetune && cd finetune"
    name = f"finetune-newcomer-{os.getpid()}-{image.split(':')[-1]}"
    try:
        return engine(
            "run", "--rm", "--name", name,
            "--volume", f"{REPO}:/src:ro", *reach,
            image, "bash", "-c", f"{clone} && {script}",
            check=False, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        logs = engine("logs", "--tail", "80", name, check=False)
        pytest.fail(f"{image}: no result after {timeout} s; its last output:\n{(logs.stdout + logs.stderr)[-5000:]}")
    finally:
        engine("rm", "--force", name, check=False)


@pytest.mark.newcomer
def test_fresh_debian12_runs_both_readme_commands_as_a_non_root_user_without_docker(engine, standins):
    assert readme_commands() == ["make train", "make test"]
    image = fresh_machine(engine, "bookworm", standins)
    train, test = readme_commands()
    tier = f"export PYTEST_ADDOPTS='-m \"{FAST_TIER}\"'"  # the README command itself, the fast tier selected
    script = f"id -u && ! command -v docker && {train} && echo '=== make test ===' && {tier} && {test}"
    proc = as_newcomer(engine, image, script, timeout=3600, standins=standins)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert proc.stdout.splitlines()[0] == "1000"  # non-root
    accuracy = re.search(r"^eval accuracy +(.*)$", proc.stdout, re.M)
    assert accuracy and accuracy.group(1).startswith("0.000 before -> 1.000"), out[-3000:]
    summary = re.findall(r"=+ (\d+ passed.*?) in ([\d.]+)s", proc.stdout.split("=== make test ===")[1])
    assert summary and "failed" not in summary[-1][0] and "error" not in summary[-1][0], out[-3000:]
    assert "deselected" in summary[-1][0], out[-3000:]  # the slow tier was left out: the fast tier ran
    FIGURES["newcomer debian 12: make train"] = accuracy.group(1)
    FIGURES["newcomer debian 12: make test"] = f"{summary[-1][0]} in {float(summary[-1][1]):.0f} s"


@pytest.mark.newcomer  # a fresh machine: the newcomer step's, not plain make test's (58 s there)
def test_fresh_debian13_with_only_python313_trains_or_names_the_fix_in_one_line(engine, standins):
    assert readme_commands()[0] == "make train"
    image = fresh_machine(engine, "trixie", standins)
    train = readme_commands()[0]
    script = f"python3 --version && ! command -v python{WANT} && {train}"
    proc = as_newcomer(engine, image, script, timeout=1800, standins=standins)
    out = proc.stdout + proc.stderr
    assert proc.stdout.startswith("Python 3.13"), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if proc.returncode == 0:  # uv could download CPython 3.11 (github.com reachable): it trained
        assert re.search(r"^eval accuracy +0\.000 before -> 1\.000", proc.stdout, re.M), out[-3000:]
        FIGURES["newcomer debian 13: make train"] = f"trained (uv downloaded CPython {WANT})"
        return
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("make: the locks are made for CPython")]
    assert len(lines) == 1, out[-3000:]
    assert f"Fix: install CPython {WANT}" in lines[0] and f"uv python install {WANT}" in lines[0], lines[0]
    assert "eval accuracy" not in proc.stdout and "Error 1" in proc.stderr  # make stopped at that line
    FIGURES["newcomer debian 13: make train"] = lines[0][:160] + " ..."
