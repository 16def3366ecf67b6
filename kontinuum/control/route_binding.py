"""Routes, Gateways and LocalityPolicies bound to the service plane, with their status.

Pure: no I/O, no Envoy types. `bind_routes` decides what the routing IR (`routing.py`) means
for the current plane and grants, and writes the status a Gateway API controller would. The
rules, as the Gateway API and GEP-713 state them and where kontinuum decides:

Routes, per parentRef, condition `Accepted`:
- A `Gateway` parent (group gateway.networking.k8s.io) needs a Gateway of the fleet files and
  a listener matching its sectionName and port (else `NoMatchingParent`), accepted (see below)
  and admitting the route's kind and namespace (else `NotAllowedByListeners`: `from: Same`
  admits the Gateway's namespace, `All` every one, `Selector` those whose labels the
  listener's selector selects; `label_selectors` says which labels a namespace has), whose
  hostname intersects the route's (else `NoMatchingListenerHostname`).
- A `Service` parent (group ""), the GAMMA mesh attachment, needs a Service of that name in
  some cluster; a `ServiceImport` parent (group multicluster.x-k8s.io) needs the cluster-set
  service (exported from some cluster). Either must be visible to the route's workspace (its
  own namespace's, or granted to it by a workspace ReferenceGrant), else `NoMatchingParent`
  with the same message as for a missing one, so status reveals nothing that workspace
  isolation hides. sectionName names a Service port, port numbers one. Other kinds:
  `NoMatchingParent`.
- An HTTPRoute and a GRPCRoute are never merged (`cross_serving`): on a Gateway listener
  where both serve a hostname, the older keeps it (the other, left with no listener,
  `HostnameConflict`); on a Service port that both of one namespace attach to, the
  GRPCRoutes apply (the HTTPRoute, left with no port, `Conflicted`).
- Then `UnsupportedValue` when the route holds what kontinuum cannot serve
  (`unsupported_routes`): a regular expression that Python's `re` rejects or that uses what
  RE2 (Envoy's dialect) lacks (lookaround, backreferences, atomic groups, possessive
  quantifiers, conditionals, comments, inline flags other than i, m, s); a `CORS` or
  `ExternalAuth` filter; a backendRef filter other than `RequestHeaderModifier` /
  `ResponseHeaderModifier` (those two are served: they apply to the requests sent to that
  backend only).

Condition `ResolvedRefs` is about the route's references, so it is the same for every parent;
False with the reason of the first problem, and every problem in the message:
`InvalidKind` (a backendRef neither a core Service nor a ServiceImport, or an ExtensionRef
filter: kontinuum has no extensions), `RefNotPermitted` (a backendRef to another namespace
without a ReferenceGrant there from the route's kind and namespace to that kind and name;
a consumer route, every parent a Service or ServiceImport of another namespace, needs none
for a backend its own workspace may reach, since it applies to that workspace's callers
only: GEP-1294),
`BackendNotFound` (a `Service`: none of that name in any cluster; a `ServiceImport`: no cluster
exports it; or no such port; a ServiceImport without a port must have exactly one).

A `BoundRoute` holds a route's accepted parents only (a route no parent accepts is left out)
and every rule with its valid backends. As the Gateway API says, requests an invalid backend
would have had get HTTP 500 (gRPC: UNAVAILABLE): its weight is the rule's `invalid_weight`.
A rule with no backend weight left and no redirect, or with an unresolved ExtensionRef,
answers every request so (`invalid_backends`). An invalid mirror is dropped. A `Service`
backend means that Service in the proxy's own cluster, a `ServiceImport` the cluster-set
service: `ResolvedBackend.services` holds the plane services the translator chooses from.

Gateways and LocalityPolicies are bound by `gateway_binding` (its docstring has their rules);
`bind_routes` returns every binding and status at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from kontinuum.control.cross_serving import (
    Conflict,
    ListenerKey,
    RouteKey,
    ServicePortKey,
    cross_serving_conflicts,
    listener_key,
    mesh_grpc_ports,
    route_key,
)
from kontinuum.control.gateway_binding import (
    SERVICE_KINDS,
    BoundGateway,
    BoundPolicy,
    GatewayStatus,
    PolicyStatus,
    bind_policies,
    gateway_status,
    kind_label,
    listener_condition,
    listener_kinds,
    plane_services,
    protocol_conflicts,
)
from kontinuum.control.label_selectors import Labels, namespace_labels, selects
from kontinuum.control.model import Grant, reference_granted
from kontinuum.control.plane import Condition, PlaneService, ServiceKey, ServicePlane
from kontinuum.control.routing import (
    GATEWAY_GROUP,
    MCS_GROUP,
    BackendRef,
    ExtensionRef,
    Gateway,
    GatewayListener,
    ParentRef,
    RequestMirror,
    RequestRedirect,
    Route,
    RouteRule,
    RoutingConfig,
    intersect_hostnames,
)
from kontinuum.control.unsupported_routes import unsupported as route_unsupported


@dataclass(frozen=True, slots=True)
class ParentStatus:
    ref: ParentRef
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """A route's status as the Gateway API writes it: conditions per parentRef."""

    kind: str
    namespace: str
    name: str
    file: str
    generation: int
    parents: tuple[ParentStatus, ...]


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    """A valid backendRef and the plane services it may lead to, on `port`."""

    ref: BackendRef
    services: tuple[PlaneService, ...]
    port: int

    @property
    def weight(self) -> int:
        return self.ref.weight


