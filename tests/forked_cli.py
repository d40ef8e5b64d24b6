"""`finetune` runs forked from one process that has imported it, for a test that starts many short runs.

The kill -9 test starts 25 training runs, each killed a few steps in; a `python -m finetune` process spends about 7 s
of CPU importing torch, transformers and PEFT before its first step, which was most of that test's five minutes.
Here one server process (`python -P tests/forked_cli.py`) imports the CLI and what a training run imports once,
then forks a copy per run; each copy runs `finetune.cli.main(argv)`, what `python -m finetune` runs, in a real process
of its own that the test kills with a real SIGKILL. What is not the same as a started `finetune`: the imports happened
before the fork (none of them reads the run's arguments), and the copy's stdout and stderr go to one log file.

`python -P tests/forked_cli.py MODULE...` also imports those modules before any fork (test_preference.py: TRL's
trainers, about 2 s more per run than the CLI's own imports).

Protocol, one line each way: the test writes a JSON object {"argv": [...], "log": path}; the server answers
`pid <n>` once the copy is forked and `exit <code>` when it ends (<code> as subprocess's returncode: -9 for SIGKILL).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path


def serve(preload: list[str]) -> None:
    import finetune.run  # noqa: F401 - the heavy imports, once, before any fork
    from finetune import cli

    for name in preload:
        importlib.import_module(name)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the copy: the run's output to its log, no stdin, then the CLI as `python -m finetune`
            code = 1
            try:
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                sys.argv = ["finetune", *request["argv"]]
                code = cli.main(request["argv"])
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


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

    def start(self, argv: list, log: Path) -> ForkedRun:
        request = json.dumps({"argv": [str(a) for a in argv], "log": str(log)})
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
