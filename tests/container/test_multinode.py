"""Multi-node for real: two containers on one user-defined Docker network are two torchrun nodes (c10d rendezvous,
gloo on CPU, one process each), started by docs/gpu.md's multi-node recipe line for line, and end with the eval loss
of one node with two processes (the bound of tests/test_training.py's 1-process vs 2-process test). The flags' checks
and plans, which need no engine, are tests/test_multinode_plans.py.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time

import pytest
from test_multinode_plans import readme_recipe

from conftest import SHORT, plain, rel_diff

from .conftest import FIGURES


@pytest.mark.container
@pytest.mark.slow
def test_two_containers_as_two_nodes_end_with_the_one_node_two_process_eval_loss(workspace, runtime_image):
    lines = readme_recipe()
    network, nodes, logs, readers = shlex.split(lines[0])[-1], [], [], []
    started = time.monotonic()
    try:
        for line in lines:
            words = shlex.split(line.rstrip("&"))
            if words[0] == "docker":
                workspace.engine(*words[1:])
            elif words[0] == ".venv/bin/invoke":  # the workspace's invoke (and its test settings), as that user
                nodes.append(workspace.as_user(workspace.invoke_cmd(*words[1:], *SHORT), popen=True))
                logs.append([])  # read as it comes: a full pipe would stop a node, and the other waits for it
                readers.append(threading.Thread(target=lambda p=nodes[-1], out=logs[-1]: out.extend(p.stdout)))
                readers[-1].start()
                if not line.endswith("&"):
                    nodes[-1].wait(timeout=900)
            else:
                assert words == ["wait"], line
                for node in nodes:
                    node.wait(timeout=900)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
        names = [f"{host}{suffix}" for host in _endpoint_hosts(lines) for suffix in ("", "-1")]
        workspace.engine("rm", "--force", *names, check=False)  # containers a failed run left behind, if any
        workspace.engine("network", "rm", network, check=False)  # already gone when the recipe's last line ran
    two_nodes_s = time.monotonic() - started
    for reader in readers:
        reader.join()
    logs = [plain("".join(log)) for log in logs]
    for node, log in zip(nodes, logs, strict=True):
        assert node.returncode == 0, log[-4000:]
    assert "--rdzv-backend=c10d --rdzv-endpoint=finetune-node:29400" in logs[0]  # the echoed docker run line
    assert "--name finetune-node --network finetune-nodes --hostname finetune-node " in logs[0]
    assert "--name finetune-node-1 --network finetune-nodes --hostname finetune-node-1 " in logs[1]
    out = _output_dir(lines)
    two_nodes = json.loads((workspace.root / out / "summary.json").read_text())
    assert json.loads((workspace.root / out / "manifest.json").read_text())["world_size"] == 2

    started = time.monotonic()
    workspace.invoke("train", "--docker", "--nproc", "2", "--output-dir", "runs/one-node-two-processes", *SHORT)
    one_node_s = time.monotonic() - started
    one_node = json.loads((workspace.root / "runs/one-node-two-processes/summary.json").read_text())

    losses = f"two nodes x 1 process {two_nodes['eval_loss']!r}, one node x 2 processes {one_node['eval_loss']!r}"
    print(f"\neval loss: {losses}")
    FIGURES["2 nodes x 1 process: eval loss"] = two_nodes["eval_loss"]
    FIGURES["1 node x 2 processes: eval loss"] = one_node["eval_loss"]
    FIGURES["2 nodes / 1 node x 2 processes: wall s"] = f"{two_nodes_s:.0f} / {one_node_s:.0f}"
    assert two_nodes["steps"] == one_node["steps"] == 60
    assert two_nodes["tokens_trained"] == one_node["tokens_trained"]
    assert rel_diff(two_nodes["eval_loss"], one_node["eval_loss"]) < 0.01, (two_nodes, one_node)


def _endpoint_hosts(lines: list[str]) -> set[str]:
    return {re.search(r"--rdzv-endpoint (\S+):\d+", line).group(1) for line in lines if "--rdzv-endpoint" in line}


def _output_dir(lines: list[str]) -> str:
    return {re.search(r"--output-dir (\S+)", line).group(1) for line in lines if "--output-dir" in line}.pop()
