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

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENGINE_SH = REPO / "docker" / "engine.sh"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WHEEL_DIRS = [d for d in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if Path(d).is_dir()]
TEST_USER, TEST_UID = "finetune-ci", 2345
STANDIN_MINIFORGE = "local/miniforge-standin:test"
STANDIN_DEBIAN = "local/debian:bookworm"
FIGURES: dict = {}  # measured figures, printed at the end of the session (pytest_terminal_summary)
SKIPPED_BECAUSE: list[str] = []  # why the container tests could not run: said once, at the end


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client() -> str:
    """Debian's /usr/bin/docker: its BuildKit needs no buildx plugin (the newer client on PATH may need one).
    FINETUNE_TEST_DOCKER names another client (tests/test_without_docker.py: one that is not there)."""
    if os.environ.get("FINETUNE_TEST_DOCKER"):
        return os.environ["FINETUNE_TEST_DOCKER"]
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker") or "docker"


@dataclass
class Engine:
    env: dict
    client: str

    def __call__(self, *args, check=True, timeout=900, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.client, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and proc.returncode:
            raise AssertionError(f"docker {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    def inspect(self, image: str) -> dict:
        return json.loads(self("image", "inspect", image).stdout)[0]


def _run_quietly(argv: list, env: dict | None = None) -> tuple[int, str]:
    """(exit status, last line of stderr) of argv; a program that is not there is an answer too (127)."""
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except (PermissionError, subprocess.TimeoutExpired) as e:
        return 126, f"{argv[0]}: {type(e).__name__}"
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


@pytest.fixture(scope="session")
def engine() -> Engine:
    env = dict(os.environ, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")
    status, why = _run_quietly([client(), "info"], env)
    if status != 0:
        up, up_why = _run_quietly(["bash", str(ENGINE_SH), "up"])
        if up != 0:  # one line, the same for every container test, so pytest -ra reports it once
            msg = (
                f"container tests need a Docker engine: `docker info` failed ({why}) and docker/engine.sh up failed "
                f"({up_why}); start an engine and set DOCKER_HOST, or run the tests as root so that "
                "docker/engine.sh installs and starts one (-m 'not container' deselects these tests)"
            )
            if os.environ.get("CI"):
                pytest.fail(msg)
            SKIPPED_BECAUSE.append(msg)
            pytest.skip(msg)
        exports = subprocess.run(["bash", str(ENGINE_SH), "env"], capture_output=True, text=True).stdout
        env.update(kv.split("=", 1) for kv in exports.replace("export ", "").split())
    eng = Engine(env, client())
    FIGURES["engine"] = eng("version", "--format", "{{.Server.Version}}").stdout.strip()
    return eng


def _use_standins(engine: Engine) -> bool:
    mode = os.environ.get("FINETUNE_TEST_STANDINS", "auto")
    if mode in ("0", "1"):
        return mode == "1"
    real = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["base_images"]["miniforge"]
    return engine("pull", "--quiet", real, check=False, timeout=300).returncode != 0


def _standin_context(dest: Path) -> Path:
    """The stand-in Miniforge's build context: ./conda, ./Dockerfile, this host's CPython (stdlib and headers), pip
    wheel."""
    dest.mkdir(parents=True)
    for name in ("conda", "Dockerfile"):
        shutil.copy2(HERE / "standin" / name, dest / name)
    prefix, ver = Path(sys.base_prefix), f"python{sys.version_info.major}.{sys.version_info.minor}"
    (dest / "python" / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys.base_prefix) / "bin" / ver, dest / "python" / "bin" / ver)
    (dest / "python" / "bin" / "python3").symlink_to(ver)
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__", "ensurepip"}
    shutil.copytree(
        prefix / "lib" / ver,
        dest / "python" / "lib" / ver,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in skip or n.startswith(("config-3", "_tkinter"))],
    )
    (dest / "python" / "lib" / ver / "site-packages").mkdir()
    # Python.h and friends, as conda-forge's python package ships them (Triton and inductor compile against them)
    shutil.copytree(prefix / "include" / ver, dest / "python" / "include" / ver, symlinks=True)
    for lib in (prefix / "lib").glob("libpython3*.so*"):
        shutil.copy2(lib, dest / "python" / "lib" / lib.name, follow_symlinks=False)
    conda_pins = [
        ln.split()[-1]
        for ln in (REPO / "environments/cpu/pip.linux-64.lock").read_text().splitlines()
        if ln.startswith("# conda: ")
    ]
    pip_pin = next(p for p in conda_pins if p.startswith("pip="))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            f"pip=={pip_pin.split('=', 1)[1]}",
        ],
        check=True,
    )
    return dest


