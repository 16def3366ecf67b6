"""Gateway gRPC conformance (GATEWAY-GRPC): GRPCRoutes on the base Gateways, called by real
gRPC clients through the ingress Envoy, as upstream's GRPCRoute cases check, and what the
GRPCRoute spec says besides (regular expressions, cross serving with HTTPRoutes).

A call that no route matches gets Envoy's 404, which gRPC reads as UNIMPLEMENTED, as the
upstream cases expect.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.base import INFRA, case_gateway
from tests.conformance.grpc_base import (
    UNIMPLEMENTED,
    GrpcExpected,
    assert_split,
    expect_rounds,
    grpc_base,
    ok,
    through,
    weighted_split,
)
from tests.conformance.harness import Conformance
from tests.e2e import grpc_echo
from tests.e2e.grpc_echo import SERVICE, Call
from tests.support.net import free_port
from tests.support.server_certs import TestCa, tls_secret

pytestmark = pytest.mark.e2e

V1, V2, V3 = (f"grpc-infra-backend-v{n}" for n in (1, 2, 3))
NOT_FOUND = GrpcExpected(UNIMPLEMENTED)


@pytest.fixture(scope="module", autouse=True)
def grpc_backends(conformance: Conformance) -> Iterator[None]:
    with grpc_base(conformance):
        yield


def grpc_route(
    name: str,
    rules: str,
    *,
    parents: str = "[{name: same-namespace}]",
    hostnames: str | None = None,
    created: str | None = None,
    kind: str = "GRPCRoute",
) -> str:
    """A route of the infra namespace: `rules` is the YAML list under `spec.rules`."""
    meta = f', creationTimestamp: "{created}"' if created else ""
    hostnames_field = "" if hostnames is None else f"\n  hostnames: {hostnames}"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata: {{name: {name}, namespace: {INFRA}{meta}}}
spec:
  parentRefs: {parents}{hostnames_field}
  rules:
{rules}"""


def method_rule(backend: str, method: str, service: str = SERVICE, name: str = "") -> str:
    named = f"name: {name}\n    " if name else ""
    return f"""  - {named}matches:
    - method: {{service: {service}, method: {method}}}
    backendRefs: [{{name: {backend}, port: 8080}}]
"""


def accepted(conformance: Conformance, name: str) -> None:
    for parent in conformance.parent_conditions(name, kind="GRPCRoute"):
        assert (parent["Accepted"].status, parent["ResolvedRefs"].status) == ("True", "True"), (
            parent
        )


def expect(port: int, cases: list[tuple[Call, GrpcExpected]]) -> None:
    expect_rounds(through(f"127.0.0.1:{port}", [call for call, _ in cases]), cases)


def test_exact_method_matching(conformance: Conformance) -> None:
    """GRPCExactMethodMatching: `Echo` to v1, `EchoTwo` to v2; `EchoThree`, matched by no
    rule, is UNIMPLEMENTED."""
    conformance.apply(
        grpc_route("exact-matching", method_rule(V1, "Echo") + method_rule(V2, "EchoTwo"))
    )
    accepted(conformance, "exact-matching")
    expect(
        conformance.gateway("same-namespace"),
        [(Call("Echo"), ok(V1)), (Call("EchoTwo"), ok(V2)), (Call("EchoThree"), NOT_FOUND)],
    )


def test_named_rule(conformance: Conformance) -> None:
    """GRPCRouteNamedRule: a rule's `name` is accepted and changes nothing about routing."""
    conformance.apply(
        grpc_route(
            "grpc-named-rules",
            method_rule(V1, "Echo", name="named-rule") + method_rule(V2, "EchoTwo"),
        )
    )
    accepted(conformance, "grpc-named-rules")
    expect(
        conformance.gateway("same-namespace"),
        [(Call("Echo"), ok(V1)), (Call("EchoTwo"), ok(V2))],
    )


