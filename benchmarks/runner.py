"""The one runner of the benchmarks, `python -m benchmarks NAME [ARGS]`: benchmarks/<NAME>.py's parse_args and main."""

from __future__ import annotations

import importlib
import sys

from benchmarks import BENCHMARKS

USAGE = """\
usage: python -m benchmarks NAME [ARGS ...]

benchmarks (`python -m benchmarks NAME --help` for the flags of one):
""" + "\n".join(f"  {name:12} {what}" for name, what in BENCHMARKS.items())


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
