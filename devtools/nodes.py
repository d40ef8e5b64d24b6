"""Where the training processes of one container run start: `finetune`, or torchrun with one process per GPU, and
on several nodes (machines or containers) torchrun's c10d rendezvous at node 0 (Nodes: the flags of
`invoke train --nnodes`, checked in one line each, and the container name and network that make them reach each
other). Pure data and argv, like containers.py, which writes them into `docker run`."""

from __future__ import annotations

import re
from dataclasses import dataclass


def launcher(nproc: int, nodes: Nodes | None = None) -> list[str]:
    """finetune, or torchrun with one process per GPU (same global batch: the config's); on several nodes torchrun
    with the c10d rendezvous at node 0 (Nodes.torchrun_args)."""
    if nodes and nodes.count > 1:
        return ["torchrun", *nodes.torchrun_args(), f"--nproc-per-node={nproc}", "-m", "finetune"]
    return ["finetune"] if nproc <= 1 else ["torchrun", "--standalone", f"--nproc-per-node={nproc}", "-m", "finetune"]


HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")  # RFC 1123 labels; also a valid container name
NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # what `docker network create` accepts


@dataclass(frozen=True)
class Nodes:
    """One node of a training job over several machines (or containers): torchrun's c10d rendezvous at node 0's
    HOST:PORT. Containers as nodes need a network where they reach each other: `host` (one node per machine, as for
    NCCL) or a user-defined one (several nodes on one host: its DNS resolves container names). On a user-defined
    network node 0's container is named HOST, and its hostname is HOST, which is how torchrun in it knows that it
    hosts the rendezvous and what gloo resolves to its address; node R is HOST-R."""

    count: int = 1
    rank: int | None = None
    endpoint: str | None = None
    network: str | None = None

    def check(self, runtime: str) -> None:
        """ValueError (one line, the flag and what is allowed) for a combination that cannot start."""
        if self.count < 1:
            raise ValueError(f"--nnodes {self.count}: allowed: 1 or more")
        if self.network is not None and runtime != "docker":
            raise ValueError("--network: only for a container run (--docker/--gpu)")
        if self.network is not None and not NETWORK.fullmatch(self.network):
            raise ValueError(f"--network {self.network!r}: allowed: a Docker network name (letters, digits, _ . -)")
        if self.count == 1:
            if self.rank is not None or self.endpoint is not None:
                raise ValueError("--node-rank/--rdzv-endpoint: only with --nnodes 2 or more")
            return
        if self.rank is None or not 0 <= self.rank < self.count:
            rank = "missing" if self.rank is None else self.rank
            raise ValueError(f"--node-rank {rank}: with --nnodes {self.count} allowed: 0 to {self.count - 1}")
        host, _, port = (self.endpoint or "").rpartition(":")
        if not (HOSTNAME.fullmatch(host) and port.isdigit() and 0 < int(port) < 65536):
            given = "missing" if self.endpoint is None else repr(self.endpoint)
            raise ValueError(f"--rdzv-endpoint {given}: allowed: node 0's HOST:PORT, e.g. node0:29400")
        if runtime == "docker" and self.network is None:
            raise ValueError(
                f"--nnodes {self.count} in containers needs --network: host (one node per machine) or a user-defined "
                "network (`docker network create NAME`: several nodes on one host)"
            )

    def torchrun_args(self) -> list[str]:
        # c10d assigns the ranks at the rendezvous (sorted by hostname: HOST before HOST-1), so torchrun is given no
        # --node-rank: it reads one only for its static rendezvous and warns that it ignores it otherwise.
        return [f"--nnodes={self.count}", "--rdzv-backend=c10d", f"--rdzv-endpoint={self.endpoint}"]

    def container_name(self) -> str | None:
        """HOST for node 0, HOST-R for node R on a user-defined network; None otherwise (the usual name)."""
        if self.count < 2 or self.network in (None, "host"):
            return None
        host = self.endpoint.rpartition(":")[0]
        return host if self.rank == 0 else f"{host}-{self.rank}"

    def docker_args(self) -> list[str]:
        """--network, and the hostname on a user-defined network (Docker refuses one on the host's network)."""
        name = self.container_name()
        return (["--network", self.network] if self.network else []) + (["--hostname", name] if name else [])
