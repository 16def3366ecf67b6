"""Gateway HTTP conformance: Gateways, their listeners and the routes attached to them, as
upstream's GatewayObservedGenerationBump, GatewayModifyListeners, GatewayInvalidRouteKind,
GatewayWithAttachedRoutes, GatewayListenerUnsupportedProtocol,
HTTPRouteObservedGenerationBump, HTTPRouteListenerPortMatching and HTTPRouteParentRefPort
cases check. In fleet files `metadata.generation` is written by whoever edits them (the
Kubernetes API server's part): a case bumps it with the spec."""

from __future__ import annotations

import pytest

from kontinuum.control.gateway_binding import ListenerStatus
from tests.conformance.base import case_gateway, http_route
from tests.conformance.harness import Conformance, Expected, Request

pytestmark = pytest.mark.e2e

HOST = "listeners.example"


def with_generation(document: str, generation: int) -> str:
    """`document` with `metadata.generation` set (its metadata in flow style)."""
    return document.replace("metadata: {name:", f"metadata: {{generation: {generation}, name:", 1)


def listener(name: str, port: int, *, hostname: str | None = None, kinds: str | None = None) -> str:
    """An HTTP listener allowing routes of its namespace (of `kinds`, a flow-style list)."""
    allowed = "{namespaces: {from: Same}" + ("" if kinds is None else f", kinds: {kinds}") + "}"
    host = "" if hostname is None else f"\n    hostname: '{hostname}'"
    return f"""  - name: {name}
    port: {port}
    protocol: HTTP{host}
    allowedRoutes: {allowed}
"""


def gateway(name: str, listeners: str, generation: int) -> str:
    text = case_gateway(name, listeners)
    return text.replace(f"  name: {name}\n", f"  name: {name}\n  generation: {generation}\n", 1)


def listeners_by_name(conformance: Conformance, name: str) -> dict[str, ListenerStatus]:
    return {s.name: s for s in conformance.gateway_status(name).listeners}


def condition(status: ListenerStatus, kind: str) -> tuple[str, str]:
    (found,) = [c for c in status.conditions if c.type == kind]
    return found.status, found.reason


