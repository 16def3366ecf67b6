"""Gateway API routes, Gateways, LocalityPolicies and route grants: every field, every error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from kontinuum.control.fleet import parse_cluster_objects, parse_fleet_objects
from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.gateway_fields import parse_duration
from kontinuum.control.grants import parse_grants
from kontinuum.control.label_selectors import LabelRequirement, LabelSelector
from kontinuum.control.model import Grant
from kontinuum.control.objects import Document
from kontinuum.control.routing import (
    BackendRef,
    CertificateRef,
    ExtensionRef,
    FailoverStep,
    Gateway,
    GatewayListener,
    GrpcMethodMatch,
    HeaderMatch,
    HeaderModifier,
    LocalityPolicy,
    Namespace,
    ParentRef,
    PathMatch,
    PathModifier,
    QueryParamMatch,
    RequestMirror,
    RequestRedirect,
    Retry,
    Route,
    RouteMatch,
    RouteRule,
    RoutingConfig,
    Timeouts,
    UnsupportedFilter,
    URLRewrite,
)

FILE = "routes.yaml"

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: hello, port: 80}]
"""

GRPC_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: echo.v1.Echo, method: Say}}]
    backendRefs: [{name: echo, port: 9000}]
"""

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: demo
  labels: {kontinuum.io/cluster: eu-central}
spec:
  gatewayClassName: kontinuum
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"""

POLICY = """
apiVersion: policy.kontinuum.io/v1alpha1
kind: LocalityPolicy
metadata: {name: hello-split, namespace: demo}
spec:
  targetRefs: [{group: "", kind: Service, name: hello}]
  weights: [{cluster: eu-central, weight: 80}, {cluster: us-east, weight: 20}]
"""


def docs(*texts: str, file: str = FILE) -> list[Document]:
    bodies = yaml.safe_load_all("\n---\n".join(texts))
    return [Document(file, body, i) for i, body in enumerate(bodies, start=1)]


def parse(*texts: str) -> tuple[RoutingConfig, list[str]]:
    config, errors = parse_routing(docs(*texts))
    return config, [str(e) for e in errors]


def only_route(*texts: str) -> Route:
    config, errors = parse(*texts)
    assert errors == []
    (route,) = config.routes
    return route


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# --- what parses, field by field -------------------------------------------------------------


def test_an_httproute_with_every_field() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: demo
  creationTimestamp: "2026-01-05T09:00:00Z"
  generation: 4
spec:
  hostnames: [web.example.com, "*.example.org"]
  parentRefs:
  - {name: ingress, namespace: edge, sectionName: http, port: 80}
  - {group: "", kind: Service, name: hello, port: 80}
  rules:
  - name: canary
    matches:
    - path: {type: Exact, value: /login}
      headers:
      - {name: x-canary, value: "1"}
      - {name: x-user, value: "^a.*", type: RegularExpression}
      queryParams: [{name: v, value: "2"}]
      method: POST
    - path: {type: RegularExpression, value: "^/v[0-9]+/"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-a, value: "1"}]
        add: [{name: x-b, value: "2"}]
        remove: [x-c]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 10}
    - type: URLRewrite
      urlRewrite: {hostname: internal.local, path: {type: ReplaceFullPath, replaceFullPath: /x}}
    backendRefs:
    - {name: hello, port: 80, weight: 90}
    - {group: multicluster.x-k8s.io, kind: ServiceImport, name: billing, namespace: payments}
    timeouts: {request: 10s, backendRequest: 1500ms}
    retry: {attempts: 3, codes: [502, 503], backoff: 100ms}
  - filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: example.com
        port: 8443
        statusCode: 301
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
"""
    route = only_route(text)
    assert route == Route(
        kind="HTTPRoute",
        namespace="demo",
        name="web",
        file=FILE,
        hostnames=("web.example.com", "*.example.org"),
        parents=(
            ParentRef("Gateway", "edge", "ingress", 80, "http", "gateway.networking.k8s.io"),
            ParentRef("Service", "demo", "hello", 80, None, ""),
        ),
        rules=(
            RouteRule(
                name="canary",
                matches=(
                    RouteMatch(
                        path=PathMatch("Exact", "/login"),
                        headers=(
                            HeaderMatch("x-canary", "1"),
                            HeaderMatch("x-user", "^a.*", "RegularExpression"),
                        ),
                        query_params=(QueryParamMatch("v", "2"),),
                        method="POST",
                    ),
                    RouteMatch(path=PathMatch("RegularExpression", "^/v[0-9]+/")),
                ),
                filters=(
                    HeaderModifier(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",)),
                    HeaderModifier(remove=("server",), response=True),
                    RequestMirror(BackendRef("Service", "demo", "shadow", 8080), 10.0),
                    URLRewrite("internal.local", PathModifier("ReplaceFullPath", "/x")),
                ),
                backends=(
                    BackendRef("Service", "demo", "hello", 80, 90),
                    BackendRef(
                        "ServiceImport", "payments", "billing", None, 1, "multicluster.x-k8s.io"
                    ),
                ),
                timeouts=Timeouts(request=10.0, backend_request=1.5),
                retry=Retry(attempts=3, codes=(502, 503), backoff=0.1),
            ),
            RouteRule(
                matches=(RouteMatch(path=PathMatch("PathPrefix", "/")),),
                filters=(
                    RequestRedirect(
                        "https",
                        "example.com",
                        8443,
                        PathModifier("ReplacePrefixMatch", "/new"),
                        301,
                    ),
                ),
            ),
        ),
        created=datetime(2026, 1, 5, 9, tzinfo=UTC),
        generation=4,
    )


def test_the_gateway_api_defaults_are_filled_in() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: ingress}]
"""
    route = only_route(text)
    assert route.namespace == "default"
    assert route.parents == (ParentRef("Gateway", "default", "ingress"),)
    # No rules: one rule matching every path, with no backend (binding answers 500).
    assert route.rules == (RouteRule(matches=(RouteMatch(path=PathMatch("PathPrefix", "/")),)),)
    assert route.created is None
    assert route.generation == 0
    redirect = edit(ROUTE, "    backendRefs: [{name: hello, port: 80}]", "")
    redirect += "    filters: [{type: RequestRedirect, requestRedirect: {}}]\n"
    rule = only_route(redirect).rules[0]
    assert rule.filters == (RequestRedirect(status_code=302),)
    no_path = edit(ROUTE, "[{path: {type: PathPrefix, value: /api}}]", "[{method: GET}]")
    assert only_route(no_path).rules[0].matches == (
        RouteMatch(path=PathMatch("PathPrefix", "/"), method="GET"),
    )
    typed = edit(ROUTE, "{type: PathPrefix, value: /api}", "{value: /api}")
    assert only_route(typed).rules[0].matches[0].path == PathMatch("PathPrefix", "/api")
    backend = only_route(ROUTE).rules[0].backends[0]
    assert backend == BackendRef("Service", "demo", "hello", 80, 1, "", ())


