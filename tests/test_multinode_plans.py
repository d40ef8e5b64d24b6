"""Multi-node plans, without an engine: docs/gpu.md's two-nodes recipe has the shape tests/container/test_multinode.py
runs line for line; `invoke train`'s multi-node flags refuse what cannot start, in one line, and plan torchrun's c10d
rendezvous (`invoke --dry`, a FAKE docker from tests/fakes.py). Seconds; the real two-container run is the container
test.
"""

from __future__ import annotations

import re
import shlex

import pytest
from fakes import docker_calls, fake_host

from conftest import REPO, invoke

MARK = "tests/container/test_multinode.py runs exactly these lines"


def readme_recipe() -> list[str]:
    """The commands of docs/gpu.md's two-nodes-on-one-host block (the fenced block that names this test)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "gpu.md").read_text(), re.S)
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
