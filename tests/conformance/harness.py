"""A kontinuum fleet holding upstream's conformance base, real Envoys in front of it, and the
"request until the answer is as expected" helper that every traffic case uses.

One `Conformance` serves one test module: `kontinuum` runs on a thread of its own (its own
event loop), so tests are plain functions; each case swaps its objects in with `apply()`,
which returns once the fleet has applied them (statuses are then final). Envoys start on
first use and stay for the module: an ingress per base Gateway (`gateway(name)` gives the
port to send to) and a sidecar per client namespace (`sidecar(ns)` gives its outbound
port). Envoy takes its new configuration a moment after `apply()`, so traffic is checked
with `expect()`, which polls (bounded) until the answer has been as expected three times in
a row, as upstream's eventually consistent requests do. A case's own Gateway listeners take
their ports from `free_ports()`, never from a bare `free_port()`: one port handed out twice
in a module (before an Envoy binds it) would make two listeners one.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kontinuum.app import RunningFleet, running_fleet
from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.gateway_binding import GatewayStatus
from kontinuum.control.plane import Condition
from kontinuum.control.route_binding import RouteStatus
from kontinuum.xds import XdsServer
from tests.conformance.base import (
    BACKENDS,
    CLUSTER,
    GATEWAYS,
    H2C_BACKEND,
    INFRA,
    MESH,
    base_files,
    joined,
)
from tests.e2e.backends import Backend, Received
from tests.e2e.envoy import Envoy
from tests.support.fleet import fast, rewrite
from tests.support.net import free_port

# The header that ties what a backend received to the request that the harness sent.
REQUEST_ID = "x-conformance-request-id"
# How long a change may take to reach the fleet, and then the Envoys (upstream allows 60 s
# for a real cluster; a fleet on one machine applies a change within a second).
APPLY_TIMEOUT = 10.0
TRAFFIC_TIMEOUT = 15.0
CONSECUTIVE = 3  # answers in a row that must be as expected


@dataclass(frozen=True, slots=True)
class Request:
    """What a client sends: to `host` (the Host header), `path` (with any query); with `ca`
    (a PEM bundle), over TLS with `host` (without a port) as SNI, trusting only `ca`."""

    host: str
    path: str = "/"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    ca: bytes | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """The parts of a redirect's Location that a case expects (None: not checked)."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Expected:
    """What a case expects: the status, which backend answered, what that backend received
    (`path` with query, `host`, `headers` that must be there with these values, and
    `absent_headers`), the response's headers, and a redirect's Location."""

    status: int = 200
    backend: str | None = None
    path: str | None = None
    host: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    absent_headers: Sequence[str] = ()
    response_headers: Mapping[str, str] = field(default_factory=dict)
    absent_response_headers: Sequence[str] = ()
    redirect: Redirect | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got: status 0 when it failed (`body` then says why), the response's
    headers (lower-case names), the backend that answered and what it received."""

    status: int
    body: str
    headers: Mapping[str, str]
    backend: str | None = None
    received: Received | None = None
    request_id: str = ""


class _TlsConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1 with a server name of the caller's choosing (SNI and verification)."""

    def __init__(self, port: int, server_name: str, ca: bytes, timeout: float) -> None:
        super().__init__("127.0.0.1", port, timeout=timeout)
        self._server_name = server_name
        self._context = ssl.create_default_context(cadata=ca.decode())

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


def send(port: int, request: Request, request_id: str, timeout: float = 5.0) -> Answer:
    """One request to 127.0.0.1:`port` on a fresh connection; never raises OSError."""
    connection = (
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if request.ca is None
        else _TlsConnection(port, request.host.rsplit(":", 1)[0], request.ca, timeout)
    )
    # The id also keys the copies of one request (retries) at an echo backend, for
    # `x-backend-fail-first`.
    headers = {
        "Host": request.host,
        **request.headers,
        REQUEST_ID: request_id,
        "x-backend-attempt-key": request_id,
    }
    try:
        connection.request(request.method, request.path, headers=headers)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        found: dict[str, str] = {}
        for key, value in response.getheaders():
            key = key.lower()
            found[key] = f"{found[key]}, {value}" if key in found else value
        return Answer(response.status, body, found)
    except (OSError, http.client.HTTPException) as error:
        return Answer(0, f"{type(error).__name__}: {error}", {})
    finally:
        connection.close()


def same_values(got: str | None, want: str) -> bool:
    """Whether a header's value is `want`, as a list: `a,b` and `a, b` are the same values
    (RFC 9110 joins a field's lines with a comma and optional whitespace)."""
    if got is None:
        return False
    return [v.strip() for v in got.split(",")] == [v.strip() for v in want.split(",")]


