"""Issue 17: container engines as users have them (devtools/engines.py).

- BuildKit by client: the two real Docker clients of this machine, when present (Debian's 20.10 at /usr/bin/docker,
  which builds with the engine's BuildKit; 28.2.2 at /usr/local/bin/docker without buildx, which cannot build), and
  FAKE clients for the systems this machine is not (Ubuntu's docker.io, Docker's docker-ce-cli, a client with buildx,
  Podman). The real-client tests need no engine: the check is the client's, before anything is built.
- GPUs through CDI and rootless engines: FAKE hosts only (no GPU, no NVIDIA toolkit, no rootless engine here): the
  fake docker of tests/fakes.py answers `docker info` as such a host would, and a FAKE CDI spec lies in tmp_path.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from fakes import docker_calls, fake_host
from test_doctor import rows

from conftest import invoke, plain

NEW_CLIENT, OLD_CLIENT = "/usr/local/bin/docker", "/usr/bin/docker"


def client_version(path: str) -> str | None:
    if not os.access(path, os.X_OK):
        return None
    said = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return said if said.startswith("Docker version") else None


def has_buildx(path: str) -> bool:
    return subprocess.run([path, "buildx", "version"], capture_output=True).returncode == 0


def real_client(path: str, want_major_from: int, want_major_below: int) -> dict:
    """This process's environment with docker.client = path; skip when that client is not what the test needs."""
    said = client_version(path)
    major = int(said.split()[2].split(".")[0]) if said else None
    if major is None or not want_major_from <= major < want_major_below or has_buildx(path):
        pytest.skip(f"needs a Docker client {want_major_from}..{want_major_below - 1} without buildx at {path}")
    return dict(os.environ, INVOKE_DOCKER_CLIENT=path, INVOKE_IMAGE_NAME="finetune-issue17-never-built")


def fake_bin(tmp_path: Path, name: str, script: str) -> None:
    """A FAKE command first on the PATH fake_host made."""
    path = tmp_path / "fakebin" / name
    path.write_text(f"#!/bin/sh\n# FAKE {name} (tests/test_engines.py)\n{script}\n")
    path.chmod(0o755)


# --- 1. BuildKit: does the client build? ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", [["build"], ["train", "--docker"]])
def test_a_docker_23_plus_client_without_buildx_stops_before_building_with_the_fix(task):
    """The real 28.2.2 client here: it would die with Docker's own 'BuildKit is enabled but the buildx component is
    missing or broken'; invoke stops first, exit 2, one line naming the package for this system."""
    proc = invoke(real_client(NEW_CLIENT, 23, 1000), *task)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"{NEW_CLIENT} is Docker client ")
    assert "without the buildx plugin" in line and "docker-buildx-plugin" in line, line
    assert " build --file " not in proc.stdout and "buildx component is missing" not in proc.stdout + proc.stderr


def test_doctor_fails_the_docker_23_plus_client_without_buildx_with_the_same_fix():
    env = real_client(NEW_CLIENT, 23, 1000)
    build = invoke(env, "build").stderr.strip()
    proc = invoke(env, "doctor", "--cpu")
    assert rows(proc.stdout)["BuildKit"] == "FAIL" and proc.returncode == 1, proc.stdout
    fix = next(line.split("fix: ", 1)[1] for line in proc.stdout.splitlines() if "fix: " in line and "buildx" in line)
    assert build.endswith(f": {fix}"), (build, fix)
    assert "BuildKit" in proc.stderr


def test_a_docker_client_before_23_builds_with_the_engine_buildkit():
    """The real 20.10 client here (Debian's docker.io): DOCKER_BUILDKIT=1 and its engine's BuildKit, no stop."""
    env = real_client(OLD_CLIENT, 1, 23)
    proc = invoke(env, "--dry", "build")
    assert proc.returncode == 0 and "a real run would stop here" not in proc.stdout, proc.stdout
    assert f"DOCKER_BUILDKIT=1 {OLD_CLIENT} build --file docker/Dockerfile" in proc.stdout
    doctor = invoke(env, "doctor", "--cpu")
    assert rows(doctor.stdout)["BuildKit"] == "WARN" and "engine's BuildKit (DOCKER_BUILDKIT=1)" in doctor.stdout


