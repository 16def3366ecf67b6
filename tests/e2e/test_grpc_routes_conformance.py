"""GRPCRoute as the Gateway API conformance cases mean it, with real gRPC clients.

The upstream cases GRPCExactMethodMatching, GRPCRouteHeaderMatching and
GRPCRouteListenerHostnameMatching, written in kontinuum's fleet form: an ingress Gateway on a
real Envoy in front of real gRPC echo backends (`grpc_echo`), and the same routing in the mesh
(GAMMA: a GRPCRoute whose parent is the Service) for an Envoy sidecar and for a proxyless
grpcio client of `xds:///`. A call the routes do not match gets UNIMPLEMENTED, as gRPC reads
Envoy's 404. What is asserted is what a client sees: which backend answered, or the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from kontinuum.bootstrap import proxy_metadata
from tests.e2e import grpc_client, grpc_echo
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.e2e.grpc_echo import Call
from tests.support.fleet import cluster_profile, rewrite
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

NAMESPACE = "gateway-conformance-infra"
CLUSTER = "eu-central"
BACKENDS = ("grpc-infra-backend-v1", "grpc-infra-backend-v2", "grpc-infra-backend-v3")
V1, V2, V3 = (f"ok {name}" for name in BACKENDS)
UNIMPLEMENTED = "err UNIMPLEMENTED"
SERVICE_PORT = 8080
CONSISTENT_SECONDS = 20.0  # for the routes to be in force
CONSISTENT_ROUNDS = 3  # rounds that must all agree once they are


# --- the fleet ---------------------------------------------------------------------------------


def _backend(name: str, port: int, namespace: str = NAMESPACE) -> str:
    """A Service of one gRPC (h2c) port, as the conformance manifests declare theirs."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: grpc, port: {SERVICE_PORT}, protocol: TCP, appProtocol: kubernetes.io/h2c}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP, appProtocol: kubernetes.io/h2c}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


def _write_fleet(root: Path, backends: dict[str, int], documents: Sequence[str]) -> Path:
    (root / "clusters" / CLUSTER).mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile(CLUSTER, "eu-central-1"))
    for name, port in backends.items():
        (root / "clusters" / CLUSTER / f"{name}.yaml").write_text(_backend(name, port))
    (root / "routes.yaml").write_text("---\n".join(d.strip() + "\n" for d in documents))
    return root


def _gateway(name: str, listeners: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {NAMESPACE}
  labels: {{kontinuum.io/cluster: {CLUSTER}}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{listeners}"""


def _same_namespace(port: int) -> str:
    """The conformance suite's shared Gateway: one HTTP listener, any host."""
    same = "allowedRoutes: {namespaces: {from: Same}}"
    return _gateway("same-namespace", f"  - {{name: http, port: {port}, protocol: HTTP, {same}}}\n")


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    async with grpc_echo.echo_backends(BACKENDS) as ports:
        yield ports


# --- consistent outcomes -------------------------------------------------------------------------


async def consistently(
    round_of: Callable[[], Awaitable[list[str]]], expected: list[str], calls: Sequence[Call]
) -> None:
    """Rounds of calls until one gives `expected`, then CONSISTENT_ROUNDS more that do too."""
    deadline = time.monotonic() + CONSISTENT_SECONDS
    found: list[str] = []
    for _ in range(int(CONSISTENT_SECONDS / 0.1) + 1):
        found = await round_of()
        if found == expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    _assert_round(found, expected, calls)
    for _ in range(CONSISTENT_ROUNDS):
        _assert_round(await round_of(), expected, calls)


def _assert_round(found: list[str], expected: list[str], calls: Sequence[Call]) -> None:
    wrong = [
        f"{call}: {got!r}, expected {want!r}"
        for call, got, want in zip(calls, found, expected, strict=True)
        if got != want
    ]
    assert not wrong, "\n".join(wrong)


async def _through_gateway(
    root: Path, serve_fleet: ServeFleet, envoys: StartEnvoy, gateway: str
) -> None:
    served = await serve_fleet(root)
    for status in served.mesh.routing_state.binding.statuses:
        for parent in status.parents:
            assert [(c.type, c.status) for c in parent.conditions] == [
                ("Accepted", "True"),
                ("ResolvedRefs", "True"),
            ], (status.name, parent.conditions)
    envoys(
        view=CLUSTER,
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=NAMESPACE, role="ingress", gateway=gateway),
    )


# --- Gateway: GRPCExactMethodMatching ------------------------------------------------------------

EXACT_MATCHING = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: exact-matching, namespace: {NAMESPACE}}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches:
    - method: {{service: {grpc_echo.SERVICE}, method: Echo}}
    backendRefs: [{{name: grpc-infra-backend-v1, port: {SERVICE_PORT}}}]
  - matches:
    - method: {{service: {grpc_echo.SERVICE}, method: EchoTwo}}
    backendRefs: [{{name: grpc-infra-backend-v2, port: {SERVICE_PORT}}}]