def mismatch(answer: Answer, expected: Expected) -> str | None:
    """How `answer` differs from `expected`, or None when it is as expected."""
    if answer.status != expected.status:
        return f"status {answer.status} (want {expected.status}): {answer.body[:200]!r}"
    if expected.backend is not None and answer.backend != expected.backend:
        return f"answered by {answer.backend} (want {expected.backend})"
    seen = answer.received
    wants_seen = expected.path or expected.host or expected.headers or expected.absent_headers
    if wants_seen and seen is None:
        return f"no backend recorded the request (answered by {answer.backend})"
    if seen is not None:
        if expected.path is not None and seen.path != expected.path:
            return f"backend saw path {seen.path!r} (want {expected.path!r})"
        host = seen.headers.get("host")
        if expected.host is not None and host != expected.host:
            return f"backend saw host {host!r} (want {expected.host!r})"
        for name, value in expected.headers.items():
            if not same_values(seen.headers.get(name.lower()), value):
                got = seen.headers.get(name.lower())
                return f"backend saw header {name}: {got!r} (want {value!r})"
        for name in expected.absent_headers:
            if name.lower() in seen.headers:
                return f"backend saw header {name}: {seen.headers[name.lower()]!r} (want none)"
    for name, value in expected.response_headers.items():
        if not same_values(answer.headers.get(name.lower()), value):
            got = answer.headers.get(name.lower())
            return f"response header {name}: {got!r} (want {value!r})"
    for name in expected.absent_response_headers:
        if name.lower() in answer.headers:
            return f"response header {name}: {answer.headers[name.lower()]!r} (want none)"
    if expected.redirect is not None:
        return _redirect_mismatch(answer.headers.get("location"), expected.redirect)
    return None


def _redirect_mismatch(location: str | None, expected: Redirect) -> str | None:
    if location is None:
        return "no Location header"
    parts = urllib.parse.urlsplit(location)
    wanted = {
        "scheme": (parts.scheme, expected.scheme),
        "host": (parts.hostname, expected.host),
        "port": (parts.port, expected.port),
        "path": (parts.path, expected.path),
    }
    for part, (got, want) in wanted.items():
        if want is not None and got != want:
            return f"Location {location!r}: {part} {got!r} (want {want!r})"
    if expected.port is None and parts.port is not None and expected.scheme is not None:
        default = {"http": 80, "https": 443}.get(expected.scheme)
        if parts.port != default:
            return f"Location {location!r} names port {parts.port} (want none)"
    return None


