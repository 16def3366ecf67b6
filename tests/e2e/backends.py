"""Real HTTP backends on loopback, and a plain HTTP client for requests through Envoy.

A backend answers every request (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS; a request
body is read and dropped) with `backend <name>`. Options make it misbehave or report on
what it received, for routing tests:

- `flaky_every=N`: every Nth request (the Nth, 2Nth, ...) gets HTTP 503;
- `delay=S`: sleep S seconds before answering (cut short when the backend stops);
- a request header `x-backend-status: N` (200-599) makes that answer HTTP N, and
  `x-backend-status: close` closes the connection without an answer;
- a request header `x-backend-delay: S` delays that answer S seconds (at most
  `MAX_HEADER_DELAY`), for timeout tests that share one backend;
- with `x-backend-fail-first: N` and `x-backend-attempt-key: K`, those two apply to the
  first N copies of the request with key K only (a retry succeeds after N failures);
- `echo=("x-env", ...)`: the body goes on with `path <path>` and `header <name>: <value>`
  for each named request header present;
- every request is recorded (`received()`: method, path, headers), so a test can assert
  that a mirrored copy or a header arrived.

`python -m tests.e2e.backends --name X [--address A] [--port P]` runs one backend as its
own process (so it can live in another network namespace) and prints `A:P` once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Most requests a backend records (a bound on memory, far above what a test sends).
MAX_RECORDED = 100_000
# The status `_asked` gives for `x-backend-status: close`: no answer, the connection closed.
CLOSE = -1
# Longest delay a request may ask for with `x-backend-delay`.
MAX_HEADER_DELAY = 10.0
# Most bytes of a request body a backend reads (tests send small bodies, if any).
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Received:
    """One request as a backend saw it; header names in lower case."""

    method: str
    path: str
    headers: Mapping[str, str]


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:
        server = self.server
        number = server.count()
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit():
            self.rfile.read(min(int(length), MAX_BODY))
        headers: dict[str, str] = {}
        for key, value in self.headers.items():  # a repeated header: its values, joined
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        server.record(Received(self.command, self.path, headers))
        if server.delay > 0:
            server.stopping.wait(server.delay)
        asked_delay, asked_status = _asked(server, headers)
        if asked_delay > 0:
            server.stopping.wait(asked_delay)
        status = 200
        if server.flaky_every > 0 and number % server.flaky_every == 0:
            status = 503
        if asked_status == CLOSE:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if asked_status is not None:
            status = asked_status
        lines = [f"backend {server.name}"]
        if server.echo is not None:
            lines.append(f"path {self.path}")
            lines += [
                f"header {name.lower()}: {headers[name.lower()]}"
                for name in server.echo
                if name.lower() in headers
            ]
        body = ("\n".join(lines) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", server.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client (Envoy, after a timeout) is gone

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet


def _asked(server: Backend, headers: Mapping[str, str]) -> tuple[float, int | None]:
    """The delay and status a request asks for with its headers (see the module doc)."""
    fail_first, key = headers.get("x-backend-fail-first", ""), headers.get("x-backend-attempt-key")
    if fail_first.isdigit() and key is not None and server.attempt(key) > int(fail_first):
        return 0.0, None
    delay = min(_seconds(headers.get("x-backend-delay")), MAX_HEADER_DELAY)
    status = headers.get("x-backend-status", "")
    if status == "close":
        return delay, CLOSE
    return delay, int(status) if status.isdigit() and 200 <= int(status) <= 599 else None


def _seconds(value: str | None) -> float:
    """A header's number of seconds; 0 when absent or not a positive number."""
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return seconds if seconds > 0 else 0.0  # NaN too


class Backend(ThreadingHTTPServer):
    """An HTTP server (on 127.0.0.1 unless told) whose every answer names it: `backend <name>`.

    `flaky_every`, `delay` and `echo` are described in the module doc.
    """

    daemon_threads = True
    request_queue_size = 128  # a burst of connections from Envoy is not dropped

    def __init__(
        self,
        name: str,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        flaky_every: int = 0,
        delay: float = 0.0,
        echo: Iterable[str] | None = None,
    ) -> None:
        super().__init__((address, port), _Handler)
        self.name = name
        self.requests = 0
        self.flaky_every = flaky_every
        self.delay = delay
        self.echo = None if echo is None else tuple(echo)
        self.stopping = threading.Event()
        self._received: list[Received] = []
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=f"backend-{name}"
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def count(self) -> int:
        """Count one request; returns its number (1 for the first)."""
        with self._lock:
            self.requests += 1
            return self.requests

    def attempt(self, key: str) -> int:
        """Count one copy of the request with attempt key `key`; its number (1 for the first)."""
        with self._lock:
            if key not in self._attempts and len(self._attempts) >= MAX_RECORDED:
                return 1 << 30  # over the bound: a copy that never misbehaves
            self._attempts[key] = self._attempts.get(key, 0) + 1
            return self._attempts[key]

    def record(self, request: Received) -> None:
        with self._lock:
            if len(self._received) < MAX_RECORDED:
                self._received.append(request)

    def received(self) -> list[Received]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._received)

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # a slow answer in progress finishes now
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


@dataclass(frozen=True, slots=True)
class Reply:
    """What a client saw: status 0 when the request failed (`body` then says why)."""

    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    seconds: float = 0.0

    @property
    def backend(self) -> str | None:
        """The backend that answered (`backend <name>`), or None."""
        words = self.body.split()
        return words[1] if self.status == 200 and words[:1] == ["backend"] else None

    def echoed(self) -> dict[str, str]:
        """What an echoing backend reported: `path` and each `header <name>` it saw."""
        found: dict[str, str] = {}
        for line in self.body.splitlines()[1:]:
            key, _, value = line.partition(" ")
            if key == "header":
                name, _, value = value.partition(": ")
                key = f"header {name}"
            found[key] = value
        return found


def request(
    port: int,
    host: str,
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One GET to 127.0.0.1:`port` with `Host: host` on a fresh connection; never raises OSError."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        found = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, body, found, time.monotonic() - started)
    except OSError as error:
        return Reply(0, f"{type(error).__name__}: {error}", {}, time.monotonic() - started)
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
    parser.add_argument("--flaky-every", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    backend = Backend(
        args.name,
        address=args.address,
        port=args.port,
        flaky_every=args.flaky_every,
        delay=args.delay,
    )
    print(f"{args.address}:{backend.port}", flush=True)
    backend.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
