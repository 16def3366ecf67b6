"""Which objects get which status: the service plane's export conditions and the routing
binding's statuses, as `DesiredStatus`es. Pure: no I/O.

- ServiceExports are written in the cluster that holds them, when that cluster is read
  through its Kubernetes API (`kubernetes` names those clusters); an export described by
  files or DNS has no object to write to.
- HTTPRoutes, GRPCRoutes, Gateways and LocalityPolicies are written in the config cluster
  when they were read from it (their `file` is the config source's name, `api`). One the
  fleet files declare too is the files' (the aggregator keeps their version), so its
  status is not written to the cluster's copy.
- An object of the config cluster whose newest version is invalid still serves its last
  good version, if it had one (`kontinuum.discovery.config_cluster`). Its status says so:
  `Accepted=False` (a route's on every parent, reason `UnsupportedValue`; a Gateway's and
  a policy's, reason `Invalid`) with the errors and what serves instead, observed at the
  newest generation; its other conditions stay, about the version in force. One that
  never was valid gets `Accepted=False` alone, on the parents (targets) its newest
  version names.
- kontinuum's GatewayClasses get `Accepted=True`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from itertools import groupby
from typing import Final

from kontinuum.control.gateway_binding import GatewayStatus, PolicyStatus
from kontinuum.control.plane import Condition, ExportStatus
from kontinuum.control.route_binding import ParentStatus, RouteBinding, RouteStatus
from kontinuum.control.routing import GATEWAY_CONTROLLER, GATEWAY_GROUP, MCS_GROUP, Rejection
from kontinuum.kube.conditions import export_status, gateway_status, policy_status, route_status
from kontinuum.kube.status_writer import DesiredStatus, ObjectRef

POLICY_GROUP: Final = "policy.kontinuum.io"
_ROUTE_PLURALS: Final = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}


def export_statuses(
    exports: Iterable[ExportStatus], kubernetes: Collection[str]
) -> list[DesiredStatus]:
    return [
        DesiredStatus(
            ObjectRef(
                e.cluster,
                MCS_GROUP,
                "v1alpha1",
                "serviceexports",
                "ServiceExport",
                e.namespace,
                e.name,
            ),
            e.conditions,
            export_status(e.conditions),
        )
        for e in exports
        if e.cluster in kubernetes
    ]


def _refusal(rejection: Rejection, reason: str, generation: int | None) -> Condition:
    """`Accepted=False` for the newest version, saying what serves instead."""
    message = "; ".join(rejection.errors)
    if rejection.kept and generation is not None:
        message += f"; its last accepted version (generation {generation}) stays in force"
    elif not rejection.kept:
        message += "; it is not served"
    return Condition("Accepted", "False", reason, message, rejection.generation)


def _accepted_replaced(
    conditions: tuple[Condition, ...], refused: Condition
) -> tuple[Condition, ...]:
    """`conditions` with Accepted (added if missing) refused; the others stay, about the
    version in force."""
    others = tuple(c for c in conditions if c.type != "Accepted")
    return (refused, *others)


def _rejected_route(status: RouteStatus | None, rejection: Rejection, api: str) -> RouteStatus:
    """A route's status when its newest version is invalid: on each parent of the version
    in force (of the newest, when none is), Accepted=False."""
    if status is not None and rejection.kept:
        refused = _refusal(rejection, "UnsupportedValue", status.generation)
        parents = tuple(
            replace(p, conditions=_accepted_replaced(p.conditions, refused)) for p in status.parents
        )
        return replace(status, parents=parents)
    refused = _refusal(rejection, "UnsupportedValue", None)
    parents = tuple(ParentStatus(ref, (refused,)) for ref in rejection.parents)
    kind = "HTTPRoute" if rejection.kind == "HTTPRoute" else "GRPCRoute"
    return RouteStatus(
        kind, rejection.namespace, rejection.name, api, rejection.generation, parents
    )


def _rejected_gateway(
    status: GatewayStatus | None, rejection: Rejection, api: str
) -> GatewayStatus:
    if status is not None and rejection.kept:
        refused = _refusal(rejection, "Invalid", status.generation)
        return replace(status, conditions=_accepted_replaced(status.conditions, refused))
    refused = _refusal(rejection, "Invalid", None)
    return GatewayStatus(
        rejection.namespace, rejection.name, api, rejection.generation, (refused,), ()
    )


def _rejected_policy(
    statuses: tuple[PolicyStatus, ...], rejection: Rejection, api: str
) -> tuple[PolicyStatus, ...]:
    if statuses and rejection.kept:
        refused = _refusal(rejection, "Invalid", statuses[0].generation)
        return tuple(
            replace(s, conditions=_accepted_replaced(s.conditions, refused)) for s in statuses
        )
    refused = _refusal(rejection, "Invalid", None)
    return tuple(
        PolicyStatus(
            rejection.namespace, rejection.name, api, target, (refused,), rejection.generation
        )
        for target in rejection.targets
    )


def _route(status: RouteStatus, api: str) -> DesiredStatus:
    plural = _ROUTE_PLURALS[status.kind]
    ref = ObjectRef(api, GATEWAY_GROUP, "v1", plural, status.kind, status.namespace, status.name)
    return DesiredStatus(ref, status, route_status(status))


def _gateway(status: GatewayStatus, api: str) -> DesiredStatus:
    ref = ObjectRef(api, GATEWAY_GROUP, "v1", "gateways", "Gateway", status.namespace, status.name)
    return DesiredStatus(ref, status, gateway_status(status))


def _policy(statuses: tuple[PolicyStatus, ...], api: str) -> DesiredStatus:
    first = statuses[0]
    ref = ObjectRef(
        api,
        POLICY_GROUP,
        "v1alpha1",
        "localitypolicies",
        "LocalityPolicy",
        first.namespace,
        first.name,
    )
    return DesiredStatus(ref, statuses, policy_status(statuses))


def _gateway_class(name: str, api: str) -> DesiredStatus:
    accepted = Condition(
        "Accepted", "True", "Accepted", f"{GATEWAY_CONTROLLER} serves the Gateways of this class"
    )
    ref = ObjectRef(api, GATEWAY_GROUP, "v1", "gatewayclasses", "GatewayClass", "", name)
    return DesiredStatus(ref, accepted, export_status((accepted,)))


def _known_parents(status: RouteStatus, gateways: set[tuple[str, str]]) -> RouteStatus:
    """The route's status on the parents kontinuum knows: a parent Gateway neither the
    files nor the config cluster declare is nobody's to report on."""
    parents = tuple(
        p
        for p in status.parents
        if (p.ref.group, p.ref.kind) != (GATEWAY_GROUP, "Gateway")
        or (p.ref.namespace, p.ref.name) in gateways
    )
    return replace(status, parents=parents)


