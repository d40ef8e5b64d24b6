"""The runner, `python -m benchmarks NAME [ARGS]`, and the flags every benchmark has (--out, --set)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from benchmarks import BENCHMARKS

RESULTS = Path(__file__).resolve().parent / "results"  # gitignored: JSON reports, logs, scale's work files

USAGE = """\
usage: python -m benchmarks NAME [ARGS ...]

benchmarks (`python -m benchmarks NAME --help` for the flags of one):
""" + "\n".join(f"  {name:12} {what}" for name, what in BENCHMARKS.items())


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"python -m benchmarks: unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    return module.main(module.parse_args(rest))
