"""make test runs on pytest-xdist with --dist loadgroup (tests/README.md): the container tests of one group must run on
one worker, or two workers build and retag the same images at once. pytest 9.2 silently stopped that grouping
(pytest-dev/pytest-xdist#1386: the tests were spread as if unmarked); this runs a grouped suite the way
tests/container/conftest.py groups its files and checks each group stayed on one worker."""

from __future__ import annotations

import re
import subprocess
import sys

CONFTEST = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.path.stem))
"""
TESTS = "import time\n" + "".join(f"def test_{i}():\n    time.sleep(0.2)\n" for i in range(4))


def test_each_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ran = re.findall(r"^\[(gw\d)\] .* PASSED (test_\w)\.py::test_\d@(test_\w)", proc.stdout, re.M)
    assert len(ran) == 8, proc.stdout[-3000:]  # every test carries its group (the @ suffix): 9.2 dropped it
    workers = {group: {worker for worker, _, g in ran if g == group} for group in ("test_a", "test_b")}
    assert all(len(w) == 1 for w in workers.values()), workers
