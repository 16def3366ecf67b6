"""A consistent set of resources for one view, and the responses shared by its streams."""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from kontinuum.xds import types, wire
from kontinuum.xds.resource import Resource

# Response bodies kept for sharing between streams, over every snapshot: the least recently
# used go past this many bytes (or bodies). Streams in step (one view, one push) ask within
# moments of each other; keeping every view's first responses for its snapshot's lifetime
# held most of a large fleet's memory after its proxies connected.
MAX_SHARED_BYTES = 32 * 1024 * 1024
MAX_SHARED_BODIES = 16_384


class _SharedBodies:
    """Bodies by (snapshot, content key), least recently used dropped past the bounds."""

    __slots__ = ("_bodies", "_size", "max_bodies", "max_bytes")

    def __init__(self, max_bytes: int, max_bodies: int) -> None:
        self._bodies: OrderedDict[tuple[object, ...], tuple[object, int]] = OrderedDict()
        self._size = 0
        self.max_bytes = max_bytes
        self.max_bodies = max_bodies

    def get(self, key: tuple[object, ...]) -> object | None:
        found = self._bodies.get(key)
        if found is None:
            return None
        self._bodies.move_to_end(key)
        return found[0]

    def put(self, key: tuple[object, ...], body: object, size: int) -> None:
        if size > self.max_bytes:
            return
        old = self._bodies.pop(key, None)
        if old is not None:
            self._size -= old[1]
        self._bodies[key] = (body, size)
        self._size += size
        while self._size > self.max_bytes or len(self._bodies) > self.max_bodies:
            _, (_, dropped) = self._bodies.popitem(last=False)
            self._size -= dropped

    @property
    def size(self) -> int:
        """Bytes kept."""
        return self._size

    def __len__(self) -> int:
        return len(self._bodies)


SHARED_BODIES = _SharedBodies(MAX_SHARED_BYTES, MAX_SHARED_BODIES)
_serials = itertools.count()


class SotwBody(NamedTuple):
    """A SotW response without its nonce, and the resources (and versions) it carries."""

    body: bytes
    carried: tuple[Resource, ...]
    versions: Mapping[str, str]  # name -> version of what is carried; shared, read-only


class InconsistentSnapshotError(ValueError):
    """A snapshot names a resource it does not contain."""