def _header_rule(backend: str, *matches: dict[str, str]) -> str:
    listed = ", ".join(
        "{headers: [" + ", ".join(f"{{name: {k}, value: {v}}}" for k, v in m.items()) + "]}"
        for m in matches
    )
    return f"""  - matches: [{listed}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""


def test_header_matching(conformance: Conformance) -> None:
    """GRPCRouteHeaderMatching: every header of a match must be there; the match with more
    headers wins, then the earlier rule; a call matching none is UNIMPLEMENTED."""
    conformance.apply(
        grpc_route(
            "grpc-header-matching",
            _header_rule(V1, {"version": "one"})
            + _header_rule(V2, {"version": "two"})
            + _header_rule(V1, {"version": "two", "color": "orange"})
            + _header_rule(V1, {"color": "blue"}, {"color": "green"})
            + _header_rule(V2, {"color": "red"}, {"color": "yellow"}),
        )
    )
    accepted(conformance, "grpc-header-matching")
    cases: list[tuple[dict[str, str], GrpcExpected]] = [
        ({"version": "one"}, ok(V1)),
        ({"version": "two"}, ok(V2)),
        ({"version": "two", "color": "orange"}, ok(V1)),
        ({"version": "two", "color": "blue"}, ok(V2)),
        ({"color": "orange"}, NOT_FOUND),
        ({"some-other-header": "one"}, NOT_FOUND),
        ({"color": "blue"}, ok(V1)),
        ({"color": "green"}, ok(V1)),
        ({"color": "red"}, ok(V2)),
        ({"color": "yellow"}, ok(V2)),
        ({"color": "purple"}, NOT_FOUND),
    ]
    expect(
        conformance.gateway("same-namespace"),
        [(Call("Echo", tuple(headers.items())), want) for headers, want in cases],
    )


def test_listener_hostname_matching(conformance: Conformance) -> None:
    """GRPCRouteListenerHostnameMatching: four listeners on one port with different hostnames,
    a route on each by sectionName; the `:authority` picks the listener (an exact hostname
    before a wildcard), and one no listener has is UNIMPLEMENTED."""
    port = free_port()
    name = "grpcroute-listener-hostname-matching"
    listeners = "".join(
        f"  - {{name: listener-{i}, port: {port}, protocol: HTTP, hostname: '{host}'}}\n"
        for i, host in enumerate(("bar.com", "foo.bar.com", "*.bar.com", "*.foo.com"), start=1)
    )

    def on(*sections: str) -> str:
        return "[" + ", ".join(f"{{name: {name}, sectionName: {s}}}" for s in sections) + "]"

    def to(backend: str) -> str:
        return f"  - backendRefs: [{{name: {backend}, port: 8080}}]\n"

    conformance.apply(
        case_gateway(name, listeners),
        grpc_route("backend-v1", to(V1), parents=on("listener-1")),
        grpc_route("backend-v2", to(V2), parents=on("listener-2")),
        grpc_route("backend-v3", to(V3), parents=on("listener-3", "listener-4")),
    )
    for route in ("backend-v1", "backend-v2", "backend-v3"):
        accepted(conformance, route)
    conformance.gateway(name)
    cases = [
        ("bar.com", ok(V1)),
        ("foo.bar.com", ok(V2)),
        ("baz.bar.com", ok(V3)),
        ("boo.bar.com", ok(V3)),
        ("multiple.prefixes.bar.com", ok(V3)),
        ("multiple.prefixes.foo.com", ok(V3)),
        ("foo.com", NOT_FOUND),
        ("no.matching.host", NOT_FOUND),
    ]
    expect(port, [(Call("Echo", authority=host), want) for host, want in cases])


def test_request_header_modifier(conformance: Conformance) -> None:
    """GRPCRouteRequestHeaderModifier: set overwrites, add appends, remove removes, on the
    metadata the backend receives; of rules with the same match the first applies."""
    modifier = "    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{{0}}}}}]\n"
    rules = "".join(
        method_rule(backend, method).replace(
            "    backendRefs", modifier.format(body) + "    backendRefs"
        )
        for backend, method, body in (
            (V1, "Echo", "set: [{name: X-Header-Set, value: set-overwrites-values}]"),
            (V1, "Echo", "add: [{name: X-Header-Add, value: add-appends-values}]"),
            (V1, "Echo", "remove: [X-Header-Remove]"),
            (
                V2,
                "EchoTwo",
                "set: [{name: X-Header-Set-1, value: header-set-1}, "
                "{name: X-Header-Set-2, value: header-set-2}], "
                "add: [{name: X-Header-Add-1, value: header-add-1}, "
                "{name: X-Header-Add-2, value: header-add-2}], "
                "remove: [X-Header-Remove-1, X-Header-Remove-2]",
            ),
        )
    )
    conformance.apply(grpc_route("grpc-request-header-modifier", rules))
    accepted(conformance, "grpc-request-header-modifier")
    cases = [
        (
            Call("Echo", (("some-other-header", "val"), ("x-header-set", "some-other-value"))),
            GrpcExpected(
                f"ok {V1}", {"some-other-header": "val", "x-header-set": "set-overwrites-values"}
            ),
        ),
        (
            Call("EchoTwo", (("x-header-set-2", "set-val-2"), ("x-header-add-2", "add-val-2"),
                             ("x-header-remove-2", "remove-val-2"))),
            GrpcExpected(
                f"ok {V2}",
                {
                    "x-header-set-1": "header-set-1",
                    "x-header-set-2": "header-set-2",
                    "x-header-add-1": "header-add-1",
                    "x-header-add-2": "add-val-2,header-add-2",
                },
                absent=("x-header-remove-1", "x-header-remove-2"),
            ),
        ),
    ]  # fmt: skip
    expect(conformance.gateway("same-namespace"), cases)


ESCAPED_SERVICE = SERVICE.replace(".", "\\.")


def test_regular_expression_method_matching(conformance: Conformance) -> None:
    """Method matches of type RegularExpression (implementation-specific): the service's and
    the method's expressions each match their whole part of `/<service>/<method>`, so an
    alternation stays inside it; an absent one matches any name."""
    rules = f"""  - matches:
    - method:
        type: RegularExpression
        service: 'other\\.Echo|{ESCAPED_SERVICE}'
        method: 'Echo|EchoT.o'
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches:
    - method: {{type: RegularExpression, method: 'Echo(Three|Four)'}}
    backendRefs: [{{name: {V2}, port: 8080}}]