@dataclass(frozen=True, slots=True)
class BoundMirror:
    backend: ResolvedBackend
    percent: float | None = None


@dataclass(frozen=True, slots=True)
class BoundRule:
    """A rule with its valid backends; `invalid_weight` of the weight answers HTTP 500."""

    rule: RouteRule
    backends: tuple[ResolvedBackend, ...] = ()
    invalid_weight: int = 0
    mirrors: tuple[BoundMirror, ...] = ()
    invalid_filters: bool = False

    @property
    def invalid_backends(self) -> bool:
        """Whether every request matching this rule gets HTTP 500 (gRPC: UNAVAILABLE)."""
        if self.invalid_filters:
            return True
        if any(isinstance(f, RequestRedirect) for f in self.rule.filters):
            return False  # the redirect answers (a redirect rule has no backends)
        return not any(b.weight for b in self.backends)


@dataclass(frozen=True, slots=True)
class BoundParent:
    """An accepted parent: the Service/ServiceImport (and ports) or the Gateway listeners."""

    ref: ParentRef
    services: tuple[PlaneService, ...] = ()
    ports: tuple[int, ...] = ()
    gateway: Gateway | None = None
    listeners: tuple[GatewayListener, ...] = ()


@dataclass(frozen=True, slots=True)
class BoundRoute:
    route: Route
    parents: tuple[BoundParent, ...]
    rules: tuple[BoundRule, ...]


@dataclass(frozen=True, slots=True)
class RouteBinding:
    routes: tuple[BoundRoute, ...] = ()
    statuses: tuple[RouteStatus, ...] = ()
    policies: tuple[BoundPolicy, ...] = ()
    policy_statuses: tuple[PolicyStatus, ...] = ()
    gateways: tuple[BoundGateway, ...] = ()
    gateway_statuses: tuple[GatewayStatus, ...] = ()


# --- references ------------------------------------------------------------------------------


def _visible(service: PlaneService, workspace: str, grants: tuple[Grant, ...]) -> bool:
    """As `mcs.granted`: the workspace's own, or opened to it by a workspace grant."""
    return service.workspace == workspace or any(
        g.from_kind == "Namespace"
        and g.provider == service.workspace
        and g.consumer == workspace
        and g.service in (None, service.name)
        for g in grants
    )


def is_consumer_route(route: Route) -> bool:
    """A GAMMA consumer route: every parent a Service or ServiceImport of another namespace.
    It applies to the callers of its own namespace only (GEP-1294)."""
    return bool(route.parents) and all(
        (ref.group, ref.kind) in SERVICE_KINDS and ref.namespace != route.namespace
        for ref in route.parents
    )


def _route_granted(route: Route, ref: BackendRef, kind: str, grants: tuple[Grant, ...]) -> bool:
    return reference_granted(grants, route.kind, route.namespace, kind, ref.namespace, ref.name)


