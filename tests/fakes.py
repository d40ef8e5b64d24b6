"""FAKE host commands for tests that cannot have the real thing here (no GPU, no NVIDIA driver or toolkit): a fake
`docker` and a fake `nvidia-smi`, shell scripts put first on PATH. Every fake says FAKE in its first lines, and
tests using them say so in their names or docstrings. Never used to claim that a real GPU host works.
"""

from __future__ import annotations

import os
from pathlib import Path

FAKE_DOCKER = """#!/bin/sh
# FAKE docker (tests/fakes.py): answers the probes of tasks.py and devtools/doctor.py as the host under test would
# (FAKE_* variables); records every other call in $FAKE_LOG. By default its client is a Docker client before 23.0
# without buildx (it builds with the engine's BuildKit), its engine rootful and without CDI.
case "$*" in
  "--version") echo "Docker version ${FAKE_CLIENT_VERSION:-20.10.24-fake}, build FAKE" ;;
  "info --format {{json .SecurityOptions}}") echo "${FAKE_SECURITY_OPTIONS:-[\"name=seccomp,profile=default\"]}" ;;
  "info --format {{json .CDISpecDirs}}") echo "${FAKE_CDI_SPEC_DIRS:-[]}" ;;
  "info --format {{.ServerVersion}}") echo 99.0-fake ;;
  "info --format {{json .Runtimes}}") echo "$FAKE_RUNTIMES" ;;
  "info --format {{.DockerRootDir}}") echo "$FAKE_DOCKER_ROOT" ;;
  "buildx version") [ -n "$FAKE_BUILDX" ] && echo "github.com/docker/buildx v0.0.0-fake" || exit 1 ;;
  "image inspect finetune:cuda") [ -n "$FAKE_CUDA_IMAGE" ] || exit 1 ;;
  "image inspect"*) exit 1 ;;
  "run --rm --gpus all finetune:cuda nvidia-smi"*) echo "$FAKE_GPU_NAME" ;;
  *) echo "$*" >> "$FAKE_LOG" ;;
esac
"""
FAKE_NVIDIA_SMI = '#!/bin/sh\n# FAKE nvidia-smi (tests/fakes.py)\necho "$FAKE_DRIVER"\n'


def fake_host(tmp_path: Path, driver: str | None, runtimes: str = '{"runc":{}}') -> dict:
    """PATH with a fake docker and, when driver is given, a fake nvidia-smi reporting that driver version."""
    bin_ = tmp_path / "fakebin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "fake-docker").write_text(FAKE_DOCKER)
    (bin_ / "fake-docker").chmod(0o755)
    if driver:
        (bin_ / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
        (bin_ / "nvidia-smi").chmod(0o755)
    keep = [p for p in os.environ["PATH"].split(":") if p and not (Path(p) / "nvidia-smi").exists()]
    return dict(
        os.environ,
        PATH=":".join([str(bin_), *keep]),
        INVOKE_DOCKER_CLIENT=str(bin_ / "fake-docker"),
        FAKE_LOG=str(tmp_path / "docker-calls.log"),
        FAKE_RUNTIMES=runtimes,
        FAKE_DRIVER=driver or "",
        FAKE_DOCKER_ROOT=str(tmp_path),
    )


def docker_calls(tmp_path: Path) -> list[str]:
    """The calls the fake docker recorded (everything that was not a probe)."""
    log = tmp_path / "docker-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def record_variable(env: dict, tmp_path: Path, name: str) -> Path:
    """Put a FAKE docker wrapper in front of env's fake docker that appends $NAME, as the client received it, to the
    returned log: how a test sees that a secret reached docker through its environment and not its command line."""
    import shlex

    log = tmp_path / f"{name.lower()}.log"
    client = tmp_path / "fakebin" / "recording-docker"
    client.write_text(
        f"#!/bin/sh\n# FAKE docker wrapper: records ${name}, then the fake docker\n"
        f'echo "${name}" >> {shlex.quote(str(log))}\n'
        f'exec {shlex.quote(env["INVOKE_DOCKER_CLIENT"])} "$@"\n'
    )
    client.chmod(0o755)
    env["INVOKE_DOCKER_CLIENT"] = str(client)
    return log
