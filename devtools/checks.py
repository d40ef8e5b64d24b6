"""What `invoke doctor` reports: one Check per question asked of the host, and the table the user reads.

The bottom layer of the doctor's modules: devtools/doctor.py and each module with a check of its own
(devtools/gpu_loss.py) build Checks; tasks.py prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    state: str  # ok | warn | fail | skip
    found: str
    fix: str = ""


def table(checks: list[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    width = max(len(ch.name) for ch in checks)
    lines = []
    for ch in checks:
        lines.append(f"{marks[ch.state]}  {ch.name:{width}}  {ch.found}")
        if ch.fix and ch.state in ("fail", "warn"):
            lines.append(f"{'':6}{'':{width}}  fix: {ch.fix}")
    return "\n".join(lines)
