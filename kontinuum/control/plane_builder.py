"""The service plane, kept up to date incrementally: a change costs what it touches.

The fleet is indexed per cluster by (namespace, name): each cluster's Services, endpoints
and ServiceExports of that name, in the snapshot's order. A new snapshot of a cluster is
compared with the last one from both ends, a chunk at a time (sources carry unchanged
objects over, and the same objects compare at once): only the objects between the first
and the last difference are indexed again, and only the keys they belong to are merged
again by MCS rules (`mcs.service_group`); every other key keeps its plane services, the
very same objects, so everything built from them downstream can be reused as it is. The
plane's service and export tuples are spliced at the changed keys and its index patched
there. New sites re-merge every key (an endpoint's locality comes from its site). The
result equals `mcs.build_plane` of the same fleet, which is this builder run once.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

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

T = TypeVar("T")

# Past this many changed keys, the plane's tuples are built whole rather than spliced.
_SPLICE_AT_MOST = 16


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster's part of a service key: its Services, endpoints and exports, in the
    snapshot's order. `mcs` reads the first Service and the last export of a name."""

    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    exports: tuple[ServiceExport, ...] = ()

    @property
    def service(self) -> Service | None:
        return self.services[0] if self.services else None

    @property
    def export(self) -> ServiceExport | None:
        return self.exports[-1] if self.exports else None

    @property
    def counts(self) -> bool:
        """Whether the key exists in the cluster: endpoints alone do not make a service."""
        return bool(self.services or self.exports)


_EMPTY = Member()
_service_key: Callable[[Any], ServiceKey] = operator.attrgetter("namespace", "name")
_endpoint_key: Callable[[Any], ServiceKey] = operator.attrgetter("namespace", "service")


def _by_key(objects: Iterable[T], key: Callable[[T], ServiceKey]) -> dict[ServiceKey, list[T]]:
    grouped: dict[ServiceKey, list[T]] = {}
    for obj in objects:
        grouped.setdefault(key(obj), []).append(obj)
    return grouped


def index_snapshot(snapshot: SiteSnapshot) -> dict[ServiceKey, Member]:
    """A cluster's objects by (namespace, name), in order (every key with any object)."""
    services = _by_key(snapshot.services, _service_key)
    endpoints = _by_key(snapshot.endpoints, _endpoint_key)
    exports = _by_key(snapshot.exports, _service_key)
    return {
        key: Member(
            tuple(services.get(key, ())), tuple(endpoints.get(key, ())), tuple(exports.get(key, ()))
        )
        for key in services.keys() | endpoints.keys() | exports.keys()
    }


_CHUNK = 128  # objects compared at once when looking for where two snapshots differ


def _common_prefix(old: tuple[T, ...], new: tuple[T, ...]) -> int:
    """How many objects `old` and `new` share from the start (equal: the same, mostly)."""
    shorter = min(len(old), len(new))
    at = 0
    while at < shorter:
        end = min(at + _CHUNK, shorter)
        if old[at:end] == new[at:end]:
            at = end
            continue
        while end - at > 1:  # the first difference is in [at, end)
            mid = (at + end) // 2
            if old[at:mid] == new[at:mid]:
                at = mid
            else:
                end = mid
        return at
    return shorter


def _common_suffix(old: tuple[T, ...], new: tuple[T, ...], limit: int) -> int:
    """How many objects (at most `limit`) `old` and `new` share at the end."""
    old_len, new_len = len(old), len(new)
    at = 0
    while at < limit:
        end = min(at + _CHUNK, limit)
        if old[old_len - end : old_len - at] == new[new_len - end : new_len - at]:
            at = end
            continue
        while end - at > 1:  # the last difference is in the (at, end] last objects
            mid = (at + end) // 2
            if old[old_len - mid : old_len - at] == new[new_len - mid : new_len - at]:
                at = mid
            else:
                end = mid
        return at
    return limit


def _window(old: tuple[T, ...], new: tuple[T, ...]) -> tuple[int, int, int]:
    """Where `new` differs from `old`: (start, end in old, end in new); the objects before
    start and after the ends are equal, in the same order. Compared a chunk at a time,
    which costs little where they are the same objects (sources carry them over)."""
    if old is new:
        return len(old), len(old), len(old)
    start = _common_prefix(old, new)
    tail = _common_suffix(old, new, min(len(old), len(new)) - start)
    return start, len(old) - tail, len(new) - tail


