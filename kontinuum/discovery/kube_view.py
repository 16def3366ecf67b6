"""What a `KubernetesSource` knows of its cluster, and what follows from it. Pure: no I/O,
no threads; the time is passed in.

The source's watcher threads (`kontinuum.discovery.kube_watch`) report `WatchEvent`s; a
`ClusterView` keeps the objects they report, whether they are current, and turns them
into the cluster's `SiteSnapshot` and the source's status:

- The objects are read exactly as the fleet files are (`parse_cluster_objects`), each as a
  `Document` of file `kubernetes:<cluster>` holding the object as `kubectl get -o yaml`
  prints it. An invalid object is left out and reported; the others still serve.
- There is a snapshot once each kind has been listed, so the first one is complete.
- The view is in sync while every kind's list-then-watch is unbroken. When one breaks
  (the API server cannot be reached, or answers with an error) the last in-sync view is
  served marked stale; after `stale_after` seconds without sync, its endpoints are dropped
  (a cluster gone for that long most likely lost them) while its Services and exports
  stay, so the cluster-set services keep their ports and export precedence and do not
  flip when the cluster comes back. A kind listed again ends that for the kind.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from kubernetes.client import ApiClient, Configuration  # type: ignore[import-untyped]

from kontinuum.control.fleet import CLUSTER_KINDS, parse_cluster_objects
from kontinuum.control.model import ConfigError, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.source import Health, SourceStatus


@dataclass(frozen=True, slots=True)
class WatchedKind:
    """A kind the source lists and watches in all namespaces, and where the API serves it."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.kind}s"


def _kind(kind: str, plural: str) -> WatchedKind:
    group, _, version = CLUSTER_KINDS[kind].rpartition("/")
    return WatchedKind(kind, group, version, plural)


SERVICE: Final = _kind("Service", "services")
ENDPOINT_SLICE: Final = _kind("EndpointSlice", "endpointslices")
SERVICE_EXPORT: Final = _kind("ServiceExport", "serviceexports")
KINDS: Final = (SERVICE, ENDPOINT_SLICE, SERVICE_EXPORT)

ObjectKey = tuple[str, str]  # namespace, name


@functools.cache
def _serializer() -> Any:
    # A client of its own configuration: the global default one is never read or changed.
    return ApiClient(Configuration())


