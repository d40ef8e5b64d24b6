"""Multi-node for real: two containers on one user-defined Docker network are two torchrun nodes (c10d rendezvous,
gloo on CPU, one process each), started by the README's multi-node recipe line for line, and end with the eval loss
of one node with two processes (the bound of tests/test_training.py's 1-process vs 2-process test). That test is
marked container and slow; the flags' checks and plans (`invoke --dry`, a FAKE docker from tests/fakes.py) and the
recipe's shape take seconds and need no engine.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time

import pytest
from fakes import docker_calls, fake_host

from conftest import SHORT, invoke, plain, rel_diff

from .conftest import FIGURES, REPO

MARK = "tests/container/test_multinode.py runs exactly these lines"


def readme_recipe() -> list[str]:
    """The commands of the README's two-nodes-on-one-host block (the fenced block that names this test)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    block = next(b for b in blocks if MARK in b)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_recipe_is_two_invoke_train_nodes_on_a_user_defined_network():
    lines = readme_recipe()
    assert lines[0].startswith("docker network create ") and lines[-1].startswith("docker network rm ")
    nodes = [shlex.split(line.rstrip("&")) for line in lines if line.startswith(".venv/bin/invoke train")]
    assert [n[n.index("--node-rank") + 1] for n in nodes] == ["0", "1"]
    assert all("--nnodes" in n and "--rdzv-endpoint" in n and "--network" in n for n in nodes)


NODE = ["--nnodes", "2", "--rdzv-endpoint", "finetune-node:29400"]


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--nnodes", "0"], "--nnodes 0: allowed: 1 or more"),
        (["--node-rank", "0"], "--node-rank/--rdzv-endpoint: only with --nnodes 2 or more"),
        ([*NODE, "--network", "n"], "--node-rank missing: with --nnodes 2 allowed: 0 to 1"),
        ([*NODE, "--network", "n", "--node-rank", "2"], "--node-rank 2: with --nnodes 2 allowed: 0 to 1"),
        ([*NODE, "--network", "n", "--node-rank", "one"], "--node-rank 'one': allowed: a number"),
        (["--nnodes", "2", "--node-rank", "0"], "--rdzv-endpoint missing: allowed: node 0's HOST:PORT"),
        (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "node0"], "--rdzv-endpoint 'node0': allowed: node 0"),
        (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "a b:1"], "--rdzv-endpoint 'a b:1': allowed"),
        ([*NODE, "--node-rank", "0"], "--nnodes 2 in containers needs --network: host (one node per machine)"),
        ([*NODE, "--node-rank", "0", "--network", "bad name"], "--network 'bad name': allowed: a Docker network"),
    ],
)
def test_multi_node_flags_refuse_what_cannot_start_in_one_line(tmp_path, flags, said):
    proc = invoke(fake_host(tmp_path, None), "train", "--docker", *flags)
    assert proc.returncode == 2 and said in proc.stderr, (proc.stdout, proc.stderr)
    assert docker_calls(tmp_path) == []  # refused before any build or run


def test_network_is_for_container_runs_only(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "train", "--local", "--network", "finetune-nodes")
    assert proc.returncode == 2 and "--network: only for a container run (--docker/--gpu)" in proc.stderr


@pytest.mark.parametrize(
    "rank, network, run_flags",
    [
        ("0", "finetune-nodes", "--name finetune-node --network finetune-nodes --hostname finetune-node "),
        ("1", "finetune-nodes", "--name finetune-node-1 --network finetune-nodes --hostname finetune-node-1 "),
        ("1", "host", "--network host --volume"),  # the machine's own name: Docker refuses --hostname there
    ],
)
def test_dry_plan_of_a_node_names_its_container_and_runs_torchrun_c10d(tmp_path, rank, network, run_flags):
    node = [*NODE, "--node-rank", rank, "--network", network]
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", "--docker", *node)
    assert proc.returncode == 0, proc.stderr
    run = next(line for line in proc.stdout.splitlines() if " run --rm " in line)
    assert run_flags in run and ("--hostname" in run) == (network != "host")
    assert run.endswith(
        "finetune:cpu torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=finetune-node:29400 --nproc-per-node=1 "
        "-m finetune train /workspace/configs/default.yaml"
    )


def test_dry_plan_of_a_local_node_runs_the_venvs_torchrun(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", "--local", *NODE, "--node-rank", "1", "--nproc", "2")
    assert proc.returncode == 0, proc.stderr
    assert "torchrun --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=finetune-node:29400 --nproc-per-node=2 " in (
        proc.stdout
    )


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
