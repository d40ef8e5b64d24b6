"""The one rule for names that become paths, container names or shell words: run names, deploy names; and where an
export goes by default (`finetune export`, and `invoke serve --vllm`, which runs it: one rule, stdlib only).

A name is 1-100 characters of letters, digits, `.`, `_` and `-`, starting with a letter or digit. That keeps it one
path component under runs/ (no `/`, no `..`, never empty), one word in any shell (nothing to quote), a valid Docker
container name after the `finetune-` prefix, and never an option (no leading `-`) or a hidden file (no leading `.`).
"""

from __future__ import annotations

import re
from pathlib import Path

PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ALLOWED = "1-100 of letters, digits, '.', '_', '-', starting with a letter or digit"


def name_problem(value) -> str | None:
    """None when `value` is a valid name, otherwise why not (for an error message that names the key)."""
    if not isinstance(value, str):
        return f"got {type(value).__name__} {value!r}; allowed: a string of {ALLOWED}"
    if not PATTERN.fullmatch(value):
        return f"got {value!r}; allowed: {ALLOWED}"
    return None


def check_name(value, what: str = "name") -> str:
    """`value` if valid, else ValueError("<what>: got ...; allowed: ...")."""
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{what}: {problem}")
    return value


def default_export_dir(run_dir: Path, fmt: str) -> Path:
    """runs/<name>-hf or runs/<name>-gguf, beside the run (not inside it: a run folder holds what training wrote)."""
    return run_dir.parent / f"{run_dir.resolve().name}-{fmt}"
