"""A cluster's snapshot kept up to date file by file: what `assemble_cluster` finds across
objects (duplicates, slices and exports of Services the cluster lacks), found again only for
the objects a change of some files touches. Pure: no I/O.

The result is exactly `assemble_cluster` over the objects of every file in path order: the
same snapshot and the same errors in the same order. A change costs in proportion to the
objects it touches (and a copy of the snapshot's tuples), not to the cluster's size.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Generic, TypeVar

from kontinuum.control.fleet import ClusterObject, export_problem, slice_problems
from kontinuum.control.model import (
    ConfigError,
    Endpoint,
    Service,
    ServiceExport,
    SiteSnapshot,
)

Position = tuple[str, int]  # (file, index of the object in it): the order of the objects
ObjectKey = tuple[str, str, str]  # (kind, namespace, name): what a duplicate shares
Ref = tuple[str, str]  # (namespace, name)

V = TypeVar("V")

# Past this many edits at once, a sorted tuple is built anew rather than spliced per edit.
_REBUILD_EDITS = 32


class _Sorted(Generic[V]):
    """Groups of items by key, flattened in key order into one tuple, which edits splice."""

    def __init__(self) -> None:
        self.groups: dict[Ref, tuple[V, ...]] = {}
        self.items: tuple[V, ...] = ()
        self._keys: list[Ref] = []  # sorted
        self._sizes: list[int] = []  # of each key's group, in key order
        self._edits: dict[Ref, tuple[V, ...] | None] = {}

    def set(self, key: Ref, group: tuple[V, ...] | None) -> None:
        """Replace (None: remove) `key`'s group, as of the next `flush`."""
        self._edits[key] = group

    def flush(self) -> bool:
        """Apply the edits; whether the items changed."""
        edits = {k: g for k, g in self._edits.items() if not _same(self.groups.get(k), g)}
        self._edits.clear()
        if not edits:
            return False
        for key, group in edits.items():
            if group is None:
                del self.groups[key]
            else:
                self.groups[key] = group
        if len(edits) > _REBUILD_EDITS:
            self._keys = sorted(self.groups)
            self._sizes = [len(self.groups[k]) for k in self._keys]
            self.items = tuple(item for k in self._keys for item in self.groups[k])
            return True
        for key, group in edits.items():
            i = bisect_left(self._keys, key)
            start = sum(self._sizes[:i])
            if i < len(self._keys) and self._keys[i] == key:
                end = start + self._sizes[i]
                if group is None:
                    del self._keys[i], self._sizes[i]
                    self.items = self.items[:start] + self.items[end:]
                else:
                    self._sizes[i] = len(group)
                    self.items = self.items[:start] + group + self.items[end:]
            elif group is not None:
                self._keys.insert(i, key)
                self._sizes.insert(i, len(group))
                self.items = self.items[:start] + group + self.items[start:]
        return True


