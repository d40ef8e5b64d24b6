"""Collectives get their tensors on the training device.

NCCL, the backend of every CUDA run under torchrun (DDP or FSDP), has no CPU backend: a CPU tensor passed to
all_reduce fails with "No backend type associated with device type cpu". On this CPU-only machine gloo accepts CPU
tensors, so a training run here cannot catch it; this test reads the source instead. It found (and on a lent H200
`torchrun --nproc-per-node 1 ... finetune train` reproduced) both sites that crashed every multi-GPU run: the stop
flag's all_reduce in trainer.GracefulStop and the token count's accelerator.reduce in run.train.
"""

import ast
from pathlib import Path

import finetune

COLLECTIVES = {"all_reduce", "reduce", "gather", "all_gather", "broadcast", "reduce_scatter", "gather_for_metrics"}
SOURCES = sorted(Path(finetune.__file__).parent.glob("*.py"))


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _is_torch_tensor(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "tensor"
        and getattr(node.func.value, "id", "") == "torch"
    )


def cpu_tensors_in_collectives(tree: ast.AST) -> list[int]:
    """Lines of `torch.tensor(...)` without device= in any function that calls a collective."""
    bad = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
        if not any(_call_name(c) in COLLECTIVES for c in calls):
            continue
        for c in calls:
            if _is_torch_tensor(c) and not any(k.arg == "device" for k in c.keywords):
                bad.append(c.lineno)
    return bad


def test_the_check_catches_a_cpu_tensor():
    bad = "import torch\ndef f(acc, n):\n    return acc.reduce(torch.tensor(n), reduction='sum')\n"
    good = "import torch\ndef f(acc, n, args):\n    return acc.reduce(torch.tensor(n, device=args.device))\n"
    assert cpu_tensors_in_collectives(ast.parse(bad)) == [3]
    assert cpu_tensors_in_collectives(ast.parse(good)) == []


def test_collective_tensors_are_created_on_the_training_device():
    assert SOURCES, "no package sources found"
    found = {p.name: lines for p in SOURCES if (lines := cpu_tensors_in_collectives(ast.parse(p.read_text())))}
    assert not found, f"torch.tensor(...) without device= next to a collective (file: lines): {found}"
