"""The routing state: a rejected edit keeps a route's last accepted version; spreads per service."""

from __future__ import annotations

import yaml

from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.model import ClusterSite, Fleet
from kontinuum.control.objects import Document
from kontinuum.control.plane import PlanePort, PlaneService, ServicePlane
from kontinuum.control.routing_state import KEPT_NOTE, RoutingState, failing_conditions
from kontinuum.control.translate.clusters import Spread

EU = ClusterSite("eu", "eu-central-1")
HELLO = PlaneService("demo", "hello", "demo", (PlanePort(80, "http"),))
HELLO_V2 = PlaneService("demo", "hello-v2", "demo", (PlanePort(80, "http"),))
PLANE = ServicePlane(sites=(EU,), services=(HELLO, HELLO_V2))

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "PATTERN"}}]
    backendRefs: [{name: hello-v2, port: 80}]
"""

POLICY = """
apiVersion: policy.kontinuum.io/v1alpha1
kind: LocalityPolicy
metadata: {name: split, namespace: demo}
spec:
  targetRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello}]
  weights: [{cluster: eu, weight: 3}]
"""


def fleet(*texts: str) -> Fleet:
    docs = [Document("routes.yaml", yaml.safe_load(t), i) for i, t in enumerate(texts, 1)]
    routing, errors = parse_routing(docs)
    assert errors == []
    return Fleet(sites=(EU,), routing=routing)


def regex(of: object) -> str:
    (bound,) = of.routes  # type: ignore[attr-defined]
    path = bound.rules[0].rule.matches[0].path
    return str(path.value)


def test_a_rejected_edit_keeps_the_last_accepted_version() -> None:
    state = RoutingState()
    routing = state.update(fleet(ROUTE.replace("PATTERN", "/v[0-9]+")), PLANE)
    assert regex(routing) == "/v[0-9]+"
    assert all(not failing_conditions(s) for s in state.statuses)

    # A lookahead is valid Python but not RE2: the edit is not accepted...
    routing = state.update(fleet(ROUTE.replace("PATTERN", "/v(?=1)")), PLANE)
    assert regex(routing) == "/v[0-9]+"  # ...and the last good version still routes
    ((parent, condition),) = failing_conditions(state.statuses[0])
    assert parent == "Service demo/hello"
    assert (condition.type, condition.reason) == ("Accepted", "UnsupportedValue")
    assert condition.message.endswith(KEPT_NOTE)

    routing = state.update(fleet(ROUTE.replace("PATTERN", "/v2")), PLANE)
    assert regex(routing) == "/v2"  # a good edit replaces it


def test_a_deleted_route_is_forgotten() -> None:
    state = RoutingState()
    state.update(fleet(ROUTE.replace("PATTERN", "/a")), PLANE)
    assert state.update(fleet(), PLANE).routes == ()
    # Coming back broken, it has no last good version to fall back on.
    assert state.update(fleet(ROUTE.replace("PATTERN", "(?=a)")), PLANE).routes == ()


def test_policies_become_the_spread_of_their_service() -> None:
    routing = RoutingState().update(fleet(POLICY), PLANE)
    assert routing.spreads == {("demo", "hello"): Spread(weights=(("eu", 3),))}


GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: front, namespace: edge, labels: {kontinuum.io/cluster: eu}}
spec:
  gatewayClassName: kontinuum
  listeners:
  - name: web
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {ingress: front}}}}
"""
GATEWAY_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello, namespace: demo}
spec:
  parentRefs: [{name: front, namespace: edge}]
  rules:
  - backendRefs: [{name: hello, port: 80}]
"""


def namespace(labels: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo, labels: {{{labels}}}}}"


def test_a_namespace_relabelled_rebinds_the_routes_a_selector_admits() -> None:
    state = RoutingState()
    state.update(fleet(GATEWAY, GATEWAY_ROUTE, namespace("ingress: front")), PLANE)
    assert [b.route.name for b in state.binding.routes] == ["hello"]

    state.update(fleet(GATEWAY, GATEWAY_ROUTE, namespace("ingress: other")), PLANE)
    assert state.binding.routes == ()  # the route's last good version is not admitted either
    ((parent, condition),) = failing_conditions(state.statuses[0])
    assert parent == "Gateway edge/front"
    assert (condition.reason, condition.message) == (
        "NotAllowedByListeners",
        "no accepted listener of Gateway edge/front (web) admits HTTPRoutes from namespace demo",
    )

    state.update(fleet(GATEWAY, GATEWAY_ROUTE, namespace("ingress: front")), PLANE)
    assert [b.route.name for b in state.binding.routes] == ["hello"]
    assert all(not failing_conditions(s) for s in state.statuses)
