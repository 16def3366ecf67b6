"""Binding routes, Gateways and LocalityPolicies to the plane: every condition and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.gateway_fields import regex_problem
from kontinuum.control.grants import parse_grants
from kontinuum.control.mcs import build_plane
from kontinuum.control.model import ClusterSite, Grant
from kontinuum.control.objects import Document
from kontinuum.control.plane import (
    Condition,
    PlanePort,
    PlaneService,
    ProxyView,
    ServicePlane,
)
from kontinuum.control.route_binding import RouteBinding, bind_routes
from kontinuum.control.routing import (
    GatewayListener,
    HeaderModifier,
    hostname_covers,
    hostname_specificity,
    intersect_hostnames,
)
from kontinuum.control.routing_state import mesh_routing
from kontinuum.control.translate.backends import routes_for
from kontinuum.discovery.static import load_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
EU = ClusterSite("eu", "eu-central-1", "eu-central-1a", "backbone")
US = ClusterSite("us", "us-east-1", "us-east-1a", "backbone")
# demo/hello is exported (cluster-set) with two ports; demo/web is eu's own; payments/billing
# is exported; payments/ledger is us's own.
HELLO = PlaneService("demo", "hello", "demo", (PlanePort(80, "http"), PlanePort(9090, "metrics")))
WEB = PlaneService("demo", "web", "demo", (PlanePort(80, "http"),), scope="eu")
BILLING = PlaneService("payments", "billing", "payments", (PlanePort(80, "http"),))
LEDGER = PlaneService("payments", "ledger", "payments", (PlanePort(8080, "http"),), scope="us")
PLANE = ServicePlane(sites=(EU, US), services=(HELLO, WEB, BILLING, LEDGER))

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - backendRefs: [{name: hello, port: 80}]
"""

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: demo
  labels: {kontinuum.io/cluster: eu}
spec:
  gatewayClassName: kontinuum
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"""

POLICY = """
apiVersion: policy.kontinuum.io/v1alpha1
kind: LocalityPolicy
metadata: {name: a, namespace: demo}
spec:
  targetRefs: [{group: "", kind: Service, name: hello}]
  weights: [{cluster: eu, weight: 3}, {cluster: us, weight: 1}]
"""

ACCEPTED = ("True", "Accepted", "")
RESOLVED = ("True", "ResolvedRefs", "")


def docs(*texts: str) -> list[Document]:
    bodies = yaml.safe_load_all("\n---\n".join(texts))
    return [Document("routes.yaml", body, i) for i, body in enumerate(bodies, start=1)]


def bind(*texts: str, grants: tuple[Grant, ...] = (), plane: ServicePlane = PLANE) -> RouteBinding:
    config, errors = parse_routing(docs(*texts))
    assert errors == []
    return bind_routes(config, plane, grants)


def summary(conditions: tuple[Condition, ...]) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in conditions}


def route_conditions(binding: RouteBinding, parent: int = 0) -> dict[str, tuple[str, str, str]]:
    (status,) = binding.statuses
    return summary(status.parents[parent].conditions)


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def with_parent(parent: str, route: str = ROUTE) -> str:
    return edit(route, '[{group: "", kind: Service, name: hello}]', f"[{parent}]")


def with_backends(backends: str, route: str = ROUTE) -> str:
    return edit(route, "[{name: hello, port: 80}]", backends)


def grant(from_kind: str, to: str = 'kind: Service, group: ""', consumer: str = "demo") -> Grant:
    group = "gateway.networking.k8s.io" if from_kind != "Namespace" else '""'
    text = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: payments}}
spec:
  from: [{{group: {group}, kind: {from_kind}, namespace: {consumer}}}]
  to: [{{{to}}}]
"""
    (found,), errors = parse_grants(docs(text))
    assert errors == []
    return found


# --- a route attached to a service (GAMMA) ---------------------------------------------------


def test_a_mesh_route_binds_its_parent_and_backends() -> None:
    binding = bind(ROUTE)
    assert route_conditions(binding) == {"Accepted": ACCEPTED, "ResolvedRefs": RESOLVED}
    (status,) = binding.statuses
    assert (status.kind, status.namespace, status.name, status.file) == (
        "HTTPRoute",
        "demo",
        "web",
        "routes.yaml",
    )
    (bound,) = binding.routes
    (parent,) = bound.parents
    assert parent.services == (HELLO,)
    assert parent.ports == (80, 9090)  # no sectionName or port: the whole Service
    assert parent.gateway is None
    (rule,) = bound.rules
    (backend,) = rule.backends
    assert (backend.services, backend.port, backend.weight) == ((HELLO,), 80, 1)
    assert rule.invalid_weight == 0
    assert not rule.invalid_backends


@pytest.mark.parametrize(
    ("parent", "ports"),
    [
        pytest.param('{group: "", kind: Service, name: hello, port: 9090}', (9090,), id="port"),
        pytest.param(
            '{group: "", kind: Service, name: hello, sectionName: http}', (80,), id="section"
        ),
        pytest.param(
            "{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello}",
            (80, 9090),
            id="service-import",
        ),
        pytest.param('{group: "", kind: Service, name: web}', (80,), id="cluster-local-service"),
    ],
)
def test_service_parents_narrow_to_ports(parent: str, ports: tuple[int, ...]) -> None:
    binding = bind(with_parent(parent))
    assert route_conditions(binding)["Accepted"] == ACCEPTED
    assert binding.routes[0].parents[0].ports == ports


@pytest.mark.parametrize(
    ("parent", "message"),
    [
        pytest.param(
            '{group: "", kind: Service, name: nope}',
            "no Service demo/nope visible to namespace demo",
            id="missing",
        ),
        pytest.param(
            "{group: multicluster.x-k8s.io, kind: ServiceImport, name: web}",
            "no ServiceImport demo/web visible to namespace demo",
            id="not-exported",
        ),
        pytest.param(
            '{group: "", kind: Service, name: billing, namespace: payments}',
            "no Service payments/billing visible to namespace demo",
            id="other-workspace",
        ),
        pytest.param(
            '{group: "", kind: Service, name: hello, port: 81}',
            "Service demo/hello has no port on port 81",
            id="port",
        ),
        pytest.param(
            '{group: "", kind: Service, name: hello, sectionName: admin, port: 80}',
            "Service demo/hello has no port named 'admin' and on port 80",
            id="section",
        ),
        pytest.param(
            "{kind: Service, name: hello}",
            'routes attach to a Gateway, a Service (group "") or a ServiceImport '
            "(multicluster.x-k8s.io), not to a gateway.networking.k8s.io/Service",
            id="service-in-gateway-group",
        ),
        pytest.param(
            "{group: apps, kind: Deployment, name: hello}",
            'routes attach to a Gateway, a Service (group "") or a ServiceImport '
            "(multicluster.x-k8s.io), not to a apps/Deployment",
            id="other-kind",
        ),
    ],
)
def test_no_matching_parent(parent: str, message: str) -> None:
    binding = bind(with_parent(parent))
    assert route_conditions(binding) == {
        "Accepted": ("False", "NoMatchingParent", message),
        "ResolvedRefs": RESOLVED,
    }
    assert binding.routes == ()  # no parent accepted it: nothing to translate