def _resolve(
    route: Route, ref: BackendRef, at: str, plane: ServicePlane, grants: tuple[Grant, ...]
) -> ResolvedBackend | tuple[str, str]:
    """The backend, or the (ResolvedRefs reason, message) of why it is invalid."""
    kind = SERVICE_KINDS.get((ref.group, ref.kind))
    where = f"{ref.namespace}/{ref.name}"
    if kind is None:
        return "InvalidKind", (
            f"{at}: kontinuum sends to Services and {MCS_GROUP} ServiceImports, not to a "
            f"{kind_label(ref.group, ref.kind)}"
        )
    services = plane_services(plane, kind, ref.namespace, ref.name)
    if ref.namespace != route.namespace and not _route_granted(route, ref, kind, grants):
        # A consumer route's callers are its own workspace's: a backend that workspace may
        # reach widens nothing, so it needs no ReferenceGrant (GEP-1294). Any other route
        # would open the backend to callers that may not reach it.
        visible = tuple(s for s in services if _visible(s, route.namespace, grants))
        if not (is_consumer_route(route) and visible):
            return "RefNotPermitted", (
                f"{at}: {kind} {where} is in another namespace and no ReferenceGrant in "
                f"{ref.namespace} lets {route.kind}s of {route.namespace} refer to it"
            )
        services = visible
    if not services:
        missing = "in any cluster" if kind == "Service" else "(no cluster exports it)"
        return "BackendNotFound", f"{at}: no {kind} {where} {missing}"
    ports = sorted({p.port for s in services for p in s.ports})
    port = ref.port
    if port is None and len(ports) != 1:
        listed = ", ".join(map(str, ports)) or "none"
        return "BackendNotFound", f"{at}: {kind} {where} has ports {listed}: port must say which"
    if port is not None and port not in ports:
        return "BackendNotFound", f"{at}: {kind} {where} has no port {port}"
    return ResolvedBackend(ref, services, ports[0] if port is None else port)


def _bind_rules(
    route: Route, plane: ServicePlane, grants: tuple[Grant, ...]
) -> tuple[tuple[BoundRule, ...], list[tuple[str, str]]]:
    """Every rule with its resolved references, and each reference problem."""
    problems: list[tuple[str, str]] = []
    rules: list[BoundRule] = []
    for i, rule in enumerate(route.rules):
        backends: list[ResolvedBackend] = []
        invalid_weight = 0
        for j, ref in enumerate(rule.backends):
            found = _resolve(route, ref, f"spec.rules[{i}].backendRefs[{j}]", plane, grants)
            if isinstance(found, ResolvedBackend):
                backends.append(found)
            else:
                problems.append(found)
                invalid_weight += ref.weight
        mirrors: list[BoundMirror] = []
        invalid_filters = False
        for j, f in enumerate(rule.filters):
            at = f"spec.rules[{i}].filters[{j}]"
            if isinstance(f, RequestMirror):
                found = _resolve(route, f.backend, f"{at}.requestMirror.backendRef", plane, grants)
                if isinstance(found, ResolvedBackend):
                    mirrors.append(BoundMirror(found, f.percent))
                else:
                    problems.append(found)
            elif isinstance(f, ExtensionRef):
                problems.append(
                    ("InvalidKind", f"{at}: no filter {kind_label(f.group, f.kind)} {f.name}")
                )
                invalid_filters = True
        rules.append(
            BoundRule(rule, tuple(backends), invalid_weight, tuple(mirrors), invalid_filters)
        )
    return tuple(rules), problems


# --- parents ---------------------------------------------------------------------------------


def _section(ref: ParentRef) -> str:
    parts = [f"named {ref.section_name!r}"] if ref.section_name else []
    return " and ".join([*parts, *([f"on port {ref.port}"] if ref.port else [])])


def _admits(
    listener: GatewayListener, gateway: Gateway, route: Route, namespaces: Mapping[str, Labels]
) -> bool:
    if route.kind not in listener_kinds(listener)[0]:
        return False
    match listener.allowed_namespaces:
        case "All":
            return True
        case "Same":
            return route.namespace == gateway.namespace
    selector = listener.namespace_selector
    labels = namespace_labels(route.namespace, namespaces.get(route.namespace, ()))
    return selector is not None and selects(selector, labels)


def _gateway_parent(
    route: Route,
    ref: ParentRef,
    gateway: Gateway | None,
    accepted: frozenset[str],
    namespaces: Mapping[str, Labels],
) -> BoundParent | tuple[str, str]:
    """The listeners a route attaches to on a Gateway, or the (reason, message) why none."""
    where = f"Gateway {ref.namespace}/{ref.name}"
    if gateway is None:
        return "NoMatchingParent", f"no {where}"
    candidates = [
        listener
        for listener in gateway.listeners
        if ref.section_name in (None, listener.name) and ref.port in (None, listener.port)
    ]
    if not candidates:
        return "NoMatchingParent", f"{where} has no listener {_section(ref)}"
    allowed = [
        listener
        for listener in candidates
        if listener.name in accepted and _admits(listener, gateway, route, namespaces)
    ]
    if not allowed:
        names = ", ".join(listener.name for listener in candidates)
        return "NotAllowedByListeners", (
            f"no accepted listener of {where} ({names}) admits {route.kind}s from namespace "
            f"{route.namespace}"
        )
    matching = tuple(
        listener
        for listener in allowed
        if intersect_hostnames(listener.hostname, route.hostnames) != ()
    )
    if not matching:
        return "NoMatchingListenerHostname", (
            f"no listener of {where} shares a hostname with {', '.join(route.hostnames)}"
        )
    return BoundParent(ref, gateway=gateway, listeners=matching)


