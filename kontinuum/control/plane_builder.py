"""The service plane, kept up to date incrementally: a change costs what it touches.

The fleet is indexed per cluster by (namespace, name): each cluster's Service, endpoints and
ServiceExport of that name. A new snapshot of a cluster is compared key by key with the
last one (objects a source carried over unchanged compare by identity), and only the keys
that differ are merged again by MCS rules (`mcs.service_group`); every other key keeps its
plane services, the very same objects, so everything built from them downstream can be
reused as it is. New sites re-merge every key (an endpoint's locality comes from its site).
The result equals `mcs.build_plane` of the same fleet, which is this builder run once.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from kontinuum.control.mcs import service_group
from kontinuum.control.model import (
    ClusterSite,
    Endpoint,
    Fleet,
    Grant,
    Service,
    ServiceExport,
    SiteSnapshot,
    grant_order,
)
from kontinuum.control.plane import (
    ExportStatus,
    PlaneIndex,
    PlaneService,
    ServiceKey,
    ServicePlane,
)


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster's part of a service key: its Service, endpoints and export, if any."""

    service: Service | None
    endpoints: tuple[Endpoint, ...]
    export: ServiceExport | None


def index_snapshot(snapshot: SiteSnapshot) -> dict[ServiceKey, Member]:
    """A cluster's objects by (namespace, name), as `mcs` reads them: the first Service of
    a name, its endpoints in order, the last export of a name."""
    services: dict[ServiceKey, Service] = {}
    for service in snapshot.services:
        services.setdefault((service.namespace, service.name), service)
    endpoints: dict[ServiceKey, list[Endpoint]] = {}
    for endpoint in snapshot.endpoints:
        endpoints.setdefault((endpoint.namespace, endpoint.service), []).append(endpoint)
    exports = {(e.namespace, e.name): e for e in snapshot.exports}
    return {
        key: Member(services.get(key), tuple(endpoints.get(key, ())), exports.get(key))
        for key in services.keys() | exports.keys()
    }


@dataclass(frozen=True, slots=True)
class PlaneChange:
    """What an update changed: the service keys whose plane services or export statuses
    differ (`everything`: the sites or grants changed, so anything may have)."""

    keys: frozenset[ServiceKey]
    everything: bool = False

    def __bool__(self) -> bool:
        return self.everything or bool(self.keys)


_Group = tuple[tuple[PlaneService, ...], tuple[ExportStatus, ...]]


class PlaneBuilder:
    """Holds the fleet's service plane (`plane`) and updates it by what changed."""

    def __init__(self) -> None:
        self.plane = ServicePlane(index=PlaneIndex({}, {}))
        self._snapshots: dict[str, SiteSnapshot] = {}
        self._indexes: dict[str, dict[ServiceKey, Member]] = {}
        self._sites: tuple[ClusterSite, ...] | None = None
        self._grants: tuple[Grant, ...] | None = None
        self._groups: dict[ServiceKey, _Group] = {}
        self._keys: list[ServiceKey] = []  # sorted: the plane's order
        self._workspaces: dict[str, set[ServiceKey]] = {}

    def update(self, fleet: Fleet, grants: Iterable[Grant] | None = None) -> PlaneChange:
        """Bring the plane to `fleet` (with `grants`, by default the fleet's own)."""
        ordered_grants = tuple(
            sorted(set(fleet.grants if grants is None else grants), key=grant_order)
        )
        everything = fleet.sites != self._sites or ordered_grants != self._grants
        dirty = self._take_snapshots(fleet.snapshots)
        if fleet.sites != self._sites:
            dirty = {k for index in self._indexes.values() for k in index} | self._groups.keys()
        self._sites, self._grants = fleet.sites, ordered_grants
        sites = {site.name: site for site in fleet.sites}
        changed: set[ServiceKey] = set()
        for key in dirty:
            if self._regroup(key, sites):
                changed.add(key)
        if changed or everything:
            self.plane = ServicePlane(
                sites=fleet.sites,
                services=tuple(
                    itertools.chain.from_iterable(self._groups[k][0] for k in self._keys)
                ),
                grants=ordered_grants,
                exports=tuple(
                    itertools.chain.from_iterable(self._groups[k][1] for k in self._keys)
                ),
                index=PlaneIndex(
                    {k: g[0] for k, g in self._groups.items()},
                    {w: frozenset(keys) for w, keys in self._workspaces.items()},
                ),
            )
        return PlaneChange(frozenset(changed), everything)

    def _take_snapshots(self, snapshots: Iterable[SiteSnapshot]) -> set[ServiceKey]:
        """Index the snapshots that are new; the keys whose members differ."""
        current = {s.cluster: s for s in snapshots}
        dirty: set[ServiceKey] = set()
        for cluster in self._snapshots.keys() | current.keys():
            snapshot = current.get(cluster)
            if snapshot is self._snapshots.get(cluster):
                continue
            old = self._indexes.pop(cluster, {})
            new = index_snapshot(snapshot) if snapshot is not None else {}
            dirty.update(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if snapshot is None:
                del self._snapshots[cluster]
            else:
                self._snapshots[cluster] = snapshot
                self._indexes[cluster] = new
        return dirty

    def _regroup(self, key: ServiceKey, sites: dict[str, ClusterSite]) -> bool:
        """Merge one key again; whether its services or statuses changed."""
        members = [
            (cluster, m.service, m.endpoints, m.export)
            for cluster in sorted(self._indexes)
            if (m := self._indexes[cluster].get(key)) is not None
        ]
        group = service_group(*key, members, sites) if members else ((), ())
        old = self._groups.get(key)
        if old == group:
            return False
        if old is not None:
            for service in old[0]:
                keys = self._workspaces.get(service.workspace)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._workspaces[service.workspace]
        if group[0] or group[1]:
            if old is None:
                bisect.insort(self._keys, key)
            self._groups[key] = group
            for service in group[0]:
                self._workspaces.setdefault(service.workspace, set()).add(key)
        elif old is not None:
            del self._keys[bisect.bisect_left(self._keys, key)]
            del self._groups[key]
        return True