"""

EXACT_CALLS = [Call("Echo"), Call("EchoTwo"), Call("EchoThree")]
EXACT_EXPECTED = [V1, V2, UNIMPLEMENTED]


async def test_gateway_exact_method_matching(
    tmp_path: Path, backends: dict[str, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    port = free_port()
    root = _write_fleet(tmp_path / "fleet", backends, [_same_namespace(port), EXACT_MATCHING])
    await _through_gateway(root, serve_fleet, envoys, "same-namespace")
    address = f"127.0.0.1:{port}"
    await consistently(
        lambda: grpc_echo.outcomes(address, EXACT_CALLS), EXACT_EXPECTED, EXACT_CALLS
    )


# --- Gateway: method matches by regular expression (extended: implementation-specific) -----------

ESCAPED_SERVICE = grpc_echo.SERVICE.replace(".", "\\.")
REGEX_MATCHING = rf"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: regex-matching, namespace: {NAMESPACE}}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches:
    - method:
        type: RegularExpression
        service: 'other\.Echo|{ESCAPED_SERVICE}'
        method: Echo|EchoT.o
    backendRefs: [{{name: grpc-infra-backend-v1, port: {SERVICE_PORT}}}]
  - matches:
    - method: {{type: RegularExpression, method: 'Echo(Three|Four)'}}
    backendRefs: [{{name: grpc-infra-backend-v2, port: {SERVICE_PORT}}}]
"""
# Each expression matches its whole part of `/<service>/<method>`: an alternation stays in it.
REGEX_CALLS = [
    Call("Echo"),
    Call("EchoTwo"),
    Call("EchoThree"),
    Call("EchoTwo", service="other.Echo"),
    Call("EchoThreeX"),
    Call("Echo", service=grpc_echo.SERVICE + "X"),
]
REGEX_EXPECTED = [V1, V1, V2, V1, UNIMPLEMENTED, UNIMPLEMENTED]