class _Outside:
    """Where one kind's window lies among each key's objects of the old snapshot: how many
    of a key's objects come before it. Counted by position, once, on the window's shorter
    side; never by identity, as a key's indexed objects are equal to the snapshot's but not
    always the same (an equal object handed over in place of one keeps the one indexed)."""

    __slots__ = ("_before", "_counts", "_key", "_old", "_window")

    def __init__(
        self, old: tuple[Any, ...], window: tuple[int, int, int], key: Callable[[Any], ServiceKey]
    ) -> None:
        self._old, self._window, self._key = old, window, key
        self._counts: dict[ServiceKey, int] | None = None
        self._before = True

    def before(self, k: ServiceKey, held: int, removed: int) -> int:
        """How many of `k`'s `held` objects, `removed` of them in the window, precede it."""
        if self._counts is None:
            start, end, _ = self._window
            self._before = start <= len(self._old) - end
            side = self._old[:start] if self._before else self._old[end:]
            self._counts = {}
            for obj in side:
                key = self._key(obj)
                self._counts[key] = self._counts.get(key, 0) + 1
        count = self._counts.get(k, 0)
        return count if self._before else held - removed - count


def _respliced(
    k: ServiceKey, held: tuple[T, ...], removed: list[T], added: list[T], outside: _Outside
) -> tuple[T, ...]:
    """A key's objects of one kind after a change: `held` (equal to the old snapshot's, in
    its order) with the `removed` ones of the window replaced by the `added` ones."""
    if removed and held.count(removed[0]) == 1:  # its only equal: where the run starts
        at = held.index(removed[0])
    elif held:
        at = outside.before(k, len(held), len(removed))
    else:
        at = 0
    return held[:at] + tuple(added) + held[at + len(removed) :]


