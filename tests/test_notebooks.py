"""Notebooks: committed clean (scripts/check_notebooks.py, which must also be able to fail), and the quickstart runs.

The slow test executes an in-memory copy of notebooks/quickstart.ipynb with nbclient on a real kernel (CPU); the
committed file is left untouched and the run goes to a temporary folder through FINETUNE_NOTEBOOK_RUNS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO
from finetune.report import read_metrics

CHECK = REPO / "scripts" / "check_notebooks.py"
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"


def check(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def stdout_of(c) -> str:
    return "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def test_committed_notebooks_are_clean():
    proc = check()
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_on_outputs_and_fix_cleans(tmp_path):
    nb = nbformat.read(QUICKSTART, as_version=4)
    index = nb.cells.index(cell(nb, "train"))
    nb.cells[index].outputs = [nbformat.v4.new_output("stream", name="stdout", text="status completed\n")]
    nb.cells[index].execution_count = 3
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)

    proc = check(dirty)
    assert proc.returncode == 1
    assert f"{dirty}: cell {index}: 1 output(s)" in proc.stdout
    assert f"{dirty}: cell {index}: execution_count 3" in proc.stdout

    assert check("--fix", dirty).returncode == 0
    assert check(dirty).returncode == 0, "--fix left the notebook dirty"
    assert dirty.read_bytes() == QUICKSTART.read_bytes(), "--fix changed more than the injected output"


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    committed = QUICKSTART.read_bytes()
    nb = nbformat.reads(committed.decode(), as_version=4)
    monkeypatch.setenv("FINETUNE_NOTEBOOK_RUNS", str(tmp_path))  # the kernel inherits this environment
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(QUICKSTART.parent)}}
    ).execute()
    assert QUICKSTART.read_bytes() == committed

    train_out = stdout_of(cell(nb, "train"))
    assert '"status": "completed"' in train_out, train_out[-2000:]
    run_dir = tmp_path / "notebook-quickstart"  # not runs/: the notebook honours FINETUNE_NOTEBOOK_RUNS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] > 0
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert any("loss" in m for m in metrics)

    plots = [o for o in cell(nb, "plot").outputs if "image/png" in o.get("data", {})]
    assert len(plots) == 1, "the loss plot shows no PNG image"
    assert re.fullmatch(r"'reverse: hello' -> '.*'\n", stdout_of(cell(nb, "generate"))), "no generated text"

    executed = tmp_path / "executed.ipynb"  # a really executed notebook: the check catches it, --fix restores it
    nbformat.write(nb, executed)
    assert check(executed).returncode == 1
    assert check("--fix", executed).returncode == 0
    assert executed.read_bytes() == committed
