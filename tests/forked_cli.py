"""`finetune` runs forked from one process that has imported it: the suite's CLI runs without 7 s of imports each.

A `python -m finetune` process spends about 7 s of CPU importing torch, transformers and PEFT before it reads its
config; the suite starts a few hundred of them (every refusal test, every short run), which on a 2-core machine was
a quarter of `make test`. Here one server process per test worker (`python -P tests/forked_cli.py`) imports the CLI
and what a training run imports once, then forks a copy per run; each copy is what `python -m finetune ARGV` is from
that point on: `sys.argv` as `-m` sets it, `finetune.cli.main`, its own stdout and stderr files, no stdin, and the
end of an interpreter (an uncaught exception prints its traceback and exits 1; non-daemon threads are joined and
atexit handlers run; the modules are not torn down one by one, which takes 3 s and changes nothing outside).

What is not the same as a started `finetune`: the imports happened before the fork, in the same environment (none of
them reads the run's arguments), and the current folder is not on sys.path (nothing of ours imports from the
checkout's root). conftest.run_cli uses it unless a test asks for a started process (`forked=False`: the tests whose
point is the command as a user starts it, the default run first). `python -P tests/forked_cli.py MODULE...` also
imports those modules before any fork (test_preference.py: TRL's trainers, about 2 s more per run).

Protocol, one line each way: the test writes a JSON object {"argv": [...], "stdout": path, "stderr": path} (stderr
left out: both to stdout's file); the server answers `pid <n>` once the copy is forked and `exit <code>` when it ends
(<code> as subprocess's returncode: -9 for SIGKILL).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def serve(preload: list[str]) -> None:
    import finetune.run  # noqa: F401 - the heavy imports, once, before any fork
    from finetune import cli

    for name in preload:
        importlib.import_module(name)

    main_path = str(Path(cli.__file__).with_name("__main__.py"))  # sys.argv[0] under `python -m finetune`
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(cli, main_path, request)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


def child(cli, main_path: str, request: dict):
    """The copy, from here on `python -m finetune ARGV`: its output to the request's files, no stdin; it ends as an
    interpreter does (an uncaught exception's traceback and 1, non-daemon threads joined, atexit handlers run,
    output flushed), without tearing down the modules one by one (3 s with torch and transformers loaded)."""
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if "stderr" in request else out
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.argv = [main_path, *request["argv"]]
    code = 1
    try:
        code = exit_code(cli.main(request["argv"]))
    except SystemExit as e:
        code = exit_code(e.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
    finally:
        threading._shutdown()  # what Py_FinalizeEx does first: wait for the non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def exit_code(code) -> int:
    """The status sys.exit(code) ends a process with (None: 0; a message: printed, 1)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


class ForkServer:
    """The test's end: start() forks a run and returns a ForkedRun; close() ends the server."""

    def __init__(self, cwd: Path, env: dict, preload: tuple[str, ...] = ()):
        script = Path(__file__).resolve()
        # -P: the script's folder (tests/) is not put on sys.path, so the server imports what `python -m finetune` does
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(script), *preload],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""

    def start(self, argv: list, log: Path, stderr: Path | None = None) -> ForkedRun:
        """A forked run of ARGV, its stdout (and stderr, unless given a file of its own) to log."""
        request = {"argv": [str(a) for a in argv], "stdout": str(log)} | ({"stderr": str(stderr)} if stderr else {})
        request = json.dumps(request)
        self.proc.stdin.write(request.encode() + b"\n")
        self.proc.stdin.flush()
        word, value = self.read_line(timeout=None).split()
        assert word == "pid", word
        return ForkedRun(self, int(value), log)

    def read_line(self, timeout: float | None) -> str | None:
        """The server's next line, or None when none came within `timeout` seconds (None: wait for it)."""
        while b"\n" not in self._buffer:
            if not select.select([self.proc.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"the fork server ended (exit {self.proc.wait()})"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def run(self, argv: list, timeout: float) -> subprocess.CompletedProcess:
        """What subprocess.run(capture_output=True, text=True, timeout=...) returns for `python -m finetune ARGV`,
        from a forked copy: killed and TimeoutExpired raised past timeout, as subprocess.run does."""
        what = ["finetune (forked by tests/forked_cli.py)", *map(str, argv)]
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            proc = self.start(argv, out, stderr=err)
            if proc._ended(self.read_line(timeout=timeout)) is None:
                proc.kill()
                proc.communicate()
                raise subprocess.TimeoutExpired(what, timeout, out.read_text(errors="replace"), err.read_text())
            return subprocess.CompletedProcess(what, proc.returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class ForkedRun:
    """One forked run, with what the tests use of subprocess.Popen: pid, poll, kill, communicate, returncode."""

    def __init__(self, server: ForkServer, pid: int, log: Path):
        self.server, self.pid, self.log, self.returncode = server, pid, log, None

    def _ended(self, line: str | None) -> int | None:
        if line is not None:
            word, code = line.split()
            assert word == "exit", word
            self.returncode = int(code)
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None else self._ended(self.server.read_line(timeout=0))

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self) -> tuple[str, str]:
        if self.returncode is None:
            self._ended(self.server.read_line(timeout=None))
        return self.log.read_text(errors="replace"), ""


if __name__ == "__main__":
    serve(sys.argv[1:])
