"""Harness for the container tests: a real Docker engine, base images, and images built from docker/Dockerfile
through `invoke build`, exactly as a user builds them.

- Engine: the one DOCKER_HOST points at if it answers; otherwise docker/engine.sh starts Debian's dockerd on a
  private socket (installing docker.io when missing). In CI (CI set) a missing engine fails the run loudly; on a
  developer machine the tests skip (or deselect them: -m "not container").
- Stand-ins, FINETUNE_TEST_STANDINS=auto|1|0 (auto: when the pinned Miniforge base cannot be pulled): no image
  registry and no conda channel is reachable from this project's CI machines, so (1) the Debian base is made with
  debootstrap (engine.sh base) and passed as CPU_BASE_IMAGE, (2) the Miniforge base is replaced by
  tests/container/standin (its `conda` builds the prefix from this host's CPython, see its header), (3) the +cpu
  torch wheel comes from this machine's wheel folder through docker/wheelhouse/, and pip reaches PyPI through the
  host's CA bundle as a build secret. Every stage and instruction of docker/Dockerfile runs as shipped.
- User: invoke runs as a non-root host user (created here when the tests run as root), so "files on the host belong
  to the host user" is tested for real.
"""

from __future__ import annotations

from .helpers_builds import dev_image, runtime_image
from .helpers_cuda import cuda_config, cuda_dev_image, cuda_runtime_image
from .helpers_engine import FIGURES, REPO, SKIPPED_BECAUSE, Engine, engine, free_port
from .helpers_standins import standins
from .helpers_workspace import Workspace, workspace

# The fixtures live in the helper modules by job (engine, stand-ins, the checkout and its user, builds); importing
# them here is what makes pytest offer them to the tests. The tests import FIGURES, REPO and free_port from here.
__all__ = ["FIGURES", "REPO", "Engine", "Workspace", "free_port"]
__all__ += ["dev_image", "engine", "runtime_image", "standins", "workspace"]
__all__ += ["cuda_config", "cuda_dev_image", "cuda_runtime_image"]


def pytest_terminal_summary(terminalreporter):
    if SKIPPED_BECAUSE:
        terminalreporter.write_line(f"container tests skipped: {SKIPPED_BECAUSE[0]}", yellow=True)
    if FIGURES:
        terminalreporter.section("container figures (this machine)")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key:42} {value}")
