"""The routing IR: what Gateway API routes, Gateways and locality policies ask for.

Small immutable values with no Kubernetes or Envoy types, read from the standard resources
by `kontinuum.control.gateway_api` and bound to the service plane by
`kontinuum.control.route_binding`. They keep what the author wrote, with the Gateway API
defaults filled in (a path match on `/`, weight 1, redirect status 302), so that a value
means the same whatever produced it. References (`ParentRef`, `BackendRef`) keep their group
and kind as written: whether kontinuum can serve them is the binding's decision, reported
in status, not a reason to drop the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from kontinuum.control.label_selectors import Labels, LabelSelector

PathType = Literal["Exact", "PathPrefix", "RegularExpression"]
MatchType = Literal["Exact", "RegularExpression"]
RedirectCode = Literal[301, 302, 303, 307, 308]
PathModifierType = Literal["ReplaceFullPath", "ReplacePrefixMatch"]
RouteKind = Literal["HTTPRoute", "GRPCRoute"]
NamespacesFrom = Literal["Same", "All", "Selector"]
TlsMode = Literal["Terminate", "Passthrough"]

# The GatewayClass of east-west gateways: one per cluster, where sidecars of other networks
# reach the cluster's services; not for routes.
EAST_WEST_CLASS: Final = "kontinuum-east-west"
# The only namespace whose east-west Gateways are honoured: an east-west gateway receives
# every workspace's endpoints of its cluster, so only the fleet's operators may declare one
# (a tenant's Gateway of the class is not accepted).
EAST_WEST_NAMESPACE: Final = "kontinuum-system"
GATEWAY_CONTROLLER: Final = "kontinuum.io/gateway-controller"
"""kontinuum's `controllerName`: of the GatewayClasses whose Gateways it serves, and of its
entries in shared status lists."""
CORE_GROUP: Final = ""
GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
MCS_GROUP: Final = "multicluster.x-k8s.io"

Header = tuple[str, str]  # (name, value)


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathType
    value: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A request header to match; names compare case-insensitively, as HTTP says."""

    name: str
    value: str
    type: MatchType = "Exact"


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    name: str
    value: str
    type: MatchType = "Exact"


@dataclass(frozen=True, slots=True)
class GrpcMethodMatch:
    """A gRPC service and/or method (None: any)."""

    service: str | None
    method: str | None
    type: MatchType = "Exact"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One way a request selects a rule: every part that is set must hold (AND)."""

    path: PathMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: str | None = None
    grpc: GrpcMethodMatch | None = None


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """Set, add or remove headers of the request (or, with `response`, of the response)."""

    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    remove: tuple[str, ...] = ()
    response: bool = False


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: PathModifierType
    value: str


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    """Answer with a redirect; None parts keep the request's own (scheme, host, path)."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathModifier | None = None
    status_code: RedirectCode = 302


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class RequestMirror:
    """Send a copy of `percent` % of requests (None: all) to `backend`; ignore its answers."""

    backend: BackendRef
    percent: float | None = None