@pytest.fixture(scope="session")
def standins(engine: Engine, tmp_path_factory) -> dict:
    """invoke config overrides that swap in the stand-ins (empty when the real bases are reachable)."""
    if not _use_standins(engine):
        FIGURES["stand-ins"] = "none (real base images and channels)"
        return {}
    base = subprocess.run(["bash", str(ENGINE_SH), "base"], env=engine.env, capture_output=True, text=True)
    assert base.returncode == 0, base.stderr[-3000:]
    ctx = _standin_context(tmp_path_factory.mktemp("standin") / "ctx")
    engine("build", "--quiet", "--build-arg", f"BASE_IMAGE={STANDIN_DEBIAN}", "--tag", STANDIN_MINIFORGE, ctx)
    FIGURES["stand-ins"] = f"{STANDIN_DEBIAN} (debootstrap), {STANDIN_MINIFORGE} (tests/container/standin)"
    return {
        "image": {
            "base_images": {"miniforge": STANDIN_MINIFORGE, "cpu": STANDIN_DEBIAN},
            "torch_find_links": "",  # the +cpu wheel comes from docker/wheelhouse/ (below)
            "ca_bundle": CA_BUNDLE if Path(CA_BUNDLE).exists() else "",
        }
    }


@dataclass
class Workspace:
    """A copy of this checkout owned by a non-root host user, with invoke runnable as that user."""

    root: Path
    uid: int
    gid: int
    engine: Engine
    config: Path
    settings: dict = field(default_factory=dict)  # what self.config holds: invoke.yaml overrides for the tests
    user: str | None = None  # the user to switch to (None: the tests already run as a non-root user)

    def with_settings(self, name: str, extra: dict) -> Path:
        """Another invoke config file: the test settings with `extra` merged into the image section."""
        path = self.config.with_name(f"invoke-{name}.yaml")
        image = {**self.settings.get("image", {}), **extra}
        image["base_images"] = {**self.settings.get("image", {}).get("base_images", {}), **extra.get("base_images", {})}
        path.write_text(yaml.safe_dump({**self.settings, "image": image}))
        return path

    def as_user(self, cmd: list, *, check=True, timeout=1800, popen=False):
        """Run a command as the workspace's user, in the checkout copy, with HOME beside it and invoke on PATH."""
        full = (["runuser", "-u", self.user, "--"] if self.user else []) + [str(a) for a in cmd]
        venv_bin = self.root.parent / "invoke-venv" / "bin"
        env = dict(self.engine.env, HOME=str(self.root.parent), PATH=f"{venv_bin}:{os.environ['PATH']}")
        if popen:
            return subprocess.Popen(
                full, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        proc = subprocess.run(full, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(
                f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n"
                f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
            )
        return proc

    def invoke_cmd(self, *args, config: Path | None = None) -> list[str]:
        venv_bin = self.root.parent / "invoke-venv" / "bin"
        return [str(venv_bin / "invoke"), "-f", str(config or self.config), *map(str, args)]

    def invoke(self, *args, check=True, timeout=1800, config: Path | None = None) -> subprocess.CompletedProcess:
        return self.as_user(self.invoke_cmd(*args, config=config), check=check, timeout=timeout)

    def build(self, target: str, *flags: str) -> dict:
        t0 = time.monotonic()
        proc = self.invoke("build", "--variant", "cpu", "--target", target, *flags)
        image = f"finetune:cpu{'-dev' if target == 'dev' else ''}"
        return {
            "image": image,
            "seconds": time.monotonic() - t0,
            "log": proc.stdout + proc.stderr,
            "size": self.engine.inspect(image)["Size"],
        }


def _host_user() -> tuple[str | None, int, int]:
    if os.getuid() != 0:
        return None, os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--uid", str(TEST_UID), "--user-group", "--no-create-home", TEST_USER], check=True)
        pw = pwd.getpwnam(TEST_USER)
    subprocess.run(["usermod", "-aG", "docker", TEST_USER], check=False)
    return TEST_USER, pw.pw_uid, pw.pw_gid


@pytest.fixture(scope="session")
def workspace(engine: Engine, standins: dict):
    user, uid, gid = _host_user()
    # Not under pytest's tmp root: that is private to the user running pytest (mode 700).
    top = Path(tempfile.mkdtemp(prefix="finetune-container-tests-"))
    root = top / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)  # a revision for the image's label
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot of the checkout under test"], cwd=root, check=True)
    if standins:
        for folder in WHEEL_DIRS:
            for wheel in Path(folder).glob("torch-*+cpu-*.whl"):
                shutil.copy2(wheel, root / "docker" / "wheelhouse" / wheel.name)
    config = top / "invoke-test.yaml"
    settings = {"docker": {"client": client()}, **standins}
    config.write_text(yaml.safe_dump(settings))
    _invoke_venv(top / "invoke-venv")
    # The socket of an engine this harness started belongs to root:docker; make sure the test user may use it.
    sock = engine.env.get("DOCKER_HOST", "").removeprefix("unix://")
    if user and sock and Path(sock).exists():
        os.chown(sock, 0, _docker_gid())
        os.chmod(sock, 0o660)
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(top)], check=True)
    top.chmod(0o755)
    yield Workspace(root=root, uid=uid, gid=gid, engine=engine, config=config, settings=settings, user=user)
    shutil.rmtree(top, ignore_errors=True)