def _same(a: tuple[V, ...] | None, b: tuple[V, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class _Errors:
    """Errors by the position of the object they are about, read in position order."""

    def __init__(self) -> None:
        self._by: dict[Position, tuple[ConfigError, ...]] = {}
        self._order: list[Position] = []  # sorted

    def set(self, at: Position, errors: tuple[ConfigError, ...]) -> None:
        if not errors:
            self.clear(at)
            return
        if at not in self._by:
            insort(self._order, at)
        self._by[at] = errors

    def clear(self, at: Position) -> None:
        if self._by.pop(at, None) is not None:
            del self._order[bisect_left(self._order, at)]

    def __iter__(self) -> Iterator[ConfigError]:
        return (e for at in self._order for e in self._by[at])


class Assembly:
    """The snapshot of `cluster` and its errors across objects, as `assemble_cluster` finds
    them over the objects of every file in file order, kept as files change (`change`)."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._files: dict[str, tuple[ClusterObject, ...]] = {}
        self._holders: dict[ObjectKey, list[Position]] = {}  # sorted: the first one counts
        self._winners: dict[ObjectKey, tuple[Position, ClusterObject]] = {}  # without errors
        self._services: dict[Ref, Service] = {}
        self._slices: dict[Ref, tuple[Position, ClusterObject]] = {}  # checked against Services
        self._slices_of: dict[Ref, set[Ref]] = {}  # by their Service
        self._exports: dict[Ref, tuple[Position, ClusterObject]] = {}
        self._object_errors = _Errors()  # each object's own, or that it is a duplicate
        self._slice_errors = _Errors()
        self._export_errors = _Errors()
        self._slice_at: dict[Ref, Position] = {}  # where each slice's errors are
        self._export_at: dict[Ref, Position] = {}
        self._sorted_services: _Sorted[Service] = _Sorted()
        self._sorted_endpoints: _Sorted[Endpoint] = _Sorted()
        self._sorted_exports: _Sorted[ServiceExport] = _Sorted()
        self.snapshot = SiteSnapshot(cluster)

    def objects(self, file: str) -> tuple[ClusterObject, ...]:
        return self._files.get(file, ())

    def errors(self) -> list[ConfigError]:
        """The errors across objects, in `assemble_cluster`'s order."""
        return [*self._object_errors, *self._slice_errors, *self._export_errors]

    def change(self, changes: dict[str, tuple[ClusterObject, ...]]) -> SiteSnapshot:
        """Each file of `changes` now holds those objects (none: it is gone); the snapshot."""
        keys: set[ObjectKey] = set()
        for file, objects in changes.items():
            old = self._files.pop(file, ())
            for index, obj in enumerate(old):
                at = (file, index)
                self._object_errors.clear(at)
                if obj.header_ok:
                    key = (obj.kind, obj.namespace, obj.name)
                    holders = self._holders[key]
                    del holders[bisect_left(holders, at)]
                    keys.add(key)
            if objects:
                self._files[file] = objects
            for index, obj in enumerate(objects):
                at = (file, index)
                if obj.header_ok:
                    key = (obj.kind, obj.namespace, obj.name)
                    insort(self._holders.setdefault(key, []), at)
                    keys.add(key)
                else:
                    self._object_errors.set(at, obj.errors)
        services: set[Ref] = set()
        slices: set[Ref] = set()
        exports: set[Ref] = set()
        for key in keys:
            kind, ref = key[0], key[1:]
            winner = self._duplicates(key)
            last = self._winners.get(key)
            if winner is last or (winner is not None and last is not None and winner[1] is last[1]):
                continue
            if winner is None:
                del self._winners[key]
            else:
                self._winners[key] = winner
            if kind == "Service":
                services.add(ref)
            elif kind == "EndpointSlice":
                self._slice_candidate(ref, winner)
                slices.add(ref)
            else:
                exports.add(ref)
        for ref in services:
            winner = self._winners.get(("Service", *ref))
            value = winner[1].value if winner is not None else None
            if isinstance(value, Service):
                self._services[ref] = value
            else:
                self._services.pop(ref, None)
            self._sorted_services.set(ref, (value,) if isinstance(value, Service) else None)
            slices.update(self._slices_of.get(ref, ()))
            exports.add(ref)
        # Errors first out, then in: another object may now be where one with errors was.
        for ref in slices:
            if ref in self._slice_at:
                self._slice_errors.clear(self._slice_at.pop(ref))
        for ref in exports:
            if ref in self._export_at:
                self._export_errors.clear(self._export_at.pop(ref))
        for ref in slices:
            self._check_slice(ref)
        for ref in exports:
            self._check_export(ref)
        changed = [
            self._sorted_services.flush(),
            self._sorted_endpoints.flush(),
            self._sorted_exports.flush(),
        ]
        if any(changed):
            self.snapshot = SiteSnapshot(
                cluster=self.cluster,
                services=self._sorted_services.items,
                endpoints=self._sorted_endpoints.items,
                exports=self._sorted_exports.items,
            )
        return self.snapshot

    def _duplicates(self, key: ObjectKey) -> tuple[Position, ClusterObject] | None:
        """Set the errors of the objects sharing `key`; the first one, when it is valid."""
        holders = self._holders.get(key)
        if not holders:
            self._holders.pop(key, None)
            return None
        first_at = holders[0]
        first = self._files[first_at[0]][first_at[1]]
        self._object_errors.set(first_at, first.errors)
        for at in holders[1:]:
            obj = self._files[at[0]][at[1]]
            message = f"duplicate {obj.kind}, also in {first.doc.file}"
            self._object_errors.set(at, (obj.error("metadata.name", message),))
        return None if first.errors else (first_at, first)

    def _slice_candidate(self, ref: Ref, winner: tuple[Position, ClusterObject] | None) -> None:
        last = self._slices.pop(ref, None)
        if last is not None:
            service = (ref[0], last[1].service_name)
            self._slices_of[service].discard(ref)
            if not self._slices_of[service]:
                del self._slices_of[service]
        if winner is not None:
            self._slices[ref] = winner
            self._slices_of.setdefault((ref[0], winner[1].service_name), set()).add(ref)

    def _check_slice(self, ref: Ref) -> None:
        candidate = self._slices.get(ref)
        if candidate is None:
            self._sorted_endpoints.set(ref, None)
            return
        at, obj = candidate
        service = self._services.get((obj.namespace, obj.service_name))
        problems = slice_problems(self.cluster, obj, service)
        if problems:
            self._slice_at[ref] = at
            self._slice_errors.set(at, tuple(problems))
        self._sorted_endpoints.set(ref, None if problems else obj.endpoints)

    def _check_export(self, ref: Ref) -> None:
        winner = self._winners.get(("ServiceExport", *ref))
        value = winner[1].value if winner is not None else None
        if winner is None or not isinstance(value, ServiceExport):
            self._sorted_exports.set(ref, None)
            return
        at, obj = winner
        if ref not in self._services:
            self._export_at[ref] = at
            self._export_errors.set(at, (export_problem(self.cluster, obj, value),))
        self._sorted_exports.set(ref, (value,))