"""
    conformance.apply(grpc_route("regex-matching", rules))
    accepted(conformance, "regex-matching")
    expect(
        conformance.gateway("same-namespace"),
        [
            (Call("Echo"), ok(V1)),
            (Call("EchoTwo"), ok(V1)),
            (Call("EchoThree"), ok(V2)),
            (Call("EchoTwo", service="other.Echo"), ok(V1)),
            (Call("EchoThreeX"), NOT_FOUND),
            (Call("Echo", service=SERVICE + "X"), NOT_FOUND),
        ],
    )


def test_an_http_route_and_a_grpc_route_never_share_a_hostname(conformance: Conformance) -> None:
    """Cross serving (GEP-1016): the older of an HTTPRoute and a GRPCRoute with a common
    hostname on a listener holds it (a gRPC call, HTTP/2, then takes the HTTPRoute's rule);
    the other is Accepted=False, and takes over once the older one is gone."""
    hostnames = "[grpc.example.com]"
    rule = "  - backendRefs: [{{name: {0}, port: 8080}}]\n"
    http_route = grpc_route(
        "web",
        rule.format(V1),
        hostnames=hostnames,
        created="2026-01-01T00:00:00Z",
        kind="HTTPRoute",
    )
    newer_grpc = grpc_route(
        "api", rule.format(V2), hostnames=hostnames, created="2026-01-02T00:00:00Z"
    )
    conformance.apply(http_route, newer_grpc)
    (web,) = conformance.parent_conditions("web")
    (api,) = conformance.parent_conditions("api", kind="GRPCRoute")
    assert web["Accepted"].status == "True"
    assert (api["Accepted"].status, api["Accepted"].reason) == ("False", "HostnameConflict")
    calls = [
        Call("Echo", authority="grpc.example.com"),
        Call("EchoTwo", authority="grpc.example.com"),
    ]
    port = conformance.gateway("same-namespace")
    expect(port, [(call, ok(V1)) for call in calls])

    conformance.apply(newer_grpc)
    accepted(conformance, "api")
    expect(port, [(call, ok(V2)) for call in calls])


def test_weight(conformance: Conformance) -> None:
    """GRPCRouteWeight: calls split 70/30 between v1 and v2; v3, of weight 0, gets none."""
    weights = "  - backendRefs:\n" + "".join(
        f"    - {{name: {backend}, port: 8080, weight: {weight}}}\n"
        for backend, weight in ((V1, 70), (V2, 30), (V3, 0))
    )
    only_v2 = f"  - backendRefs: [{{name: {V2}, port: 8080}}]\n"
    port = conformance.gateway("same-namespace")
    split = weighted_split(
        conformance,
        through(f"127.0.0.1:{port}", [Call("Echo")] * 20),
        grpc_route("weighted-backends", only_v2),
        grpc_route("weighted-backends", weights),
        ok(V2),
    )
    assert_split(split, V1, V2)


def test_a_call_may_last_longer_than_envoy_s_default_route_timeout(
    conformance: Conformance,
) -> None:
    """kontinuum's choice where the GRPCRoute has no field: a call is bounded by its own
    deadline, not by Envoy's default route timeout of 15 s, which would cut every longer
    call and every stream (the backend answers after 16 s; the deadline is 25 s away)."""
    conformance.apply(grpc_route("slow", f"  - backendRefs: [{{name: {V1}, port: 8080}}]\n"))
    accepted(conformance, "slow")
    port = conformance.gateway("same-namespace")
    expect(port, [(Call("Echo"), ok(V1))])
    slow = Call("Echo", ((grpc_echo.DELAY, "16"),))
    assert grpc_echo.call_through(f"127.0.0.1:{port}", slow, timeout=25).outcome == f"ok {V1}"


def test_an_https_listener(conformance: Conformance) -> None:
    """A GRPCRoute on HTTPS listeners: the client negotiates HTTP/2 by ALPN, as the spec
    requires of an implementation that supports GRPCRoute on HTTPS, and its SNI and
    `:authority` pick the listener and its certificate."""
    port = free_port()
    ca = TestCa()
    listeners = "".join(
        f"""  - name: {name}
    port: {port}
    protocol: HTTPS
    hostname: {name}.example.com
    tls: {{certificateRefs: [{{name: {name}-cert}}]}}
"""
        for name in ("one", "two")
    )
    secrets = [
        tls_secret(INFRA, f"{name}-cert", issued.certificate, issued.key)
        for name in ("one", "two")
        for issued in [ca.issue(f"{name}.example.com")]
    ]
    routes = [
        grpc_route(f"https-{name}", f"  - backendRefs: [{{name: {backend}, port: 8080}}]\n",
                   parents=f"[{{name: grpc-https, sectionName: {name}}}]")
        for name, backend in (("one", V1), ("two", V2))
    ]  # fmt: skip
    assert conformance.apply(case_gateway("grpc-https", listeners), *secrets, *routes) == ()
    for route in ("https-one", "https-two"):
        accepted(conformance, route)
    conformance.gateway("grpc-https")
    cases = [
        (Call("Echo", authority="one.example.com"), ok(V1)),
        (Call("Echo", authority="two.example.com"), ok(V2)),
    ]
    calls = [call for call, _ in cases]
    expect_rounds(through(f"127.0.0.1:{port}", calls, root_certificates=ca.pem), cases)
