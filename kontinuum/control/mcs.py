"""Multi-Cluster Services (KEP-1645) semantics: the sites' snapshots become one service plane.

Pure: no I/O. The rules, as the MCS API states them and where kontinuum decides:

- A Service with a `ServiceExport` of the same namespace and name in its cluster is exported.
  Every export of one namespace/name across the fleet forms ONE cluster-set service
  (`<name>.<namespace>.svc.clusterset.local`, `scope=""`) whose endpoints are the union of the
  exporting clusters' endpoints, each tagged with its cluster's locality.
- Exports conflict in type (Headless vs ClusterIP: `TypeConflict`) or in ports as other
  clusters see them (port, protocol, name, appProtocol; not targetPort, which is internal to
  a cluster: `PortConflict`). Precedence goes to the oldest export (`creationTimestamp`); an
  export without a timestamp counts as newer than any with one, and equal ages (or none) go
  to the first cluster by name, so every replica decides the same.
  - A type conflict: the oldest export's type wins; an export of another type is not
    merged and stays reachable in its own cluster as an unexported Service would.
  - A port conflict: the cluster-set service exposes the union of the exports' ports. A
    port that clashes with an older export's port of the same name, or of the same number
    and protocol, is left out. Each port's endpoints come only from the exports whose
    Service has exactly that port, so traffic never reaches an endpoint that does not
    serve it. Every export whose ports are not exactly the cluster-set service's gets
    `Conflict=True` with `PortConflict`, yet is merged (`Ready=True`).
- Every export gets `Valid` (False with reason `NoService` when its cluster has no such
  Service), `Conflict` (for valid ones) and `Ready` (True when merged).
- A Service that is not exported is reachable only in its cluster (`scope=<cluster>`).
- Workspaces (`visible_services`): a proxy sees its own workspace's services and those whose
  provider workspace granted its workspace access (see `Grant`); nothing else, not even names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kontinuum.control.model import (
    ClusterSite,
    Endpoint,
    Fleet,
    Service,
    ServiceExport,
    ServicePort,
)
from kontinuum.control.naming import clusterset_host
from kontinuum.control.plane import (
    Condition,
    ExportStatus,
    Grant,
    Locality,
    PlaneEndpoint,
    PlanePort,
    PlaneService,
    ServiceKey,
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


def _port_key(port: ServicePort) -> tuple[int, str, str, str]:
    """A port as other clusters see it (targetPort is internal to its cluster)."""
    return (port.port, port.protocol, port.name, port.app_protocol or "")


def _describe_ports(ports: Iterable[ServicePort]) -> str:
    parts = [
        f"{name + ':' if name else ''}{number}/{protocol}{' (' + app + ')' if app else ''}"
        for number, protocol, name, app in sorted(_port_key(p) for p in ports)
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


def _type_conflict(winner: _Export, loser: _Export) -> Condition:
    w, lo = winner.service, loser.service
    message = (
        f"type {lo.type} differs from {w.type}: the export in cluster {winner.export.cluster} "
        f"wins ({_why(winner.export, loser.export)}); this cluster's endpoints are not part "
        f"of {clusterset_host(w.name, w.namespace)}"
    )
    return Condition("Conflict", "True", "TypeConflict", message)


@dataclass(frozen=True, slots=True)
class _PortUnion:
    """The ports of a cluster-set service and, per export, the ports it had to give up."""

    ports: tuple[ServicePort, ...]
    # by cluster: each dropped port with the export whose port it clashes with
    dropped: dict[str, tuple[tuple[ServicePort, _Export], ...]]


def _union_ports(ordered: list[_Export]) -> _PortUnion:
    """The union of the exports' ports, oldest first; a port clashing with a kept one is dropped.

    Two ports clash when they share a name or a number and protocol but differ otherwise
    (the KEP's rule that a service has no duplicate names and no duplicate port/protocol).
    """
    kept: list[tuple[ServicePort, _Export]] = []
    dropped: dict[str, tuple[tuple[ServicePort, _Export], ...]] = {}
    for item in ordered:
        lost: list[tuple[ServicePort, _Export]] = []
        for port in item.service.ports:
            same = [
                (k, owner)
                for k, owner in kept
                if k.name == port.name or (k.port, k.protocol) == (port.port, port.protocol)
            ]
            if not same:
                kept.append((port, item))
            elif clash := next((o for k, o in same if _port_key(k) != _port_key(port)), None):
                lost.append((port, clash))
        dropped[item.export.cluster] = tuple(lost)
    return _PortUnion(tuple(k for k, _ in kept), dropped)


def _port_conflict(item: _Export, union: _PortUnion) -> Condition | None:
    own = {_port_key(p) for p in item.service.ports}
    if own == {_port_key(p) for p in union.ports}:
        return None
    message = (
        f"ports {_describe_ports(item.service.ports)} differ from the cluster-set service's "
        f"{_describe_ports(union.ports)}, the union of every export's ports"
    )
    owners = sorted({o.export.cluster: o for _, o in union.dropped[item.export.cluster]}.items())
    for cluster, owner in owners:
        lost = [p for p, o in union.dropped[item.export.cluster] if o is owner]
        message += (
            f"; {_describe_ports(lost)} clash with the ports of the export in cluster "
            f"{cluster}, which wins ({_why(owner.export, item.export)}): left out"
        )
    message += "; this cluster's endpoints serve only the ports its Service has"
    return Condition("Conflict", "True", "PortConflict", message)


def _endpoints(
    members: Iterable[tuple[Service, tuple[Endpoint, ...]]],
    port: ServicePort,
    sites: dict[str, ClusterSite],
) -> tuple[PlaneEndpoint, ...]:
    """The endpoints of `port` from each cluster whose Service has exactly that port.

    An endpoint serves a Service port on the endpoint port of the same name (as EndpointSlices
    say); an endpoint that declares no ports at all serves it on the numeric target port.
    """
    found: set[PlaneEndpoint] = set()
    for service, endpoints in members:
        service_port = service.port_named(port.name)
        if service_port is None or _port_key(service_port) != _port_key(port):
            continue
        for endpoint in endpoints:
            if not endpoint.addresses:
                continue
            number = next((p.port for p in endpoint.ports if p.name == port.name), 0)
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
                    mutual_tls=endpoint.mutual_tls,
                )
            )
    return tuple(
        sorted(
            found,
            key=lambda e: (
                e.locality.cluster,
                e.locality.zone,
                e.address,
                e.port,
                e.ready,
                e.mutual_tls,
            ),
        )
    )


def _plane_service(
    shape: Service,
    ports: Iterable[ServicePort],
    members: list[tuple[Service, tuple[Endpoint, ...]]],
    sites: dict[str, ClusterSite],
    scope: str,
) -> PlaneService:
    return PlaneService(
        namespace=shape.namespace,
        name=shape.name,
        workspace=shape.workspace,
        ports=tuple(
            PlanePort(
                port=p.port,
                name=p.name,
                protocol=p.protocol,
                app_protocol=p.app_protocol,
                endpoints=_endpoints(members, p, sites),
            )
            for p in ports
        ),
        scope=scope,
        type=shape.type,
    )


def _local(
    service: Service, endpoints: tuple[Endpoint, ...], sites: dict[str, ClusterSite]
) -> PlaneService:
    """A Service as only its own cluster sees it."""
    return _plane_service(service, service.ports, [(service, endpoints)], sites, service.cluster)


def build_plane(fleet: Fleet, grants: Iterable[Grant] | None = None) -> ServicePlane:
    """The service plane of a fleet by MCS rules (see the module docstring), from scratch.

    `grants` default to the fleet's own (its ReferenceGrants). `PlaneBuilder` computes the
    same plane incrementally."""
    from kontinuum.control.plane_builder import PlaneBuilder  # builds on this module

    builder = PlaneBuilder()
    builder.update(fleet, grants)
    return builder.plane


def service_group(
    namespace: str,
    name: str,
    members: Iterable[tuple[str, Service | None, tuple[Endpoint, ...], ServiceExport | None]],
    sites: dict[str, ClusterSite],
) -> tuple[tuple[PlaneService, ...], tuple[ExportStatus, ...]]:
    """The plane services and export statuses of one namespace/name across the fleet.

    `members` are, by cluster name in order, each cluster's Service of that name (if any),
    its endpoints and its ServiceExport (if any). The services come sorted by scope (the
    cluster-set service first), the statuses by cluster."""
    statuses: list[ExportStatus] = []
    local: list[PlaneService] = []
    group: list[_Export] = []
    for cluster, service, endpoints, export in members:
        if export is not None and service is None:
            message = f"no Service {namespace}/{name} in cluster {cluster}"
            conditions: tuple[Condition, ...] = (
                Condition("Valid", "False", "NoService", message),
                Condition("Ready", "False", "Invalid", "the export is not valid"),
            )
            statuses.append(ExportStatus(cluster, namespace, name, conditions))
        elif export is not None and service is not None:
            group.append(_Export(export, service, endpoints))
        elif service is not None:
            local.append(_local(service, endpoints, sites))
    clusterset: list[PlaneService] = []
    if group:
        ordered = sorted(group, key=_sort_key)
        oldest = ordered[0]
        merged = [item for item in ordered if item.service.type == oldest.service.type]
        union = _union_ports(merged)
        for item in ordered:
            export = item.export
            if item.service.type != oldest.service.type:
                conflict = _type_conflict(oldest, item)
                not_ready = Condition("Ready", "False", "Conflict", "not merged: TypeConflict")
                conditions = (VALID, conflict, not_ready)
                local.append(_local(item.service, item.endpoints, sites))
            else:
                conflict_or_none = _port_conflict(item, union)
                conditions = (VALID, conflict_or_none or NO_CONFLICT, READY)
            statuses.append(ExportStatus(export.cluster, export.namespace, export.name, conditions))
        shares = [(item.service, item.endpoints) for item in merged]
        clusterset.append(_plane_service(oldest.service, union.ports, shares, sites, ""))
    services = sorted([*clusterset, *local], key=lambda s: s.scope)
    return tuple(services), tuple(sorted(statuses, key=lambda s: s.cluster))


def granted(plane: ServicePlane, service: PlaneService, workspace: str) -> bool:
    """Whether `workspace` may reach `service`: its own, or granted by the service's workspace."""
    if service.workspace == workspace:
        return True
    return any(
        g.provider == service.workspace and g.service in (None, service.name)
        for g in plane.grants_to(workspace)
    )


def visible_named(
    plane: ServicePlane, workspace: str, cluster: str, key: ServiceKey
) -> tuple[PlaneService, ...]:
    """What of the services of `key` a proxy of `workspace` in `cluster` may be told about
    (`visible_services` for one (namespace, name)), in the plane's order."""
    return tuple(
        s for s in plane.named(*key) if s.reachable_from(cluster) and granted(plane, s, workspace)
    )


def visible_services(plane: ServicePlane, workspace: str, cluster: str) -> tuple[PlaneService, ...]:
    """What a proxy of `workspace` in `cluster` may be told about, in the plane's order."""
    # What `granted` decides, read off the grants once: (provider, service or None: all).
    opened = {(g.provider, g.service) for g in plane.grants_to(workspace)}
    index = plane.index
    if index is None:
        candidates: Iterable[PlaneService] = plane.services
    else:  # only the services of the workspace itself and of those granting it
        providers = {workspace} | {provider for provider, _ in opened}
        keys = sorted({k for p in providers for k in index.by_workspace.get(p, ())})
        candidates = [s for k in keys for s in index.by_key[k]]
    return tuple(
        s
        for s in candidates
        if s.reachable_from(cluster)
        and (
            s.workspace == workspace
            or (s.workspace, None) in opened
            or (s.workspace, s.name) in opened
        )
    )
