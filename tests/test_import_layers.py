"""First-party modules import in one direction: no import cycle among src/finetune, devtools, tasks.py, benchmarks/
and environments/ (issue 28). Imports inside functions count too: a cycle hidden in a function is still a cycle, it
only fails later. Read from the source (ast), nothing is imported."""

from __future__ import annotations

import ast
import sys

from conftest import REPO

ROOTS = {"src/finetune": "finetune", "devtools": "devtools", "benchmarks": "benchmarks", "environments": "environments"}


def first_party() -> dict[str, set[str]]:
    """module name -> the first-party modules it imports (benchmarks/ and environments/ scripts import each other by
    bare name: `import scale_plan` is benchmarks.scale_plan)."""
    files = {"tasks": REPO / "tasks.py"}
    for folder, package in ROOTS.items():
        for f in (REPO / folder).glob("*.py"):
            files[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    bare = {name.split(".")[-1]: name for name in files if name.split(".")[0] in ("benchmarks", "environments")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.ImportFrom):  # relative: from . import x
                package = name.rsplit(".", 1)[0]
                targets = [f"{package}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {bare.get(t, t) for t in targets} & set(files)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in sorted(graph[node]):
                if dep == start:
                    found.append(path + [start])
                elif dep not in path and dep > start:  # each cycle once, from its smallest module
                    stack.append((dep, path + [dep]))
    return found


def test_first_party_modules_import_in_one_direction():
    graph = first_party()
    assert len(graph) > 40 and graph["devtools.doctor"]  # the graph was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def all_imports(path) -> set[str]:
    """Every top-level package a module imports, at any depth in it (a function's import runs too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def test_tasks_and_devtools_use_only_standard_library_modules_of_the_package():
    """invoke runs where only invoke and pyyaml are installed (a Python with invoke, the images workflow, the container
    tests' checkout), so what devtools takes from src/finetune must import nothing but the standard library: an
    import of finetune.manifest (torch) once broke `invoke build` there."""
    allowed = set(sys.stdlib_module_names) | {"finetune", "__future__"}
    users = [REPO / "tasks.py", *sorted((REPO / "devtools").glob("*.py"))]
    used = {m for f in users for m in all_imports(f) if m.startswith("finetune.")}
    modules = {m for m in used if (REPO / "src" / (m.replace(".", "/") + ".py")).is_file()}
    assert modules >= {"finetune.names", "finetune.urls", "finetune.errors"}, used  # the imports were read
    for module in sorted(modules):
        path = REPO / "src" / (module.replace(".", "/") + ".py")
        outside = {m.split(".")[0] for m in all_imports(path)} - allowed
        inner = {m for m in all_imports(path) if m.startswith("finetune.")}
        assert not outside, f"{module} (used by devtools or tasks.py) imports {sorted(outside)}"
        assert inner <= modules | {"finetune"}, f"{module} imports {sorted(inner - modules)}: check those too"
