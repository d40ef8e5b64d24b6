"""The checkout under test: a copy of this repository owned by a non-root host user (created when the tests run as
root), with invoke + pyyaml in a venv of the system Python that user can run.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import explain

from .helpers_engine import REPO, Engine, client, one_worker_at_a_time

WHEEL_DIRS = [d for d in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if Path(d).is_dir()]
TEST_USER, TEST_UID = "finetune-ci", 2345


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
            raise AssertionError(explain(proc, " ".join(map(str, cmd))))
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


def as_user(user: str, settings: dict, cmd: list) -> list[str]:
    """cmd run as user with settings in its environment, set again inside: runuser resets HOME and USER to the
    passwd entry's (the rootless tests give their user a home and runtime folder of its own)."""
    return ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in settings.items()), *map(str, cmd)]


@contextlib.contextmanager
def tun_open_to_users():
    """/dev/net/tun mode 666 inside, as Debian and Fedora ship it, and its mode put back after: slirp4netns, the
    network of rootless Podman and rootless Docker, opens it as the user (this VM's is root's only, mode 600)."""
    tun = Path("/dev/net/tun")
    mode = tun.stat().st_mode & 0o777 if tun.exists() else None
    if mode is not None and mode != 0o666:
        tun.chmod(0o666)
    try:
        yield
    finally:
        if mode is not None and mode != 0o666:
            tun.chmod(mode)


def fresh_copy(root: Path, dest: Path) -> None:
    """The checkout at root copied to dest without its runs/, as a fresh clone has none: another test's run there
    (runs/default) would make the next run's directory runs/default-2."""
    shutil.copytree(root, dest, symlinks=True, ignore=lambda folder, names: ["runs"] if folder == str(root) else [])


def printed_run_dir(output: str, root: Path) -> Path:
    """The run directory a run's closing report names (`run dir       runs/NAME`), as a path under root. A run never
    writes over a finished one (runs/default is taken: runs/default-2), so a test reads the one the run chose."""
    named = [line.split(None, 2)[2].strip() for line in output.splitlines() if line.startswith("run dir ")]
    assert named, f"no `run dir` line in the run's output:\n{output[-2000:]}"
    path = Path(named[-1])
    return root / path.parent.name / path.name  # the report's path is inside the container (/workspace/runs/NAME)


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
    with one_worker_at_a_time("test-user"):  # useradd fails for a second worker once the first has made the user
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
    _invoke_venv(top / "invoke-venv", root / "src")
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


def _invoke_venv(venv: Path, src: Path) -> None:
    """invoke + pyyaml, hash-checked from the locks, in a venv of the system Python that any user can run, with the
    checkout's src/ on its path (devtools imports finetune.names and finetune.urls, pure stdlib)."""
    from lockfile import parse_lock  # environments/lockfile.py (pytest's pythonpath), the one reader of the lock format

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
    # a .pth file, as an editable install writes one: the package's source is on this venv's path, nobody's sys.path
    # is edited at run time
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "finetune-src.pth").write_text(f"{src}\n")


def rootful_podman_checkout(workspace: Workspace, top: Path, task: str) -> Path:
    """For the tests of a task that builds with rootful Podman (verify-image, reproduce): top/repo, a root-owned copy
    of the workspace as committed (earlier container tests edit tracked files there, which would make the image's
    revision "<head>-dirty"). Skips, in one line, without root or Podman."""
    if os.getuid() != 0:
        pytest.skip(f"{task}'s test runs rootful Podman: it needs root")
    if not shutil.which("podman") or subprocess.run(["podman", "--version"], capture_output=True).returncode:
        pytest.skip(f"{task} needs `podman` (Debian: apt-get install podman)")
    root = top / "repo"
    fresh_copy(workspace.root, root)
    subprocess.run(["chown", "-R", "0:0", str(root)], check=True)
    subprocess.run(["git", "-c", "safe.directory=*", "checkout", "--quiet", "--", "."], cwd=root, check=True)
    return root