def test_header_matches_differing_only_in_case_keep_the_first() -> None:
    text = edit(
        ROUTE,
        "{path: {type: PathPrefix, value: /api}}",
        "{headers: [{name: X-Env, value: a}, {name: x-env, value: b}]}",
    )
    assert only_route(text).rules[0].matches[0].headers == (HeaderMatch("X-Env", "a"),)


def test_a_mirror_fraction_is_a_percentage() -> None:
    text = ROUTE + (
        "    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80},"
        " fraction: {numerator: 1, denominator: 8}}}]\n"
    )
    (mirror,) = only_route(text).rules[0].filters
    assert mirror == RequestMirror(BackendRef("Service", "demo", "shadow", 80), 12.5)
    whole = text.replace(", fraction: {numerator: 1, denominator: 8}", "")
    assert only_route(whole).rules[0].filters == (
        RequestMirror(BackendRef("Service", "demo", "shadow", 80), None),
    )
    default_denominator = text.replace(", denominator: 8", "")
    (mirror,) = only_route(default_denominator).rules[0].filters
    assert isinstance(mirror, RequestMirror)
    assert mirror.percent == 1.0


def test_extension_cors_and_per_backend_filters_parse_for_the_binding_to_judge() -> None:
    text = ROUTE.replace(
        "    backendRefs: [{name: hello, port: 80}]",
        """    filters:
    - {type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: strict}}
    - {type: CORS, cors: {allowOrigins: ["https://a.example"]}}
    backendRefs:
    - name: hello
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x]}}]""",
    )
    rule = only_route(text).rules[0]
    assert rule.filters == (
        ExtensionRef("example.com", "Auth", "strict"),
        UnsupportedFilter("CORS"),
    )
    assert rule.backends[0].filters == (HeaderModifier(remove=("x",)),)


def test_a_grpcroute() -> None:
    text = (
        GRPC_ROUTE
        + """  - matches:
    - method: {type: RegularExpression, service: "echo\\\\..*"}
      headers: [{name: tenant, value: a}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x, value: y}]}}]
  - backendRefs: [{name: echo, port: 9000, weight: 0}]
"""
    )
    route = only_route(text)
    assert route.kind == "GRPCRoute"
    first, second, third = route.rules
    assert first.matches == (RouteMatch(grpc=GrpcMethodMatch("echo.v1.Echo", "Say")),)
    assert first.timeouts is None
    assert first.retry is None
    assert second.matches == (
        RouteMatch(
            headers=(HeaderMatch("tenant", "a"),),
            grpc=GrpcMethodMatch("echo\\..*", None, "RegularExpression"),
        ),
    )
    assert second.filters == (HeaderModifier(add=(("x", "y"),), response=True),)
    # A GRPCRoute rule without matches matches every call (no path default).
    assert third.matches == ()
    assert third.backends == (BackendRef("Service", "demo", "echo", 9000, 0),)


def test_a_gateway() -> None:
    text = edit(
        GATEWAY,
        "  - {name: http, port: 80, protocol: HTTP}",
        """  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - name: shared
    port: 8080
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
      kinds: [{kind: HTTPRoute}, {group: example.com, kind: Other}]
  - {name: tls, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
  - {name: raw, port: 9000, protocol: example.com/raw}""",
    )
    config, errors = parse(edit(text, "namespace: demo\n", "namespace: demo\n  generation: 2\n"))
    assert errors == []
    assert config.gateways == (
        Gateway(
            namespace="demo",
            name="ingress",
            file=FILE,
            gateway_class="kontinuum",
            cluster="eu-central",
            listeners=(
                GatewayListener("http", 80, "HTTP", "*.example.com"),
                GatewayListener(
                    "shared",
                    8080,
                    "HTTP",
                    None,
                    "All",
                    (("gateway.networking.k8s.io", "HTTPRoute"), ("example.com", "Other")),
                ),
                GatewayListener(
                    "tls",
                    443,
                    "HTTPS",
                    tls_mode="Terminate",
                    certificate_refs=(CertificateRef("demo", "cert"),),
                ),
                GatewayListener("raw", 9000, "example.com/raw"),
            ),
            generation=2,
        ),
    )


def test_a_locality_policy_by_weights_or_by_failover() -> None:
    config, errors = parse(POLICY)
    assert errors == []
    assert config.policies == (
        LocalityPolicy(
            namespace="demo",
            name="hello-split",
            file=FILE,
            targets=(("Service", "hello"),),
            weights=(("eu-central", 80), ("us-east", 20)),
        ),
    )
    failover = edit(
        POLICY,
        "  weights: [{cluster: eu-central, weight: 80}, {cluster: us-east, weight: 20}]",
        "  failover: [{clusters: [edge-paris, eu-central]}, {regions: [us-east-1]}]",
    )
    failover = edit(
        failover,
        'targetRefs: [{group: "", kind: Service, name: hello}]',
        "targetRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello}]",
    )
    (policy,) = parse(failover)[0].policies
    assert policy.targets == (("ServiceImport", "hello"),)
    assert policy.weights == ()
    assert policy.failover == (
        FailoverStep(clusters=("edge-paris", "eu-central")),
        FailoverStep(regions=("us-east-1",)),
    )


