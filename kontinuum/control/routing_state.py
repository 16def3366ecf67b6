"""The fleet's routing, bound to each new service plane, with last-good versions kept.

A route that is no longer accepted by any parent (an edit made it unservable) does not take
its traffic down: its last accepted version is bound again in its place, and its status
reports the new version's problem, saying the last good version stays in force. A route
that is deleted is gone. Pure state: no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from kontinuum.control.model import ClusterSite, Fleet, Grant
from kontinuum.control.plane import Condition, ServiceKey, ServicePlane
from kontinuum.control.route_binding import (
    RouteBinding,
    RouteStatus,
    bind_routes,
    named_services,
)
from kontinuum.control.routing import EAST_WEST_NAMESPACE, Rejection, Route, RoutingConfig
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.clusters import Spread
from kontinuum.control.translate.networks import NetworkGateway, Networks

RouteKey = tuple[str, str, str]  # (kind, namespace, name)

KEPT_NOTE = "; its last accepted version stays in force"


def _key(route: Route) -> RouteKey:
    return (route.kind, route.namespace, route.name)


def _with_note(status: RouteStatus) -> RouteStatus:
    parents = tuple(
        replace(
            parent,
            conditions=tuple(
                replace(c, message=c.message + KEPT_NOTE)
                if c.type == "Accepted" and c.status == "False"
                else c
                for c in parent.conditions
            ),
        )
        for parent in status.parents
    )
    return replace(status, parents=parents)


class RoutingState:
    """Binds each fleet's routing to its plane (see the module doc)."""

    def __init__(self) -> None:
        self._last_good: dict[RouteKey, Route] = {}
        self.binding = RouteBinding()
        self.rejections: tuple[Rejection, ...] = ()  # objects whose newest version is invalid
        self.gateway_classes: tuple[str, ...] = ()  # a config cluster's, of kontinuum
        self.disowned: tuple[tuple[str, str, str], ...] = ()  # routes no longer kontinuum's
        self.networks = Networks()
        self.routing = MeshRouting((), {}, self.networks)  # what the last update returned
        self._inputs: tuple[RoutingConfig, tuple[Grant, ...], tuple[ClusterSite, ...]] | None = None
        self._named: frozenset[ServiceKey] = frozenset()  # the services the binding read

    @property
    def statuses(self) -> tuple[RouteStatus, ...]:
        return self.binding.statuses

    def update(
        self, fleet: Fleet, plane: ServicePlane, changed: frozenset[ServiceKey] | None = None
    ) -> MeshRouting:
        """Bind `fleet`'s routing to `plane`. `changed`: the services whose plane services
        changed since the last update (None: anything may have). When the routing, the
        grants and the sites are those of the last update and none of the services it
        names changed, the last binding stands, the very same objects."""
        config = fleet.routing
        inputs = (config, fleet.grants, plane.sites)
        last = self._inputs
        if (
            changed is not None
            and last is not None
            and last[0] is config
            and last[1:] == inputs[1:]
            and changed.isdisjoint(self._named)
        ):
            return self.routing
        binding = bind_routes(config, plane, fleet.grants)
        accepted = {_key(bound.route) for bound in binding.routes}
        present = {_key(route) for route in config.routes}
        kept = {k for k in present - accepted if k in self._last_good}
        if kept:
            routes = tuple(
                self._last_good[_key(r)] if _key(r) in kept else r for r in config.routes
            )
            fallback = bind_routes(replace(config, routes=routes), plane, fleet.grants)
            # Only a last good version the fallback accepts is in force (a route whose
            # Gateway or namespace no longer admits it has none).
            in_force = kept & {_key(b.route) for b in fallback.routes}
            statuses = tuple(
                _with_note(s) if (s.kind, s.namespace, s.name) in in_force else s
                for s in binding.statuses
            )
            binding = replace(fallback, statuses=statuses)
        # A deleted route is forgotten; an accepted one is the new last good version.
        self._last_good = {k: v for k, v in self._last_good.items() if k in present}
        self._last_good.update(
            (_key(b.route), b.route) for b in binding.routes if _key(b.route) in accepted
        )
        self.binding = binding
        self.rejections = config.rejections
        self.gateway_classes = config.gateway_classes
        self.disowned = config.disowned
        self.networks = networks(fleet, plane)
        self.routing = mesh_routing(binding, self.networks)
        self._inputs = inputs
        self._named = named_services(config, self._last_good.values())
        return self.routing


def networks(fleet: Fleet, plane: ServicePlane) -> Networks:
    """Each cluster's network, and the east-west gateways that can be reached: a Gateway of
    class `kontinuum-east-west` in namespace kontinuum-system and a known cluster, with an
    address and a TLS listener."""
    gateways: dict[str, NetworkGateway] = {}
    for gateway in fleet.routing.gateways:
        listener = next((li for li in gateway.listeners if li.protocol == "TLS"), None)
        if not gateway.east_west or not gateway.addresses or listener is None:
            continue
        if gateway.namespace != EAST_WEST_NAMESPACE:  # not accepted (gateway_binding)
            continue
        if plane.site(gateway.cluster) is not None and gateway.cluster not in gateways:
            gateways[gateway.cluster] = NetworkGateway(
                gateway.cluster,
                gateway.addresses[0],
                listener.port,
                gateway.namespace,
                gateway.name,
            )
    return Networks({site.name: site.network for site in plane.sites}, gateways)


def mesh_routing(binding: RouteBinding, networks: Networks | None = None) -> MeshRouting:
    """What sidecar translation needs: mesh-attached routes, each service's spread, and the
    networks."""
    routes = tuple(
        bound for bound in binding.routes if any(p.gateway is None for p in bound.parents)
    )
    spreads: dict[tuple[str, str], Spread] = {}
    for bound in binding.policies:
        policy = bound.policy
        for service in bound.services:
            spreads[service.namespace, service.name] = Spread(policy.weights, policy.failover)
    return MeshRouting(routes, spreads, networks or Networks())


def failing_conditions(status: RouteStatus) -> list[tuple[str, Condition]]:
    """(parent, condition) of every condition that is not as it should be."""
    return [
        (str(parent.ref), c)
        for parent in status.parents
        for c in parent.conditions
        if c.type in ("Accepted", "ResolvedRefs") and c.status != "True"
    ]
