"""Mesh gRPC conformance (MESH-GRPC, GAMMA): GRPCRoutes whose parent is the Service
`grpc-echo` (upstream's mesh `echo` on its gRPC port 7070, see `grpc_base`), called by real
gRPC clients two ways: through a client's Envoy sidecar, and as a proxyless grpcio client of
`xds:///` with its own xDS client. The backends `grpc-echo-v1` and `grpc-echo-v2` declare
no appProtocol, only the port name `grpc`, as upstream's do.

Upstream's mesh gRPC cases (MeshGRPCRouteWeight, MeshGRPCRouteRequestHeaderModifier) and
the Gateway gRPC matching cases in mesh form. A call no route matches gets UNIMPLEMENTED
through a sidecar (Envoy's 404) and UNAVAILABLE from a proxyless client (gRPC's own
"no matching route": there is no proxy to answer).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.base import MESH, MESH_CONSUMER
from tests.conformance.grpc_base import (
    NO_ROUTE_PROXYLESS,
    UNIMPLEMENTED,
    GrpcExpected,
    ProxylessRounds,
    assert_split,
    expect_rounds,
    grpc_base,
    ok,
    through,
    weighted_split,
)
from tests.conformance.harness import TRAFFIC_TIMEOUT, Conformance
from tests.e2e.grpc_echo import SERVICE, Call

pytestmark = pytest.mark.e2e

PARENT = "grpc-echo"
PORT = 7070
AUTHORITY = f"{PARENT}:{PORT}"  # the short name a client of the namespace uses
TARGET = f"xds:///{PARENT}.{MESH}.svc.cluster.local:{PORT}"
V1, V2 = "grpc-echo-v1", "grpc-echo-v2"


@pytest.fixture(scope="module", autouse=True)
def grpc_backends(conformance: Conformance) -> Iterator[None]:
    with grpc_base(conformance):
        yield


def mesh_route(name: str, rules: str) -> str:
    """A GRPCRoute of the mesh namespace attached to `grpc-echo` port 7070."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: {MESH}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {PARENT}, port: {PORT}}}]
  rules:
{rules}"""


def apply_accepted(conformance: Conformance, route: str, name: str) -> None:
    assert conformance.apply(route) == ()
    (parent,) = conformance.parent_conditions(name, MESH, "GRPCRoute")
    assert (parent["Accepted"].status, parent["ResolvedRefs"].status) == ("True", "True"), parent


def through_sidecar(conformance: Conformance, cases: list[tuple[Call, GrpcExpected]]) -> None:
    calls = [Call(c.method, c.metadata, AUTHORITY, c.service) for c, _ in cases]
    address = f"127.0.0.1:{conformance.sidecar()}"
    expect_rounds(through(address, calls), list(zip(calls, (e for _, e in cases), strict=True)))


def proxyless(
    conformance: Conformance, tmp_path: Path, cases: list[tuple[Call, GrpcExpected]]
) -> None:
    client = ProxylessRounds(tmp_path, conformance.xds_port, MESH, TARGET)
    wanted = [
        (call, GrpcExpected(NO_ROUTE_PROXYLESS) if e.outcome == UNIMPLEMENTED else e)
        for call, e in cases
    ]
    with client.calling([call for call, _ in cases]) as next_round:
        expect_rounds(next_round, wanted)


# --- the cases ---------------------------------------------------------------------------------


def test_without_a_route_a_call_reaches_a_version(conformance: Conformance) -> None:
    """As MeshBasic for gRPC: no route, and `grpc-echo` is its two versions' endpoints.
    First of the module: the case file is still empty (the harness cannot empty it)."""
    calls = [Call("Echo", authority=AUTHORITY)]
    address = f"127.0.0.1:{conformance.sidecar()}"
    versions = {f"ok {V1}", f"ok {V2}"}
    for _ in range(int(TRAFFIC_TIMEOUT / 0.05)):  # until the new sidecar has its routes
        if through(address, calls)()[0].outcome in versions:
            break
        time.sleep(0.05)
    seen = Counter(r.outcome for _ in range(20) for r in through(address, calls)())
    assert set(seen) == versions, seen  # both versions, and nothing else


EXACT = mesh_route(
    "mesh-grpc-exact",
    f"""  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: {V1}, port: {PORT}}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: {V2}, port: {PORT}}}]