def test_objects_are_sorted_and_the_other_fleet_kinds_are_left_alone() -> None:
    other = edit(ROUTE, "name: web,", "name: api,")
    profile = (
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ClusterProfile\nmetadata: {name: eu}"
    )
    config, errors = parse(ROUTE, GRPC_ROUTE, other, profile, GATEWAY, POLICY)
    assert errors == []
    assert [(r.kind, r.name) for r in config.routes] == [
        ("GRPCRoute", "echo"),
        ("HTTPRoute", "api"),
        ("HTTPRoute", "web"),
    ]
    # parse_fleet_objects reads the same files and leaves these kinds to parse_routing.
    sites, site_errors = parse_fleet_objects(docs(ROUTE, GRPC_ROUTE, profile, GATEWAY, POLICY))
    assert site_errors == []
    assert [s.name for s in sites] == ["eu"]


def test_a_kubectl_list_is_read_item_by_item() -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(ROUTE)]}
    config, errors = parse(yaml.safe_dump(listed))
    assert errors == []
    assert [r.name for r in config.routes] == ["web"]


# --- durations (GEP-2257) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1h2m", 3720.0),
        ("0s", 0.0),
        ("1h30m30s500ms", 5430.5),
        ("00060m", 3600.0),
        ("99999h", 99999 * 3600.0),
        ("10", None),
        ("1.5s", None),
        ("-1s", None),
        ("1d", None),
        ("100000s", None),
        ("1h1m1s1ms1h", None),
        ("1us", None),
        ("", None),
    ],
)
def test_gateway_api_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


# --- every rule, with its exact message ------------------------------------------------------

WEB = f"{FILE}: HTTPRoute demo/web"
RULE = "spec.rules[0]"
MATCH = f"{RULE}.matches[0]"
BACKEND = "backendRefs: [{name: hello, port: 80}]"


def filtered(filters: str, backends: str = BACKEND) -> str:
    """ROUTE with these filters in its rule (and these backends)."""
    return edit(ROUTE, f"    {BACKEND}", f"    filters: {filters}\n    {backends}".rstrip())