@pytest.mark.parametrize(
    "owner, apt_has_buildx, package",
    [
        ("docker.io", True, "install docker-buildx (`sudo apt-get install docker-buildx`)"),  # Ubuntu
        ("docker.io", False, "docker.io has no buildx package here: install docker-buildx-plugin"),  # bookworm
        ("docker-ce-cli", True, "install docker-buildx-plugin (`sudo apt-get install docker-buildx-plugin`"),
    ],
)
def test_fake_docker_24_client_names_the_package_its_system_installs_buildx_from(
    tmp_path, owner, apt_has_buildx, package
):
    """FAKE docker 24 without buildx, FAKE dpkg-query saying which package the client came from, FAKE apt-cache."""
    env = fake_host(tmp_path, None) | {"FAKE_CLIENT_VERSION": "24.0.7-fake"}
    fake_bin(tmp_path, "dpkg-query", f'echo "{owner}: $2"')
    fake_bin(tmp_path, "apt-cache", "exit 0" if apt_has_buildx else 'echo "E: No packages found" >&2; exit 100')
    proc = invoke(env, "build")
    assert proc.returncode == 2 and package in proc.stderr, proc.stderr
    assert docker_calls(tmp_path) == [], "nothing may be built"
    assert rows(invoke(env, "doctor", "--cpu").stdout)["BuildKit"] == "FAIL"


def test_fake_docker_28_client_with_buildx_builds(tmp_path):
    env = fake_host(tmp_path, None) | {"FAKE_CLIENT_VERSION": "28.2.2-fake", "FAKE_BUILDX": "1"}
    proc = invoke(env, "build")
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[0] for c in docker_calls(tmp_path)] == ["build"]


# --- Podman as the client (FAKE here; the real one: tests/container/test_podman.py) --------------------------------

FAKE_PODMAN = """case "$*" in
  "--version") echo "podman version 4.3.1" ;;
  "info --format {{.Version.Version}}") echo 4.3.1 ;;
  "info --format {{.Host.Security.Rootless}}") echo "${FAKE_ROOTLESS:-false}" ;;
  "image inspect"*) exit 1 ;;
  *) echo "$*" >> "$FAKE_LOG" ;;
esac"""


def fake_podman(tmp_path: Path, **extra) -> dict:
    env = fake_host(tmp_path, extra.pop("driver", None)) | extra
    fake_bin(tmp_path, "podman", FAKE_PODMAN)
    return env | {"INVOKE_DOCKER_CLIENT": str(tmp_path / "fakebin" / "podman")}


def test_fake_podman_builds_without_buildkit_variables_and_refuses_several_platforms_in_one_line(tmp_path):
    env = fake_podman(tmp_path)
    plan = invoke(env, "--dry", "build")
    assert plan.returncode == 0, plan.stderr
    build = plain(plan.stdout.strip().splitlines()[-1])
    assert build.startswith(f"{env['INVOKE_DOCKER_CLIENT']} build --file docker/Dockerfile"), build
    proc = invoke(env, "build", "--platform", "linux/amd64,linux/arm64")
    assert proc.returncode == 2 and "\n" not in proc.stderr.strip(), proc.stderr
    assert proc.stderr.startswith("several platforms or --push: not with Podman here")
    assert rows(invoke(env, "doctor", "--cpu").stdout)["BuildKit"] == "ok"


# --- 3. GPUs through CDI (FAKE GPU hosts) -------------------------------------------------------------------------

FAKE_SPEC = """# FAKE NVIDIA CDI spec (tests/test_engines.py), shaped like `nvidia-ctk cdi generate` output
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
- name: "2"
- name: all
"""
READY = '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}'