""",
)
EXACT_CASES = [
    (Call("Echo"), ok(V1)),
    (Call("EchoTwo"), ok(V2)),
    (Call("EchoThree"), GrpcExpected(UNIMPLEMENTED)),
]

HEADERS = mesh_route(
    "mesh-grpc-headers",
    f"""  - matches: [{{headers: [{{name: version, value: one}}]}}]
    backendRefs: [{{name: {V1}, port: {PORT}}}]
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: {V2}, port: {PORT}}}]
  - matches: [{{headers: [{{name: version, value: two}}, {{name: color, value: orange}}]}}]
    backendRefs: [{{name: {V1}, port: {PORT}}}]
  - matches: [{{headers: [{{name: color, value: '^(red|yellow)$', type: RegularExpression}}]}}]
    backendRefs: [{{name: {V2}, port: {PORT}}}]
""",
)
HEADER_CASES = [
    (Call("Echo", (("version", "one"),)), ok(V1)),
    (Call("Echo", (("version", "two"),)), ok(V2)),
    (Call("Echo", (("version", "two"), ("color", "orange"))), ok(V1)),
    (Call("Echo", (("color", "yellow"),)), ok(V2)),
    (Call("Echo", (("color", "purple"),)), GrpcExpected(UNIMPLEMENTED)),
    (Call("Echo"), GrpcExpected(UNIMPLEMENTED)),
]

MATCHING = [
    pytest.param(EXACT, "mesh-grpc-exact", EXACT_CASES, id="exact-method"),
    pytest.param(HEADERS, "mesh-grpc-headers", HEADER_CASES, id="headers"),
]


@pytest.mark.parametrize(("route", "name", "cases"), MATCHING)
def test_matching_through_a_sidecar(
    conformance: Conformance, route: str, name: str, cases: list[tuple[Call, GrpcExpected]]
) -> None:
    apply_accepted(conformance, route, name)
    through_sidecar(conformance, cases)


@pytest.mark.parametrize(("route", "name", "cases"), MATCHING)
def test_matching_for_a_proxyless_client(
    conformance: Conformance,
    tmp_path: Path,
    route: str,
    name: str,
    cases: list[tuple[Call, GrpcExpected]],
) -> None:
    apply_accepted(conformance, route, name)
    proxyless(conformance, tmp_path, cases)


def test_request_header_modifier_through_a_sidecar(conformance: Conformance) -> None:
    """MeshGRPCRouteRequestHeaderModifier: set, add and remove on what the backend receives,
    the rule chosen by a header."""
    modifier = "    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{{0}}}}}]\n"

    def rule(case: str, backend: str, body: str) -> str:
        return (
            f"  - matches: [{{headers: [{{name: x-test-case, value: {case}}}]}}]\n"
            + modifier.format(body)
            + f"    backendRefs: [{{name: {backend}, port: {PORT}}}]\n"
        )

    rules = (
        rule("set", V1, "set: [{name: x-header-set, value: set-overwrites-values}]")
        + rule("add", V1, "add: [{name: x-header-add, value: add-appends-values}]")
        + rule("remove", V1, "remove: [x-header-remove]")
        + rule(
            "multi",
            V2,
            "set: [{name: x-header-set-1, value: header-set-1}, "
            "{name: x-header-set-2, value: header-set-2}], "
            "add: [{name: x-header-add-1, value: header-add-1}, "
            "{name: x-header-add-2, value: header-add-2}], "
            "remove: [x-header-remove-1, x-header-remove-2]",
        )
    )
    apply_accepted(
        conformance,
        mesh_route("grpc-request-header-modifier", rules),
        "grpc-request-header-modifier",
    )
    set_call = Call(
        "Echo",
        (
            ("x-test-case", "set"),
            ("some-other-header", "this-header-should-be-set"),
            ("x-header-set", "this-value-should-be-overwritten"),
        ),
    )
    add_call = Call(
        "Echo", (("x-test-case", "add"), ("x-header-add", "this-value-should-be-appended"))
    )
    remove_call = Call(
        "Echo", (("x-test-case", "remove"), ("x-header-remove", "this-should-be-removed"))
    )
    multi_call = Call(
        "Echo",
        (
            ("x-test-case", "multi"),
            ("x-header-set-2", "set-header-2"),
            ("x-header-add-2", "add-header-2"),
            ("x-header-remove-2", "should-be-removed-2"),
        ),
    )
    cases = [
        (
            set_call,
            ok(V1, **{"some-other-header": "this-header-should-be-set",
                      "x-header-set": "set-overwrites-values"}),
        ),
        (add_call, ok(V1, **{"x-header-add": "this-value-should-be-appended,add-appends-values"})),
        (remove_call, GrpcExpected(f"ok {V1}", {"x-test-case": "remove"}, ("x-header-remove",))),
        (
            multi_call,
            GrpcExpected(
                f"ok {V2}",
                {"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2",
                 "x-header-add-1": "header-add-1", "x-header-add-2": "add-header-2,header-add-2"},
                ("x-header-remove-1", "x-header-remove-2"),
            ),
        ),
    ]  # fmt: skip
    through_sidecar(conformance, cases)


WEIGHTED = mesh_route(
    "mesh-grpc-weighted-backends",
    f"""  - backendRefs:
    - {{name: {V1}, port: {PORT}, weight: 70}}
    - {{name: {V2}, port: {PORT}, weight: 30}}
    - {{name: {PARENT}, port: {PORT}, weight: 0}}