def test_an_unseen_service_looks_like_a_missing_one_until_its_workspace_grants() -> None:
    missing = with_parent('{group: "", kind: Service, name: nope, namespace: payments}')
    hidden = with_parent('{group: "", kind: Service, name: billing, namespace: payments}')
    (missing_status,) = bind(missing).statuses
    (hidden_status,) = bind(hidden).statuses
    # Status reveals nothing workspace isolation hides: the same reason and message shape.
    assert missing_status.parents[0].conditions[0].reason == "NoMatchingParent"
    assert hidden_status.parents[0].conditions[0].reason == "NoMatchingParent"
    opened = bind(hidden, grants=(grant("Namespace"),))
    assert route_conditions(opened)["Accepted"] == ACCEPTED
    # A grant to routes is not a workspace grant: it opens no parent.
    route_grant = bind(hidden, grants=(grant("HTTPRoute"),))
    assert route_conditions(route_grant)["Accepted"][1] == "NoMatchingParent"


# --- a route attached to a Gateway -----------------------------------------------------------


def gateway_route(parent: str = "{name: ingress}", hostnames: str = "") -> str:
    route = with_parent(parent)
    return edit(route, "spec:\n", f"spec:\n  hostnames: [{hostnames}]\n") if hostnames else route


def test_a_route_attaches_to_a_gateway_listener() -> None:
    binding = bind(GATEWAY, gateway_route())
    assert route_conditions(binding) == {"Accepted": ACCEPTED, "ResolvedRefs": RESOLVED}
    (parent,) = binding.routes[0].parents
    assert parent.gateway is not None
    assert parent.gateway.name == "ingress"
    assert parent.listeners == (GatewayListener("http", 80, "HTTP"),)
    (gateway_status,) = binding.gateway_statuses
    assert gateway_status.listeners[0].attached_routes == 1


@pytest.mark.parametrize(
    ("gateway", "route", "condition"),
    [
        pytest.param(
            GATEWAY,
            gateway_route("{name: other}"),
            ("False", "NoMatchingParent", "no Gateway demo/other"),
            id="no-gateway",
        ),
        pytest.param(
            GATEWAY,
            gateway_route("{name: ingress, sectionName: https}"),
            ("False", "NoMatchingParent", "Gateway demo/ingress has no listener named 'https'"),
            id="no-section",
        ),
        pytest.param(
            GATEWAY,
            gateway_route("{name: ingress, port: 8080}"),
            ("False", "NoMatchingParent", "Gateway demo/ingress has no listener on port 8080"),
            id="no-port",
        ),
        pytest.param(
            GATEWAY,
            gateway_route("{name: ingress, sectionName: http, port: 80}"),
            ACCEPTED,
            id="section-and-port",
        ),
        pytest.param(
            edit(GATEWAY, "namespace: demo", "namespace: edge"),
            gateway_route("{name: ingress, namespace: edge}"),
            (
                "False",
                "NotAllowedByListeners",
                "no accepted listener of Gateway edge/ingress (http) admits HTTPRoutes from "
                "namespace demo",
            ),
            id="other-namespace",
        ),
        pytest.param(
            edit(
                edit(GATEWAY, "namespace: demo", "namespace: edge"),
                "protocol: HTTP}",
                "protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
            ),
            gateway_route("{name: ingress, namespace: edge}"),
            ACCEPTED,
            id="all-namespaces",
        ),
        pytest.param(
            edit(
                GATEWAY,
                "protocol: HTTP}",
                "protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}",
            ),
            gateway_route(),
            (
                "False",
                "NotAllowedByListeners",
                "no accepted listener of Gateway demo/ingress (http) admits HTTPRoutes from "
                "namespace demo",
            ),
            id="kinds",
        ),
        pytest.param(
            edit(GATEWAY, "protocol: HTTP}", "protocol: TLS, tls: {mode: Passthrough}}"),
            gateway_route(),
            (
                "False",
                "NotAllowedByListeners",
                "no accepted listener of Gateway demo/ingress (http) admits HTTPRoutes from "
                "namespace demo",
            ),
            id="unsupported-protocol",
        ),
        pytest.param(
            edit(GATEWAY, "protocol: HTTP}", 'protocol: HTTP, hostname: "*.example.com"}'),
            gateway_route(hostnames="web.example.org"),
            (
                "False",
                "NoMatchingListenerHostname",
                "no listener of Gateway demo/ingress shares a hostname with web.example.org",
            ),
            id="hostname",
        ),
        pytest.param(
            edit(GATEWAY, "protocol: HTTP}", 'protocol: HTTP, hostname: "*.example.com"}'),
            gateway_route(hostnames="web.example.com"),
            ACCEPTED,
            id="hostname-matches",
        ),
        pytest.param(
            edit(GATEWAY, "kontinuum.io/cluster: eu", "kontinuum.io/cluster: asia"),
            gateway_route(),
            (
                "False",
                "NotAllowedByListeners",
                "no accepted listener of Gateway demo/ingress (http) admits HTTPRoutes from "
                "namespace demo",
            ),
            id="gateway-of-no-cluster",
        ),
    ],
)
def test_gateway_attachment(gateway: str, route: str, condition: tuple[str, str, str]) -> None:
    binding = bind(gateway, route)
    assert route_conditions(binding)["Accepted"] == condition
    assert len(binding.routes) == (condition == ACCEPTED)


# --- allowedRoutes.namespaces.from: Selector ------------------------------------------------

# A Gateway in namespace edge whose listener admits the routes of the namespaces its
# selector selects; the route is in namespace demo.
SELECTING = edit(
    edit(GATEWAY, "namespace: demo", "namespace: edge"),
    "protocol: HTTP}",
    "protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: SELECTOR}}}",
)
NOT_ADMITTED = (
    "False",
    "NotAllowedByListeners",
    "no accepted listener of Gateway edge/ingress (http) admits HTTPRoutes from namespace demo",
)


def namespace(name: str, labels: str = "") -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"


