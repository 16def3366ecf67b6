"""Routes of both kinds on one host: an HTTPRoute and a GRPCRoute are never merged.

Gateways (GEP-1016, "cross serving"). When a route of one kind
and a route of the other are attached to the same Gateway listener and the hostnames they
serve there (each route's `hostnames` intersected with the listener's; a route without any
serves all of the listener's) intersect, exactly one of them is accepted there: the older
one (`creationTimestamp`), then the first by `<namespace>/<name>`. The other is not attached
to that listener, and is `Accepted=False` toward its parent when no listener is left.
A route that lost on a listener does not block a third route there.

Mesh (GEP-1294, "route types"). When routes of both kinds of one namespace attach to the same
Service port (a Service or ServiceImport parent of that name), the GRPCRoutes apply there and
the HTTPRoutes do not: an HTTPRoute left with no port of its parent is `Accepted=False`
`Conflicted`. Routes of different namespaces never merge (a consumer route replaces the
producer routes for its namespace), so they do not conflict. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kontinuum.control.routing import Gateway, GatewayListener, Route, intersect_hostnames

ListenerKey = tuple[str, str, str]
"""A listener: its Gateway's namespace and name, and its own name."""

RouteKey = tuple[str, str, str]
"""A route: its kind, namespace and name."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A route left off a listener, and the route of the other kind that holds it."""

    listener: ListenerKey
    route: RouteKey
    winner: RouteKey


def listener_key(gateway: Gateway, listener: GatewayListener) -> ListenerKey:
    return (gateway.namespace, gateway.name, listener.name)


def route_key(route: Route) -> RouteKey:
    return (route.kind, route.namespace, route.name)


def _served(listener: GatewayListener, route: Route) -> tuple[str, ...] | None:
    """The hostnames `route` serves on `listener` (None: every hostname)."""
    return intersect_hostnames(listener.hostname, route.hostnames)


def _overlap(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None or b is None:
        return True
    return any(intersect_hostnames(x, (y,)) for x in a for y in b)


def route_age(route: Route) -> tuple[float, str]:
    """Older first, then by namespace/name: how the Gateway API breaks ties between routes."""
    created = route.created.timestamp() if route.created else float("inf")
    # "{namespace}/{name}" as one string, as the API orders routes: `a-b/x` before `a/x`.
    return (created, f"{route.namespace}/{route.name}")


def cross_serving_conflicts(
    attached: Iterable[tuple[Gateway, GatewayListener, Route]],
) -> dict[tuple[ListenerKey, RouteKey], Conflict]:
    """Which of the (Gateway, listener, route) attachments lose to a route of the other kind,
    keyed by (listener, route)."""
    by_listener: dict[ListenerKey, tuple[GatewayListener, list[Route]]] = {}
    for gateway, listener, route in attached:
        by_listener.setdefault(listener_key(gateway, listener), (listener, []))[1].append(route)
    conflicts: dict[tuple[ListenerKey, RouteKey], Conflict] = {}
    for key, (listener, routes) in by_listener.items():
        kept: list[tuple[Route, tuple[str, ...] | None]] = []
        for route in _oldest_first(routes):
            served = _served(listener, route)
            winner = next(
                (
                    other
                    for other, hosts in kept
                    if other.kind != route.kind and _overlap(served, hosts)
                ),
                None,
            )
            if winner is None:
                kept.append((route, served))
            else:
                lost = route_key(route)
                conflicts[key, lost] = Conflict(key, lost, route_key(winner))
    return conflicts


def _oldest_first(routes: Sequence[Route]) -> list[Route]:
    """Each route once (two parentRefs may name one listener), the oldest first."""
    unique = {route_key(route): route for route in routes}
    return sorted(unique.values(), key=route_age)


ServicePortKey = tuple[str, str, str, int]
"""A route namespace's view of a Service port: the route's namespace, the parent's namespace
and name, and the port."""


def mesh_grpc_ports(attached: Iterable[tuple[Route, str, str, int]]) -> frozenset[ServicePortKey]:
    """The Service ports that a GRPCRoute of the (route, parent namespace, parent name, port)
    attachments holds: an HTTPRoute of the same namespace does not apply there."""
    return frozenset(
        (route.namespace, namespace, name, port)
        for route, namespace, name, port in attached
        if route.kind == "GRPCRoute"
    )