def test_listeners_added_and_removed(conformance: Conformance) -> None:
    """GatewayModifyListeners and GatewayObservedGenerationBump (core): a listener added to
    a running Gateway serves its routes, one removed stops serving, and the Gateway's status
    follows each generation."""
    first, second = conformance.free_ports(2)
    route = http_route(
        "everywhere",
        """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        parents="[{name: changing}]",
    )
    assert conformance.apply(gateway("changing", listener("one", first), 1), route) == ()
    status = conformance.gateway_status("changing")
    assert status.generation == 1
    assert {c.type: c.status for c in status.conditions}["Accepted"] == "True"
    assert all(c.observed_generation in (None, 1) for c in status.conditions)
    one = listeners_by_name(conformance, "changing")["one"]
    assert (one.attached_routes, one.supported_kinds) == (1, ("HTTPRoute", "GRPCRoute"))
    conformance.gateway("changing")
    expected = Expected(backend="infra-backend-v1")
    conformance.expect(first, Request(HOST, "/"), expected)

    both = listener("one", first) + listener("two", second)
    assert conformance.apply(gateway("changing", both, 2), route) == ()
    status = conformance.gateway_status("changing")
    assert status.generation == 2
    assert all(c.observed_generation in (None, 2) for c in status.conditions)
    by_name = listeners_by_name(conformance, "changing")
    assert {n: (s.attached_routes, condition(s, "Accepted")[0]) for n, s in by_name.items()} == {
        "one": (1, "True"),
        "two": (1, "True"),
    }
    conformance.expect(second, Request(HOST, "/"), expected)
    conformance.expect(first, Request(HOST, "/"), expected)

    assert conformance.apply(gateway("changing", listener("two", second), 3), route) == ()
    assert set(listeners_by_name(conformance, "changing")) == {"two"}
    conformance.expect(first, Request(HOST, "/"), Expected(status=0))  # nothing listens
    conformance.expect(second, Request(HOST, "/"), expected)


def test_route_observed_generation_bump(conformance: Conformance) -> None:
    """HTTPRouteObservedGenerationBump (core): a route's status is of its newest generation."""
    rules = """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    changed = """  - backendRefs: [{name: infra-backend-v2, port: 8080}]
"""
    conformance.apply(with_generation(http_route("bumped", rules), 1))
    assert conformance.route("bumped").generation == 1
    conformance.apply(with_generation(http_route("bumped", changed), 2))
    route = conformance.route("bumped")
    assert route.generation == 2
    (parent,) = route.parents
    assert all(c.observed_generation in (None, 2) for c in parent.conditions)
    assert {c.type: c.status for c in parent.conditions}["Accepted"] == "True"


def test_invalid_route_kinds(conformance: Conformance) -> None:
    """GatewayInvalidRouteKind (core): a listener that allows only kinds the implementation
    does not serve supports none (`ResolvedRefs=False InvalidRouteKinds`); one that also
    allows HTTPRoute supports that one, with the same condition."""
    conformance.apply(
        case_gateway(
            "odd-kinds",
            listener("only-odd", conformance.free_port(), kinds="[{kind: FooRoute}]")
            + listener(
                "some-odd", conformance.free_port(), kinds="[{kind: HTTPRoute}, {kind: FooRoute}]"
            ),
        )
    )
    by_name = listeners_by_name(conformance, "odd-kinds")
    assert by_name["only-odd"].supported_kinds == ()
    assert condition(by_name["only-odd"], "ResolvedRefs") == ("False", "InvalidRouteKinds")
    assert by_name["some-odd"].supported_kinds == ("HTTPRoute",)
    assert condition(by_name["some-odd"], "ResolvedRefs") == ("False", "InvalidRouteKinds")


def test_attached_routes(conformance: Conformance) -> None:
    """GatewayWithAttachedRoutes (core): each listener counts the routes attached to it; a
    route whose hostnames meet no listener's is `NoMatchingListenerHostname` and counted
    nowhere."""
    port = conformance.free_port()
    backend = """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    conformance.apply(
        case_gateway(
            "counted",
            listener("web", port, hostname="*.shop.example"),
        ),
        http_route("first", backend, parents="[{name: counted}]"),
        http_route("second", backend, parents="[{name: counted}]", hostnames="[cart.shop.example]"),
        http_route("elsewhere", backend, parents="[{name: counted}]", hostnames="[other.example]"),
    )
    (web,) = conformance.gateway_status("counted").listeners
    assert web.attached_routes == 2
    assert condition(web, "Accepted") == ("True", "Accepted")
    assert condition(web, "ResolvedRefs") == ("True", "ResolvedRefs")
    (parent,) = conformance.parent_conditions("elsewhere")
    accepted = parent["Accepted"]
    assert (accepted.status, accepted.reason) == ("False", "NoMatchingListenerHostname")


def test_listener_port_matching(conformance: Conformance) -> None:
    """HTTPRouteListenerPortMatching and HTTPRouteParentRefPort (extended): a parentRef
    `port` attaches to the listeners of that port only; a Host's port plays no part in
    matching hostnames."""
    first, second = conformance.free_ports(2)
    conformance.apply(
        case_gateway(
            "two-ports",
            listener("first", first) + listener("second", second, hostname="cart.example"),
        ),
        http_route(
            "on-first",
            """  - backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
            parents=f"[{{name: two-ports, port: {first}}}]",
        ),
        http_route(
            "on-second",
            """  - backendRefs: [{name: infra-backend-v2, port: 8080}]
""",
            parents=f"[{{name: two-ports, port: {second}}}]",
        ),
    )
    for name in ("on-first", "on-second"):
        (parent,) = conformance.parent_conditions(name)
        assert parent["Accepted"].status == "True", (name, parent)
    assert {
        n: s.attached_routes for n, s in listeners_by_name(conformance, "two-ports").items()
    } == {
        "first": 1,
        "second": 1,
    }
    conformance.gateway("two-ports")
    v1, v2 = Expected(backend="infra-backend-v1"), Expected(backend="infra-backend-v2")
    conformance.expect_all(
        first,
        [
            (Request("cart.example"), v1),
            (Request(f"cart.example:{first}"), v1),
            (Request("anything.example:1234"), v1),
        ],
    )
    conformance.expect_all(
        second,
        [
            (Request("cart.example"), v2),
            (Request(f"cart.example:{second}"), v2),
            (Request("cart.example:1234"), v2),
            (Request("other.example"), Expected(status=404)),
            (Request(f"other.example:{second}"), Expected(status=404)),
        ],
    )


def test_unsupported_listener_protocol(conformance: Conformance) -> None:
    """GatewayListenerUnsupportedProtocol (core): a listener of a protocol the
    implementation does not serve is not accepted (`UnsupportedProtocol`); the Gateway's
    other listeners are."""
    conformance.apply(
        case_gateway(
            "mixed-protocols",
            listener("web", conformance.free_port())
            + f"""  - name: datagrams
    port: {conformance.free_port()}
    protocol: UDP
""",
        )
    )
    by_name = listeners_by_name(conformance, "mixed-protocols")
    assert condition(by_name["datagrams"], "Accepted") == ("False", "UnsupportedProtocol")
    assert condition(by_name["web"], "Accepted") == ("True", "Accepted")