def object_body(kind: WatchedKind, obj: object) -> dict[str, Any]:
    """An object of `kind` as `kubectl get -o yaml` prints it.

    `obj` is the API's JSON (as lists and watches send it, and as the client returns custom
    objects) or a typed object of the client, turned into the same JSON. The items of a
    list come without `apiVersion` and `kind`; they are filled in, as kubectl does.
    `metadata.managedFields` is left out, as kubectl does by default: it is large and
    nothing here reads it.
    """
    raw = obj if isinstance(obj, Mapping) else _serializer().sanitize_for_serialization(obj)
    if not isinstance(raw, Mapping):
        raise TypeError(f"not a Kubernetes object: {type(obj).__name__}")
    body = dict(raw)
    if not body.get("apiVersion"):
        body["apiVersion"] = kind.api_version
    if not body.get("kind"):
        body["kind"] = kind.kind
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and "managedFields" in metadata:
        body["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return body


def object_document(cluster: str, kind: WatchedKind, obj: object) -> Document:
    """An object of the cluster as the fleet parser reads it (see `object_body`)."""
    return Document(f"kubernetes:{cluster}", object_body(kind, obj))


def object_key(body: object) -> ObjectKey:
    """(namespace, name) of an object body; "" for what it lacks."""
    metadata = body.get("metadata") if isinstance(body, Mapping) else None
    meta = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = meta.get("namespace"), meta.get("name")
    return (
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )


# --- what the watcher threads report ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listed:
    """Every object of a kind, as a list answered; replaces what was known of the kind.
    `note` says why the list is empty when it is not the cluster's doing."""

    kind: WatchedKind
    objects: Sequence[Mapping[str, Any]]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event that changes an object."""

    kind: WatchedKind
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Heard:
    """The API server confirmed a kind's watch is current (a watch began, or a bookmark)."""

    kind: WatchedKind


@dataclass(frozen=True, slots=True)
class Failed:
    """A kind's list or watch failed; the kind is out of sync until it is listed again."""

    kind: WatchedKind
    message: str


WatchEvent = Listed | Changed | Heard | Failed


def _when(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ClusterView:
    """One cluster's objects and sync state (see the module doc)."""

    def __init__(self, cluster: str, stale_after: float) -> None:
        self.cluster = cluster
        self.stale_after = stale_after
        self._objects: dict[WatchedKind, dict[ObjectKey, Document]] = {k: {} for k in KINDS}
        self._listed: set[WatchedKind] = set()
        self._notes: dict[WatchedKind, str] = {}
        self._failing: dict[WatchedKind, str] = {}
        self._lost: tuple[float, float] | None = None  # (monotonic, wall) when sync was lost
        self._dropped = False  # stale_after passed: the endpoints are dropped
        self._dirty = True  # the objects changed since they were last parsed
        self._good: SiteSnapshot | None = None  # the last view parsed in sync
        self._errors: tuple[ConfigError, ...] = ()
        self.last_sync: float | None = None  # wall time the view was last known current

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(KINDS) and not self._failing

    @property
    def objects(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    def apply(self, event: WatchEvent, now: float, wall: float) -> bool:
        """Take one event at monotonic time `now` (wall time `wall`); whether the snapshot
        may have changed."""
        was_synced = self.synced
        changed = False
        kind = event.kind
        if isinstance(event, Listed):
            objects = {}
            for obj in event.objects:
                doc = object_document(self.cluster, kind, obj)
                objects[object_key(doc.body)] = doc
            changed = objects != self._objects[kind]
            self._objects[kind] = objects
            self._listed.add(kind)
            self._failing.pop(kind, None)
            self._notes[kind] = event.note
        elif isinstance(event, Changed):
            doc = object_document(self.cluster, kind, event.object)
            key = object_key(doc.body)
            if event.type == "DELETED":
                changed = self._objects[kind].pop(key, None) is not None
            else:
                changed = self._objects[kind].get(key) != doc
                self._objects[kind][key] = doc
        elif isinstance(event, Failed):
            self._failing[kind] = event.message
        self._dirty = self._dirty or changed
        if was_synced and not self.synced:
            self._parse()  # the last view in sync is what serves, marked stale, from now on
            self._lost = (now, wall)
        if self.synced:
            self._lost = None
            self._dropped = False
            self.last_sync = wall
        return changed or was_synced != self.synced

    @property
    def deadline(self) -> float | None:
        """When (monotonic) the endpoints of a stale view are to be dropped, if pending."""
        if self._lost is None or self._dropped:
            return None
        return self._lost[0] + self.stale_after

    def expire(self, now: float) -> bool:
        """Drop the endpoints once `stale_after` passed out of sync; whether that happened now."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return False
        self._dropped = True
        return True

    def _parse(self) -> None:
        if self._dirty or self._good is None:
            docs = [doc for kind in KINDS for _, doc in sorted(self._objects[kind].items())]
            self._good, errors = parse_cluster_objects(self.cluster, docs)
            self._errors = tuple(errors)
            self._dirty = False

    def snapshot(self) -> SiteSnapshot | None:
        """The cluster as it is now (the objects are parsed again if they changed), None
        before every kind was listed once."""
        if self.synced:
            self._parse()
            return self._good
        if self._good is None:
            return None
        if self._dropped:
            return dataclasses.replace(self._good, endpoints=(), stale=True)
        return dataclasses.replace(self._good, stale=True)

    def status(self, now: float) -> SourceStatus:
        notes = [note for note in self._notes.values() if note]
        by_message: dict[str, list[str]] = {}
        for kind, message in self._failing.items():
            by_message.setdefault(message, []).append(str(kind))
        failing = "; ".join(f"{', '.join(k)}: {message}" for message, k in by_message.items())
        if self.synced:
            if self._good is None:
                return SourceStatus(Health.STARTING, "listed every kind; reading the objects")
            if self._errors:
                detail = f"{len(self._errors)} invalid object(s) left out"
                return SourceStatus(Health.DEGRADED, "; ".join([detail, *notes]), self._errors)
            return SourceStatus(Health.HEALTHY, "; ".join(notes))
        if self._lost is None:  # never in sync yet
            waiting = ", ".join(
                str(k) for k in KINDS if k not in self._listed or k in self._failing
            )
            detail = f"listing {waiting}" + (f" ({failing}; retrying)" if failing else "")
            return SourceStatus(Health.STARTING, detail)
        started, wall = self._lost
        since = f"out of sync with the API server since {_when(wall)} ({failing})"
        if self._dropped:
            detail = (
                f"{since}: for more than {self.stale_after:g} s, so its endpoints are dropped; "
                "its Services and exports stay, marked stale"
            )
        else:
            left = max(self.stale_after - (now - started), 0.0)
            detail = (
                f"{since}: serving its last view, marked stale; its endpoints are dropped "
                f"in {left:.0f} s"
            )
        return SourceStatus(Health.DEGRADED, "; ".join([detail, *notes]), self._errors)


@dataclass(slots=True)
class Debouncer:
    """Coalesces a burst of changes: due once no change came for `after` seconds, or at
    the latest `limit` seconds after the burst's first change (a cluster that never
    quiets down still gets its view out). Times are monotonic seconds."""

    after: float
    limit: float
    _first: float | None = None
    _last: float = 0.0

    def touch(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    @property
    def deadline(self) -> float | None:
        if self._first is None:
            return None
        return min(self._last + self.after, self._first + self.limit)

    def due(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def reset(self) -> None:
        self._first = None