ROUTE_ERRORS = [
    pytest.param(
        edit(ROUTE, "/api", "api"),
        f"{MATCH}.path.value: must be an absolute path starting with '/' for a PathPrefix "
        "match, got 'api'",
        id="path-relative",
    ),
    pytest.param(
        edit(ROUTE, "/api", "/a//b"),
        f"{MATCH}.path.value: must not contain '//' for a PathPrefix match, got '/a//b'",
        id="path-double-slash",
    ),
    pytest.param(
        edit(ROUTE, "/api", "/a/.."),
        f"{MATCH}.path.value: must not end with '/..' for a PathPrefix match, got '/a/..'",
        id="path-dot-dot",
    ),
    pytest.param(
        edit(ROUTE, "/api", "/a%2Fb"),
        f"{MATCH}.path.value: must not contain '%2F' for a PathPrefix match, got '/a%2Fb'",
        id="path-encoded-slash",
    ),
    pytest.param(
        edit(ROUTE, "/api", '"/a b"'),
        f"{MATCH}.path.value: must only contain path characters (letters, digits, "
        "-._~!$&'()*+,;=:@/, %XX) for a PathPrefix match, got '/a b'",
        id="path-characters",
    ),
    pytest.param(
        edit(ROUTE, "type: PathPrefix", "type: Prefix"),
        f"{MATCH}.path.type: must be one of Exact, PathPrefix, RegularExpression, got 'Prefix'",
        id="path-type",
    ),
    pytest.param(
        edit(ROUTE, "{path: {type: PathPrefix, value: /api}}", "{method: get}"),
        f"{MATCH}.method: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, "
        "TRACE, PATCH, got 'get'",
        id="method",
    ),
    pytest.param(
        edit(
            ROUTE, "{path: {type: PathPrefix, value: /api}}", '{headers: [{name: "a:b", value: x}]}'
        ),
        f"{MATCH}.headers[0].name: must be an HTTP header name (letters, digits and "
        "!#$%&'*+-.^_`|~), got 'a:b'",
        id="header-name",
    ),
    pytest.param(
        edit(ROUTE, "{path: {type: PathPrefix, value: /api}}", '{headers: [{name: a, value: ""}]}'),
        f"{MATCH}.headers[0].value: must be 1 to 4096 characters long, got 0",
        id="header-value",
    ),
    pytest.param(
        edit(ROUTE, "{path: {type: PathPrefix, value: /api}}", "{headers: [{name: a}]}"),
        f"{MATCH}.headers[0].value: required",
        id="header-value-required",
    ),
    pytest.param(
        edit(
            ROUTE,
            "{path: {type: PathPrefix, value: /api}}",
            "{headers: [{name: a, value: x}, {name: a, value: y}]}",
        ),
        f"{MATCH}.headers[1].name: duplicate header 'a' (also {MATCH}.headers[0])",
        id="header-duplicate",
    ),
    pytest.param(
        edit(
            ROUTE,
            "{path: {type: PathPrefix, value: /api}}",
            "{queryParams: [{name: q, value: x}, {name: q, value: y}]}",
        ),
        f"{MATCH}.queryParams[1].name: duplicate query parameter 'q' (also {MATCH}.queryParams[0])",
        id="query-duplicate",
    ),
    pytest.param(
        edit(
            ROUTE,
            "{path: {type: PathPrefix, value: /api}}",
            "{queryParams: [{name: q, value: x, type: Prefix}]}",
        ),
        f"{MATCH}.queryParams[0].type: must be one of Exact, RegularExpression, got 'Prefix'",
        id="query-type",
    ),
    pytest.param(
        edit(ROUTE, "spec:\n", "spec:\n  hostnames: [Web.example.com]\n"),
        "spec.hostnames[0]: must be a hostname (lowercase DNS labels joined by '.', optionally "
        "starting with '*.'), got 'Web.example.com'",
        id="hostname",
    ),
    pytest.param(
        edit(ROUTE, "spec:\n", "spec:\n  hostnames: web.example.com\n"),
        "spec.hostnames: must be a list, got string",
        id="hostnames-type",
    ),
    pytest.param(
        edit(ROUTE, '{group: "", kind: Service, name: hello}', "{kind: Service}"),
        "spec.parentRefs[0].name: required",
        id="parent-name",
    ),
    pytest.param(
        edit(ROUTE, "name: hello}]\n  rules", "name: hello, namespace: Demo}]\n  rules"),
        "spec.parentRefs[0].namespace: must be a DNS label (a-z, 0-9 and '-', at most 63 "
        "characters), got 'Demo'",
        id="parent-namespace",
    ),
    pytest.param(
        edit(ROUTE, "name: hello}]\n  rules", "name: hello, port: 0}]\n  rules"),
        "spec.parentRefs[0].port: must be between 1 and 65535, got 0",
        id="parent-port",
    ),
    pytest.param(
        edit(ROUTE, "kind: Service, name: hello}", "kind: Service/v1, name: hello}"),
        "spec.parentRefs[0].kind: must be a kind (a letter, then letters, digits and '-'), got "
        "'Service/v1'",
        id="parent-kind",
    ),
    pytest.param(
        edit(
            ROUTE,
            '[{group: "", kind: Service, name: hello}]',
            '[{group: "", kind: Service, name: hello}, {group: "", kind: Service, name: hello}]',
        ),
        "spec.parentRefs[1]: refers to the same parent as spec.parentRefs[0]: sectionName or "
        "port must differ",
        id="parent-indistinct",
    ),
    pytest.param(
        edit(
            ROUTE,
            '[{group: "", kind: Service, name: hello}]',
            '[{group: "", kind: Service, name: hello}, '
            '{group: "", kind: Service, name: hello, port: 80}]',
        ),
        "spec.parentRefs[1]: refers to the parent of spec.parentRefs[0]: both must set "
        "sectionName or port, the same ones",
        id="parent-mixed-fields",
    ),
    pytest.param(
        edit(ROUTE, BACKEND, "backendRefs: [{name: hello}]"),
        f"{RULE}.backendRefs[0].port: required for a Service backend",
        id="backend-port",
    ),
    pytest.param(
        edit(ROUTE, BACKEND, "backendRefs: [{name: hello, port: 80, weight: -1}]"),
        f"{RULE}.backendRefs[0].weight: must be between 0 and 1000000, got -1",
        id="backend-weight",
    ),
    pytest.param(
        edit(ROUTE, BACKEND, "backendRefs: [{name: hello, port: 80, weight: '5'}]"),
        f"{RULE}.backendRefs[0].weight: must be an integer, got string",
        id="backend-weight-type",
    ),
    pytest.param(
        edit(ROUTE, BACKEND, "backendRefs: [{name: hello, port: 80, group: Apps}]"),
        f"{RULE}.backendRefs[0].group: must be a DNS subdomain (DNS labels joined by '.'), "
        "got 'Apps'",
        id="backend-group",
    ),
    pytest.param(
        edit(ROUTE, BACKEND, 'backendRefs: [{name: "", port: 80}]'),
        f"{RULE}.backendRefs[0].name: must be 1 to 253 characters long, got 0",
        id="backend-name",
    ),
    pytest.param(
        filtered("[{type: Rewrite}]"),
        f"{RULE}.filters[0].type: must be one of RequestHeaderModifier, ResponseHeaderModifier, "
        "RequestMirror, RequestRedirect, URLRewrite, ExtensionRef, CORS, ExternalAuth, got "
        "'Rewrite'",
        id="filter-type",
    ),
    pytest.param(
        filtered("[{type: RequestHeaderModifier}]"),
        f"{RULE}.filters[0].requestHeaderModifier: required",
        id="filter-body-required",
    ),
    pytest.param(
        filtered("[{type: URLRewrite, urlRewrite: {}, requestRedirect: {}}]"),
        f"{RULE}.filters[0].requestRedirect: must not be set for a URLRewrite filter",
        id="filter-other-body",
    ),
    pytest.param(
        filtered(
            "[{type: RequestHeaderModifier, requestHeaderModifier: {}}, "
            "{type: RequestHeaderModifier, requestHeaderModifier: {}}]"
        ),
        f"{RULE}.filters[1].type: a RequestHeaderModifier filter cannot be repeated (also "
        f"{RULE}.filters[0])",
        id="filter-repeated",
    ),
    pytest.param(
        filtered(
            "[{type: URLRewrite, urlRewrite: {}}, {type: RequestRedirect, requestRedirect: {}}]", ""
        ),
        f"{RULE}.filters[1].type: RequestRedirect and URLRewrite cannot be combined "
        f"({RULE}.filters[0])",
        id="redirect-and-rewrite",
    ),
    pytest.param(
        filtered("[{type: RequestRedirect, requestRedirect: {}}]"),
        f"{RULE}.filters: a RequestRedirect filter cannot be used with backendRefs",
        id="redirect-with-backends",
    ),
    pytest.param(
        filtered("[{type: RequestRedirect, requestRedirect: {statusCode: 304}}]", ""),
        f"{RULE}.filters[0].requestRedirect.statusCode: must be one of 301, 302, 303, 307, 308, "
        "got 304",
        id="redirect-code",
    ),
    pytest.param(
        filtered("[{type: RequestRedirect, requestRedirect: {scheme: ftp}}]", ""),
        f"{RULE}.filters[0].requestRedirect.scheme: must be one of http, https, got 'ftp'",
        id="redirect-scheme",
    ),
    pytest.param(
        filtered('[{type: RequestRedirect, requestRedirect: {hostname: "*.example.com"}}]', ""),
        f"{RULE}.filters[0].requestRedirect.hostname: must be a hostname (lowercase DNS labels "
        "joined by '.'), got '*.example.com'",
        id="redirect-wildcard-host",
    ),
    pytest.param(
        filtered("[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]"),
        f"{RULE}.filters[0].urlRewrite.path.replaceFullPath: required when type is ReplaceFullPath",
        id="rewrite-full-path-required",
    ),
    pytest.param(
        filtered(
            "[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a, "
            "replacePrefixMatch: /b}}}]"
        ),
        f"{RULE}.filters[0].urlRewrite.path.replacePrefixMatch: must not be set when type is "
        "ReplaceFullPath",
        id="rewrite-both-paths",
    ),
    pytest.param(
        edit(ROUTE, "type: PathPrefix", "type: Exact").replace(
            f"    {BACKEND}",
            "    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
            "replacePrefixMatch: /b}}}]\n    " + BACKEND,
        ),
        f"{RULE}.filters: a ReplacePrefixMatch path modifier needs exactly one match, a "
        "PathPrefix one",
        id="replace-prefix-needs-prefix-match",
    ),
    pytest.param(
        filtered(
            "[{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: "
            "'1'}], remove: [x-a]}}]"
        ),
        f"{RULE}.filters[0].requestHeaderModifier.remove[0]: header 'x-a' already has an action "
        f"in this filter ({RULE}.filters[0].requestHeaderModifier.set[0].name)",
        id="header-modifier-one-action",
    ),
    pytest.param(
        filtered(
            "[{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, "
            "percent: 101}}]"
        ),
        f"{RULE}.filters[0].requestMirror.percent: must be between 0 and 100, got 101",
        id="mirror-percent",
    ),
    pytest.param(
        filtered(
            "[{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, "
            "percent: 5, fraction: {numerator: 1}}}]"
        ),
        f"{RULE}.filters[0].requestMirror.fraction: only one of percent or fraction may be set",
        id="mirror-percent-and-fraction",
    ),
    pytest.param(
        filtered(
            "[{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, "
            "fraction: {numerator: 3, denominator: 2}}}]"
        ),
        f"{RULE}.filters[0].requestMirror.fraction.numerator: must not exceed the denominator (2)",
        id="mirror-fraction",
    ),
    pytest.param(
        filtered("[{type: RequestMirror, requestMirror: {}}]"),
        f"{RULE}.filters[0].requestMirror.backendRef: required",
        id="mirror-backend",
    ),
    pytest.param(
        filtered("[{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth}}]"),
        f"{RULE}.filters[0].extensionRef.name: required",
        id="extension-name",
    ),
    pytest.param(
        ROUTE + "    timeouts: {request: 10}\n",
        f"{RULE}.timeouts.request: must be a string, got integer",
        id="timeout-type",
    ),
    pytest.param(
        ROUTE + "    timeouts: {request: 1.5s}\n",
        f"{RULE}.timeouts.request: must be a duration such as 10s, 500ms or 1h30m (GEP-2257), "
        "got '1.5s'",
        id="timeout-format",
    ),
    pytest.param(
        ROUTE + "    timeouts: {request: 1s, backendRequest: 2s}\n",
        f"{RULE}.timeouts.backendRequest: must not be longer than timeouts.request (1s)",
        id="backend-timeout-longer",
    ),
    pytest.param(
        ROUTE + "    retry: {codes: [302]}\n",
        f"{RULE}.retry.codes[0]: must be an HTTP status code between 400 and 599, got 302",
        id="retry-code",
    ),
    pytest.param(
        ROUTE + "    retry: {codes: [503, 503]}\n",
        f"{RULE}.retry.codes[1]: duplicate status code 503",
        id="retry-code-duplicate",
    ),
    pytest.param(
        ROUTE + "    retry: {attempts: -1}\n",
        f"{RULE}.retry.attempts: must be between 0 and 2147483647, got -1",
        id="retry-attempts",
    ),
    pytest.param(
        ROUTE + "    retry: {backoff: soon}\n",
        f"{RULE}.retry.backoff: must be a duration such as 10s, 500ms or 1h30m (GEP-2257), "
        "got 'soon'",
        id="retry-backoff",
    ),
    pytest.param(
        ROUTE + "    name: Canary\n",
        f"{RULE}.name: must be a DNS subdomain (DNS labels joined by '.'), got 'Canary'",
        id="rule-name",
    ),
    pytest.param(
        ROUTE + "    name: a\n  - {name: a}\n",
        "spec.rules[1].name: duplicate rule name 'a' (also spec.rules[0])",
        id="rule-name-duplicate",
    ),
    pytest.param(
        ROUTE.split("  rules:")[0] + "  rules: []\n",
        "spec.rules: must hold at least one entry",
        id="rules-empty",
    ),
    pytest.param(
        ROUTE.split("spec:")[0],
        "spec: required",
        id="spec-required",
    ),
    pytest.param(
        edit(
            ROUTE,
            "metadata: {name: web, namespace: demo}",
            "metadata: {name: web, namespace: demo, creationTimestamp: soon}",
        ),
        "metadata.creationTimestamp: must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got "
        "'soon'",
        id="created",
    ),
    pytest.param(
        edit(
            ROUTE,
            "metadata: {name: web, namespace: demo}",
            "metadata: {name: web, namespace: demo, generation: x}",
        ),
        "metadata.generation: must be an integer, got string",
        id="generation",
    ),
    pytest.param(
        edit(ROUTE, "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"),
        "apiVersion: must be gateway.networking.k8s.io/v1 for kind HTTPRoute, got "
        "'gateway.networking.k8s.io/v1beta1'",
        id="api-version",
    ),
]


