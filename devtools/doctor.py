"""`invoke doctor`: can this host build and run the training images, on its GPUs, and reach a deploy host?

Each check returns a Check (name, state ok|warn|fail|skip, what was found, the fix). Checks probe the host through
`probe(cmd)` (tasks.py's quiet probe; tests pass fakes), so the table is the same logic everywhere. Local probes run
even under `invoke --dry`; the SSH check, which would contact another machine, says "skip" there instead.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from devtools import containers, engines, gpu_loss, remote
from devtools.checks import Check
from devtools.gpu import gpu_runtime as runtime_of

REPO = Path(__file__).resolve().parents[1]
MIN_DISK_GB = {"cpu": 15, "cuda": 40}  # images + build cache + HF cache, with room for one rebuild
MIN_SHM_GB = 1.0


def engine(c, probe) -> Check:
    res = engines.docker_info(c, ".ServerVersion", probe)
    if res.ok:
        eng = engines.engine(c, probe)
        mode = {"root": ", rootless: containers run as its root (you on the host)"}
        mode["keep-id"] = ", rootless: containers run with --userns=keep-id (your UID inside)"
        rootless = mode[engines.run_as(eng)] if eng.rootless else ""
        name = "Podman" if eng.kind == "podman" else "server"
        return Check("Docker engine", "ok", f"{name} {res.stdout.strip()}{rootless}")
    fix = (
        "install Docker Engine (https://docs.docker.com/engine/install/) or Debian's docker.io, start it "
        "(`sudo systemctl start docker`), and add yourself to the docker group (`sudo usermod -aG docker $USER`, "
        "then log in again); or Podman (docker.client: podman); on this project's CI machines: docker/engine.sh up"
    )
    said = (res.stderr or res.stdout).strip().splitlines()
    return Check("Docker engine", "fail", said[-1] if said else "no answer", fix)


def buildkit(c, probe) -> Check:
    """Can the configured client build the images (BuildKit: cache, bind and secret mounts)? The same rule and fix
    as `invoke build` (engines.build_problem)."""
    cl = engines.client(c, probe)
    how = engines.buildkit(cl)
    if how == "buildx":
        return Check("BuildKit", "ok", probe(f"{c.docker.client} buildx version").stdout.strip().split("\n")[0])
    if how == "buildah":
        return Check("BuildKit", "ok", f"{cl.said}: builds with Buildah (cache and secret mounts); one platform")
    if how == "engine":
        return Check(
            "BuildKit",
            "warn",
            f"{cl.describe()} without buildx: builds use the engine's BuildKit (DOCKER_BUILDKIT=1), one platform, "
            "no push",
            f"for --platform a,b and --push: {engines.buildx_fix(cl, probe)}",
        )
    if how == "missing":
        return Check("BuildKit", "fail", engines.buildx_missing(cl), engines.buildx_fix(cl, probe))
    return Check("BuildKit", "skip", f"{c.docker.client} --version: no Docker or Podman answered")


def gpu_runtime(c, probe) -> tuple[Check, str]:
    """The check, and how containers get the GPUs (cdi or gpus) for the next check."""
    name, rt = "GPU runtime (driver, container toolkit)", runtime_of(c, probe)
    if rt.problem:
        return Check(name, "fail", rt.problem, rt.fix), rt.devices
    return Check(name, "ok", f"driver {rt.driver} >= {c.cuda.min_driver}; GPUs through {rt.found}"), rt.devices


def gpu_in_image(c, probe, image: str, runtime_ok: bool, devices: str = "gpus") -> Check:
    name = f"GPU visible inside {image}"
    if not runtime_ok:
        return Check(name, "skip", "needs the GPU runtime above")
    if not probe(f"{c.docker.client} image inspect {image}").ok:
        return Check(name, "skip", f"{image} not built", "invoke build --variant cuda")
    flags = "--device nvidia.com/gpu=all" if devices == "cdi" else "--gpus all"
    res = probe(f"{c.docker.client} run --rm {flags} {image} nvidia-smi --query-gpu=name --format=csv,noheader")
    if res.ok and res.stdout.strip():
        return Check(name, "ok", ", ".join(res.stdout.split("\n")[:4]).strip(", "))
    fix = "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    if devices == "cdi":  # a spec from before a driver upgrade names libraries that are gone
        fix = f"generate the CDI spec again after each driver change: {engines.CDI_GENERATE}"
    return Check(name, "fail", (res.stderr or "no GPU listed").strip()[-200:], fix)


def at_least(name: str, value: float, need: float, found: str, short: str, fix: str) -> Check:
    """ok when value >= need, else `short` (fail or warn) with the fix."""
    return Check(name, "ok", found) if value >= need else Check(name, short, found, fix)


def disk(c, probe, variant: str) -> Check:
    name, root = "free disk (images, HF cache)", engines.docker_info(c, ".DockerRootDir", probe).stdout.strip()
    path = Path(root or "/var/lib/docker")
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free / 1e9
    except OSError:
        return Check(name, "skip", f"cannot read {root}")
    need, fix = MIN_DISK_GB[variant], "free space: `docker system prune`, `invoke clean --build-cache`"
    return at_least(name, free, need, f"{free:.0f} GB free under {path} (want >= {need} GB)", "fail", fix)


def shm() -> Check:
    name = "/dev/shm (local runs)"
    try:
        size = shutil.disk_usage("/dev/shm").total / 1e9
    except OSError:
        return Check(name, "warn", "no /dev/shm", "DataLoader workers need shared memory")
    found = f"{size:.1f} GB (containers get --shm-size or --ipc=host anyway)"
    return at_least(name, size, MIN_SHM_GB, found, "warn", "set training.num_workers: 0, or enlarge /dev/shm")


def locks() -> Check:
    res = subprocess.run(
        [sys.executable, str(REPO / "environments" / "lock.py"), "--check"], capture_output=True, text=True, cwd=REPO
    )
    if res.returncode == 0:
        return Check("lockfiles fresh", "ok", "every lock matches its environment.yml")
    stale = [ln for ln in (res.stdout + res.stderr).splitlines() if "STALE" in ln][:3]
    return Check("lockfiles fresh", "fail", "; ".join(stale) or "lock.py --check failed", "invoke lock, then commit")


def ssh_host(c, probe, host: str | None) -> Check:
    """Docker's version on the deploy host, over the same ssh command line `invoke deploy` uses (devtools/remote.py).
    The only check that touches another machine, so the only one `--dry` skips."""
    name = "deploy host over SSH"
    if not host:
        return Check(name, "skip", "no --host (or deploy.host in invoke.yaml)")
    try:
        ssh = remote.ssh(c, host, "docker version --format '{{.Server.Version}}'", connect_timeout=5)
    except ValueError as err:
        return Check(name, "fail", str(err), "give the host as USER@HOST (or an alias from ~/.ssh/config)")
    if c.config.run.dry:
        return Check(name, "skip", f"--dry: contacts no other machine (would run: {ssh})")
    res = probe(ssh)
    if res.ok:
        return Check(name, "ok", f"{host}: Docker {res.stdout.strip()}")
    return Check(
        name,
        "fail",
        f"{host}: {(res.stderr or res.stdout).strip()[-160:]}",
        f"ssh-copy-id {shlex.quote(host)}; on the host run deploy/cloud-init.yaml (Docker, toolkit, docker group)",
    )


def run_checks(c, probe, *, gpu: bool, host: str | None) -> list[Check]:
    checks = [engine(c, probe)]
    engine_ok = checks[0].state == "ok"
    checks.append(buildkit(c, probe))  # the client's: it holds without an engine too
    if gpu:
        runtime, devices = gpu_runtime(c, probe)
        image = containers.image_name(c, "cuda")
        checks += [runtime, gpu_in_image(c, probe, image, runtime.state == "ok" and engine_ok, devices)]
        checks.append(gpu_loss.cgroup_device_check(c, probe))  # devices lost at a daemon-reload (exit 69 mid-run)
    else:
        checks.append(Check("GPU runtime (driver, container toolkit)", "skip", "--cpu: GPU checks skipped"))
    checks += [disk(c, probe, "cuda" if gpu else "cpu"), shm(), locks(), ssh_host(c, probe, host)]
    return checks
