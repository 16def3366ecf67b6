"""Which objects get which status: the service plane's export conditions and the routing
binding's statuses, as `DesiredStatus`es. Pure: no I/O.

- ServiceExports are written in the cluster that holds them, when that cluster is read
  through its Kubernetes API (`kubernetes` names those clusters); an export described by
  files or DNS has no object to write to.
- HTTPRoutes, GRPCRoutes, Gateways and LocalityPolicies are written in the config cluster
  when they were read from it (their `file` is the config source's name, `api`). One the
  fleet files declare too is the files' (the aggregator keeps their version), so its
  status is not written to the cluster's copy.
- A route of the config cluster whose newest version is invalid still serves its last
  good version (`kontinuum.discovery.config_cluster`); its status says so: on every parent,
  `Accepted=False` with reason `UnsupportedValue`, the errors, and that the last accepted
  version stays in force, observed at the newest generation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from itertools import groupby
from typing import Final

from kontinuum.control.gateway_binding import GatewayStatus, PolicyStatus
from kontinuum.control.plane import Condition, ExportStatus
from kontinuum.control.route_binding import RouteBinding, RouteStatus
from kontinuum.control.routing import GATEWAY_GROUP, MCS_GROUP, Rejection
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


def _rejected(status: RouteStatus, rejection: Rejection) -> RouteStatus:
    message = "; ".join(rejection.errors) + (
        f"; its last accepted version (generation {status.generation}) stays in force"
    )
    refused = Condition("Accepted", "False", "UnsupportedValue", message)
    parents = tuple(
        replace(
            parent,
            conditions=tuple(refused if c.type == "Accepted" else c for c in parent.conditions),
        )
        for parent in status.parents
    )
    return replace(status, parents=parents, generation=rejection.generation)


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


def routing_statuses(
    binding: RouteBinding, api: str, rejections: Iterable[Rejection] = ()
) -> list[DesiredStatus]:
    """The statuses of the routing objects that the config cluster `api` holds."""
    rejected = {(r.kind, r.namespace, r.name): r for r in rejections}
    desired = []
    for status in binding.statuses:
        if status.file != api:
            continue
        rejection = rejected.get((status.kind, status.namespace, status.name))
        desired.append(_route(_rejected(status, rejection) if rejection else status, api))
    desired.extend(_gateway(s, api) for s in binding.gateway_statuses if s.file == api)
    ours = sorted((s for s in binding.policy_statuses if s.file == api), key=_policy_id)
    desired.extend(_policy(tuple(group), api) for _, group in groupby(ours, key=_policy_id))
    return desired


def _policy_id(status: PolicyStatus) -> tuple[str, str]:
    return (status.namespace, status.name)