@pytest.mark.parametrize(("bad", "message"), ROUTE_ERRORS)
def test_each_route_rule_names_file_object_and_field(bad: str, message: str) -> None:
    config, errors = parse(bad)
    assert errors == [f"{WEB}: {message}"]
    assert config.routes == ()  # an object with an error is left out whole


def test_one_bad_route_leaves_the_others() -> None:
    other = edit(ROUTE, "name: web,", "name: api,")
    config, errors = parse(edit(ROUTE, "port: 80}]", "port: 0}]"), other)
    assert errors == [f"{WEB}: {RULE}.backendRefs[0].port: must be between 1 and 65535, got 0"]
    assert [r.name for r in config.routes] == ["api"]


ECHO = f"{FILE}: GRPCRoute demo/echo"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "{method: {service: echo.v1.Echo, method: Say}}",
            "{method: {type: Exact}}",
            f"{MATCH}.method: one or both of service and method must be set",
            id="method-empty",
        ),
        pytest.param(
            "service: echo.v1.Echo",
            "service: echo/v1",
            f"{MATCH}.method.service: must be a gRPC service name, got 'echo/v1'",
            id="service-name",
        ),
        pytest.param(
            "method: Say}",
            "method: say.it}",
            f"{MATCH}.method.method: must be a gRPC method name, got 'say.it'",
            id="method-name",
        ),
        pytest.param(
            "[{method: {service: echo.v1.Echo, method: Say}}]",
            "[" + ", ".join(["{method: {method: Say}}"] * 9) + "]",
            f"{RULE}.matches: must hold at most 8 entries, got 9",
            id="grpc-matches-limit",
        ),
        pytest.param(
            "    backendRefs: [{name: echo, port: 9000}]",
            "    filters: [{type: URLRewrite, urlRewrite: {}}]",
            f"{RULE}.filters[0].type: must be one of RequestHeaderModifier, "
            "ResponseHeaderModifier, RequestMirror, ExtensionRef, got 'URLRewrite'",
            id="grpc-filter-type",
        ),
    ],
)
def test_grpcroute_rules(old: str, new: str, message: str) -> None:
    config, errors = parse(edit(GRPC_ROUTE, old, new))
    assert errors == [f"{ECHO}: {message}"]
    assert config.routes == ()