""",
)
# First a route sending every call to v2 (see `weighted_split`).
ALL_TO_V2 = mesh_route(
    "mesh-grpc-weighted-backends", f"  - backendRefs: [{{name: {V2}, port: {PORT}}}]\n"
)
ROUND_CALLS = 20


def test_weight_through_a_sidecar(conformance: Conformance) -> None:
    """MeshGRPCRouteWeight: the calls split 70/30 between the versions; weight 0 (the parent
    itself, which reaches both) gets none."""
    address = f"127.0.0.1:{conformance.sidecar()}"
    calls = [Call("Echo", authority=AUTHORITY)] * ROUND_CALLS
    split = weighted_split(conformance, through(address, calls), ALL_TO_V2, WEIGHTED, ok(V2))
    assert_split(split, V1, V2)


def test_weight_for_a_proxyless_client(conformance: Conformance, tmp_path: Path) -> None:
    assert conformance.apply(ALL_TO_V2) == ()
    client = ProxylessRounds(tmp_path, conformance.xds_port, MESH, TARGET)
    with client.calling([Call("Echo")] * ROUND_CALLS) as next_round:
        split = weighted_split(conformance, next_round, ALL_TO_V2, WEIGHTED, ok(V2))
    assert_split(split, V1, V2)


def test_a_grpc_route_and_an_http_route_on_one_service_port(conformance: Conformance) -> None:
    """GEP-1294 route types: of an HTTPRoute and a GRPCRoute on one Service port, only the
    GRPCRoute applies; the HTTPRoute is Conflicted, its rules nowhere in force."""
    http_route = f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mesh-http, namespace: {MESH}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {PARENT}, port: {PORT}}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /{SERVICE}/EchoThree}}}}]
    backendRefs: [{{name: {V1}, port: {PORT}}}]
"""
    grpc_route = mesh_route(
        "mesh-grpc",
        f"""  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: {V2}, port: {PORT}}}]
""",
    )
    assert conformance.apply(http_route, grpc_route) == ()
    (http,) = conformance.parent_conditions("mesh-http", MESH)
    (grpc,) = conformance.parent_conditions("mesh-grpc", MESH, "GRPCRoute")
    assert (http["Accepted"].status, http["Accepted"].reason) == ("False", "Conflicted")
    assert grpc["Accepted"].status == "True"
    through_sidecar(
        conformance,
        [(Call("Echo"), ok(V2)), (Call("EchoThree"), GrpcExpected(UNIMPLEMENTED))],
    )


def test_a_consumer_route(conformance: Conformance, tmp_path: Path) -> None:
    """MeshConsumerRoute for gRPC (GEP-1294): a GRPCRoute of the caller's namespace on
    another namespace's Service applies to that namespace's callers, sidecar or proxyless,
    in place of the producer route, which still applies to everyone else."""
    producer = mesh_route("producer", f"  - backendRefs: [{{name: {V1}, port: {PORT}}}]\n")
    consumer = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: consumer, namespace: {MESH_CONSUMER}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {PARENT}, namespace: {MESH}, port: {PORT}}}]
  rules:
  - backendRefs: [{{name: {V2}, namespace: {MESH}, port: {PORT}}}]
"""
    assert conformance.apply(producer, consumer) == ()
    (parent,) = conformance.parent_conditions("consumer", MESH_CONSUMER, "GRPCRoute")
    assert (parent["Accepted"].status, parent["ResolvedRefs"].status) == ("True", "True"), parent
    call = Call("Echo", authority=f"{PARENT}.{MESH}:{PORT}")
    for namespace, backend in ((MESH_CONSUMER, V2), (MESH, V1)):
        address = f"127.0.0.1:{conformance.sidecar(namespace)}"
        expect_rounds(through(address, [call]), [(call, ok(backend))])
    client = ProxylessRounds(tmp_path, conformance.xds_port, MESH_CONSUMER, TARGET)
    with client.calling([Call("Echo")]) as next_round:
        expect_rounds(next_round, [(Call("Echo"), ok(V2))])