def _docker_gid() -> int:
    return grp.getgrnam("docker").gr_gid


def _invoke_venv(venv: Path) -> None:
    """invoke + pyyaml, hash-checked from the locks, in a venv of the system Python that any user can run."""
    sys.path.insert(0, str(REPO / "environments"))
    from lock import parse_lock  # environments/lock.py, the lock tool itself

    sys.path.pop(0)
    wanted = {"invoke", "pyyaml"}
    lines = []
    for lock in ("environments/cpu/pip.linux-64.lock", "environments/dev/pip.linux-64.lock"):
        for name, entry in parse_lock(REPO / lock).items():
            if name in wanted:
                hashes = " ".join(f"--hash=sha256:{h}" for h in entry["hashes"])
                lines.append(f"{name}=={entry['version']} {hashes}")
    req = venv.parent / "invoke-requirements.txt"
    req.write_text("\n".join(lines) + "\n")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(req)], check=True
    )


@pytest.fixture(scope="session")
def runtime_image(workspace: Workspace) -> dict:
    built = workspace.build("runtime", "--no-cache")  # every layer built (downloads come from BuildKit's cache)
    FIGURES["cpu runtime: full build s (--no-cache)"] = round(built["seconds"], 1)
    FIGURES["cpu runtime: image size MB"] = round(built["size"] / 1e6)
    return built


@pytest.fixture(scope="session")
def dev_image(workspace: Workspace, runtime_image: dict) -> dict:
    built = workspace.build("dev")
    FIGURES["cpu dev: build s (after runtime)"] = round(built["seconds"], 1)
    FIGURES["cpu dev: image size MB"] = round(built["size"] / 1e6)
    return built


def pytest_terminal_summary(terminalreporter):
    if SKIPPED_BECAUSE:
        terminalreporter.write_line(f"container tests skipped: {SKIPPED_BECAUSE[0]}", yellow=True)
    if FIGURES:
        terminalreporter.section("container figures (this machine)")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key:42} {value}")