async def test_gateway_regular_expression_method_matching(
    tmp_path: Path, backends: dict[str, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    port = free_port()
    root = _write_fleet(tmp_path / "fleet", backends, [_same_namespace(port), REGEX_MATCHING])
    await _through_gateway(root, serve_fleet, envoys, "same-namespace")
    address = f"127.0.0.1:{port}"
    await consistently(
        lambda: grpc_echo.outcomes(address, REGEX_CALLS), REGEX_EXPECTED, REGEX_CALLS
    )


# --- Gateway: GRPCRouteHeaderMatching ------------------------------------------------------------


def _header_rule(backend: str, *matches: dict[str, str]) -> str:
    listed = ", ".join(
        "{headers: [" + ", ".join(f"{{name: {k}, value: {v}}}" for k, v in m.items()) + "]}"
        for m in matches
    )
    return f"""  - matches: [{listed}]
    backendRefs: [{{name: {backend}, port: {SERVICE_PORT}}}]
"""


HEADER_MATCHING = (
    f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-header-matching, namespace: {NAMESPACE}}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
"""
    + _header_rule(BACKENDS[0], {"version": "one"})
    + _header_rule(BACKENDS[1], {"version": "two"})
    + _header_rule(BACKENDS[0], {"version": "two", "color": "orange"})
    + _header_rule(BACKENDS[0], {"color": "blue"}, {"color": "green"})
    + _header_rule(BACKENDS[1], {"color": "red"}, {"color": "yellow"})
)

HEADER_CASES: list[tuple[dict[str, str], str]] = [
    ({"version": "one"}, V1),
    ({"version": "two"}, V2),
    ({"version": "two", "color": "orange"}, V1),  # two header matches win over one
    ({"version": "two", "color": "blue"}, V2),  # a tie: the earlier rule
    ({"color": "orange"}, UNIMPLEMENTED),
    ({"some-other-header": "one"}, UNIMPLEMENTED),
    ({"color": "blue"}, V1),
    ({"color": "green"}, V1),
    ({"color": "red"}, V2),
    ({"color": "yellow"}, V2),
    ({"color": "purple"}, UNIMPLEMENTED),
]
HEADER_CALLS = [Call("Echo", tuple(headers.items())) for headers, _ in HEADER_CASES]
HEADER_EXPECTED = [outcome for _, outcome in HEADER_CASES]


async def test_gateway_header_matching(
    tmp_path: Path, backends: dict[str, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    port = free_port()
    root = _write_fleet(tmp_path / "fleet", backends, [_same_namespace(port), HEADER_MATCHING])
    await _through_gateway(root, serve_fleet, envoys, "same-namespace")
    address = f"127.0.0.1:{port}"
    await consistently(
        lambda: grpc_echo.outcomes(address, HEADER_CALLS), HEADER_EXPECTED, HEADER_CALLS
    )


# --- Gateway: GRPCRouteListenerHostnameMatching --------------------------------------------------


def _hostname_gateway(port: int) -> str:
    listeners = "".join(
        f"  - {{name: listener-{i}, port: {port}, protocol: HTTP, hostname: {host!r}}}\n"
        for i, host in enumerate(("bar.com", "foo.bar.com", "*.bar.com", "*.foo.com"), start=1)
    )
    return _gateway("grpcroute-listener-hostname-matching", listeners)


def _listener_route(name: str, backend: str, *sections: str) -> str:
    parents = "".join(
        f"  - {{name: grpcroute-listener-hostname-matching, sectionName: {s}}}\n" for s in sections
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  parentRefs:
{parents}  rules:
  - backendRefs: [{{name: {backend}, port: {SERVICE_PORT}}}]
"""


HOSTNAME_CASES = [
    ("bar.com", V1),
    ("foo.bar.com", V2),
    ("baz.bar.com", V3),
    ("boo.bar.com", V3),
    ("multiple.prefixes.bar.com", V3),
    ("multiple.prefixes.foo.com", V3),
    ("foo.com", UNIMPLEMENTED),
    ("no.matching.host", UNIMPLEMENTED),
]
HOSTNAME_CALLS = [Call("Echo", authority=host) for host, _ in HOSTNAME_CASES]
HOSTNAME_EXPECTED = [outcome for _, outcome in HOSTNAME_CASES]


async def test_gateway_listener_hostname_matching(
    tmp_path: Path, backends: dict[str, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    port = free_port()
    documents = [
        _hostname_gateway(port),
        _listener_route("backend-v1", BACKENDS[0], "listener-1"),
        _listener_route("backend-v2", BACKENDS[1], "listener-2"),
        _listener_route("backend-v3", BACKENDS[2], "listener-3", "listener-4"),
    ]
    root = _write_fleet(tmp_path / "fleet", backends, documents)
    await _through_gateway(root, serve_fleet, envoys, "grpcroute-listener-hostname-matching")
    address = f"127.0.0.1:{port}"
    await consistently(
        lambda: grpc_echo.outcomes(address, HOSTNAME_CALLS), HOSTNAME_EXPECTED, HOSTNAME_CALLS
    )


# --- Mesh (GAMMA): the same routes with the Service `echo` as their parent -----------------------

MESH_SERVICE = "echo"
MESH_AUTHORITY = f"{MESH_SERVICE}:{SERVICE_PORT}"  # the short name, as the mesh cases call it
MESH_HOST = f"{MESH_SERVICE}.{NAMESPACE}.svc.cluster.local:{SERVICE_PORT}"
MESH_PARENT = f'{{group: "", kind: Service, name: {MESH_SERVICE}, port: {SERVICE_PORT}}}'


def _mesh_route(route: str) -> str:
    """`route` attached to the Service `echo` instead of the Gateway `same-namespace`."""
    return route.replace("  - name: same-namespace\n", f"  - {MESH_PARENT}\n")


async def _mesh_fleet(
    root: Path, backends: dict[str, int], route: str, serve_fleet: ServeFleet
) -> int:
    """The fleet with `echo` (served by backend v3 when no route matches... none does) and
    `route` on it: the xDS port."""
    ports = {**backends, MESH_SERVICE: backends[BACKENDS[2]]}
    served = await serve_fleet(_write_fleet(root, ports, [_mesh_route(route)]))
    (status,) = served.mesh.routing_state.binding.statuses
    (parent,) = status.parents
    assert [(c.type, c.status) for c in parent.conditions] == [
        ("Accepted", "True"),
        ("ResolvedRefs", "True"),
    ], parent.conditions
    return served.xds_port


async def _sidecar(envoys: StartEnvoy, xds_port: int) -> str:
    """A sidecar of the namespace in eu-central: the address of its outbound listener."""
    outbound = free_port()
    envoy = envoys(
        view=CLUSTER,
        xds_port=xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=NAMESPACE, role="sidecar", outbound_port=outbound),
    )
    await asyncio.to_thread(envoy.wait_live, 15)
    return f"127.0.0.1:{outbound}"


MESH_CASES = [
    pytest.param(EXACT_MATCHING, EXACT_CALLS, EXACT_EXPECTED, id="exact-method"),
    pytest.param(HEADER_MATCHING, HEADER_CALLS, HEADER_EXPECTED, id="headers"),
]


@pytest.mark.parametrize(("route", "calls", "expected"), MESH_CASES)
async def test_mesh_sidecar(
    tmp_path: Path,
    backends: dict[str, int],
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
    route: str,
    calls: list[Call],
    expected: list[str],
) -> None:
    xds_port = await _mesh_fleet(tmp_path / "fleet", backends, route, serve_fleet)
    address = await _sidecar(envoys, xds_port)
    calls = [Call(c.method, c.metadata, MESH_AUTHORITY) for c in calls]
    await consistently(lambda: grpc_echo.outcomes(address, calls), expected, calls)


# A proxyless client has no answer of its own for a call no route matches: gRPC fails it
# with UNAVAILABLE (there is no Envoy to answer 404).
PROXYLESS_UNMATCHED = "err UNAVAILABLE"


@pytest.mark.parametrize(("route", "calls", "expected"), MESH_CASES)
async def test_mesh_proxyless(
    tmp_path: Path,
    backends: dict[str, int],
    serve_fleet: ServeFleet,
    route: str,
    calls: list[Call],
    expected: list[str],
) -> None:
    xds_port = await _mesh_fleet(tmp_path / "fleet", backends, route, serve_fleet)
    bootstrap = grpc_client.write_bootstrap(
        tmp_path / "bootstrap.json",
        xds_port,
        node_id="proxyless-1",
        cluster=CLUSTER,
        namespace=NAMESPACE,
    )
    expected = [PROXYLESS_UNMATCHED if e == UNIMPLEMENTED else e for e in expected]
    async with proxyless_rounds(tmp_path, bootstrap, f"xds:///{MESH_HOST}", calls) as next_round:
        await consistently(next_round, expected, calls)


@contextlib.asynccontextmanager
async def proxyless_rounds(
    tmp_path: Path, bootstrap: Path, target: str, calls: Sequence[Call]
) -> AsyncIterator[Callable[[], Awaitable[list[str]]]]:
    """The `grpc_echo` client in a subprocess calling `target`: a function giving its next
    round of outcomes."""
    stderr_path = tmp_path / "client.stderr"
    env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONUNBUFFERED": "1"}
    env.update({k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ})
    argv = [sys.executable, grpc_echo.__file__, target, "--seconds", "60"]
    argv += ["--calls", json.dumps([c.to_json() for c in calls])]
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )

    async def next_round() -> list[str]:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), CONSISTENT_SECONDS)
        except TimeoutError:
            line = b""
        if not line:
            tail = stderr_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the proxyless client said nothing more; stderr:\n{tail}")
        return list(json.loads(line))

    try:
        yield next_round
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# --- Gateway: an HTTPRoute and a GRPCRoute on one hostname (GEP-1016 cross serving) -------------