@pytest.mark.parametrize(
    ("selector", "namespaces", "condition"),
    [
        ("{matchLabels: {team: shop}}", [namespace("demo", "team: shop")], ACCEPTED),
        ("{matchLabels: {team: shop}}", [namespace("demo", "team: ops")], NOT_ADMITTED),
        ("{matchLabels: {team: shop}}", [namespace("edge", "team: shop")], NOT_ADMITTED),
        ("{matchLabels: {team: shop}}", [], NOT_ADMITTED),  # no Namespace: no such label
        # Every namespace has kubernetes.io/metadata.name, Namespace object or not.
        ("{matchLabels: {kubernetes.io/metadata.name: demo}}", [], ACCEPTED),
        (
            "{matchLabels: {kubernetes.io/metadata.name: demo}}",
            [namespace("demo", "kubernetes.io/metadata.name: other")],
            ACCEPTED,
        ),
        (
            "{matchExpressions: [{key: team, operator: In, values: [ops, shop]}]}",
            [namespace("demo", "team: shop")],
            ACCEPTED,
        ),
        (
            "{matchExpressions: [{key: team, operator: In, values: [ops]}]}",
            [namespace("demo", "team: shop")],
            NOT_ADMITTED,
        ),
        ("{matchExpressions: [{key: team, operator: NotIn, values: [ops]}]}", [], ACCEPTED),
        (
            "{matchExpressions: [{key: team, operator: NotIn, values: [shop]}]}",
            [namespace("demo", "team: shop")],
            NOT_ADMITTED,
        ),
        (
            "{matchExpressions: [{key: team, operator: Exists}]}",
            [namespace("demo", "team: ''")],
            ACCEPTED,
        ),
        ("{matchExpressions: [{key: team, operator: Exists}]}", [], NOT_ADMITTED),
        ("{matchExpressions: [{key: team, operator: DoesNotExist}]}", [], ACCEPTED),
        (
            "{matchExpressions: [{key: team, operator: DoesNotExist}]}",
            [namespace("demo", "team: x")],
            NOT_ADMITTED,
        ),
        # Every part must hold.
        (
            "{matchLabels: {team: shop}, matchExpressions: [{key: tier, operator: Exists}]}",
            [namespace("demo", "team: shop")],
            NOT_ADMITTED,
        ),
        (
            "{matchLabels: {team: shop}, matchExpressions: [{key: tier, operator: Exists}]}",
            [namespace("demo", "team: shop, tier: gold")],
            ACCEPTED,
        ),
        ("{}", [], ACCEPTED),  # an empty selector selects every namespace
    ],
)
def test_a_selector_admits_the_routes_of_the_namespaces_it_selects(
    selector: str, namespaces: list[str], condition: tuple[str, str, str]
) -> None:
    gateway = SELECTING.replace("SELECTOR", selector)
    binding = bind(gateway, *namespaces, gateway_route("{name: ingress, namespace: edge}"))
    assert route_conditions(binding)["Accepted"] == condition
    assert len(binding.routes) == (condition == ACCEPTED)
    (status,) = binding.gateway_statuses
    assert summary(status.listeners[0].conditions)["Accepted"] == ACCEPTED


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            "{matchExpressions: [{key: team, operator: Equals, values: [shop]}]}",
            "invalid allowedRoutes.namespaces.selector.matchExpressions[0].operator: must be one "
            "of In, NotIn, Exists, DoesNotExist, got 'Equals'",
        ),
        (
            "{matchExpressions: [{key: team, operator: In}]}",
            "invalid allowedRoutes.namespaces.selector.matchExpressions[0].values: must hold at "
            "least one value for In",
        ),
        (
            "{matchExpressions: [{key: team, operator: Exists, values: [shop]}]}",
            "invalid allowedRoutes.namespaces.selector.matchExpressions[0].values: must be empty "
            "for Exists",
        ),
        (
            "{matchLabels: {'-team': shop}}",
            "invalid allowedRoutes.namespaces.selector.matchLabels[-team]: the key must be a name "
            "of",
        ),
        (
            "{matchLabels: {team: 'a b'}}",
            "invalid allowedRoutes.namespaces.selector.matchLabels[team]: must be a label value",
        ),
    ],
)
def test_a_listener_with_an_invalid_selector_is_not_accepted(selector: str, message: str) -> None:
    gateway = SELECTING.replace("SELECTOR", selector)
    binding = bind(
        gateway, namespace("demo", "team: shop"), gateway_route("{name: ingress, namespace: edge}")
    )
    (status,) = binding.gateway_statuses
    accepted = summary(status.listeners[0].conditions)["Accepted"]
    assert accepted[:2] == ("False", "UnsupportedValue")
    assert accepted[2].startswith(message), accepted[2]
    assert route_conditions(binding)["Accepted"] == NOT_ADMITTED
    assert binding.gateways == ()


def test_attached_routes_are_counted_per_listener_and_statuses_follow_parent_order() -> None:
    two = edit(
        GATEWAY,
        "  - {name: http, port: 80, protocol: HTTP}",
        "  - {name: http, port: 80, protocol: HTTP}\n  - {name: alt, port: 8080, protocol: HTTP}",
    )
    first = gateway_route(
        "{name: ingress, sectionName: http}, {name: ingress, sectionName: alt}, {name: nope}"
    )
    second = edit(gateway_route(), "name: web,", "name: api,")
    binding = bind(two, first, second)
    statuses = {s.name: [p.conditions[0].reason for p in s.parents] for s in binding.statuses}
    assert statuses == {
        "api": ["Accepted"],
        "web": ["Accepted", "Accepted", "NoMatchingParent"],
    }
    listeners = {li.name: li.attached_routes for li in binding.gateway_statuses[0].listeners}
    assert listeners == {"http": 2, "alt": 2}
    web = next(r for r in binding.routes if r.route.name == "web")
    assert [[li.name for li in p.listeners] for p in web.parents] == [["http"], ["alt"]]


# --- cross serving: an HTTPRoute and a GRPCRoute on one listener (GEP-1016) ------------------


def kind_route(
    kind: str, name: str, hostnames: str = "", created: str = "", parent: str = "{name: ingress}"
) -> str:
    """A route of `kind` on the Gateway, with `hostnames` and a creationTimestamp."""
    route = edit(gateway_route(parent, hostnames), "name: web,", f"name: {name},")
    route = edit(route, "kind: HTTPRoute", f"kind: {kind}")
    if created:
        route = edit(
            route, "namespace: demo}", f'namespace: demo, creationTimestamp: "{created}"}}'
        )
    return route


TWO_LISTENERS = edit(
    GATEWAY,
    "  - {name: http, port: 80, protocol: HTTP}",
    '  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}\n'
    "  - {name: alt, port: 8080, protocol: HTTP}",
)


