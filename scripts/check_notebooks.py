#!/usr/bin/env python3
"""Check that notebooks are committed clean: no outputs, execution counts, timing or widget state, and language_info
reduced to its name (Jupyter adds the Python version on save). `--fix` strips all of that in place.

    python scripts/check_notebooks.py              # every notebooks/**/*.ipynb; exit 1 naming offenders
    python scripts/check_notebooks.py --fix        # clean them in place
    python scripts/check_notebooks.py a.ipynb ...  # only these files (as a pre-commit hook passes them)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def problems(nb) -> list[str]:
    """What keeps a notebook from being clean, one line each (empty when clean)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i}: {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i}: execution_count {cell.execution_count}")
        if "execution" in cell.metadata:
            found.append(f"cell {i}: execution timing metadata")
    if "widgets" in nb.metadata:
        found.append("metadata: widget state")
    extra = sorted(set(nb.metadata.get("language_info", {})) - {"name"})
    if extra:
        found.append(f"metadata: language_info has {', '.join(extra)} (only name is kept)")
    return found


def strip(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    if "language_info" in nb.metadata:
        nb.metadata.language_info = {k: v for k, v in nb.metadata.language_info.items() if k == "name"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Check (or --fix) that notebooks are clean: no outputs, execution counts, timing or widget state, "
        "and language_info reduced to its name.",
        epilog="exit codes: 0 clean (or fixed), 1 a notebook needs cleaning (run again with --fix)",
    )
    p.add_argument("paths", nargs="*", type=Path, help="notebooks to check (default: notebooks/**/*.ipynb)")
    p.add_argument("--fix", action="store_true", help="clean the offending notebooks in place")
    args = p.parse_args(argv)
    # .ipynb_checkpoints/ and other hidden folders hold Jupyter's autosaves, not committed notebooks
    paths = args.paths or sorted(
        f for f in (REPO / "notebooks").glob("**/*.ipynb") if not any(part.startswith(".") for part in f.parts)
    )
    dirty = 0
    for path in paths:
        shown = path.relative_to(REPO) if path.is_absolute() and path.is_relative_to(REPO) else path
        try:
            nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        except (OSError, ValueError) as e:  # unreadable, or not notebook JSON
            dirty += 1
            print(f"{shown}: cannot read as a notebook ({e})")
            continue
        found = problems(nb)
        if not found:
            continue
        if args.fix:
            strip(nb)
            nbformat.write(nb, path)
            print(f"{shown}: cleaned ({len(found)} fix(es))")
        else:
            dirty += 1
            print("\n".join(f"{shown}: {line}" for line in found))
    if dirty:
        print(f"{dirty} notebook(s) need cleaning: python scripts/check_notebooks.py --fix", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