def h2c_backend_bootstrap(port: int) -> dict[str, Any]:
    """A static Envoy on 127.0.0.1:`port` that takes HTTP/2 only and answers 200 itself:
    `backend h2c-backend`, with `x-backend` and the request's protocol in
    `x-backend-protocol`."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    answer = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": f"backend {H2C_BACKEND}\n"}},
    }
    headers = [
        {"header": {"key": "x-backend", "value": H2C_BACKEND}},
        {"header": {"key": "x-backend-protocol", "value": "%PROTOCOL%"}},
    ]
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h2c",
        "codec_type": "HTTP2",
        "route_config": {
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [answer]}],
            "response_headers_to_add": headers,
        },
        "http_filters": [router],
    }
    listener = {
        "name": "h2c",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener]},
    }


class Conformance:
    """The base fleet served by `kontinuum` on a thread, its backends and Envoys."""

    def __init__(self, workdir: Path, envoy_path: str) -> None:
        self.workdir = workdir
        self.root = workdir / "fleet"
        self._envoy_path = envoy_path
        self.backends: dict[str, Backend] = {}
        self.envoys: list[Envoy] = []
        self._handed_out: set[int] = set()
        self._gateway_ports: dict[str, int] = {}
        self._ingresses: dict[str, int] = {}
        self._sidecars: dict[str, int] = {}
        self._h2c_port = 0
        self._h2c: Envoy | None = None
        self._ids = itertools.count(1)
        self._case = ""
        self._fleet: RunningFleet | None = None
        self._xds_port = 0
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="conformance-fleet", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Conformance:
        for name in BACKENDS:
            self.backends[name] = Backend(name).start()
        # Picked once the backends listen, so that no backend takes a Gateway's port.
        ports = self.free_ports(len(GATEWAYS))
        self._gateway_ports = {name: port for (name, _), port in zip(GATEWAYS, ports, strict=True)}
        ports = {name: backend.port for name, backend in self.backends.items()}
        ports[H2C_BACKEND] = self._h2c_port = self.free_port()
        for path, text in base_files(ports, self._gateway_ports).items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_text(text)
        (self.root / "case.yaml").write_text("")
        self._thread.start()
        assert self._ready.wait(30), "the fleet did not start within 30 s"
        if self._failure is not None:
            raise AssertionError(f"the fleet did not start: {self._failure!r}")
        assert self.errors() == (), self.errors()
        return self

    def stop(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        for backend in self.backends.values():
            backend.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            async with running_fleet(fast(path=self.root)) as fleet:
                server = XdsServer(fleet.mesh.cache, resolve_view=fleet.mesh.resolve_view)
                self._xds_port = await server.start("127.0.0.1:0")
                try:
                    self._fleet = fleet
                    self._ready.set()
                    await self._stopping.wait()
                finally:
                    await server.stop(0)
        except Exception as error:  # reported by start()
            self._failure = error
            self._ready.set()

    def running(self) -> bool:
        """Whether the fleet is being served."""
        return self._fleet is not None and self._thread.is_alive()

    @property
    def fleet(self) -> RunningFleet:
        assert self._fleet is not None, "the fleet is not running"
        return self._fleet

    # -- the case's objects ----------------------------------------------------------------

    def apply(self, *documents: str) -> tuple[str, ...]:
        """Make `documents` the case's objects (replacing the previous case's) and wait until
        the fleet has applied them; returns the files' errors. A case file with an error is
        not applied at all (the fleet keeps a file's last good version whole): a case that
        expects none asserts that this returns `()`."""
        text = joined(documents) if documents else ""
        if text == self._case:
            return self.errors()
        before, errors_before = self.fleet.mesh.applied, self.errors()
        rewrite(self.root / "case.yaml", text)
        self._case = text
        deadline = time.monotonic() + APPLY_TIMEOUT
        while self.fleet.mesh.applied == before and self.errors() == errors_before:
            assert time.monotonic() < deadline, (
                f"the fleet did not take the case in {APPLY_TIMEOUT}s"
            )
            time.sleep(0.02)
        return self.errors()

    def add_base(self, files: Mapping[str, str]) -> None:
        """Add fleet files that every case of the module shares (by path relative to the fleet
        directory, such as a cluster's Services) and wait until the fleet has applied them."""
        before = self.fleet.mesh.applied
        for path, text in files.items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            rewrite(self.root / path, text)
        deadline = time.monotonic() + APPLY_TIMEOUT
        while self.fleet.mesh.applied == before:
            assert time.monotonic() < deadline, f"the fleet did not take {list(files)}"
            time.sleep(0.02)
        assert self.errors() == (), self.errors()

    @property
    def xds_port(self) -> int:
        """The port the fleet's xDS server listens on (127.0.0.1), for a proxyless client."""
        return self._xds_port

    def errors(self) -> tuple[str, ...]:
        """The fleet files' errors, one line each."""
        static = self.fleet.static
        assert static is not None
        return tuple(str(e) for e in static.status().errors)

    # -- status ----------------------------------------------------------------------------

    def route(self, name: str, namespace: str = INFRA, kind: str = "HTTPRoute") -> RouteStatus:
        """The status of route `namespace/name`."""
        statuses = self.fleet.mesh.routing_state.binding.statuses
        for status in statuses:
            if (status.kind, status.namespace, status.name) == (kind, namespace, name):
                return status
        known = [f"{s.kind} {s.namespace}/{s.name}" for s in statuses]
        raise AssertionError(f"no status for {kind} {namespace}/{name}; there are {known}")

    def parent_conditions(
        self, name: str, namespace: str = INFRA, kind: str = "HTTPRoute"
    ) -> list[dict[str, Condition]]:
        """A route's conditions toward each parentRef (in order), by condition type."""
        return [
            {c.type: c for c in p.conditions} for p in self.route(name, namespace, kind).parents
        ]

    def gateway_status(self, name: str, namespace: str = INFRA) -> GatewayStatus:
        for status in self.fleet.mesh.routing_state.binding.gateway_statuses:
            if (status.namespace, status.name) == (namespace, name):
                return status
        raise AssertionError(f"no status for Gateway {namespace}/{name}")

    # -- proxies ---------------------------------------------------------------------------

    def free_ports(self, count: int) -> list[int]:
        """`count` ports free on 127.0.0.1 now, distinct from each other and from every port
        this harness handed out before (a case's listeners bind theirs only once applied)."""
        ports: list[int] = []
        for _ in range(100 * count):
            port = free_port()
            if port not in self._handed_out:
                self._handed_out.add(port)
                ports.append(port)
                if len(ports) == count:
                    return ports
        raise AssertionError(f"no {count} free ports in {100 * count} tries")

    def free_port(self) -> int:
        """One port as `free_ports` gives them."""
        return self.free_ports(1)[0]

    def port(self, gateway: str) -> int:
        """The port of base Gateway `gateway`'s listener `http`."""
        return self._gateway_ports[gateway]

    def gateway(self, name: str = "same-namespace", namespace: str = INFRA) -> int:
        """Start (once) the ingress Envoy of Gateway `namespace/name`; its `http` port for a
        base Gateway (another Gateway's ports are the case's own)."""
        if name not in self._ingresses:
            metadata = proxy_metadata(namespace=namespace, role="ingress", gateway=name)
            self._start_envoy(f"gateway-{name}", metadata)
            self._ingresses[name] = self._gateway_ports.get(name, 0)
        return self._ingresses[name]

    def sidecar(self, namespace: str = MESH) -> int:
        """Start (once) a sidecar Envoy of a client in `namespace`; its outbound port."""
        if namespace not in self._sidecars:
            outbound = self.free_port()
            metadata = proxy_metadata(namespace=namespace, role="sidecar", outbound_port=outbound)
            self._start_envoy(f"sidecar-{namespace}", metadata)
            self._sidecars[namespace] = outbound
        return self._sidecars[namespace]

    def h2c_backend(self) -> str:
        """Start (once) the backend of Service `infra-backend-h2c`: an Envoy that speaks only
        HTTP/2 without TLS (prior knowledge) and answers every request itself, naming the
        protocol it was asked in (`x-backend-protocol`); returns its backend name."""
        if self._h2c is None:
            envoy = Envoy(
                self.workdir / H2C_BACKEND,
                node_id=H2C_BACKEND,
                view=CLUSTER,
                xds_port=0,
                mode="delta",
                binary=self._envoy_path,
                config=h2c_backend_bootstrap(self._h2c_port),
            )
            self.envoys.append(envoy)
            envoy.start()
            self._h2c = envoy
        return H2C_BACKEND

    def _start_envoy(self, node_id: str, metadata: dict[str, str]) -> Envoy:
        envoy = Envoy(
            self.workdir / node_id,
            node_id=node_id,
            view=CLUSTER,
            xds_port=self._xds_port,
            mode="delta",
            binary=self._envoy_path,
            metadata=metadata,
        )
        self.envoys.append(envoy)
        envoy.start()
        return envoy

    # -- traffic ---------------------------------------------------------------------------

    def send(self, port: int, request: Request) -> Answer:
        """One request; the answer says which backend answered and what it received."""
        request_id = f"r{next(self._ids)}"
        answer = send(port, request, request_id)
        backend = answer.headers.get("x-backend") if answer.status else None
        received = None
        if backend in self.backends:
            received = next(
                (
                    r
                    for r in self.backends[backend].received()
                    if r.headers.get(REQUEST_ID) == request_id
                ),
                None,
            )
        return Answer(answer.status, answer.body, answer.headers, backend, received, request_id)

    def received(self, backend: str, answer: Answer) -> Received | None:
        """What `backend` received of the request that got `answer` (a mirror's copy, say)."""
        copies = self.copies(backend, answer)
        return copies[0] if copies else None

    def copies(self, backend: str, answer: Answer) -> list[Received]:
        """Every copy of the request that got `answer` that `backend` received (retries)."""
        return [
            seen
            for seen in self.backends[backend].received()
            if seen.headers.get(REQUEST_ID) == answer.request_id
        ]

    def expect(
        self,
        port: int,
        request: Request,
        expected: Expected,
        timeout: float = TRAFFIC_TIMEOUT,
        consecutive: int = CONSECUTIVE,
    ) -> Answer:
        """Send `request` until its answer has been `expected` `consecutive` times in a row
        (bounded by `timeout`); fail with the last difference otherwise."""
        deadline = time.monotonic() + timeout
        in_a_row = 0
        problem = "no request sent"
        answer = Answer(0, "", {})
        for _ in range(int(timeout / 0.05) + consecutive):
            answer = self.send(port, request)
            problem_now = mismatch(answer, expected)
            if problem_now is None:
                in_a_row += 1
                if in_a_row == consecutive:
                    return answer
                continue
            in_a_row, problem = 0, problem_now
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"{request.method} {request.host}{request.path}: {problem}")

    def expect_all(self, port: int, cases: Sequence[tuple[Request, Expected]]) -> None:
        """`expect` each (request, expected) in turn."""
        for request, expected in cases:
            self.expect(port, request, expected)