@pytest.mark.parametrize(
    ("http_hosts", "grpc_hosts", "http_created", "grpc_created", "loser"),
    [
        pytest.param(
            "", "", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "GRPCRoute", id="older-http"
        ),
        pytest.param(
            "", "", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "HTTPRoute", id="older-grpc"
        ),
        pytest.param("", "", "", "", "HTTPRoute", id="by-name"),  # demo/api before demo/web
        pytest.param("a.example.com", "'*.example.com'", "", "", "HTTPRoute", id="wildcard"),
        pytest.param("a.example.com", "b.example.com", "", "", None, id="apart"),
    ],
)
def test_an_http_route_and_a_grpc_route_never_share_a_hostname_on_a_listener(
    http_hosts: str, grpc_hosts: str, http_created: str, grpc_created: str, loser: str | None
) -> None:
    parent = "{name: ingress, sectionName: http}"
    binding = bind(
        TWO_LISTENERS,
        kind_route("HTTPRoute", "web", http_hosts, http_created, parent),
        kind_route("GRPCRoute", "api", grpc_hosts, grpc_created, parent),
    )
    accepted = {s.kind: s.parents[0].conditions[0] for s in binding.statuses}
    assert [r.route.kind for r in binding.routes] == [k for k in accepted if k != loser]
    for kind, condition in accepted.items():
        assert condition.status == ("False" if kind == loser else "True"), kind
    if loser is not None:
        winner = {"HTTPRoute": "GRPCRoute demo/api", "GRPCRoute": "HTTPRoute demo/web"}[loser]
        assert accepted[loser].reason == "HostnameConflict"
        assert accepted[loser].message == (
            f"the {winner} (listener http) already serves a hostname of this route there: an "
            "HTTPRoute and a GRPCRoute cannot share a hostname on a listener"
        )
    listeners = {li.name: li.attached_routes for li in binding.gateway_statuses[0].listeners}
    assert listeners == {"http": 1 if loser else 2, "alt": 0}


def test_a_route_that_loses_one_listener_keeps_the_others() -> None:
    """Without sectionName a route attaches to both listeners; the GRPCRoute holds only the
    one it names, so the newer HTTPRoute keeps the other."""
    binding = bind(
        TWO_LISTENERS,
        kind_route(
            "GRPCRoute", "api", "", "2026-01-01T00:00:00Z", "{name: ingress, sectionName: alt}"
        ),
        kind_route("HTTPRoute", "web", "", "2026-01-02T00:00:00Z"),
        kind_route(
            "HTTPRoute", "www", "", "2026-01-03T00:00:00Z", "{name: ingress, sectionName: alt}"
        ),
    )
    statuses = {s.name: s.parents[0].conditions[0].reason for s in binding.statuses}
    assert statuses == {"api": "Accepted", "web": "Accepted", "www": "HostnameConflict"}
    web = next(r for r in binding.routes if r.route.name == "web")
    assert [li.name for li in web.parents[0].listeners] == ["http"]


def test_on_a_service_port_a_grpc_route_applies_and_an_http_route_of_its_namespace_not() -> None:
    """GEP-1294: of routes of both kinds on one Service port, the GRPCRoute applies; the
    HTTPRoute keeps the ports it alone has, and is Conflicted with none left."""
    grpc = edit(edit(ROUTE, "kind: HTTPRoute", "kind: GRPCRoute"), "name: web,", "name: api,")
    grpc = with_parent('{group: "", kind: Service, name: hello, port: 80}', grpc)
    everywhere = edit(ROUTE, "name: web,", "name: all,")  # ports 80 and 9090
    on_80 = with_parent('{group: "", kind: Service, name: hello, port: 80}')
    binding = bind(grpc, everywhere, on_80)
    reasons = {s.name: s.parents[0].conditions[0] for s in binding.statuses}
    assert (reasons["api"].reason, reasons["all"].reason) == ("Accepted", "Accepted")
    assert (reasons["web"].status, reasons["web"].reason) == ("False", "Conflicted")
    assert reasons["web"].message == (
        "a GRPCRoute of namespace demo applies to demo/hello port 80: of routes of both kinds "
        "on one Service port, the GRPCRoutes apply"
    )
    ports = {r.route.name: r.parents[0].ports for r in binding.routes}
    assert ports == {"api": (80,), "all": (9090,)}
    # demo's consumer HTTPRoute replaces payments' producer GRPCRoute for demo's callers
    # instead: routes of two namespaces never merge, so they do not conflict.
    producer = edit(
        edit(grpc, "name: hello, port: 80}]\n  rules", "name: billing}]\n  rules"),
        "namespace: demo}",
        "namespace: payments}",
    )
    producer = edit(producer, "[{name: hello, port: 80}]", "[{name: billing, port: 80}]")
    binding = bind(producer, CONSUMER, grants=(grant("Namespace"),))
    reasons = {(s.kind, s.namespace): s.parents[0].conditions[0].reason for s in binding.statuses}
    assert reasons == {("GRPCRoute", "payments"): "Accepted", ("HTTPRoute", "demo"): "Accepted"}


# --- what kontinuum cannot serve: UnsupportedValue -------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param(
            "  - matches: [{path: {type: RegularExpression, value: '/(?!admin)'}}]\n",
            "spec.rules[1].matches[0].path.value: uses (?! (a negative lookahead), which RE2 "
            "(Envoy's regular expression dialect) lacks",
            id="lookahead",
        ),
        pytest.param(
            "  - matches: [{headers: [{name: x, value: '(a', type: RegularExpression}]}]\n",
            "spec.rules[1].matches[0].headers[0].value: not a valid regular expression: missing "
            "), unterminated subpattern at position 0",
            id="invalid-regex",
        ),
        pytest.param(
            "  - matches: [{queryParams: [{name: q, value: '(a)\\1', type: RegularExpression}]}]\n",
            "spec.rules[1].matches[0].queryParams[0].value: uses \\1 (a backreference), which "
            "RE2 (Envoy's regular expression dialect) lacks",
            id="backreference",
        ),
        pytest.param(
            "  - filters: [{type: CORS, cors: {}}]\n",
            "spec.rules[1].filters[0]: CORS filters are not supported",
            id="cors",
        ),
        pytest.param(
            "  - backendRefs: [{name: hello, port: 80, filters: [{type: RequestHeaderModifier, "
            "requestHeaderModifier: {remove: [x]}}, {type: URLRewrite, urlRewrite: "
            "{hostname: a.example}}]}]\n",
            "spec.rules[1].backendRefs[0].filters[1]: a backendRef's filters may only be "
            "RequestHeaderModifier or ResponseHeaderModifier, not URLRewrite",
            id="backend-url-rewrite",
        ),
        pytest.param(
            "  - backendRefs: [{name: hello, port: 80, filters: [{type: RequestMirror, "
            "requestMirror: {backendRef: {name: web, port: 80}}}]}]\n",
            "spec.rules[1].backendRefs[0].filters[0]: a backendRef's filters may only be "
            "RequestHeaderModifier or ResponseHeaderModifier, not RequestMirror",
            id="backend-mirror",
        ),
        pytest.param(
            "  - backendRefs: [{name: hello, port: 80, filters: [{type: ExtensionRef, "
            "extensionRef: {group: example.com, kind: Auth, name: a}}]}]\n",
            "spec.rules[1].backendRefs[0].filters[0]: a backendRef's filters may only be "
            "RequestHeaderModifier or ResponseHeaderModifier, not ExtensionRef",
            id="backend-extension",
        ),
    ],
)
def test_unsupported_values_are_not_accepted(rule: str, message: str) -> None:
    binding = bind(ROUTE + rule)
    assert route_conditions(binding)["Accepted"] == ("False", "UnsupportedValue", message)
    assert binding.routes == ()


