"""make test runs on pytest-xdist: its closing line must count what a serial run counts, deselected tests included.
Under xdist the workers collect and deselect, and the controller, which prints the line, heard of no deselected test:
`-m "not slow"` ended in "454 passed, 16 skipped" instead of "..., 80 deselected", and the newcomer test, which checks
that line to know the fast tier ran, failed (tests/conftest.py now passes the workers' count to the controller)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

# a file of fast tests and one slow test (seconds); -m "not slow" deselects that one, as the fast tier does
TESTS = "tests/test_host_python.py"


def closing_line(*workers: str) -> str:
    cmd = [sys.executable, "-m", "pytest", TESTS, "-m", "not slow", "-q", "-p", "no:cacheprovider", *workers]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    line = re.search(r"^=*\s*(\d+ passed.*) in [\d.]+s", proc.stdout, re.M)
    assert line, proc.stdout[-3000:]
    return line.group(1)


def test_the_summary_under_xdist_counts_the_deselected_tests_as_a_serial_run_does():
    serial = closing_line("-p", "no:xdist")
    assert re.search(r"\b[1-9]\d* deselected\b", serial), serial  # the slow test was deselected
    assert closing_line("-n", "2", "--dist", "loadgroup") == serial
