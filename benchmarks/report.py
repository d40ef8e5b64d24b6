"""What every benchmark's report is made of: text tables, and the JSON report's stamp and file.

The one place a benchmark table is drawn or a report written: throughput.py and scale_report.py build their rows and
data, these functions give them their form.
"""

from __future__ import annotations

import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path


def fmt(value, spec: str, none: str = "-") -> str:
    """A number in `spec`, or `none` for a missing one."""
    return none if value is None else format(value, spec)


def median(values):
    """The median of the values that are there (None when none are)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def render(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A text table: the first `left` columns left-aligned, the rest right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def stamp(benchmark: str) -> dict:
    """The first keys of every report: which benchmark, when, and the command line that ran it."""
    return {
        "benchmark": benchmark,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
    }


def write(out: Path, data: dict) -> dict:
    """Write a report as indented JSON (its folder made); returns the data."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return data
