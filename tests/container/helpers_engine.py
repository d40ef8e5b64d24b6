"""The container tests' Docker engine: the one DOCKER_HOST points at if it answers, otherwise docker/engine.sh starts
Debian's dockerd on a private socket; in CI a missing engine fails the run, elsewhere the tests skip with one line.
Also the figures measured on the way (printed at the end of the session) and the reason the tests were skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

# tests/conftest.py, the tests' shared helpers; FIGURES and SKIPPED_BECAUSE live there so that its summary hooks,
# which the pytest-xdist controller loads (it never loads tests/container/conftest.py), can print them
from conftest import FIGURES, REPO, SKIPPED_BECAUSE, explain

ENGINE_SH = REPO / "docker" / "engine.sh"


@contextlib.contextmanager
def one_worker_at_a_time(what: str):
    """Held while a session fixture makes something every pytest-xdist worker shares (the engine, a base image, the
    test user): another worker that needs it waits, then finds it made. Works the same without xdist."""
    with FileLock(Path(tempfile.gettempdir()) / f"finetune-tests-{what}.lock"):
        yield


def http_status(url: str) -> int | None:
    """The HTTP status a GET of url answers with, or None when nothing answers there."""
    try:
        return urllib.request.urlopen(url, timeout=3).status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def lab_token_once_it_answers(proc: subprocess.Popen, port: int, seconds: int = 120) -> str:
    """The token `invoke lab` printed (its first lines: the URL, then the command), once JupyterLab answers with it on
    127.0.0.1:port; fails when the command exits or nothing answers in time."""
    first = proc.stdout.readline() + proc.stdout.readline()
    found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\S+)", first)
    assert found, first
    deadline = time.time() + seconds
    while http_status(f"http://127.0.0.1:{port}/api/status?token={found.group(1)}") != 200:
        assert proc.poll() is None, f"invoke lab exited {proc.returncode}: {proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, f"JupyterLab did not answer on 127.0.0.1:{port} in {seconds} s"
        time.sleep(1)
    return found.group(1)


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
            raise AssertionError(explain(proc, f"docker {' '.join(map(str, args))}"))
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
    with one_worker_at_a_time("engine"):
        status, why = _run_quietly([client(), "info"], env)
        up, up_why = _run_quietly(["bash", str(ENGINE_SH), "up"]) if status else (0, "")
    if status != 0:
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