def _cross_route(kind: str, name: str, backend: str, created: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata: {{name: {name}, namespace: {NAMESPACE}, creationTimestamp: "{created}"}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [grpc.example.com]
  rules:
  - backendRefs: [{{name: {backend}, port: {SERVICE_PORT}}}]
"""


async def test_gateway_an_http_route_keeps_its_hostname_from_a_newer_grpc_route(
    tmp_path: Path, backends: dict[str, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    """The older HTTPRoute serves the host (a gRPC call is HTTP/2: it reaches v1 through the
    HTTPRoute); the newer GRPCRoute is not accepted, and takes over once the HTTPRoute goes."""
    port = free_port()
    http_route = _cross_route("HTTPRoute", "web", BACKENDS[0], "2026-01-01T00:00:00Z")
    grpc_route = _cross_route("GRPCRoute", "api", BACKENDS[1], "2026-01-02T00:00:00Z")
    root = _write_fleet(
        tmp_path / "fleet", backends, [_same_namespace(port), http_route, grpc_route]
    )
    served = await serve_fleet(root)
    accepted = {
        s.kind: s.parents[0].conditions[0] for s in served.mesh.routing_state.binding.statuses
    }
    assert (accepted["HTTPRoute"].status, accepted["GRPCRoute"].status) == ("True", "False")
    assert accepted["GRPCRoute"].reason == "HostnameConflict"
    envoys(
        view=CLUSTER,
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=NAMESPACE, role="ingress", gateway="same-namespace"),
    )
    address = f"127.0.0.1:{port}"
    calls = [
        Call("Echo", authority="grpc.example.com"),
        Call("EchoTwo", authority="grpc.example.com"),
    ]
    await consistently(lambda: grpc_echo.outcomes(address, calls), [V1, V1], calls)

    rewrite(root / "routes.yaml", "---\n".join([_same_namespace(port), grpc_route]))
    await consistently(lambda: grpc_echo.outcomes(address, calls), [V2, V2], calls)
    (status,) = served.mesh.routing_state.binding.statuses
    assert status.parents[0].conditions[0].status == "True"