@dataclass(frozen=True, slots=True)
class ExtensionRef:
    """An implementation-specific filter, named by reference (kontinuum has none yet)."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class UnsupportedFilter:
    """A standard filter type kontinuum does not serve yet (`CORS`, `ExternalAuth`)."""

    type: str


Filter = (
    HeaderModifier | RequestRedirect | URLRewrite | RequestMirror | ExtensionRef | UnsupportedFilter
)


@dataclass(frozen=True, slots=True)
class BackendRef:
    """Where a rule sends requests: `kind` is `Service` (the Service of that name in the
    proxy's own cluster) or `ServiceImport` (the cluster-set service); any other group/kind
    is kept so that status can name it."""

    kind: str
    namespace: str
    name: str
    port: int | None = None
    weight: int = 1
    group: str = CORE_GROUP
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; 0 disables the timeout, None leaves Envoy's default (15 s per request)."""

    request: float | None = None
    backend_request: float | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry up to `attempts` times (0: never) on these status codes, `backoff` seconds apart."""

    attempts: int | None = None
    codes: tuple[int, ...] = ()
    backoff: float | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Matches (any of them selects the rule), then filters in order, then the backends.

    No matches: every request (an HTTPRoute rule gets the API's default, a path prefix `/`).
    """

    name: str = ""
    matches: tuple[RouteMatch, ...] = ()
    filters: tuple[Filter, ...] = ()
    backends: tuple[BackendRef, ...] = ()
    timeouts: Timeouts | None = None
    retry: Retry | None = None


@dataclass(frozen=True, slots=True)
class ParentRef:
    """What a route attaches to: a `Gateway` (ingress) or a `Service`/`ServiceImport` (mesh)."""

    kind: str
    namespace: str
    name: str
    port: int | None = None
    section_name: str | None = None
    group: str = GATEWAY_GROUP

    def __str__(self) -> str:
        where = f"{self.kind} {self.namespace}/{self.name}"
        if self.section_name:
            where += f" section {self.section_name}"
        return where + (f" port {self.port}" if self.port else "")


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTPRoute or GRPCRoute. `created` orders routes of equal precedence (oldest first)."""

    kind: RouteKind
    namespace: str
    name: str
    file: str
    hostnames: tuple[str, ...] = ()
    parents: tuple[ParentRef, ...] = ()
    rules: tuple[RouteRule, ...] = ()
    created: datetime | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class CertificateRef:
    """A listener's `tls.certificateRefs` entry (a SecretObjectReference), as written, its
    namespace filled in with the Gateway's."""

    namespace: str
    name: str
    group: str = CORE_GROUP
    kind: str = "Secret"

    def __str__(self) -> str:
        what = self.kind if not self.group else f"{self.group}/{self.kind}"
        return f"{what} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class GatewayListener:
    """A port a Gateway listens on; which routes may attach to it, by namespace and kind.

    `allowed_kinds` holds (group, kind) pairs; empty means the protocol's default kinds.
    `tls_mode` is None when the listener has no `tls`.
    `namespace_selector` is `allowedRoutes.namespaces.selector`, as written (None: unset).
    """

    name: str
    port: int
    protocol: str
    hostname: str | None = None
    allowed_namespaces: NamespacesFrom = "Same"
    allowed_kinds: tuple[tuple[str, str], ...] = ()
    tls_mode: TlsMode | None = None
    certificate_refs: tuple[CertificateRef, ...] = ()
    client_validation: bool = False  # `tls.frontendValidation` is set (not supported)
    namespace_selector: LabelSelector | None = None


@dataclass(frozen=True, slots=True)
class TlsSecret:
    """A `v1 Secret` of the fleet-wide objects, as a listener may use it: its PEM certificate
    chain and private key, and `problem`, why it cannot serve (empty: it can). The key is
    never shown (`repr`) and never written into errors, status or logs."""

    namespace: str
    name: str
    file: str
    certificate: bytes = b""
    key: bytes = field(default=b"", repr=False)
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Gateway:
    """An ingress gateway and the fleet cluster it runs in (label `kontinuum.io/cluster`)."""

    namespace: str
    name: str
    file: str
    gateway_class: str
    cluster: str
    listeners: tuple[GatewayListener, ...] = ()
    generation: int = 0
    addresses: tuple[str, ...] = ()  # `spec.addresses` of type IPAddress: where it listens

    @property
    def east_west(self) -> bool:
        return self.gateway_class == EAST_WEST_CLASS

    @property
    def terminates_tls(self) -> bool:
        """Whether it declares an HTTPS listener: its proxies hold TLS private keys."""
        return any(listener.protocol == "HTTPS" for listener in self.listeners)


@dataclass(frozen=True, slots=True)
class FailoverStep:
    """One priority level of a failover order: these clusters, or the clusters of these
    regions."""

    clusters: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalityPolicy:
    """How a service's traffic is spread over clusters: by `weights` (cluster, weight), or by
    the `failover` priority order. At most one of the two is set.

    `targets` are (kind, name) pairs, `Service` or `ServiceImport`, in the policy's namespace.
    """

    namespace: str
    name: str
    file: str
    targets: tuple[tuple[str, str], ...] = ()
    weights: tuple[tuple[str, int], ...] = ()
    failover: tuple[FailoverStep, ...] = ()
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An object whose newest version is invalid (as a config cluster reports them): the
    newest version's generation and errors, each `field: message`, and whether its last
    good version serves in its place."""

    kind: str
    namespace: str
    name: str
    generation: int
    errors: tuple[str, ...]
    kept: bool = True  # False: no version was ever valid, nothing serves in its place
    parents: tuple[ParentRef, ...] = ()  # a route's parentRefs, as its newest version has them
    targets: tuple[tuple[str, str], ...] = ()  # a policy's targetRefs (kind, name), likewise


@dataclass(frozen=True, slots=True)
class Namespace:
    """A `v1 Namespace` of the fleet: the labels a listener's namespace selector reads."""

    name: str
    file: str
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Every valid route, Gateway, LocalityPolicy and Namespace of the fleet, each sorted by
    identity, and the objects among them whose newest version was rejected."""

    routes: tuple[Route, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    policies: tuple[LocalityPolicy, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    gateway_classes: tuple[str, ...] = ()  # a config cluster's GatewayClasses of kontinuum
    secrets: tuple[TlsSecret, ...] = ()  # the Secrets listeners may name, by identity
    # a config cluster's routes that are no longer kontinuum's but carry its status entries
    disowned: tuple[tuple[str, str, str], ...] = ()


def _within(host: str, wildcard: str) -> bool:
    """Whether `host` (exact, or itself a wildcard) lies inside `wildcard` (`*.example.com`)."""
    body = host[2:] if host.startswith("*.") else host
    return body.endswith(wildcard[1:])


def intersect_hostnames(listener: str | None, route: tuple[str, ...]) -> tuple[str, ...] | None:
    """The hostnames a route serves on a listener, by the Gateway API's intersection rules.

    None: no restriction (neither names a hostname). An empty tuple: no hostname in common,
    so the route cannot attach to this listener. A wildcard matches one or more labels.
    """
    if not route:
        return None if listener is None else (listener,)
    if listener is None:
        return route
    found: list[str] = []
    for host in route:
        if host == listener or (listener.startswith("*.") and _within(host, listener)):
            found.append(host)
        elif host.startswith("*.") and _within(listener, host):
            found.append(listener)
    return tuple(dict.fromkeys(found))


def hostname_covers(pattern: str | None, host: str) -> bool:
    """Whether a request for `host` (a hostname, or a wildcard standing for the hosts it
    matches) matches `pattern`: None or `*` matches every host, a wildcard one or more
    labels, an exact hostname itself only."""
    if pattern is None or pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*.") and host != "*" and _within(host, pattern)


def hostname_specificity(hostname: str | None) -> tuple[int, int]:
    """Larger is more specific: an exact hostname, then a wildcard, longer first, then no
    hostname (or `*`). Orders both listeners (a request matches the most specific listener
    whose hostname matches it) and routes (the Gateway API's hostname precedence)."""
    if hostname is None or hostname == "*":
        return (0, 0)
    return (1 if hostname.startswith("*.") else 2, len(hostname))