def routing_statuses(
    binding: RouteBinding,
    api: str,
    rejections: Iterable[Rejection] = (),
    gateway_classes: Iterable[str] = (),
    disowned: Iterable[tuple[str, str, str]] = (),
) -> list[DesiredStatus]:
    """The statuses of the routing objects that the config cluster `api` holds; routes
    `disowned` (no longer kontinuum's) get theirs with no entry of kontinuum's left."""
    rejected = {(r.kind, r.namespace, r.name): r for r in rejections}
    known = {(g.namespace, g.name) for g in binding.gateway_statuses}
    desired = []
    routes = {(s.kind, s.namespace, s.name): s for s in binding.statuses if s.file == api}
    for kind, namespace, name in disowned:
        if kind in _ROUTE_PLURALS and (kind, namespace, name) not in routes:
            routes[kind, namespace, name] = RouteStatus(kind, namespace, name, api, 0, ())
    for key in sorted({*routes, *(k for k in rejected if k[0] in _ROUTE_PLURALS)}):
        route, rejection = routes.get(key), rejected.get(key)
        if rejection is not None:
            route = _rejected_route(route, rejection, api)
        if route is not None:
            desired.append(_route(_known_parents(route, known), api))
    gateways = {
        ("Gateway", s.namespace, s.name): s for s in binding.gateway_statuses if s.file == api
    }
    for key in sorted({*gateways, *(k for k in rejected if k[0] == "Gateway")}):
        gateway, rejection = gateways.get(key), rejected.get(key)
        if rejection is not None:
            gateway = _rejected_gateway(gateway, rejection, api)
        if gateway is not None:
            desired.append(_gateway(gateway, api))
    ours = sorted((s for s in binding.policy_statuses if s.file == api), key=_policy_id)
    policies = {("LocalityPolicy", *k): tuple(g) for k, g in groupby(ours, key=_policy_id)}
    for key in sorted({*policies, *(k for k in rejected if k[0] == "LocalityPolicy")}):
        group, rejection = policies.get(key, ()), rejected.get(key)
        statuses = _rejected_policy(group, rejection, api) if rejection else group
        if statuses:
            desired.append(_policy(statuses, api))
    desired.extend(_gateway_class(name, api) for name in gateway_classes)
    return desired


def _policy_id(status: PolicyStatus) -> tuple[str, str]:
    return (status.namespace, status.name)