def cdi_host(tmp_path: Path, *, spec: bool, cdi_on: bool = True, runtimes: str = READY) -> dict:
    """A FAKE GPU host (driver 580) whose Docker engine reads CDI specs from tmp_path/cdi (cdi_on), with or without
    a FAKE NVIDIA spec there."""
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    if spec:
        (cdi / "nvidia.yaml").write_text(FAKE_SPEC)
    return fake_host(tmp_path, "580.95.05", runtimes) | {"FAKE_CDI_SPEC_DIRS": json.dumps([str(cdi)] if cdi_on else [])}


def run_argv(tmp_path: Path) -> list[str]:
    return shlex.split(next(c for c in docker_calls(tmp_path) if c.startswith("run ")))


def test_fake_cdi_host_gets_the_gpus_as_cdi_devices(tmp_path):
    proc = invoke(cdi_host(tmp_path, spec=True), "train", "--gpu", "--gpus", "0,2")
    assert proc.returncode == 0, proc.stderr
    run = " ".join(run_argv(tmp_path))
    assert "--device nvidia.com/gpu=0 --device nvidia.com/gpu=2 --ipc=host" in run and "--gpus" not in run


def test_fake_cdi_host_without_the_nvidia_toolkit_runtime_still_gets_the_gpus(tmp_path):
    """CDI needs no NVIDIA runtime in the engine: the spec is enough (Podman's way, and Docker 25+)."""
    proc = invoke(cdi_host(tmp_path, spec=True, runtimes='{"runc":{}}'), "train", "--gpu")
    assert proc.returncode == 0, proc.stderr
    assert "--device nvidia.com/gpu=all" in " ".join(run_argv(tmp_path))


def test_doctor_on_a_fake_cdi_host_names_the_cdi_path(tmp_path):
    proc = invoke(cdi_host(tmp_path, spec=True), "doctor")
    assert rows(proc.stdout)["GPU runtime (driver, container toolkit)"] == "ok"
    assert f"GPUs through CDI: --device nvidia.com/gpu=... ({tmp_path}/cdi/nvidia.yaml: 0, 1, 2)" in proc.stdout


@pytest.mark.parametrize("cdi_on", [True, False], ids=["cdi-on-no-spec", "cdi-off"])
def test_fake_host_without_a_cdi_spec_uses_gpus_and_doctor_says_how_to_generate_it(tmp_path, cdi_on):
    env = cdi_host(tmp_path, spec=False, cdi_on=cdi_on)
    proc = invoke(env, "train", "--gpu")
    assert proc.returncode == 0, proc.stderr
    run = " ".join(run_argv(tmp_path))
    assert "--gpus all --ipc=host" in run and "nvidia.com/gpu" not in run
    found = next(line for line in invoke(env, "doctor").stdout.splitlines() if "GPU runtime" in line)
    assert "GPUs through --gpus (NVIDIA container toolkit); not CDI: " in found
    if cdi_on:
        assert "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in found
    else:
        assert "this engine takes no CDI devices" in found


def test_gpu_devices_gpus_keeps_gpus_on_a_fake_cdi_host(tmp_path):
    env = cdi_host(tmp_path, spec=True) | {"INVOKE_DOCKER_GPU_DEVICES": "gpus"}
    assert invoke(env, "train", "--gpu").returncode == 0
    assert "--gpus all" in " ".join(run_argv(tmp_path))


def test_fake_podman_gpu_host_without_a_cdi_spec_stops_with_how_to_generate_it(tmp_path):
    """Podman 4's --gpus does nothing: without the CDI spec there is no GPU, so it stops before building."""
    env = fake_podman(tmp_path, driver="580.95.05", INVOKE_DOCKER_CDI_SPEC_DIRS=str(tmp_path / "none"))
    proc = invoke(env, "train", "--gpu")
    assert proc.returncode == 2 and docker_calls(tmp_path) == [], proc.stderr
    assert "Podman gives containers GPUs only as CDI devices, and no NVIDIA CDI spec is in" in proc.stderr
    assert "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in proc.stderr


