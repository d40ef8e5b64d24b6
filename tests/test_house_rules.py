"""Two rules of the house (issue 28), read from the source with ast, nothing imported or run:
- no Python file edits sys.path: what a module can see comes from the environment (pyproject.toml's packages, installed
  editable in .venv; pytest's pythonpath for the tests; `python -m` for scripts), not from where it was started;
- no first-party function, method or attribute is replaced at run time outside the tests: code that measures or
  changes a run uses a public hook (finetune.run.Hooks), so it runs the program users run.
"""

from __future__ import annotations

import ast
import functools
import subprocess

from conftest import REPO

SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__", "__delitem__"}
FIRST_PARTY = {"finetune", "devtools", "benchmarks", "tasks"}
ENVIRONMENTS = {p.stem for p in (REPO / "environments").glob("*.py")}  # imported by bare name (import lockfile)


@functools.cache  # read once for both tests
def python_files() -> dict[str, str]:
    """Every Python file git tracks, or would (untracked, not ignored): path -> text."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name: (REPO / name).read_text(encoding="utf-8") for name in out if (REPO / name).is_file()}


def is_sys_path(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"


def sys_path_edits(source: str) -> list[int]:
    """Lines that change sys.path: sys.path.insert(...) and the other mutators, sys.path = / += / [i] = ...,
    and `from sys import path`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SYS_PATH_EDITS:
            if is_sys_path(node.func.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)
    return lines


def first_party_names(tree: ast.AST) -> set[str]:
    """The names a module binds to first-party modules, classes and functions by importing them."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in FIRST_PARTY or top in ENVIRONMENTS:
                    names.add(a.asname or top)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FIRST_PARTY or top in ENVIRONMENTS:
                names |= {a.asname or a.name for a in node.names}
    return names


def root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def replaced_first_party(source: str) -> list[int]:
    """Lines that assign to an attribute of something imported from a first-party module (its class, function or the
    module itself: Trainer.__init__ = ..., module.function = ...), or setattr/delattr on one."""
    tree = ast.parse(source)
    imported = first_party_names(tree)
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("setattr", "delattr"):
            lines += [node.lineno] if node.args and root_name(node.args[0]) in imported else []
        for t in targets:
            for leaf in t.elts if isinstance(t, ast.Tuple | ast.List) else [t]:
                if isinstance(leaf, ast.Attribute | ast.Subscript) and root_name(leaf) in imported:
                    lines.append(node.lineno)
    return lines


def test_no_python_file_edits_sys_path():
    files = python_files()
    assert "benchmarks/scale.py" in files and "tests/conftest.py" in files  # the files were read
    found = {name: lines for name, text in files.items() if (lines := sys_path_edits(text))}
    assert found == {}, "sys.path edited (install the package, or pytest's pythonpath, or python -m): " + str(found)


def test_no_first_party_method_is_replaced_at_run_time_outside_the_tests():
    files = {name: text for name, text in python_files().items() if not name.startswith("tests/")}
    assert "benchmarks/scale_runs.py" in files and "src/finetune/run.py" in files
    found = {name: lines for name, text in files.items() if (lines := replaced_first_party(text))}
    assert found == {}, "a first-party object replaced at run time (offer a public hook instead): " + str(found)


def test_the_checks_find_what_they_look_for():
    """The detectors themselves, on the shapes they must catch (the ones this repository had) and must not."""
    assert sys_path_edits("import sys\nsys.path.insert(0, 'x')\n") == [2]
    assert sys_path_edits("import sys\nsys.path[:0] = ['x']\nsys.path += ['y']\n") == [2, 3]
    assert sys_path_edits("from sys import path\n") == [1]
    assert sys_path_edits("import sys\nprint(sys.path)\nx = list(sys.path)\n") == []
    patched = (
        "def run():\n"
        "    from finetune import trainer as finetune_trainer\n"
        "    finetune_trainer.FinetuneTrainer.__init__ = init\n"
        "    finetune_trainer.FinetuneTrainer.save_model = lambda self, *a, **kw: None\n"
    )
    assert replaced_first_party(patched) == [3, 4]
    assert replaced_first_party("import lockfile\nsetattr(lockfile, 'read', None)\n") == [2]
    assert replaced_first_party("from finetune.run import train\ntrain.x, y = 1, 2\n") == [2]
    fine = "from finetune.run import Hooks\nclock = Clock()\nclock.tokens = len\nargs.x = 1\nhooks = Hooks()\n"
    assert replaced_first_party(fine) == []
