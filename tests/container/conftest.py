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

import pytest

from conftest import free_port  # one helper for host and container tests

from .helpers_builds import dev_image, runtime_image
from .helpers_cuda import cuda_config, cuda_dev_image, cuda_runtime_image
from .helpers_engine import FIGURES, REPO, Engine, engine
from .helpers_standins import standins
from .helpers_workspace import Workspace, workspace

# The fixtures live in the helper modules by job (engine, stand-ins, the checkout and its user, builds); importing
# them here is what makes pytest offer them to the tests. The tests import FIGURES, REPO and free_port from here.
__all__ = ["FIGURES", "REPO", "Engine", "Workspace", "free_port"]
__all__ += ["dev_image", "engine", "runtime_image", "standins", "workspace"]
__all__ += ["cuda_config", "cuda_dev_image", "cuda_runtime_image"]


# pytest-xdist groups (make test runs with --dist loadgroup): the tests of one group run on one worker, in order.
# A group is what shares state a second worker must not touch meanwhile: the tags finetune:cpu[-dev] and
# finetune:cuda[-dev] on the Docker engine (built once per session and reused by every test of "docker", rootful
# Podman's included, which loads them; one of them rebuilds after a code change), and /dev/net/tun's mode, which
# both rootless engines open up and put back. The groups run beside each other and beside the tests outside
# tests/container; the fixtures they share (the engine, the stand-in bases, the test user) are made under a lock
# (helpers_engine.one_worker_at_a_time).
XDIST_GROUPS = {
    "test_images.py": "docker",
    "test_compile.py": "docker",
    "test_devcontainer_lab.py": "docker",
    "test_multinode.py": "docker",
    "test_deploy.py": "docker",
    "test_cuda_image.py": "docker",
    "test_podman.py": "docker",  # runs the images the Docker tests built (docker save | podman load)
    "test_podman_rootless.py": "rootless",
    "test_docker_rootless.py": "rootless",
    "test_newcomer.py": "newcomer",
    "test_verify_image.py": "verify",  # Podman storages of its own, under its own folder
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the marks
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):  # -p no:xdist: the marker is not registered (as tests/conftest.py)
        return
    for item in items:
        if item.path.parent.name == "container" and item.path.name.startswith("test_"):
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(item.path.name, "docker")))