def listed(item: str, count: int) -> str:
    return "[" + ", ".join([item] * count) + "]"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "spec:\n",
            "spec:\n  hostnames: " + listed("a.example.com", 17) + "\n",
            "spec.hostnames: must hold at most 16 entries, got 17",
            id="hostnames",
        ),
        pytest.param(
            '[{group: "", kind: Service, name: hello}]',
            "[" + ", ".join(f"{{name: gw{i}}}" for i in range(33)) + "]",
            "spec.parentRefs: must hold at most 32 entries, got 33",
            id="parent-refs",
        ),
        pytest.param(
            "  rules:\n",
            "  rules:\n" + "  - {}\n" * 16,
            "spec.rules: must hold at most 16 entries, got 17",
            id="rules",
        ),
        pytest.param(
            "[{path: {type: PathPrefix, value: /api}}]",
            listed("{method: GET}", 65),
            f"{RULE}.matches: must hold at most 64 entries, got 65",
            id="matches",
        ),
        pytest.param(
            "[{path: {type: PathPrefix, value: /api}}]",
            "[{headers: " + "[" + ", ".join(f"{{name: h{i}, value: v}}" for i in range(17)) + "]}]",
            f"{MATCH}.headers: must hold at most 16 entries, got 17",
            id="headers",
        ),
        pytest.param(
            BACKEND,
            "backendRefs: " + listed("{name: hello, port: 80}", 17),
            f"{RULE}.backendRefs: must hold at most 16 entries, got 17",
            id="backend-refs",
        ),
        pytest.param(
            BACKEND,
            BACKEND
            + "\n    filters: "
            + listed("{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}}}", 17),
            f"{RULE}.filters: must hold at most 16 entries, got 17",
            id="filters",
        ),
        pytest.param(
            "  rules:\n",
            "  rules:\n" + ("  - matches: " + listed("{method: GET}", 60) + "\n") * 3,
            "spec.rules: must hold at most 128 matches in all, got 181",
            id="matches-in-all",
        ),
    ],
)
def test_the_crd_list_limits(old: str, new: str, message: str) -> None:
    config, errors = parse(edit(ROUTE, old, new))
    assert errors == [f"{WEB}: {message}"]
    assert config.routes == ()


def test_a_duplicate_object_is_reported_and_the_first_kept() -> None:
    second = edit(ROUTE, "port: 80}]", "port: 81}]")
    config, errors = parse_routing([*docs(ROUTE), *docs(second, file="z.yaml")])
    assert [str(e) for e in errors] == [
        f"z.yaml: HTTPRoute demo/web: metadata.name: duplicate HTTPRoute, also in {FILE}"
    ]
    assert config.routes[0].rules[0].backends[0].port == 80
    # The same name in another kind is another object.
    config, errors = parse(ROUTE, edit(GRPC_ROUTE, "name: echo, namespace", "name: web, namespace"))
    assert errors == []
    assert len(config.routes) == 2


def test_routing_objects_belong_to_the_whole_fleet() -> None:
    _, errors = parse_cluster_objects("eu", docs(ROUTE))
    assert [str(e) for e in errors] == [
        f"{WEB}: kind: a HTTPRoute does not belong to one cluster: put it in the fleet "
        "directory's *.yaml"
    ]


def test_a_listener_namespace_selector_is_read_as_written() -> None:
    text = edit(
        GATEWAY,
        "protocol: HTTP}",
        """protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {
      matchLabels: {team: shop, tier: null},
      matchExpressions: [{key: env, operator: NotIn, values: [dev]},
                         {key: x, operator: Odd}]}}}}""",
    )
    config, errors = parse(text)
    assert errors == []
    (listener,) = config.gateways[0].listeners
    assert listener.allowed_namespaces == "Selector"
    assert listener.namespace_selector == LabelSelector(
        (("team", "shop"), ("tier", "")),
        (LabelRequirement("env", "NotIn", ("dev",)), LabelRequirement("x", "Odd")),
    )


