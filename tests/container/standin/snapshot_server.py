"""STAND-IN for snapshot.debian.org (invoke.yaml image.apt_snapshot.debian), which this project's CI machines cannot
reach: serves `/archive/<archive>/<YYYYMMDDTHHMMSSZ>/<path>` from today's Debian mirror (`<upstream>/<archive>/<path>`,
the one package source reachable here), whatever the date, and logs every request with the date it asked for. So the
builds in the tests go through docker/apt/install's pinned path (the sources rewritten to a snapshot URL, Valid-Until
not checked, the base's /etc/apt untouched) for real; what it cannot show is that a past date gives past versions.
Started by `docker/engine.sh snapshot` (one per engine, a fixed port, so every test build passes the same build args
and shares the layer cache). Standard library only: it runs with the system Python.

    python3 snapshot_server.py --port 3148 --upstream http://deb.debian.org --log FILE
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/archive/(?P<archive>[a-z-]+)/(?P<date>\d{8}T\d{6}Z)/(?P<rest>.*)$")


def handler(upstream: str, log):
    class Snapshot(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, body: bool) -> None:
            m = PATH.match(self.path)
            if not m:
                self._answer(404, b"not a snapshot path: /archive/<archive>/<YYYYMMDDTHHMMSSZ>/<path>\n", body)
                return
            url = f"{upstream.rstrip('/')}/{m['archive']}/{m['rest']}"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method=self.command), timeout=60) as up:
                    self.send_response(up.status)
                    for key in ("Content-Type", "Content-Length", "Last-Modified"):
                        if up.headers.get(key):
                            self.send_header(key, up.headers[key])
                    self.end_headers()
                    if body:
                        shutil.copyfileobj(up, self.wfile, 1 << 20)
                    status = up.status
            except urllib.error.HTTPError as err:
                self._answer(err.code, f"{err.code} from {url}\n".encode(), body)
                status = err.code
            print(
                f"{time.strftime('%H:%M:%S')} {self.command} {m['archive']} {m['date']} {m['rest']} {status}",
                file=log,
                flush=True,
            )

        def _answer(self, code: int, text: bytes, body: bool) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if body:
                self.wfile.write(text)

        def do_GET(self):  # noqa: N802 (http.server's name)
            self._serve(True)

        def do_HEAD(self):  # noqa: N802
            self._serve(False)

        def log_message(self, *args):  # the log above has what the tests read
            pass

    return Snapshot


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=3148)
    ap.add_argument("--upstream", default="http://deb.debian.org")
    ap.add_argument("--log", default="-")
    args = ap.parse_args()
    log = sys.stdout if args.log == "-" else open(args.log, "a")  # noqa: SIM115 (open for the server's life)
    ThreadingHTTPServer(("0.0.0.0", args.port), handler(args.upstream, log)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