def _service_parent(
    route: Route, ref: ParentRef, plane: ServicePlane, grants: tuple[Grant, ...]
) -> BoundParent | tuple[str, str]:
    kind = SERVICE_KINDS.get((ref.group, ref.kind))
    if kind is None:
        return "NoMatchingParent", (
            'routes attach to a Gateway, a Service (group "") or a ServiceImport '
            f"({MCS_GROUP}), not to a {kind_label(ref.group, ref.kind)}"
        )
    services = tuple(
        s
        for s in plane_services(plane, kind, ref.namespace, ref.name)
        if _visible(s, route.namespace, grants)
    )
    if not services:
        return "NoMatchingParent", (
            f"no {kind} {ref.namespace}/{ref.name} visible to namespace {route.namespace}"
        )
    ports = sorted(
        {
            p.port
            for s in services
            for p in s.ports
            if ref.section_name in (None, p.name) and ref.port in (None, p.port)
        }
    )
    if not ports:
        return "NoMatchingParent", f"{kind} {ref.namespace}/{ref.name} has no port {_section(ref)}"
    return BoundParent(ref, services=services, ports=tuple(ports))


def _without_conflicts(
    route: Route, found: BoundParent, conflicts: dict[tuple[ListenerKey, RouteKey], Conflict]
) -> BoundParent | tuple[str, str]:
    """`found` without the listeners a route of the other kind holds (cross serving), or
    why none is left."""
    assert found.gateway is not None
    lost = [
        conflict
        for listener in found.listeners
        if (conflict := conflicts.get((listener_key(found.gateway, listener), route_key(route))))
    ]
    if not lost:
        return found
    kept = tuple(
        listener
        for listener in found.listeners
        if (listener_key(found.gateway, listener), route_key(route)) not in conflicts
    )
    if kept:
        return replace(found, listeners=kept)
    other = "GRPCRoute" if route.kind == "HTTPRoute" else "HTTPRoute"
    holders = ", ".join(
        dict.fromkeys(f"{c.winner[1]}/{c.winner[2]} (listener {c.listener[2]})" for c in lost)
    )
    return "HostnameConflict", (
        f"the {other} {holders} already serves a hostname of this route there: an HTTPRoute "
        "and a GRPCRoute cannot share a hostname on a listener"
    )


def _without_grpc_ports(
    route: Route, found: BoundParent, grpc_ports: frozenset[ServicePortKey]
) -> BoundParent | tuple[str, str]:
    """A mesh HTTPRoute's parent without the Service ports a GRPCRoute of its namespace
    holds (GEP-1294), or why none is left."""
    ref = found.ref
    kept = tuple(
        p for p in found.ports if (route.namespace, ref.namespace, ref.name, p) not in grpc_ports
    )
    if kept == found.ports:
        return found
    if kept:
        return replace(found, ports=kept)
    ports = ", ".join(map(str, found.ports))
    return "Conflicted", (
        f"a GRPCRoute of namespace {route.namespace} applies to {ref.namespace}/{ref.name} "
        f"port {ports}: of routes of both kinds on one Service port, the GRPCRoutes apply"
    )


# --- everything ------------------------------------------------------------------------------


def named_services(config: RoutingConfig, routes: Iterable[Route] = ()) -> frozenset[ServiceKey]:
    """The (namespace, name) of every service `bind_routes` looks up for `config` and for
    `routes` besides: the parents and backends of the routes, the targets of the policies.
    Their binding depends on the plane through these services (and its sites) only."""
    keys: set[ServiceKey] = set()
    for route in (*config.routes, *routes):
        keys.update((ref.namespace, ref.name) for ref in route.parents)
        for rule in route.rules:
            keys.update((ref.namespace, ref.name) for ref in rule.backends)
            keys.update(
                (f.backend.namespace, f.backend.name)
                for f in rule.filters
                if isinstance(f, RequestMirror)
            )
    for policy in config.policies:
        keys.update((policy.namespace, name) for _, name in policy.targets)
    return frozenset(keys)