@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute"])
def test_header_modifiers_on_backend_refs_are_accepted_and_kept_per_backend(kind: str) -> None:
    """The Gateway API's per-backend RequestHeaderModifier / ResponseHeaderModifier: accepted,
    and each bound backend holds its own (they apply to the requests sent to it only)."""
    rule = (
        "  - backendRefs:\n"
        "    - name: hello\n"
        "      port: 80\n"
        "      weight: 3\n"
        "      filters:\n"
        "      - type: RequestHeaderModifier\n"
        "        requestHeaderModifier: {set: [{name: Backend, value: hello}]}\n"
        "      - type: ResponseHeaderModifier\n"
        "        responseHeaderModifier: {remove: [Server]}\n"
        "    - name: web\n"
        "      port: 80\n"
        "      filters:\n"
        "      - type: RequestHeaderModifier\n"
        "        requestHeaderModifier: {add: [{name: Backend, value: web}]}\n"
    )
    binding = bind(edit(ROUTE, "kind: HTTPRoute", f"kind: {kind}") + rule)
    assert route_conditions(binding) == {"Accepted": ACCEPTED, "ResolvedRefs": RESOLVED}
    (route,) = binding.routes
    hello, web = route.rules[1].backends
    assert hello.ref.filters == (
        HeaderModifier(set=(("Backend", "hello"),)),
        HeaderModifier(remove=("Server",), response=True),
    )
    assert web.ref.filters == (HeaderModifier(add=(("Backend", "web"),)),)
    assert (hello.weight, web.weight) == (3, 1)


def test_a_grpc_regex_is_checked_too_and_a_valid_one_accepted() -> None:
    grpc = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - matches: [{method: {type: RegularExpression, service: "echo\\\\.v[0-9]+", method: "(?x)Say"}}]
    backendRefs: [{name: hello, port: 80}]
"""
    binding = bind(grpc)
    assert route_conditions(binding)["Accepted"] == (
        "False",
        "UnsupportedValue",
        "spec.rules[0].matches[0].method.method: uses the inline flag x, which RE2 (Envoy's "
        "regular expression dialect) lacks (it has i, m and s)",
    )
    fine = bind(edit(grpc, "(?x)Say", "(?i)say"))
    assert route_conditions(fine)["Accepted"] == ACCEPTED


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^/v[0-9]+/.*$", None),
        ("a+?b{2,3}?", None),
        ("(?i)abc", None),
        ("(?P<version>v[0-9])", None),
        ("[(?=]", None),
        ("(?<=a)b", "uses (?<= (a lookbehind)"),
        ("(?<!a)b", "uses (?<! (a negative lookbehind)"),
        ("(?=a)", "uses (?= (a lookahead)"),
        ("(?>a)", "uses (?> (an atomic group)"),
        ("(a)?(?(1)b|c)", "uses (?( (a conditional)"),
        ("(?#note)a", "uses (?# (a comment)"),
        ("(?P<x>a)(?P=x)", "uses (?P= (a backreference)"),
        ("a++", "uses ++ (a possessive quantifier)"),
        ("a{2}+", "uses {2}+ (a possessive quantifier)"),
        ("a\\Z", "uses \\Z"),
        ("[", "not a valid regular expression"),
    ],
)
def test_regular_expressions_envoy_can_use(pattern: str, problem: str | None) -> None:
    found = regex_problem(pattern)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


# --- references: ResolvedRefs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backends", "reason", "message"),
    [
        pytest.param(
            "[{group: apps, kind: Deployment, name: hello}]",
            "InvalidKind",
            "spec.rules[0].backendRefs[0]: kontinuum sends to Services and multicluster.x-k8s.io "
            "ServiceImports, not to a apps/Deployment",
            id="invalid-kind",
        ),
        pytest.param(
            "[{name: nope, port: 80}]",
            "BackendNotFound",
            "spec.rules[0].backendRefs[0]: no Service demo/nope in any cluster",
            id="no-service",
        ),
        pytest.param(
            "[{name: hello, port: 81}]",
            "BackendNotFound",
            "spec.rules[0].backendRefs[0]: Service demo/hello has no port 81",
            id="no-port",
        ),
        pytest.param(
            "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: web}]",
            "BackendNotFound",
            "spec.rules[0].backendRefs[0]: no ServiceImport demo/web (no cluster exports it)",
            id="not-exported",
        ),
        pytest.param(
            "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello}]",
            "BackendNotFound",
            "spec.rules[0].backendRefs[0]: ServiceImport demo/hello has ports 80, 9090: port "
            "must say which",
            id="import-port-ambiguous",
        ),
        pytest.param(
            "[{name: billing, namespace: payments, port: 80}]",
            "RefNotPermitted",
            "spec.rules[0].backendRefs[0]: Service payments/billing is in another namespace and "
            "no ReferenceGrant in payments lets HTTPRoutes of demo refer to it",
            id="cross-namespace",
        ),
    ],
)
def test_resolved_refs_reasons(backends: str, reason: str, message: str) -> None:
    binding = bind(with_backends(backends))
    conditions = route_conditions(binding)
    assert conditions["Accepted"] == ACCEPTED  # bad references do not unaccept a route
    assert conditions["ResolvedRefs"] == ("False", reason, message)
    (rule,) = binding.routes[0].rules
    assert rule.backends == ()
    assert rule.invalid_weight == 1
    assert rule.invalid_backends  # every request gets a 500


ROUTE_GRANT = """
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: routes-to-billing, namespace: payments}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: demo}]
  to: [{group: "", kind: Service, name: billing}]