def test_namespaces_and_their_labels() -> None:
    labelled = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: shop}}"
    bare = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ops, namespace: ignored}"
    config, errors = parse(labelled, bare, ROUTE)
    assert errors == []
    assert config.namespaces == (
        Namespace("ops", FILE),
        Namespace("shop", FILE, (("team", "shop"),)),
    )
    assert len(config.routes) == 1
    bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop, labels: {team: a b}}"
    config, errors = parse(bad, labelled)
    assert errors == [
        f"{FILE}: Namespace Shop: metadata.name: must be a DNS label (a-z, 0-9 and '-', at most "
        "63 characters), got 'Shop'",
    ]
    assert [n.name for n in config.namespaces] == ["shop"]
    _, errors = parse_cluster_objects("eu", docs(labelled))
    assert [str(e) for e in errors] == [
        f"{FILE}: Namespace shop: kind: a Namespace does not belong to one cluster: put it in "
        "the fleet directory's *.yaml"
    ]


# --- Gateways --------------------------------------------------------------------------------

INGRESS = f"{FILE}: Gateway demo/ingress"
LISTENER = "spec.listeners[0]"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "  labels: {kontinuum.io/cluster: eu-central}\n",
            "",
            "metadata.labels[kontinuum.io/cluster]: required: it names the cluster "
            "(ClusterProfile) this gateway runs in",
            id="cluster-label",
        ),
        pytest.param(
            "kontinuum.io/cluster: eu-central",
            "kontinuum.io/cluster: EU",
            "metadata.labels[kontinuum.io/cluster]: must be a DNS label (a-z, 0-9 and '-', at "
            "most 63 characters), got 'EU'",
            id="cluster-label-format",
        ),
        pytest.param(
            "  gatewayClassName: kontinuum\n",
            "",
            "spec.gatewayClassName: required",
            id="class",
        ),
        pytest.param(
            "  listeners:\n  - {name: http, port: 80, protocol: HTTP}",
            "  listeners: []",
            "spec.listeners: must hold at least one entry",
            id="no-listener",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP}\n  - {name: http, port: 81, protocol: HTTP}",
            f"spec.listeners[1].name: duplicate listener 'http' (also {LISTENER})",
            id="listener-name-duplicate",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP}\n  - {name: other, port: 80, protocol: HTTP}",
            f"spec.listeners[1]: same port, protocol and hostname as {LISTENER}",
            id="listener-indistinct",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, tls: {mode: Terminate}}",
            f"{LISTENER}.tls: must not be set for protocol HTTP",
            id="tls-on-http",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: TCP, hostname: a.example.com}",
            f"{LISTENER}.hostname: must not be set for protocol TCP",
            id="hostname-on-tcp",
        ),
        pytest.param(
            "protocol: HTTP}",
            'protocol: "HTTP 2"}',
            f"{LISTENER}.protocol: must be a protocol name such as HTTP, got 'HTTP 2'",
            id="protocol",
        ),
        pytest.param(
            "port: 80,",
            "port: 70000,",
            f"{LISTENER}.port: must be between 1 and 65535, got 70000",
            id="listener-port",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, allowedRoutes: {namespaces: {from: Elsewhere}}}",
            f"{LISTENER}.allowedRoutes.namespaces.from: must be one of All, Selector, Same, got "
            "'Elsewhere'",
            id="allowed-from",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, allowedRoutes: {kinds: [{group: example.com}]}}",
            f"{LISTENER}.allowedRoutes.kinds[0].kind: required",
            id="allowed-kind",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: [a]}}}",
            f"{LISTENER}.allowedRoutes.namespaces.selector: must be a mapping, got list",
            id="selector-type",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
            "selector: {matchExpressions: [{key: team}]}}}}",
            f"{LISTENER}.allowedRoutes.namespaces.selector.matchExpressions[0].operator: required",
            id="selector-operator",
        ),
        pytest.param(
            "protocol: HTTP}",
            "protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, "
            "selector: {matchLabels: {team: [shop]}}}}}",
            f"{LISTENER}.allowedRoutes.namespaces.selector.matchLabels[team]: must be a string, "
            "got list",
            id="selector-label",
        ),
    ],
)
def test_gateway_rules(old: str, new: str, message: str) -> None:
    config, errors = parse(edit(GATEWAY, old, new))
    assert errors == [f"{INGRESS}: {message}"]
    assert config.gateways == ()


# --- LocalityPolicies ------------------------------------------------------------------------

SPLIT = f"{FILE}: LocalityPolicy demo/hello-split"
WEIGHTS = "  weights: [{cluster: eu-central, weight: 80}, {cluster: us-east, weight: 20}]"
TARGETS = 'targetRefs: [{group: "", kind: Service, name: hello}]'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            WEIGHTS,
            WEIGHTS + "\n  failover: [{clusters: [eu-central]}]",
            "spec: weights and failover cannot both be set: one spreads traffic by weight, the "
            "other by priority",
            id="weights-and-failover",
        ),
        pytest.param(WEIGHTS, "", "spec: one of weights or failover is required", id="neither"),
        pytest.param(
            TARGETS,
            "targetRefs: []",
            "spec.targetRefs: must hold at least one entry",
            id="no-target",
        ),
        pytest.param(
            TARGETS,
            "targetRefs: [{group: apps, kind: Deployment, name: hello}]",
            'spec.targetRefs[0].group: must be "" (Service) or multicluster.x-k8s.io '
            "(ServiceImport), got 'apps'",
            id="target-group",
        ),
        pytest.param(
            TARGETS,
            'targetRefs: [{group: "", kind: ServiceImport, name: hello}]',
            "spec.targetRefs[0].kind: must be Service in group '', got 'ServiceImport'",
            id="target-kind",
        ),
        pytest.param(
            TARGETS,
            'targetRefs: [{group: "", kind: Service, name: hello, namespace: other}]',
            "spec.targetRefs[0].namespace: must not be set: a policy targets its own namespace",
            id="target-namespace",
        ),
        pytest.param(
            TARGETS,
            'targetRefs: [{group: "", kind: Service, name: hello}, '
            '{group: "", kind: Service, name: hello}]',
            "spec.targetRefs[1]: duplicate target Service hello (also spec.targetRefs[0])",
            id="target-duplicate",
        ),
        pytest.param(
            "{cluster: us-east, weight: 20}",
            "{cluster: eu-central, weight: 20}",
            "spec.weights[1].cluster: duplicate cluster 'eu-central' (also spec.weights[0])",
            id="weight-cluster-duplicate",
        ),
        pytest.param(
            "weight: 20}",
            "weight: 1000001}",
            "spec.weights[1].weight: must be between 0 and 1000000, got 1000001",
            id="weight-range",
        ),
        pytest.param(
            WEIGHTS,
            "  weights: [{cluster: eu-central, weight: 0}]",
            "spec.weights: at least one weight must be above 0",
            id="weights-all-zero",
        ),
        pytest.param(
            WEIGHTS,
            "  failover: [{clusters: [a], regions: [b]}]",
            "spec.failover[0]: must set exactly one of clusters or regions",
            id="step-both",
        ),
        pytest.param(
            WEIGHTS,
            "  failover: [{clusters: []}]",
            "spec.failover[0].clusters: must hold at least one entry",
            id="step-empty",
        ),
        pytest.param(
            WEIGHTS,
            "  failover: [{clusters: [eu]}, {clusters: [us, eu]}]",
            "spec.failover[1].clusters[1]: 'eu' is already in spec.failover[0].clusters[0]",
            id="step-repeated",
        ),
        pytest.param(
            WEIGHTS,
            "  failover: [{regions: ['eu central']}]",
            "spec.failover[0].regions[0]: must be a label value (at most 63 characters: letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit), got "
            "'eu central'",
            id="step-region",
        ),
    ],
)
def test_locality_policy_rules(old: str, new: str, message: str) -> None:
    config, errors = parse(edit(POLICY, old, new))
    assert errors == [f"{SPLIT}: {message}"]
    assert config.policies == ()


