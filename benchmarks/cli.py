"""The command-line pieces every benchmark shares: its parser as the runner shows it, --out and --set."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"  # gitignored: JSON reports, logs, scale's work files


def parser(name: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A benchmark's command line, as `python -m benchmarks NAME --help` shows it (its text laid out as written)."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_out(p: argparse.ArgumentParser, name: str, more: str = "") -> None:
    """--out: where the JSON report goes (default benchmarks/results/NAME.json)."""
    p.add_argument(
        "--out",
        default=str(RESULTS / f"{name}.json"),
        help=f"where to write the JSON report (default: benchmarks/results/{name}.json){more}",
    )


def add_set(p: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE, repeatable, into args.overrides."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