"""


@pytest.mark.parametrize(
    ("grant_text", "resolved"),
    [
        pytest.param(ROUTE_GRANT, True, id="v1-grant"),
        pytest.param(
            ROUTE_GRANT.replace("group: gateway.networking.k8s.io", "group: not.the.group"),
            False,
            id="wrong-from-group",
        ),
        pytest.param(
            ROUTE_GRANT.replace("namespace: demo}", "namespace: payments}"),
            False,
            id="wrong-from-namespace",
        ),
    ],
)
def test_a_route_reaches_another_namespace_only_through_a_matching_grant(
    grant_text: str, resolved: bool
) -> None:
    grants, errors = parse_grants(docs(grant_text))
    assert errors == []
    binding = bind(with_backends("[{name: billing, namespace: payments, port: 80}]"), grants=grants)
    status, reason, _ = route_conditions(binding)["ResolvedRefs"]
    assert (status, reason) == (
        ("True", "ResolvedRefs") if resolved else ("False", "RefNotPermitted")
    )


def test_a_service_import_with_one_port_needs_no_port() -> None:
    binding = bind(
        with_backends(
            "[{group: multicluster.x-k8s.io, kind: ServiceImport, name: billing, "
            "namespace: payments}]"
        ),
        grants=(grant("HTTPRoute", "group: multicluster.x-k8s.io, kind: ServiceImport"),),
    )
    assert route_conditions(binding)["ResolvedRefs"] == RESOLVED
    (backend,) = binding.routes[0].rules[0].backends
    assert (backend.services, backend.port) == ((BILLING,), 80)


@pytest.mark.parametrize(
    ("granted", "resolved"),
    [
        pytest.param(grant("HTTPRoute"), True, id="route-grant"),
        pytest.param(
            grant("HTTPRoute", 'group: "", kind: Service, name: billing'), True, id="by-name"
        ),
        pytest.param(
            grant("HTTPRoute", 'group: "", kind: Service, name: ledger'), False, id="other-name"
        ),
        pytest.param(grant("GRPCRoute"), False, id="other-route-kind"),
        pytest.param(grant("HTTPRoute", consumer="ops"), False, id="other-namespace"),
        pytest.param(
            grant("HTTPRoute", "group: multicluster.x-k8s.io, kind: ServiceImport"),
            False,
            id="other-target-kind",
        ),
        pytest.param(grant("Namespace"), False, id="workspace-grant"),
    ],
)
def test_a_cross_namespace_backend_needs_a_route_grant(granted: Grant, resolved: bool) -> None:
    route = with_backends("[{name: billing, namespace: payments, port: 80}]")
    binding = bind(route, grants=(granted,))
    reason = route_conditions(binding)["ResolvedRefs"][1]
    assert reason == ("ResolvedRefs" if resolved else "RefNotPermitted")
    assert len(binding.routes[0].rules[0].backends) == resolved


CONSUMER = with_backends(
    "[{name: billing, namespace: payments, port: 80}]",
    with_parent('{group: "", kind: Service, name: billing, namespace: payments}'),
)


def test_a_consumer_route_needs_no_route_grant_for_a_backend_its_workspace_may_reach() -> None:
    # GEP-1294: demo's route to payments/billing applies to demo's callers only, who may
    # reach billing (workspace grant): the backendRef widens nothing, so no ReferenceGrant.
    binding = bind(CONSUMER, grants=(grant("Namespace"),))
    assert route_conditions(binding) == {"Accepted": ACCEPTED, "ResolvedRefs": RESOLVED}
    (rule,) = binding.routes[0].rules
    (backend,) = rule.backends
    assert (backend.services, backend.port, rule.invalid_weight) == ((BILLING,), 80, 0)
    # The same holds for a ServiceImport parent and backend.
    imported = edit(
        edit(CONSUMER, 'group: "", kind: Service, name: billing', _IMPORT_BILLING),
        "{name: billing, namespace: payments, port: 80}",
        "{" + _IMPORT_BILLING + ", namespace: payments, port: 80}",
    )
    assert route_conditions(bind(imported, grants=(grant("Namespace"),))) == {
        "Accepted": ACCEPTED,
        "ResolvedRefs": RESOLVED,
    }


_IMPORT_BILLING = "group: multicluster.x-k8s.io, kind: ServiceImport, name: billing"


def test_a_consumer_route_opens_no_service_its_workspace_may_not_reach() -> None:
    # Without the workspace grant the parent is not demo's to see, and a backend demo may
    # not reach still needs a ReferenceGrant: a consumer route widens no one's reach.
    conditions = route_conditions(bind(CONSUMER))
    assert conditions["Accepted"][:2] == ("False", "NoMatchingParent")
    assert conditions["ResolvedRefs"][:2] == ("False", "RefNotPermitted")
    # payments/billing is demo's to see, payments/ledger is not (the grant names billing).
    to_ledger = edit(
        CONSUMER,
        "{name: billing, namespace: payments, port: 80}",
        "{name: ledger, namespace: payments, port: 8080}",
    )
    by_name = grant("Namespace", 'group: "", kind: Service, name: billing')
    conditions = route_conditions(bind(to_ledger, grants=(by_name,)))
    assert conditions["Accepted"] == ACCEPTED
    assert conditions["ResolvedRefs"] == (
        "False",
        "RefNotPermitted",
        "spec.rules[0].backendRefs[0]: Service payments/ledger is in another namespace and "
        "no ReferenceGrant in payments lets HTTPRoutes of demo refer to it",
    )


def test_a_producer_route_still_needs_a_route_grant_for_another_namespace_s_backend() -> None:
    # A producer route applies to every caller of hello, not only to those that may reach
    # payments/billing: without a ReferenceGrant it would open billing to them.
    producer = with_backends("[{name: billing, namespace: payments, port: 80}]")
    conditions = route_conditions(bind(producer, grants=(grant("Namespace"),)))
    assert conditions["ResolvedRefs"][:2] == ("False", "RefNotPermitted")
    # A route with a producer parent besides its consumer parent is no consumer route.
    both = edit(
        CONSUMER,
        "namespace: payments}]",
        'namespace: payments}, {group: "", kind: Service, name: hello}]',
    )
    conditions = route_conditions(bind(both, grants=(grant("Namespace"),)))
    assert conditions["ResolvedRefs"][:2] == ("False", "RefNotPermitted")


def test_an_invalid_backend_takes_its_share_of_the_weight_as_500s() -> None:
    binding = bind(with_backends("[{name: hello, port: 80, weight: 3}, {name: nope, port: 80}]"))
    (rule,) = binding.routes[0].rules
    assert [b.weight for b in rule.backends] == [3]
    assert rule.invalid_weight == 1  # a quarter of the requests get a 500
    assert not rule.invalid_backends


@pytest.mark.parametrize(
    ("rule", "all_500"),
    [
        pytest.param(
            "  - backendRefs: [{name: hello, port: 80, weight: 0}]\n", True, id="zero-weight"
        ),
        pytest.param("  - matches: [{path: {value: /old}}]\n", True, id="no-backends"),
        pytest.param(
            "  - filters: [{type: RequestRedirect, requestRedirect: {hostname: example.com}}]\n",
            False,
            id="redirect",
        ),
        pytest.param(
            "  - filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: F, name: f}}]\n"
            "    backendRefs: [{name: hello, port: 80}]\n",
            True,
            id="unresolved-extension",
        ),
    ],
)
def test_which_rules_answer_every_request_with_500(rule: str, all_500: bool) -> None:
    binding = bind(ROUTE + rule)
    assert binding.routes[0].rules[1].invalid_backends == all_500


def test_an_extension_filter_is_an_invalid_kind_and_a_bad_mirror_is_dropped() -> None:
    rule = (
        "  - filters:\n"
        "    - {type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: strict}}\n"
        "    - {type: RequestMirror, requestMirror: {backendRef: {name: nope, port: 80}}}\n"
        "    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, "
        "percent: 5}}\n"
        "    backendRefs: [{name: hello, port: 80}]\n"
    )
    binding = bind(ROUTE + rule)
    assert route_conditions(binding)["ResolvedRefs"] == (
        "False",
        "InvalidKind",
        "spec.rules[1].filters[0]: no filter example.com/Auth strict; "
        "spec.rules[1].filters[1].requestMirror.backendRef: no Service demo/nope in any cluster",
    )
    bound = binding.routes[0].rules[1]
    assert bound.invalid_filters
    ((mirror_services, mirror_percent),) = [(m.backend.services, m.percent) for m in bound.mirrors]
    assert (mirror_services, mirror_percent) == ((WEB,), 5.0)


# --- Gateways --------------------------------------------------------------------------------


def test_gateway_and_listener_statuses() -> None:
    gateway = edit(
        GATEWAY,
        "  - {name: http, port: 80, protocol: HTTP}",
        """  - {name: http, port: 80, protocol: HTTP}
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
  - name: picky
    port: 81
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TCPRoute}]}
  - {name: selected, port: 82, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}""",
    )
    binding = bind(edit(gateway, "metadata:\n", "metadata:\n  generation: 7\n"), gateway_route())
    (status,) = binding.gateway_statuses
    assert (status.namespace, status.name, status.generation) == ("demo", "ingress", 7)
    assert summary(status.conditions) == {
        "Accepted": ("True", "ListenersNotValid", "listeners not accepted: tls, selected"),
        "Programmed": ("True", "Programmed", ""),
    }
    listeners = {li.name: li for li in status.listeners}
    assert summary(listeners["http"].conditions) == {
        "Accepted": ACCEPTED,
        "ResolvedRefs": RESOLVED,
        "Programmed": ("True", "Programmed", ""),
        "Conflicted": ("False", "NoConflicts", ""),
    }
    assert listeners["http"].supported_kinds == ("HTTPRoute", "GRPCRoute")
    assert listeners["http"].attached_routes == 1
    assert summary(listeners["tls"].conditions)["Accepted"] == (
        "False",
        "UnsupportedProtocol",
        "kontinuum serves HTTP and HTTPS listeners only, not TLS (TLS passthrough to TLSRoutes)",
    )
    assert summary(listeners["tls"].conditions)["Programmed"] == (
        "False",
        "Invalid",
        "the listener is not accepted",
    )
    assert listeners["tls"].supported_kinds == ()
    assert summary(listeners["picky"].conditions)["ResolvedRefs"] == (
        "False",
        "InvalidRouteKinds",
        "no route kind gateway.networking.k8s.io/TCPRoute",
    )
    assert listeners["picky"].supported_kinds == ("HTTPRoute",)
    assert summary(listeners["selected"].conditions)["Accepted"] == (
        "False",
        "UnsupportedValue",
        "allowedRoutes.namespaces.selector: required with allowedRoutes.namespaces.from: Selector",
    )
    (bound,) = binding.gateways
    assert [li.name for li in bound.listeners] == ["http", "picky"]


def test_a_gateway_with_no_valid_listener_or_cluster_is_not_accepted() -> None:
    no_listener = bind(edit(GATEWAY, "protocol: HTTP}", "protocol: TCP}"))
    assert summary(no_listener.gateway_statuses[0].conditions) == {
        "Accepted": ("False", "ListenersNotValid", "no listener is accepted"),
        "Programmed": ("False", "Invalid", "no listener is accepted"),
    }
    assert no_listener.gateways == ()
    message = "label kontinuum.io/cluster names 'asia', no cluster of the fleet"
    nowhere = bind(edit(GATEWAY, "kontinuum.io/cluster: eu", "kontinuum.io/cluster: asia"))
    assert summary(nowhere.gateway_statuses[0].conditions) == {
        "Accepted": ("False", "Invalid", message),
        "Programmed": ("False", "Invalid", message),
    }
    assert summary(nowhere.gateway_statuses[0].listeners[0].conditions)["Programmed"] == (
        "False",
        "Invalid",
        "the Gateway is not accepted",
    )
    assert nowhere.gateways == ()


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, (), None),
        ("a.example.com", (), ("a.example.com",)),
        (None, ("a.example.com",), ("a.example.com",)),
        ("a.example.com", ("a.example.com", "b.example.com"), ("a.example.com",)),
        (
            "*.example.com",
            ("a.example.com", "a.b.example.com"),
            ("a.example.com", "a.b.example.com"),
        ),
        ("*.example.com", ("example.com",), ()),
        ("a.example.com", ("*.example.com",), ("a.example.com",)),
        ("*.example.com", ("*.a.example.com", "*.com"), ("*.a.example.com", "*.example.com")),
        ("*.example.com", ("*.example.com",), ("*.example.com",)),
        ("a.example.com", ("b.example.com",), ()),
    ],
)
def test_hostname_intersection(
    listener: str | None, route: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    assert intersect_hostnames(listener, route) == expected


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        (None, "example.com", True),
        ("*", "*.example.com", True),
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),  # one or more labels
        ("*.example.com", "example.com", False),
        ("*.example.com", "*.b.example.com", True),  # a narrower wildcard's hosts
        ("*.b.example.com", "*.example.com", False),
        ("*.com", "*", False),
        ("www.example.com", "*.example.com", False),
    ],
)
def test_hostname_covers(pattern: str | None, host: str, expected: bool) -> None:
    assert hostname_covers(pattern, host) is expected


def test_hostname_specificity_puts_exact_before_wildcards_before_none() -> None:
    names = [None, "*.com", "a.example.com", "*.example.com", "example.com", "*"]
    ordered = sorted(names, key=hostname_specificity, reverse=True)
    assert ordered == ["a.example.com", "example.com", "*.example.com", "*.com", None, "*"]


# --- LocalityPolicies ------------------------------------------------------------------------


def policy_conditions(binding: RouteBinding) -> list[tuple[str, str, str, str, str]]:
    return [
        (s.name, f"{s.target[0]}/{s.target[1]}", *summary(s.conditions)["Accepted"])
        for s in binding.policy_statuses
    ]


def test_a_policy_governs_its_target() -> None:
    binding = bind(POLICY)
    assert policy_conditions(binding) == [("a", "Service/hello", *ACCEPTED)]
    (bound,) = binding.policies
    assert bound.services == (HELLO,)
    assert bound.policy.weights == (("eu", 3), ("us", 1))


@pytest.mark.parametrize(
    ("old", "new", "reason", "message"),
    [
        pytest.param(
            "name: hello}",
            "name: nope}",
            "TargetNotFound",
            "no Service demo/nope",
            id="no-service",
        ),
        pytest.param(
            'group: "", kind: Service, name: hello',
            "group: multicluster.x-k8s.io, kind: ServiceImport, name: web",
            "TargetNotFound",
            "no ServiceImport demo/web exported from any cluster",
            id="not-exported",
        ),
        pytest.param(
            "{cluster: us, weight: 1}",
            "{cluster: asia, weight: 1}",
            "Invalid",
            "the fleet has no cluster 'asia'",
            id="unknown-cluster",
        ),
        pytest.param(
            "  weights: [{cluster: eu, weight: 3}, {cluster: us, weight: 1}]",
            "  failover: [{clusters: [eu]}, {regions: [mars-1, us-east-1]}]",
            "Invalid",
            "the fleet has no region 'mars-1'",
            id="unknown-region",
        ),
    ],
)
def test_policy_reasons(old: str, new: str, reason: str, message: str) -> None:
    binding = bind(edit(POLICY, old, new))
    ((_, _, status, found_reason, found_message),) = policy_conditions(binding)
    assert (status, found_reason, found_message) == ("False", reason, message)
    assert binding.policies == ()


def test_the_first_policy_by_name_wins_a_service() -> None:
    second = edit(POLICY, "name: a,", "name: b,")
    import_target = edit(
        edit(POLICY, "name: a,", "name: c,"),
        'group: "", kind: Service, name: hello',
        "group: multicluster.x-k8s.io, kind: ServiceImport, name: hello",
    )
    binding = bind(import_target, second, POLICY)  # file order does not matter
    loses = (
        "False",
        "Conflicted",
        "LocalityPolicy demo/a governs hello too and wins: the first by name (policies in the "
        "fleet files have no creationTimestamp)",
    )
    assert policy_conditions(binding) == [
        ("a", "Service/hello", *ACCEPTED),
        ("b", "Service/hello", *loses),
        ("c", "ServiceImport/hello", *loses),  # a Service and its ServiceImport: one service
    ]
    assert [b.policy.name for b in binding.policies] == ["a"]


def test_an_invalid_policy_claims_nothing() -> None:
    invalid = edit(POLICY, "{cluster: us, weight: 1}", "{cluster: asia, weight: 1}")
    second = edit(POLICY, "name: a,", "name: b,")
    binding = bind(invalid, second)
    assert [(name, reason) for name, _, _, reason, _ in policy_conditions(binding)] == [
        ("a", "Invalid"),
        ("b", "Accepted"),
    ]


# --- the example fleet -----------------------------------------------------------------------


def test_routes_over_the_example_fleet_plane() -> None:
    fleet, errors = load_fleet(EXAMPLE)
    assert errors == []
    plane = build_plane(fleet)
    gateway = edit(GATEWAY, "kontinuum.io/cluster: eu", "kontinuum.io/cluster: eu-central")
    policy = edit(
        POLICY,
        "  weights: [{cluster: eu, weight: 3}, {cluster: us, weight: 1}]",
        "  failover: [{clusters: [eu-central]}, {regions: [eu-central-1]}]",
    )
    ingress = edit(gateway_route(), "name: web,", "name: ingress-web,")
    binding = bind(gateway, ingress, ROUTE, policy, plane=plane)
    assert [summary(s.parents[0].conditions)["Accepted"][0] for s in binding.statuses] == [
        "True",
        "True",
    ]
    assert summary(binding.gateway_statuses[0].conditions)["Accepted"] == ACCEPTED
    assert policy_conditions(binding) == [("a", "Service/hello", *ACCEPTED)]
    hello = binding.routes[0].rules[0].backends[0]
    assert [s.host for s in hello.services] == ["hello.demo.svc.clusterset.local"]
    # Pure and deterministic: the same input binds to the same output.
    assert bind(gateway, ingress, ROUTE, policy, plane=plane) == binding


EAST_WEST = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: east-west
  namespace: kontinuum-system
  labels: {kontinuum.io/cluster: eu}
spec:
  gatewayClassName: kontinuum-east-west
  ADDRESSES
  listeners:
  - {name: mesh, port: 15443, protocol: TLS, tls: {mode: Passthrough}}
"""


