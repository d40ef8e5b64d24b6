"""Serving benchmark: requests/s and tokens/s of `finetune serve` (CPU) with 1, 4 and 16 concurrent clients.

    .venv/bin/python -m benchmarks serve --run runs/default          # starts the server itself
    .venv/bin/python -m benchmarks serve --url http://127.0.0.1:8000/v1   # or measures one already running

Each client is a thread with its own `openai` client sending chat completions of the default task ("reverse: <word>",
greedy) back to back; a level runs until every client has sent --requests requests. tokens/s counts completion
tokens (the server's `usage`), the figure a serving benchmark usually quotes; latency is per request, p50 and p95.
The server runs one generation at a time (finetune.openai_api), so more clients raise latency, not throughput: the
figures show how much the HTTP layer costs around it.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]
WORDS = ["hello", "planet", "reverse", "window", "garden", "silver", "python", "orange"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "finetune", "serve", run, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"benchmarks serve: the server exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("benchmarks serve: the server did not listen within 300 s")


def level(url: str, clients: int, requests: int, key: str) -> dict:
    from openai import OpenAI

    latencies, tokens, errors = [], [], []
    lock = threading.Lock()

    def client(index: int) -> None:
        c = OpenAI(base_url=url, api_key=key, max_retries=0)
        for i in range(requests):
            word = WORDS[(index + i) % len(WORDS)]
            start = time.perf_counter()
            try:
                reply = c.chat.completions.create(
                    model=model_id(c), messages=[{"role": "user", "content": f"reverse: {word}"}]
                )
            except Exception as e:  # counted and shown, not fatal: the figure says how many failed
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "latency_p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3) if ordered else None,
    }


_MODEL = {}


def model_id(c) -> str:
    if "id" not in _MODEL:
        _MODEL["id"] = c.models.list().data[0].id
    return _MODEL["id"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", default="runs/default", help="run or export to serve (default runs/default)")
    p.add_argument("--url", help="measure a server already running at this base URL instead of starting one")
    p.add_argument("--clients", default="1,4,16", help="concurrency levels, comma-separated (default 1,4,16)")
    p.add_argument("--requests", type=int, default=8, help="requests per client per level (default 8)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve.json"), help="JSON report path")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    key = os.environ.get("FINETUNE_API_KEY") or "bench"
    server = None
    if args.url:
        url = args.url
    else:
        port = free_port()
        os.environ["FINETUNE_API_KEY"] = key  # the server started below requires it, the clients send it
        server = start_server(args.run, port)
        url = f"http://127.0.0.1:{port}/v1"
    try:
        level(url, 1, 2, key)  # warm-up: first-request costs (lazy imports, allocator) out of the figures
        rows = [level(url, int(n), args.requests, key) for n in args.clients.split(",")]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    header = ["clients", "requests", "errors", "req/s", "tokens/s", "p50 s", "p95 s"]
    keys = ["clients", "requests", "errors", "requests_per_s", "tokens_per_s", "latency_p50_s", "latency_p95_s"]
    print(report.render(header, [[str(r[k]) for k in keys] for r in rows], left=0))
    data = {
        **report.stamp("serve"),
        "served": args.url or args.run,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "levels": rows,
    }
    report.write(Path(args.out), data)
    print(f"wrote {args.out}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1