class _ClusterIndex:
    """One cluster's snapshot indexed by service key, updated by what differs."""

    __slots__ = ("members", "snapshot")

    def __init__(self, snapshot: SiteSnapshot) -> None:
        self.snapshot = snapshot
        self.members = index_snapshot(snapshot)

    def update(self, snapshot: SiteSnapshot) -> set[ServiceKey]:
        """Take `snapshot`; the keys whose members differ (by value)."""
        old = self.snapshot
        kinds = (
            (old.services, snapshot.services, _service_key),
            (old.endpoints, snapshot.endpoints, _endpoint_key),
            (old.exports, snapshot.exports, _service_key),
        )
        windows = [_window(before, after) for before, after, _ in kinds]
        spans = sum(max(end - start, new_end - start) for start, end, new_end in windows)
        self.snapshot = snapshot
        size = len(snapshot.services) + len(snapshot.endpoints) + len(snapshot.exports)
        if spans * 2 > size:  # most of it is new (a source that builds every object again)
            return self._reindex(snapshot)
        changes: list[tuple[dict[ServiceKey, list[Any]], dict[ServiceKey, list[Any]]]] = []
        for (before, after, key), (start, end, new_end) in zip(kinds, windows, strict=True):
            changes.append((_by_key(before[start:end], key), _by_key(after[start:new_end], key)))
        outsides = [
            _Outside(before, window, key)
            for (before, _, key), window in zip(kinds, windows, strict=True)
        ]
        dirty: set[ServiceKey] = set()
        touched = {k for removed, added in changes for k in (*removed, *added)}
        for k in touched:
            was = self.members.get(k, _EMPTY)
            parts: list[tuple[Any, ...]] = []
            for held, outside, (removed, added) in zip(
                (was.services, was.endpoints, was.exports), outsides, changes, strict=True
            ):
                gone, new = removed.get(k, []), added.get(k, [])
                parts.append(_respliced(k, held, gone, new, outside) if gone or new else held)
            member = Member(*parts)
            if member.services or member.endpoints or member.exports:
                self.members[k] = member
            else:
                self.members.pop(k, None)
            if member != was:
                dirty.add(k)
        return dirty

    def _reindex(self, snapshot: SiteSnapshot) -> set[ServiceKey]:
        """Index `snapshot` whole; the keys whose members differ from the last index."""
        members, self.members = self.members, index_snapshot(snapshot)
        keys = members.keys() | self.members.keys()
        return {k for k in keys if members.get(k, _EMPTY) != self.members.get(k, _EMPTY)}


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
        self._clusters: dict[str, _ClusterIndex] = {}
        self._sites: tuple[ClusterSite, ...] | None = None
        self._given_grants: object = None  # the grants given last, to skip sorting them again
        self._grants: tuple[Grant, ...] | None = None
        self._groups: dict[ServiceKey, _Group] = {}
        self._keys: list[ServiceKey] = []  # sorted: the plane's order
        self._by_key: dict[ServiceKey, tuple[PlaneService, ...]] = {}
        self._workspaces: dict[str, set[ServiceKey]] = {}
        self._by_workspace: dict[str, frozenset[ServiceKey]] = {}
        self._published = False
        # The workspace grants by consumer and by provider, for the grants of `_grants`.
        self._grants_to: dict[str, tuple[Grant, ...]] = {}
        self._grants_by: dict[str, tuple[Grant, ...]] = {}

    def update(self, fleet: Fleet, grants: Iterable[Grant] | None = None) -> PlaneChange:
        """Bring the plane to `fleet` (with `grants`, by default the fleet's own)."""
        given = fleet.grants if grants is None else grants
        ordered_grants = self._grants
        if given is not self._given_grants or ordered_grants is None:
            ordered = tuple(sorted(set(given), key=grant_order))
            if ordered != ordered_grants:
                ordered_grants = ordered
            self._given_grants = given
        assert ordered_grants is not None
        everything = fleet.sites != self._sites or ordered_grants is not self._grants
        dirty = self._take_snapshots(fleet.snapshots)
        if fleet.sites != self._sites:
            members = (index.members for index in self._clusters.values())
            dirty = {k for index in members for k in index} | self._groups.keys()
        if ordered_grants is not self._grants:
            self._grants_to, self._grants_by = _grants_by_workspace(ordered_grants)
        self._sites, self._grants = fleet.sites, ordered_grants
        sites = {site.name: site for site in fleet.sites}
        changed = [key for key in dirty if self._regroup(key, sites)]
        if changed or everything:
            self._publish(fleet.sites, ordered_grants, changed)
        return PlaneChange(frozenset(changed), everything)

    def _take_snapshots(self, snapshots: Iterable[SiteSnapshot]) -> set[ServiceKey]:
        """Index what the new snapshots changed; the keys whose members differ."""
        current = {s.cluster: s for s in snapshots}
        dirty: set[ServiceKey] = set()
        for cluster in self._clusters.keys() - current.keys():
            dirty.update(self._clusters.pop(cluster).members)
        for cluster, snapshot in current.items():
            index = self._clusters.get(cluster)
            if index is None:
                index = self._clusters[cluster] = _ClusterIndex(snapshot)
                dirty.update(index.members)
            elif snapshot is not index.snapshot:
                dirty.update(index.update(snapshot))
        return dirty

    def _regroup(self, key: ServiceKey, sites: dict[str, ClusterSite]) -> bool:
        """Merge one key again; whether its services or statuses changed."""
        members = [
            (cluster, m.service, m.endpoints, m.export)
            for cluster in sorted(self._clusters)
            if (m := self._clusters[cluster].members.get(key)) is not None and m.counts
        ]
        group = service_group(*key, members, sites) if members else ((), ())
        old = self._groups.get(key)
        if old == group:
            return False
        for service in old[0] if old is not None else ():
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

    def _publish(
        self, sites: tuple[ClusterSite, ...], grants: tuple[Grant, ...], changed: list[ServiceKey]
    ) -> None:
        """A new plane: the last one's tuples and index, changed at the `changed` keys."""
        last = self.plane
        if len(changed) > _SPLICE_AT_MOST or not self._published:  # a first plane: whole
            services = tuple(itertools.chain.from_iterable(self._groups[k][0] for k in self._keys))
            exports = tuple(itertools.chain.from_iterable(self._groups[k][1] for k in self._keys))
        else:
            services, exports = last.services, last.exports
            for key in changed:
                group = self._groups.get(key, ((), ()))
                services = _splice(services, key, group[0])
                exports = _splice(exports, key, group[1])
        workspaces: set[str] = set()
        for key in changed:
            for service in last.named(*key):
                workspaces.add(service.workspace)
            named = self._groups.get(key, ((), ()))[0]
            if named:
                self._by_key[key] = named
                workspaces.update(s.workspace for s in named)
            else:
                self._by_key.pop(key, None)
        for workspace in workspaces:
            keys = self._workspaces.get(workspace)
            if keys:
                self._by_workspace[workspace] = frozenset(keys)
            else:
                self._by_workspace.pop(workspace, None)
        self._published = True
        self.plane = ServicePlane(
            sites=sites,
            services=services,
            grants=grants,
            exports=exports,
            index=PlaneIndex(
                dict(self._by_key), dict(self._by_workspace), self._grants_to, self._grants_by
            ),
        )


def _grants_by_workspace(
    grants: tuple[Grant, ...],
) -> tuple[dict[str, tuple[Grant, ...]], dict[str, tuple[Grant, ...]]]:
    """The workspace grants (from a Namespace) by consumer, and by provider, in order."""
    to: dict[str, list[Grant]] = {}
    by: dict[str, list[Grant]] = {}
    for grant in grants:
        if grant.from_kind == "Namespace":
            to.setdefault(grant.consumer, []).append(grant)
            by.setdefault(grant.provider, []).append(grant)
    return {k: tuple(v) for k, v in to.items()}, {k: tuple(v) for k, v in by.items()}


def _splice(items: tuple[T, ...], key: ServiceKey, group: tuple[T, ...]) -> tuple[T, ...]:
    """`items` (sorted by namespace and name) with those of `key` replaced by `group`."""
    start = bisect.bisect_left(items, key, key=_service_key)
    end = bisect.bisect_right(items, key, lo=start, key=_service_key)
    return items[:start] + group + items[end:]