class Snapshot:
    """An immutable, internally consistent set of resources, indexed by type and name.

    Consistent means every ClusterLoadAssignment an EDS Cluster names and every
    RouteConfiguration a Listener names through RDS is present, so no client is ever
    left warming a cluster or listener the server cannot complete.
    """

    __slots__ = ("_by_type", "_serial", "_sizes")

    def __init__(self, resources: Iterable[Resource]) -> None:
        by_type: dict[str, dict[str, Resource]] = {}
        for resource in resources:
            named = by_type.setdefault(resource.type_url, {})
            if resource.name in named:
                raise InconsistentSnapshotError(
                    f"duplicate {types.short_name(resource.type_url)} resource {resource.name!r}"
                )
            named[resource.name] = resource
        self._by_type: Mapping[str, Mapping[str, Resource]] = MappingProxyType(
            {t: MappingProxyType(r) for t, r in by_type.items()}
        )
        # Response bodies are shared by every stream that needs the same response, in
        # SHARED_BODIES under this snapshot's serial; a type's size is kept here.
        self._serial = next(_serials)
        self._sizes: dict[str, int] = {}
        problems = consistency_problems(self._by_type)
        if problems:
            raise InconsistentSnapshotError("; ".join(problems))

    @classmethod
    def of(cls, messages: Iterable[Any]) -> Snapshot:
        """Build from xds-protos messages of any of the served types."""
        return cls(Resource.of(m) for m in messages)

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        return self._by_type.get(type_url, _EMPTY)

    @property
    def type_urls(self) -> Iterable[str]:
        return self._by_type.keys()

    def size(self, type_url: str) -> int:
        """Serialized bytes of a type's resources (computed once: the snapshot is immutable)."""
        size = self._sizes.get(type_url)
        if size is None:
            size = self._sizes[type_url] = sum(
                len(r.sotw_entry) for r in self.resources(type_url).values()
            )
        return size

    def sotw_body(
        self,
        type_url: str,
        names: frozenset[str] | None,
        kept: tuple[Resource, ...] = (),
    ) -> SotwBody:
        """The SotW response (all but the nonce) for a subscription, and what it carries.

        `names` None means wildcard: every resource of the type. `kept` are resources
        already removed from the view that a make-before-break response still carries.
        The version is the hash of what is carried, so streams that see the same content
        see the same version, on every replica.
        """
        key = (self._serial, type_url, names, kept)
        cached = SHARED_BODIES.get(key)
        if cached is None:
            available = self.resources(type_url)
            chosen = available.keys() if names is None else (n for n in names if n in available)
            carried = tuple(sorted((*(available[n] for n in chosen), *kept), key=_by_name))
            version = combined_version(carried)
            body = b"".join(
                (
                    wire.text_field(wire.RESPONSE_VERSION_INFO, version),
                    *(r.sotw_entry for r in carried),
                    wire.text_field(wire.RESPONSE_TYPE_URL, type_url),
                )
            )
            versions = MappingProxyType({r.name: r.version for r in carried})
            cached = SotwBody(body, carried, versions)
            # Shared only when every name is the snapshot's: names that do not exist are
            # one client's own, and must go with its stream, not stay in the shared cache.
            if names is None or len(carried) - len(kept) == len(names):
                SHARED_BODIES.put(key, cached, len(body))
        return cached  # type: ignore[return-value]

    def delta_body(
        self,
        type_url: str,
        updated: tuple[str, ...],
        removed: tuple[str, ...],
        *,
        shared: bool = True,
    ) -> bytes:
        """A Delta response (all but the nonce) carrying `updated` and `removed` names;
        not `shared` (kept for other streams) when `removed` has names of one client's
        own (subscribed to, and not in the snapshot)."""
        key = (self._serial, type_url, updated, removed)
        body = SHARED_BODIES.get(key)
        if body is None:
            available = self.resources(type_url)
            body = b"".join(
                (
                    *(available[n].delta_entry for n in updated),
                    wire.text_field(wire.DELTA_TYPE_URL, type_url),
                    *(wire.text_field(wire.DELTA_REMOVED_RESOURCES, n) for n in removed),
                )
            )
            if shared:
                SHARED_BODIES.put(key, body, len(body))
        return body  # type: ignore[return-value]

    def changes_from(self, previous: Snapshot | None) -> dict[str, frozenset[str]]:
        """Per type, the names that were added, changed or removed since `previous`."""
        changes: dict[str, frozenset[str]] = {}
        old_types = previous._by_type if previous is not None else {}
        for type_url in set(self._by_type) | set(old_types):
            new = self.resources(type_url)
            old = old_types.get(type_url, _EMPTY)
            changed = {
                n for n, r in new.items() if (o := old.get(n)) is None or o.version != r.version
            }
            changed.update(n for n in old if n not in new)
            if changed:
                changes[type_url] = frozenset(changed)
        return changes


_EMPTY: Mapping[str, Resource] = MappingProxyType({})


def combined_version(resources: Iterable[Resource]) -> str:
    """The version of a group of resources: a hash of their names and versions."""
    digest = hashlib.blake2b(digest_size=8)
    for resource in resources:
        digest.update(resource.name.encode())
        digest.update(b"\0")
        digest.update(resource.version.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _by_name(resource: Resource) -> str:
    return resource.name


def consistency_problems(by_type: Mapping[str, Mapping[str, Resource]]) -> list[str]:
    """Names referenced by Clusters and Listeners that the set does not contain."""
    problems: list[str] = []
    endpoints = by_type.get(types.ENDPOINT, _EMPTY)
    for cluster in by_type.get(types.CLUSTER, _EMPTY).values():
        for eds_name in cluster.references:
            if eds_name not in endpoints:
                problems.append(
                    f"Cluster {cluster.name!r} uses EDS name {eds_name!r} "
                    "but no ClusterLoadAssignment has that name"
                )
    routes = by_type.get(types.ROUTE, _EMPTY)
    for listener in by_type.get(types.LISTENER, _EMPTY).values():
        for route_name in listener.references:
            if route_name not in routes:
                problems.append(
                    f"Listener {listener.name!r} uses RDS name {route_name!r} "
                    "but no RouteConfiguration has that name"
                )
    return problems


EMPTY_SNAPSHOT = Snapshot(())
