"""Real HTTP backends on loopback, and a plain HTTP client for requests through Envoy.

`python -m tests.e2e.backends --name X [--address A] [--port P]` runs one backend as its
own process (so it can live in another network namespace) and prints `A:P` once it listens.
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:
        body = f"backend {self.server.name}\n".encode()
        self.server.count()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


class Backend(ThreadingHTTPServer):
    """An HTTP server (on 127.0.0.1 unless told) whose every answer names it: `backend <name>`."""

    daemon_threads = True

    def __init__(self, name: str, *, address: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((address, port), _Handler)
        self.name = name
        self.requests = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=f"backend-{name}"
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(5)
        self.server_close()


def get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    """One GET to 127.0.0.1:`port` on a fresh connection: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def answer(port: int, path: str = "/") -> str | None:
    """Which backend answered a GET through `port`, or None if the request failed."""
    try:
        status, body = get(port, path)
    except OSError:
        return None
    if status != 200 or not body.startswith("backend "):
        return None
    return body.split()[1]


@dataclass
class Traffic:
    """Steady GETs from a background thread (one every `interval`, at most `limit`).

    Records every outcome, so a test can assert that nothing failed while the
    control plane was away.
    """

    port: int
    interval: float = 0.02
    limit: int = 2_000
    max_seconds: float = 30.0
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = get(self.port)
            except OSError as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            else:
                if status == 200 and body.startswith("backend "):
                    self.answers.append(body.split()[1])
                else:
                    self.failures.append(f"HTTP {status}: {body[:200]!r}")
            self._stop.wait(self.interval)

    def stop(self) -> Traffic:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.failures)


def main(argv: list[str] | None = None) -> None:
    """Serve one backend until killed; the first stdout line `address:port` says it is up."""
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.backends")
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    backend = Backend(args.name, address=args.address, port=args.port)
    print(f"{args.address}:{backend.port}", flush=True)
    backend.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