# --- ReferenceGrants for routes --------------------------------------------------------------

ROUTE_GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-to-billing, namespace: payments}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: demo}]
  to: [{group: "", kind: Service, name: billing}]
"""
GRANT = f"{FILE}: ReferenceGrant payments/routes-to-billing"


def test_a_route_reference_grant_is_a_grant_from_routes() -> None:
    text = edit(
        ROUTE_GRANT,
        "namespace: demo}]",
        "namespace: demo}, {group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: ops}]",
    ).replace(
        'to: [{group: "", kind: Service, name: billing}]',
        'to: [{group: "", kind: Service, name: billing}, '
        "{group: multicluster.x-k8s.io, kind: ServiceImport}]",
    )
    grants, errors = parse_grants(docs(text))
    assert errors == []
    assert grants == (
        Grant("payments", "demo", None, "HTTPRoute", "ServiceImport"),
        Grant("payments", "demo", "billing", "HTTPRoute", "Service"),
        Grant("payments", "ops", None, "GRPCRoute", "ServiceImport"),
        Grant("payments", "ops", "billing", "GRPCRoute", "Service"),
    )


def test_a_workspace_grant_keeps_its_meaning() -> None:
    text = edit(
        ROUTE_GRANT,
        "group: gateway.networking.k8s.io, kind: HTTPRoute",
        'group: "", kind: Namespace',
    )
    grants, errors = parse_grants(docs(text))
    assert (grants, errors) == ((Grant("payments", "demo", "billing"),), [])
    assert grants[0].from_kind == "Namespace"
    assert grants[0].to_kind == "Service"


def grant_edit(*edits: tuple[str, str]) -> str:
    text = ROUTE_GRANT
    for old, new in edits:
        text = edit(text, old, new)
    return text


TO_SERVICE = 'to: [{group: "", kind: Service, name: billing}]'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            grant_edit(
                ("group: gateway.networking.k8s.io, kind: HTTPRoute", 'group: "", kind: Namespace'),
                (TO_SERVICE, "to: [{group: multicluster.x-k8s.io, kind: ServiceImport}]"),
            ),
            "spec.to[0].kind: a ServiceImport can be granted to routes only (from HTTPRoute or "
            "GRPCRoute): a Namespace grant opens Services",
            id="workspace-grant-to-import",
        ),
    ],
)
def test_route_grant_errors(text: str, message: str) -> None:
    grants, errors = parse_grants(docs(text))
    assert grants == ()
    assert [str(e) for e in errors] == [f"{GRANT}: {message}"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            grant_edit(("group: gateway.networking.k8s.io", "group: example.com")),
            id="from-route-of-another-group",
        ),
        pytest.param(
            grant_edit((TO_SERVICE, "to: [{group: example.com, kind: ServiceImport}]")),
            id="to-import-of-another-group",
        ),
        pytest.param(grant_edit(("kind: HTTPRoute", "kind: TLSRoute")), id="from-tls-route"),
        pytest.param(grant_edit(("kind: HTTPRoute", "kind: ListenerSet")), id="from-listener-set"),
        pytest.param(
            grant_edit((TO_SERVICE, 'to: [{group: "", kind: ConfigMap}]')), id="to-config-map"
        ),
        pytest.param(
            grant_edit((TO_SERVICE, "to: [{group: multicluster.x-k8s.io, kind: Service}]")),
            id="to-service-of-the-mcs-group",
        ),
        pytest.param(
            grant_edit((TO_SERVICE, 'to: [{group: "", kind: ServiceImport}]')),
            id="to-import-of-the-core-group",
        ),
    ],
)
def test_a_route_grant_entry_of_a_kind_kontinuum_does_not_read_matches_nothing(
    text: str,
) -> None:
    # The Gateway API CRD takes any kind in `from` and `to`; one kontinuum reads nothing of
    # matches nothing, and is no error.
    assert parse_grants(docs(text)) == ((), [])


def test_a_grant_s_other_entries_apply_beside_one_of_an_unread_kind() -> None:
    text = grant_edit(
        (
            "from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: demo}]",
            "from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: ops}, "
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: demo}]",
        ),
        (TO_SERVICE, 'to: [{group: "", kind: ConfigMap, name: settings}, ' + TO_SERVICE[5:]),
    )
    grants, errors = parse_grants(docs(text))
    assert (grants, errors) == ((Grant("payments", "demo", "billing", "HTTPRoute", "Service"),), [])
