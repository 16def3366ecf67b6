"""The fleet's routing, bound to each new service plane, with last-good versions kept.

A route that is no longer accepted by any parent (an edit made it unservable) does not take
its traffic down: its last accepted version is bound again in its place, and its status
reports the new version's problem, saying the last good version stays in force. A route
that is deleted is gone. Likewise a Secret that can no longer serve TLS (renewed with a key
of another certificate, say): its last good version keeps serving, and the listeners that
name it say `ResolvedRefs=False` `InvalidCertificateRef` with the new version's problem.
Pure state: no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from kontinuum.control.gateway_binding import GatewayStatus
from kontinuum.control.model import ClusterSite, Fleet, Grant
from kontinuum.control.plane import Condition, ServiceKey, ServicePlane
from kontinuum.control.route_binding import (
    RouteBinding,
    RouteStatus,
    bind_routes,
    named_services,
)
from kontinuum.control.routing import (
    EAST_WEST_NAMESPACE,
    Gateway,
    Rejection,
    Route,
    RoutingConfig,
    TlsSecret,
)
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.clusters import Spread
from kontinuum.control.translate.networks import NetworkGateway, Networks

RouteKey = tuple[str, str, str]  # (kind, namespace, name)

KEPT_NOTE = "; its last accepted version stays in force"


def _key(route: Route) -> RouteKey:
    return (route.kind, route.namespace, route.name)


SecretKey = tuple[str, str]  # (namespace, name)


def secrets_in_force(
    secrets: tuple[TlsSecret, ...], good: dict[SecretKey, TlsSecret]
) -> tuple[tuple[TlsSecret, ...], dict[SecretKey, str]]:
    """The Secrets to serve: each as it is, or its last good version (from `good`) when it
    can no longer serve; and the problem of each Secret kept so."""
    in_force: list[TlsSecret] = []
    kept: dict[SecretKey, str] = {}
    for secret in secrets:
        key = (secret.namespace, secret.name)
        last = good.get(key)
        if secret.problem and last is not None:
            in_force.append(last)
            kept[key] = secret.problem
        else:
            in_force.append(secret)
    return tuple(in_force), kept


def _with_secret_notes(
    status: GatewayStatus, gateway: Gateway | None, kept: dict[SecretKey, str]
) -> GatewayStatus:
    """A Gateway's status, each listener naming a kept Secret saying so."""
    if gateway is None:
        return status
    refs = {li.name: li.certificate_refs for li in gateway.listeners}
    listeners = []
    for listener in status.listeners:
        problems = [
            f"Secret {r.namespace}/{r.name} cannot serve TLS: {kept[r.namespace, r.name]}"
            for r in refs.get(listener.name, ())
            if (r.namespace, r.name) in kept
        ]
        conditions = listener.conditions
        if problems:
            message = "; ".join(problems) + "; its last good version stays in force"
            conditions = tuple(
                Condition("ResolvedRefs", "False", "InvalidCertificateRef", message)
                if c.type == "ResolvedRefs" and c.status == "True"
                else c
                for c in conditions
            )
        listeners.append(replace(listener, conditions=conditions))
    return replace(status, listeners=tuple(listeners))


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
        self._good_secrets: dict[SecretKey, TlsSecret] = {}
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
        secrets, kept_secrets = secrets_in_force(config.secrets, self._good_secrets)
        self._good_secrets = {(s.namespace, s.name): s for s in secrets if not s.problem}
        if kept_secrets:
            config = replace(config, secrets=secrets)
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
        if kept_secrets:
            gateways = {(g.namespace, g.name): g for g in config.gateways}
            notes = tuple(
                _with_secret_notes(s, gateways.get((s.namespace, s.name)), kept_secrets)
                for s in binding.gateway_statuses
            )
            binding = replace(binding, gateway_statuses=notes)
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
