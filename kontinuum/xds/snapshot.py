"""A consistent set of resources for one view, and the responses shared by its streams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from kontinuum.xds import types, wire
from kontinuum.xds.resource import Resource

# Distinct response bodies one snapshot keeps for sharing between streams.
MAX_SHARED_BODIES = 4096


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

    __slots__ = ("_bodies", "_by_type")

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
        # Response bodies by content key: shared by every stream that needs the same
        # response, and dropped together with the snapshot.
        self._bodies: dict[tuple[object, ...], object] = {}
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
        key = ("size", type_url)
        size = self._bodies.get(key)
        if size is None:
            size = sum(len(r.sotw_entry) for r in self.resources(type_url).values())
            self._bodies[key] = size
        return size  # type: ignore[return-value]

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
        key = (type_url, names, kept)
        cached = self._bodies.get(key)
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
            # one client's own, and must go with its stream, not stay with the snapshot.
            if names is None or len(carried) - len(kept) == len(names):
                self._remember(key, cached)
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
        key = (type_url, updated, removed)
        body = self._bodies.get(key)
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
                self._remember(key, body)
        return body  # type: ignore[return-value]

    def _remember(self, key: tuple[object, ...], body: object) -> None:
        # Streams in step share a handful of bodies; clients with odd subscriptions would
        # add one each, so past a bound they are built for every response instead.
        if len(self._bodies) < MAX_SHARED_BODIES:
            self._bodies[key] = body

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
