"""Translation of a sidecar view: the services it may see -> Envoy resources and errors.

Best effort: a service that cannot be translated gives one error naming it and is left
out; everything else is translated. A service port with no ready endpoint is not an
error: it gets its Cluster and an empty ClusterLoadAssignment, so that the endpoints can
arrive later without a change to the Cluster.

Only TCP ports are translated (HTTP runs over TCP); a UDP or SCTP port of a service is
skipped without an error, so `dns` with 53/UDP and 53/TCP is fine.

Endpoints reach only their port's Cluster and ClusterLoadAssignment: when nothing else of
a service changed, `translate_endpoint_change` builds those alone, which is what a whole
translation of the view would change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from kontinuum.control.model import ClusterSite, ServiceRef
from kontinuum.control.naming import ClusterName, parse_cluster_name
from kontinuum.control.objects import dns_label
from kontinuum.control.plane import PlanePort, PlaneService, ProxyView
from kontinuum.control.route_binding import named_services
from kontinuum.control.routing import RoutingConfig
from kontinuum.control.translate import clusters, envoy, http_routes, listeners, routes
from kontinuum.control.translate.backends import BackendClusters, MeshRouting, routes_for
from kontinuum.control.translate.build_cache import BuildCache
from kontinuum.control.translate.builder import Builder
from kontinuum.control.translate.options import SidecarOptions, Translation


def _valid_port(port: int) -> bool:
    return 1 <= port <= 65535


def _tcp_ports(service: PlaneService) -> list[PlanePort]:
    return sorted((p for p in service.ports if p.protocol == "TCP"), key=lambda p: p.port)


def _service_problem(service: PlaneService, view: ProxyView) -> str | None:
    """Why a service cannot be translated for the view, or None."""
    if not service.reachable_from(view.cluster):
        return (
            f"reachable only in cluster {service.scope!r}, "
            f"not from the view's cluster {view.cluster!r}"
        )
    ports = _tcp_ports(service)
    numbers = [p.port for p in ports]
    if len(set(numbers)) != len(numbers):
        return f"port numbers listed more than once: {numbers}"
    for port in ports:
        if not _valid_port(port.port):
            return f"port {port.port} is outside 1-65535"
        if parse_cluster_name(str(_outbound_name(service, port.port))) is None:
            return "name and namespace must be DNS labels (RFC 1123)"
        for endpoint in port.endpoints:
            if not endpoint.address or not _valid_port(endpoint.port):
                return (
                    f"port {port.port}: endpoint {endpoint.address or '(no address)'}"
                    f":{endpoint.port} is not an address and a port in 1-65535"
                )
    return None


def _outbound_name(service: PlaneService, port: int) -> ClusterName:
    # The cluster-set target "": a one-cluster service is named the same way (its scope
    # is implied by the view), so it clashes with a cluster-set service of the same name.
    return ClusterName("outbound", service.name, service.namespace, port)


def translate_sidecar(
    services: Sequence[PlaneService],
    view: ProxyView,
    site: ClusterSite | None,
    options: SidecarOptions,
    routing: MeshRouting | None = None,
    cache: BuildCache[Any] | None = None,
) -> Translation:
    """Envoy resources for the sidecars (and proxyless gRPC clients) of one view.

    `services` are exactly those the view may see; `site` is the view's cluster, for the
    region that decides locality priority (None: only the own cluster is preferred).
    `routing` holds the fleet's accepted routes and locality policies. With `cache`, every
    piece that depends on less than the whole view (a service port's Cluster and
    ClusterLoadAssignment, a gRPC client's Listener and routes) is taken from it when its
    inputs are unchanged; the result is the same.
    """
    routing = routing or MeshRouting()
    build = Builder(cache, view, site, options)
    errors: list[str] = []
    cluster_msgs: list[Any] = []
    assignments: list[Any] = []
    listener_msgs: list[Any] = [build.outbound_listener()]
    route_configs: list[Any] = []
    targets: list[routes.Target] = []
    taken: dict[str, str] = {}  # Envoy cluster name -> host it was given to

    # Cluster-set services ("" scope) first, so they win a name clash.
    for service in sorted(services, key=lambda s: (s.namespace, s.name, s.scope)):
        problem = _service_problem(service, view)
        ports = _tcp_ports(service)
        names = [str(_outbound_name(service, p.port)) for p in ports]
        if problem is None:
            clash = next((n for n in names if n in taken), None)
            if clash is not None:
                problem = (
                    f"Envoy cluster {clash!r} is already the name of {taken[clash]}"
                    if taken[clash] != service.host
                    else "listed more than once"
                )
        if problem is not None:
            errors.append(f"service {service.host}: {problem}")
            continue
        for port, name in zip(ports, names, strict=True):
            taken[name] = service.host
            cluster, assignment = _outbound(build, service, port, name, routing)
            cluster_msgs.append(cluster)
            assignments.append(assignment)
            targets.append(routes.Target(service, port.port, name))

    # The routes that attach to each target, with the clusters their backends need.
    backends = BackendClusters(view, routing, set(taken), build.outbound)
    for i, target in enumerate(targets):
        attached = routes_for(routing, view, target.service, target.port)
        if attached:
            targets[i] = replace(
                target, routes=tuple(http_routes.ranked_routes(attached, backends))
            )
    cluster_msgs.extend(backends.clusters)
    assignments.extend(backends.assignments)
    if options.api_listeners:
        for target in targets:
            listener_msgs.append(build.api_listener(target))
            route_configs.append(build.grpc_route_configuration(target))
    route_configs.append(routes.outbound_route_configuration(targets, view))
    inbound = _inbound(services, view, options, errors)
    if inbound is not None:
        cluster_msgs.append(inbound[0])
        listener_msgs.append(inbound[1])
    return _ordered(cluster_msgs, assignments, listener_msgs, route_configs, errors)


def _outbound(
    build: Builder, service: PlaneService, port: PlanePort, name: str, routing: MeshRouting
) -> tuple[Any, Any]:
    """A service port's outbound Cluster and ClusterLoadAssignment, as the view sees it."""
    spread = routing.spreads.get((service.namespace, service.name)) if not service.scope else None
    authority = f"{service.host}:{port.port}"
    return build.outbound(name, port, port.endpoints, spread, routing.networks, authority)


def _without_endpoints(service: PlaneService) -> PlaneService:
    return replace(service, ports=tuple(replace(p, endpoints=()) for p in service.ports))


def translate_endpoint_change(
    before: Sequence[PlaneService],
    after: Sequence[PlaneService],
    view: ProxyView,
    site: ClusterSite | None,
    options: SidecarOptions,
    routing: MeshRouting,
    cache: BuildCache[Any] | None = None,
) -> tuple[Any, ...] | None:
    """What of a view's translation an endpoint change builds anew, or None.

    `before` and `after` are the services of one (namespace, name) that the view sees, before
    and after a change. When they differ in their endpoints alone, `translate_sidecar` of
    the view differs from its last result in their ports' Clusters and
    ClusterLoadAssignments only: names, routes and listeners do not read endpoints. Those
    are returned, built anew (each Cluster followed by its assignment). None when more than
    the endpoints changed, when a service is left out with an error or clashes by name
    (before or after), or when a route of `routing` attaches to or sends to them or a
    policy spreads them: the view is then translated whole. The rest of the view must have
    been translated with `routing`, `site` and `options` (the mesh translates again what
    those change)."""
    if len(before) != len(after):
        return None
    if not after:  # the view sees none of them
        return ()
    key = (after[0].namespace, after[0].name)
    if key in routing.spreads or key in _routed(routing):
        return None
    build = Builder(cache, view, site, options)
    names: set[str] = set()
    messages: list[Any] = []
    olds = sorted(before, key=lambda s: s.scope)
    for old, service in zip(olds, sorted(after, key=lambda s: s.scope), strict=True):
        if _without_endpoints(old) != _without_endpoints(service):
            return None
        if _service_problem(old, view) or _service_problem(service, view):
            return None
        for port in _tcp_ports(service):
            name = str(_outbound_name(service, port.port))
            if name in names:  # a name clash: the second service is left out
                return None
            names.add(name)
            messages.extend(_outbound(build, service, port, name, routing))
    return tuple(messages)


class _RoutedServices:
    """The services the mesh routes of a `MeshRouting` attach to or send to, worked out
    once per routing: an endpoint change asks for every group and service it touches."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # One tuple, replaced whole: a reader never pairs a routing with another's names.
        self._last: tuple[MeshRouting | None, frozenset[tuple[str, str]]] = (None, frozenset())

    def __call__(self, routing: MeshRouting) -> frozenset[tuple[str, str]]:
        last_routing, names = self._last
        if routing is not last_routing:
            names = named_services(RoutingConfig(), (bound.route for bound in routing.routes))
            self._last = (routing, names)
        return names


_routed = _RoutedServices()


def translate_inbound(
    services: Sequence[PlaneService], view: ProxyView, options: SidecarOptions
) -> Translation:
    """Only the inbound side of a sidecar view (`options.inbound_service`): its STATIC
    cluster and `inbound` listener, what `translate_sidecar` adds to the outbound side.
    `services` need hold only the view's own service."""
    errors: list[str] = []
    inbound = _inbound(services, view, options, errors)
    if inbound is None:
        return Translation((), tuple(errors))
    return _ordered([inbound[0]], [], [inbound[1]], [], errors)


def _ordered(
    cluster_msgs: list[Any],
    assignments: list[Any],
    listener_msgs: list[Any],
    route_configs: list[Any],
    errors: list[str],
) -> Translation:

    resources = [
        *sorted(cluster_msgs, key=_name),
        *sorted(assignments, key=lambda a: str(a.cluster_name)),
        *sorted(listener_msgs, key=_name),
        *sorted(route_configs, key=_name),
    ]
    return Translation(tuple(resources), tuple(errors))


def _ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _name(message: Any) -> str:
    return str(message.name)


def _inbound(
    services: Sequence[PlaneService],
    view: ProxyView,
    options: SidecarOptions,
    errors: list[str],
) -> tuple[Any, Any] | None:
    """The inbound STATIC cluster and listener for the proxy's own service, if asked for."""
    if options.inbound_service is None:
        return None
    ref, port = options.inbound_service
    workload_port = options.inbound_port
    if workload_port is None:
        errors.append(f"inbound {ref}:{port}: no inbound (workload) port given")
        return None
    bad = [p for p in (port, workload_port, options.inbound_listen_port) if not _valid_port(p)]
    if bad:
        errors.append(f"inbound {ref}:{port}: port {bad[0]} is outside 1-65535")
        return None
    if not _ip_address(options.inbound_listen_address):
        errors.append(
            f"inbound {ref}:{port}: listen address {options.inbound_listen_address!r} "
            "is not an IP address"
        )
        return None
    name = ClusterName("inbound", ref.name, ref.namespace, port)
    if parse_cluster_name(str(name)) is None:
        errors.append(f"inbound {ref}:{port}: name and namespace must be DNS labels (RFC 1123)")
        return None
    # The protocol of the own service's port, when the view can see the service.
    own_port = next(
        (
            p
            for s in sorted(services, key=lambda s: (s.scope != view.cluster, s.scope))
            if (s.namespace, s.name) == (ref.namespace, ref.name)
            for p in s.ports
            if p.port == port and p.protocol == "TCP"
        ),
        None,
    )
    http2 = own_port is not None and envoy.is_http2(own_port.app_protocol, own_port.name)
    cluster = clusters.inbound_cluster(str(name), workload_port, http2, options)
    listener = listeners.inbound_listener(
        options.inbound_listen_address,
        options.inbound_listen_port,
        str(name),
        options.mtls,
        namespace=ref.namespace,
        consumers=_valid_grants(options.inbound_consumers, _consumer_problem, ref, port, errors),
        principals=_valid_grants(options.inbound_principals, _principal_problem, ref, port, errors),
    )
    return cluster, listener


def _consumer_problem(consumer: str) -> str | None:
    problem = dns_label(consumer)
    return f"inbound consumer (a workspace) {problem}" if problem else None


def _principal_problem(principal: str) -> str | None:
    trust_domain, _, path = principal.removeprefix("spiffe://").partition("/")
    if principal.startswith("spiffe://") and trust_domain and path:
        return None
    return (
        f"inbound principal must be a SPIFFE ID (spiffe://<trust domain>/<path>), got {principal!r}"
    )


def _valid_grants(
    grants: Sequence[str],
    problem_of: Callable[[str], str | None],
    ref: ServiceRef,
    port: int,
    errors: list[str],
) -> list[str]:
    """The grants that are valid; each other one is an error and grants nothing."""
    valid = []
    for grant in grants:
        problem = problem_of(grant)
        if problem is None:
            valid.append(grant)
        else:
            errors.append(f"inbound {ref}:{port}: {problem}: left out")
    return valid
