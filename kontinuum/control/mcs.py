"""Multi-Cluster Services (KEP-1645) semantics: the sites' snapshots become one service plane.

Pure: no I/O. The rules, as the MCS API states them and where kontinuum decides:

- A Service with a `ServiceExport` of the same namespace and name in its cluster is exported.
  Every export of one namespace/name across the fleet forms ONE cluster-set service
  (`<name>.<namespace>.svc.clusterset.local`, `scope=""`) whose endpoints are the union of the
  exporting clusters' endpoints, each tagged with its cluster's locality.
- Exports conflict when their Services differ in type (Headless vs ClusterIP: `TypeConflict`,
  checked first) or in their set of ports as other clusters see them (port, protocol, name,
  appProtocol; not targetPort, which is internal to a cluster: `PortConflict`). The oldest
  export (`creationTimestamp`) wins and defines the cluster-set service; an export without a
  timestamp counts as newer than any with one, and equal ages (or none) go to the first
  cluster by name, so every replica decides the same. A losing export is not merged: its
  status says `Conflict=True` naming the winner, and its Service stays reachable in its own
  cluster as an unexported one would.
- Every export gets `Valid` (False with reason `NoService` when its cluster has no such
  Service), `Conflict` (for valid ones) and `Ready` (True when merged).
- A Service that is not exported is reachable only in its cluster (`scope=<cluster>`).
- Workspaces (`visible_services`): a proxy sees its own workspace's services and those whose
  provider workspace granted its workspace access (see `Grant`); nothing else, not even names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kontinuum.control.model import ClusterSite, Endpoint, Fleet, Service, ServiceExport
from kontinuum.control.naming import clusterset_host
from kontinuum.control.plane import (
    Condition,
    ExportStatus,
    Grant,
    Locality,
    PlaneEndpoint,
    PlanePort,
    PlaneService,
    ServicePlane,
)

VALID: Final = Condition("Valid", "True", "Valid", "the Service to export exists")
NO_CONFLICT: Final = Condition("Conflict", "False", "NoConflicts")
READY: Final = Condition("Ready", "True", "Ready", "merged into the cluster-set service")


@dataclass(frozen=True, slots=True)
class _Export:
    export: ServiceExport
    service: Service
    endpoints: tuple[Endpoint, ...]


def _sort_key(item: _Export) -> tuple[bool, float, str]:
    """Oldest first; no timestamp after any timestamp; ties by cluster name."""
    created = item.export.created
    return (created is None, created.timestamp() if created else 0.0, item.export.cluster)


def _port_set(service: Service) -> tuple[tuple[int, str, str, str], ...]:
    return tuple(sorted((p.port, p.protocol, p.name, p.app_protocol or "") for p in service.ports))


def _describe_ports(service: Service) -> str:
    parts = [
        f"{name + ':' if name else ''}{port}/{protocol}{' (' + app + ')' if app else ''}"
        for port, protocol, name, app in _port_set(service)
    ]
    return "[" + ", ".join(parts) + "]"


def _why(winner: ServiceExport, loser: ServiceExport) -> str:
    if winner.created is None:
        return "neither export has a creationTimestamp: the first cluster by name wins"
    if loser.created is None:
        return "the oldest export: this one has no creationTimestamp"
    if winner.created == loser.created:
        return "created at the same time as this one: the first cluster by name wins"
    return "the oldest export"


def _conflict(winner: _Export, loser: _Export) -> Condition | None:
    w, lo = winner.service, loser.service
    host = clusterset_host(w.name, w.namespace)
    tail = (
        f"the export in cluster {winner.export.cluster} wins "
        f"({_why(winner.export, loser.export)}); this cluster's endpoints are not part of {host}"
    )
    if w.type != lo.type:
        return Condition(
            "Conflict", "True", "TypeConflict", f"type {lo.type} differs from {w.type}: {tail}"
        )
    if _port_set(w) != _port_set(lo):
        message = f"ports {_describe_ports(lo)} differ from {_describe_ports(w)}: {tail}"
        return Condition("Conflict", "True", "PortConflict", message)
    return None


def _endpoints(
    members: Iterable[tuple[Service, tuple[Endpoint, ...]]],
    port_name: str,
    sites: dict[str, ClusterSite],
) -> tuple[PlaneEndpoint, ...]:
    """The endpoints of the port named `port_name` of each cluster's own Service.

    An endpoint serves a Service port on the endpoint port of the same name (as EndpointSlices
    say); an endpoint that declares no ports at all serves it on the numeric target port.
    """
    found: set[PlaneEndpoint] = set()
    for service, endpoints in members:
        service_port = service.port_named(port_name)
        if service_port is None:
            continue
        for endpoint in endpoints:
            if not endpoint.addresses:
                continue
            number = next((p.port for p in endpoint.ports if p.name == port_name), 0)
            if not number and not endpoint.ports and isinstance(service_port.target_port, int):
                number = service_port.target_port
            if not number:
                continue
            site = sites.get(endpoint.cluster) or ClusterSite(endpoint.cluster)
            found.add(
                PlaneEndpoint(
                    address=endpoint.addresses[0],
                    port=number,
                    locality=Locality.of(site, endpoint.zone),
                    ready=endpoint.ready and not endpoint.terminating,
                )
            )
    return tuple(
        sorted(
            found,
            key=lambda e: (e.locality.cluster, e.locality.zone, e.address, e.port, e.ready),
        )
    )


def _plane_service(
    shape: Service,
    members: list[tuple[Service, tuple[Endpoint, ...]]],
    sites: dict[str, ClusterSite],
    scope: str,
) -> PlaneService:
    ports = tuple(
        PlanePort(
            port=p.port,
            name=p.name,
            protocol=p.protocol,
            app_protocol=p.app_protocol,
            endpoints=_endpoints(members, p.name, sites),
        )
        for p in shape.ports
    )
    return PlaneService(
        namespace=shape.namespace,
        name=shape.name,
        workspace=shape.workspace,
        ports=ports,
        scope=scope,
        type=shape.type,
    )


def build_plane(fleet: Fleet, grants: Iterable[Grant] | None = None) -> ServicePlane:
    """The service plane of a fleet by MCS rules (see the module docstring).

    `grants` default to the fleet's own (its ReferenceGrants)."""
    if grants is None:
        grants = fleet.grants
    sites = {site.name: site for site in fleet.sites}
    exports: dict[tuple[str, str], list[_Export]] = defaultdict(list)
    statuses: list[ExportStatus] = []
    local: list[PlaneService] = []
    for snapshot in fleet.snapshots:
        exported = {(e.namespace, e.name): e for e in snapshot.exports}
        for (namespace, name), export in sorted(exported.items()):
            service = snapshot.service(namespace, name)
            if service is None:
                message = f"no Service {namespace}/{name} in cluster {snapshot.cluster}"
                conditions: tuple[Condition, ...] = (
                    Condition("Valid", "False", "NoService", message),
                    Condition("Ready", "False", "Invalid", "the export is not valid"),
                )
                statuses.append(ExportStatus(snapshot.cluster, namespace, name, conditions))
                continue
            members = exports[namespace, name]
            members.append(_Export(export, service, snapshot.endpoints_of(namespace, name)))
        for service in snapshot.services:
            if (service.namespace, service.name) not in exported:
                endpoints = snapshot.endpoints_of(service.namespace, service.name)
                local.append(
                    _plane_service(service, [(service, endpoints)], sites, snapshot.cluster)
                )

    clusterset: list[PlaneService] = []
    for group in exports.values():
        ordered = sorted(group, key=_sort_key)
        winner, merged = ordered[0], []
        for item in ordered:
            conflict = _conflict(winner, item) if item is not winner else None
            export = item.export
            if conflict is None:
                merged.append((item.service, item.endpoints))
                conditions = (VALID, NO_CONFLICT, READY)
            else:
                not_ready = Condition(
                    "Ready", "False", "Conflict", "not merged: " + conflict.reason
                )
                conditions = (VALID, conflict, not_ready)
                # Not part of the cluster set, it stays what an unexported Service is.
                local.append(
                    _plane_service(
                        item.service, [(item.service, item.endpoints)], sites, export.cluster
                    )
                )
            statuses.append(ExportStatus(export.cluster, export.namespace, export.name, conditions))
        clusterset.append(_plane_service(winner.service, merged, sites, ""))

    services = sorted([*clusterset, *local], key=lambda s: (s.namespace, s.name, s.scope))
    return ServicePlane(
        sites=fleet.sites,
        services=tuple(services),
        grants=tuple(sorted(set(grants), key=lambda g: (g.provider, g.consumer, g.service or ""))),
        exports=tuple(sorted(statuses, key=lambda s: (s.namespace, s.name, s.cluster))),
    )


def granted(plane: ServicePlane, service: PlaneService, workspace: str) -> bool:
    """Whether `workspace` may reach `service`: its own, or granted by the service's workspace."""
    if service.workspace == workspace:
        return True
    return any(
        g.provider == service.workspace
        and g.consumer == workspace
        and g.service in (None, service.name)
        for g in plane.grants
    )


def visible_services(plane: ServicePlane, workspace: str, cluster: str) -> tuple[PlaneService, ...]:
    """What a proxy of `workspace` in `cluster` may be told about, in the plane's order."""
    return tuple(
        s for s in plane.services if s.reachable_from(cluster) and granted(plane, s, workspace)
    )