def _accepted_listeners(gateway: Gateway, plane: ServicePlane) -> frozenset[str]:
    """The names of the listeners of `gateway` that routes may attach to."""
    if plane.site(gateway.cluster) is None or gateway.east_west:
        return frozenset()
    conflicts = protocol_conflicts(gateway)
    return frozenset(
        listener.name
        for listener in gateway.listeners
        if listener_condition(listener).status == "True" and listener.name not in conflicts
    )


def bind_routes(
    config: RoutingConfig, plane: ServicePlane, grants: Iterable[Grant] = ()
) -> RouteBinding:
    """What the routing config means for this plane and these grants, with every status."""
    grants = tuple(grants)
    gateways = {(g.namespace, g.name): g for g in config.gateways}
    accepted = {key: _accepted_listeners(g, plane) for key, g in gateways.items()}
    namespaces = {ns.name: ns.labels for ns in config.namespaces}
    attached: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}
    routes: list[BoundRoute] = []
    statuses: list[RouteStatus] = []

    def find(route: Route, ref: ParentRef) -> BoundParent | tuple[str, str]:
        if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
            return _service_parent(route, ref, plane, grants)
        key = (ref.namespace, ref.name)
        return _gateway_parent(
            route, ref, gateways.get(key), accepted.get(key, frozenset()), namespaces
        )

    found_parents = [[find(route, ref) for ref in route.parents] for route in config.routes]
    unsupported_by_route = [route_unsupported(route) for route in config.routes]
    conflicts = cross_serving_conflicts(
        (found.gateway, listener, route)
        for route, founds, unsupported in zip(
            config.routes, found_parents, unsupported_by_route, strict=True
        )
        if not unsupported
        for found in founds
        if isinstance(found, BoundParent) and found.gateway is not None
        for listener in found.listeners
    )
    grpc_ports = mesh_grpc_ports(
        (route, found.ref.namespace, found.ref.name, port)
        for route, founds, unsupported in zip(
            config.routes, found_parents, unsupported_by_route, strict=True
        )
        if not unsupported
        for found in founds
        if isinstance(found, BoundParent)
        for port in found.ports
    )
    for route, founds, unsupported in zip(
        config.routes, found_parents, unsupported_by_route, strict=True
    ):
        rules, problems = _bind_rules(route, plane, grants)
        resolved = (
            Condition("ResolvedRefs", "False", problems[0][0], "; ".join(m for _, m in problems))
            if problems
            else Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        parents: list[BoundParent] = []
        parent_statuses: list[ParentStatus] = []
        for ref, found in zip(route.parents, founds, strict=True):
            if isinstance(found, BoundParent) and found.gateway is not None:
                found = _without_conflicts(route, found, conflicts)
            elif isinstance(found, BoundParent) and route.kind == "HTTPRoute":
                found = _without_grpc_ports(route, found, grpc_ports)
            if not isinstance(found, BoundParent):
                condition = Condition("Accepted", "False", *found)
            elif unsupported:
                message = "; ".join(unsupported)
                condition = Condition("Accepted", "False", "UnsupportedValue", message)
            else:
                condition = Condition("Accepted", "True", "Accepted")
                parents.append(found)
                for listener in found.listeners:
                    at = (ref.namespace, ref.name, listener.name)
                    attached.setdefault(at, set()).add((route.kind, route.namespace, route.name))
            parent_statuses.append(ParentStatus(ref, (condition, resolved)))
        status = RouteStatus(
            route.kind,
            route.namespace,
            route.name,
            route.file,
            route.generation,
            tuple(parent_statuses),
        )
        statuses.append(status)
        if parents:
            routes.append(BoundRoute(route, tuple(parents), rules))
    counts = {key: len(names) for key, names in attached.items()}
    secrets = {(s.namespace, s.name): s for s in config.secrets}
    bound = [gateway_status(g, plane, counts, secrets, grants) for g in config.gateways]
    gateway_statuses = tuple(status for status, _ in bound)
    bound_gateways = tuple(gateway for _, gateway in bound if gateway is not None)
    policies, policy_statuses = bind_policies(config.policies, plane)
    return RouteBinding(
        routes=tuple(routes),
        statuses=tuple(statuses),
        policies=policies,
        policy_statuses=policy_statuses,
        gateways=bound_gateways,
        gateway_statuses=gateway_statuses,
    )