def test_fake_podman_gpu_host_with_a_cdi_spec_gets_cdi_devices(tmp_path):
    (tmp_path / "cdi").mkdir()
    (tmp_path / "cdi" / "nvidia.yaml").write_text(FAKE_SPEC)
    env = fake_podman(tmp_path, driver="580.95.05", INVOKE_DOCKER_CDI_SPEC_DIRS=str(tmp_path / "cdi"))
    proc = invoke(env, "train", "--gpu", "--gpus", "1")
    assert proc.returncode == 0, proc.stderr
    assert "--device nvidia.com/gpu=1 --ipc=host" in " ".join(run_argv(tmp_path))


# --- 4. rootless engines (FAKE: no rootless engine here) ------------------------------------------------------------


@pytest.mark.parametrize(
    "host, expected",
    [
        ({"FAKE_SECURITY_OPTIONS": '["name=seccomp,profile=default","name=rootless"]'}, ["--user", "0:0"]),
        ({}, ["--user", "0:0"] if os.getuid() == 0 else []),  # root: the image's UID 1000 cannot write root's runs/
    ],
    ids=["rootless-docker", "rootful-docker"],
)
def test_fake_rootless_docker_runs_containers_as_its_root_which_is_the_host_user(tmp_path, host, expected):
    env = fake_host(tmp_path, None) | host
    for task in (["train", "--docker"], ["shell", "--cmd", "true"], ["lab", "--token", "t"]):
        assert invoke(env, *task).returncode == 0
    runs = [shlex.split(c) for c in docker_calls(tmp_path) if c.startswith("run ")]
    assert len(runs) == 3
    for run in runs:
        user = run[run.index("--user") : run.index("--user") + 2] if "--user" in run else []
        assert user == expected, run
    doctor = invoke(env, "doctor", "--cpu").stdout
    assert ("rootless: containers run as its root (you on the host)" in doctor) == ("name=rootless" in str(host))


@pytest.mark.parametrize("rootless", ["true", "false"])
def test_fake_rootless_podman_keeps_the_host_user_id(tmp_path, rootless):
    env = fake_podman(tmp_path, FAKE_ROOTLESS=rootless)
    assert invoke(env, "train", "--docker").returncode == 0
    run = run_argv(tmp_path)
    assert ("--userns=keep-id" in run) == (rootless == "true")
    assert ("--user" in run) == (rootless == "false" and os.getuid() == 0)


# --- the rules themselves ------------------------------------------------------------------------------------------


def test_client_versions_are_read_from_docker_podman_and_podman_shims():
    from devtools.engines import parse_version

    assert parse_version("Docker version 28.2.2, build e6534b4") == ("docker", (28, 2, 2))
    assert parse_version("Docker version 20.10.24+dfsg1, build 297e128") == ("docker", (20, 10, 24))
    assert parse_version("podman version 4.3.1") == ("podman", (4, 3, 1))  # also Podman's `docker` shim
    assert parse_version("bash: docker: command not found") == ("unknown", None)


def test_gpu_flags_as_cdi_devices_and_as_gpus():
    from devtools.containers import GPU_RUN_FLAGS, gpu_flags

    assert gpu_flags("0,2", "cdi") == ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=2", *GPU_RUN_FLAGS]
    assert gpu_flags("all", "cdi")[:2] == ["--device", "nvidia.com/gpu=all"]
    assert gpu_flags("0,2", "auto")[:2] == ["--gpus", '"device=0,2"']  # unresolved: Docker's --gpus
    with pytest.raises(ValueError):
        gpu_flags("two", "cdi")


def test_nvidia_cdi_spec_is_found_by_its_kind_only(tmp_path):
    from devtools.engines import nvidia_cdi_spec

    (tmp_path / "amd.yaml").write_text("cdiVersion: 0.5.0\nkind: amd.com/gpu\ndevices:\n- name: '0'\n")
    assert nvidia_cdi_spec([tmp_path, tmp_path / "missing"]) is None
    (tmp_path / "nvidia.json").write_text(json.dumps({"kind": "nvidia.com/gpu", "devices": [{"name": "0"}]}))
    assert nvidia_cdi_spec([tmp_path]) == (tmp_path / "nvidia.json", ["0"])