def test_an_east_west_gateway_of_a_tenant_s_namespace_is_not_accepted() -> None:
    """It would receive every workspace's endpoints of its cluster: operators' only."""
    tenant = EAST_WEST.replace("namespace: kontinuum-system", "namespace: demo")
    (status,) = bind(
        tenant.replace("ADDRESSES", "addresses: [{value: 192.0.2.1}]")
    ).gateway_statuses
    accepted = status.conditions[0]
    assert (accepted.type, accepted.status) == ("Accepted", "False")
    assert "kontinuum-system only" in accepted.message


def test_an_east_west_gateway_is_programmed_only_with_an_address() -> None:
    with_address = bind(EAST_WEST.replace("ADDRESSES", "addresses: [{value: 192.0.2.1}]"))
    (status,) = with_address.gateway_statuses
    assert [(c.type, c.status) for c in status.conditions] == [
        ("Accepted", "True"),
        ("Programmed", "True"),
    ]
    (status,) = bind(EAST_WEST.replace("ADDRESSES", "")).gateway_statuses
    programmed = status.conditions[1]
    assert (programmed.status, programmed.reason) == ("False", "AddressNotAssigned")
    plain = EAST_WEST.replace("ADDRESSES", "").replace(", tls: {mode: Passthrough}", "")
    http = bind(plain.replace("protocol: TLS", "protocol: HTTP"))
    (listener,) = http.gateway_statuses[0].listeners
    assert listener.conditions[0].reason == "UnsupportedProtocol"


def test_a_consumer_route_wins_for_its_workspace_and_the_producer_route_for_the_rest() -> None:
    producer = edit(
        with_parent(
            '{group: "", kind: Service, name: billing}',
            with_backends("[{name: billing, port: 80}]"),
        ),
        "namespace: demo}",
        "namespace: payments}",
    )
    opened = (grant("Namespace"), grant("Namespace", consumer="ops"))
    routing = mesh_routing(bind(producer, CONSUMER, grants=opened))
    # Both routes are named `web`: their namespaces tell them apart.
    scopes = {
        workspace: [
            b.route.namespace for b in routes_for(routing, ProxyView(workspace, "eu"), BILLING, 80)
        ]
        for workspace in ("demo", "ops", "payments")
    }
    assert scopes == {"demo": ["demo"], "ops": ["payments"], "payments": ["payments"]}
