"""What a Kubernetes source knows of the objects it watches, and what follows from it. Pure:
no I/O, no threads; the time is passed in.

The source's watcher threads (`kontinuum.discovery.kube_watch`) report `WatchEvent`s about
the kinds it watches. A `KindsView` keeps the objects they report and whether each kind is
in sync: there is a view once each kind has been listed, so the first one is complete, and
the view is in sync while every kind's list-then-watch is unbroken. When one breaks (the
API server cannot be reached, or answers with an error) the view is out of sync until that
kind is listed again.

Objects are read exactly as the fleet files are, each as a `Document` of file
`kubernetes:<cluster>` holding the object as `kubectl get -o yaml` prints it. What a view
turns them into is its subclass's: `ClusterView` here, a workload cluster's `SiteSnapshot`
(Services, EndpointSlices, ServiceExports); `ConfigView`
(`kontinuum.discovery.config_cluster`), the fleet-wide objects of a config cluster.

`ClusterView`: an invalid object is left out and reported; the others still serve. Out of
sync, the last in-sync view is served marked stale; after `stale_after` seconds without
sync, its endpoints are dropped (a cluster gone for that long most likely lost them) while
its Services and exports stay, so the cluster-set services keep their ports and export
precedence and do not flip when the cluster comes back.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from kubernetes.client import ApiClient, Configuration  # type: ignore[import-untyped]

from kontinuum.control.assembly import Assembly
from kontinuum.control.fleet import CLUSTER_KINDS, ClusterObject, read_cluster_documents
from kontinuum.control.model import ConfigError, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate


@dataclass(frozen=True, slots=True)
class WatchedKind:
    """A kind a source lists and watches in all namespaces, and where the API serves it.

    `crd` names the custom resource definitions that serve an optional kind: when the API
    server does not know the kind, it is read as none at all (with a note saying so)
    rather than as a failure. Built-in kinds have none."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    crd: str = ""
    missing: str = ""  # what the absence of an optional kind means, for the note
    # a built-in kind kontinuum can do without: one its RBAC does not let it list is read as
    # none (as an optional kind's is) instead of blocking the first view
    spared: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def optional(self) -> bool:
        return bool(self.crd)

    def __str__(self) -> str:
        return f"{self.kind}s"


def watched_kind(
    api_version: str,
    kind: str,
    plural: str,
    crd: str = "",
    missing: str = "",
    spared: bool = False,
) -> WatchedKind:
    group, _, version = api_version.rpartition("/")
    return WatchedKind(kind, group, version, plural, crd, missing, spared)


SERVICE: Final = watched_kind(CLUSTER_KINDS["Service"], "Service", "services")
ENDPOINT_SLICE: Final = watched_kind(
    CLUSTER_KINDS["EndpointSlice"], "EndpointSlice", "endpointslices"
)
SERVICE_EXPORT: Final = watched_kind(
    CLUSTER_KINDS["ServiceExport"],
    "ServiceExport",
    "serviceexports",
    crd="Multi-Cluster Services",
    missing="nothing is exported",
)
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


def object_document(name: str, kind: WatchedKind, obj: object) -> Document:
    """An object as the fleet parser reads it (see `object_body`), of the file `name` that
    errors name (`kubernetes:<cluster>`)."""
    return Document(name, object_body(kind, obj))


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
    `note` says why the list is empty when it is not the cluster's doing; `forbidden`,
    that kontinuum may not list the kind (its RBAC lacks it), which degrades the view."""

    kind: WatchedKind
    objects: Sequence[Mapping[str, Any]]
    note: str = ""
    forbidden: bool = False


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


class KindsView(abc.ABC):
    """The objects of some kinds and whether they are in sync (see the module doc).

    Subclasses turn the objects into what their source yields (`result`) and say how they
    are doing (`status`); `lost_sync` is called when the view goes out of sync, before
    the event that broke it changes anything, so that the last view in sync can be kept.
    """

    def __init__(self, name: str, kinds: Sequence[WatchedKind]) -> None:
        self.name = name  # the `file` of every object's Document, e.g. `kubernetes:eu`
        self.kinds = tuple(kinds)
        self._objects: dict[WatchedKind, dict[ObjectKey, Document]] = {k: {} for k in self.kinds}
        self._listed: set[WatchedKind] = set()
        self._notes: dict[WatchedKind, str] = {}
        self._forbidden: set[WatchedKind] = set()  # optional kinds kontinuum may not list
        self._failing: dict[WatchedKind, str] = {}
        self._lost: tuple[float, float] | None = None  # (monotonic, wall) when sync was lost
        self._dirty = True  # the objects changed since they were last read
        self.last_sync: float | None = None  # wall time the view was last known current

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(self.kinds) and not self._failing

    @property
    def objects(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    @property
    def out_of_sync_since(self) -> float | None:
        """When (wall time) the view went out of sync; None while in sync or never synced."""
        return self._lost[1] if self._lost is not None else None

    def documents(self) -> list[Document]:
        """Every object, kind by kind in the view's order, then by namespace and name."""
        return [doc for kind in self.kinds for _, doc in sorted(self._objects[kind].items())]

    def apply(self, event: WatchEvent, now: float, wall: float) -> bool:
        """Take one event at monotonic time `now` (wall time `wall`); whether the view may
        have changed."""
        was_synced = self.synced
        changed = False
        kind = event.kind
        if isinstance(event, Listed):
            objects = {}
            for obj in event.objects:
                doc = object_document(self.name, kind, obj)
                objects[object_key(doc.body)] = doc
            old = self._objects[kind]
            changed = objects != old
            if changed:  # a relist: the objects that differ from the watch's last view
                for key in old.keys() | objects.keys():
                    if old.get(key) != objects.get(key):
                        self.touched(kind, key)
            self._objects[kind] = objects
            self._listed.add(kind)
            self._failing.pop(kind, None)
            self._notes[kind] = event.note
            if event.forbidden:
                self._forbidden.add(kind)
            else:
                self._forbidden.discard(kind)
        elif isinstance(event, Changed):
            doc = object_document(self.name, kind, event.object)
            key = object_key(doc.body)
            if event.type == "DELETED":
                changed = self._objects[kind].pop(key, None) is not None
            else:
                changed = self._objects[kind].get(key) != doc
                self._objects[kind][key] = doc
            if changed:
                self.touched(kind, key)
        elif isinstance(event, Failed):
            self._failing[kind] = event.message
        self._dirty = self._dirty or changed
        if was_synced and not self.synced:
            self.lost_sync()
            self._lost = (now, wall)
        if self.synced:
            self._lost = None
            self.last_sync = wall
        return changed or was_synced != self.synced

    def touched(self, kind: WatchedKind, key: ObjectKey) -> None:  # noqa: B027 (optional hook)
        """Told of each object an event changed (added, changed or removed)."""

    @abc.abstractmethod
    def lost_sync(self) -> None:
        """The view goes out of sync (its objects are still the last ones in sync)."""

    @property
    def deadline(self) -> float | None:
        """When (monotonic) `expire` has something to do, if ever."""
        return None

    def expire(self, now: float) -> bool:
        """Act on the passing of time; whether the view changed."""
        return False

    @abc.abstractmethod
    def result(self) -> SourceUpdate | None:
        """What the source yields now; None before every kind was listed once."""

    @abc.abstractmethod
    def status(self, now: float) -> SourceStatus:
        """How the view is doing at monotonic time `now`."""

    def _notes_of(self) -> list[str]:
        return [note for note in self._notes.values() if note]

    @property
    def forbidden(self) -> bool:
        """Whether an optional kind is read as none because listing it is forbidden."""
        return bool(self._forbidden)

    def _failing_of(self) -> str:
        by_message: dict[str, list[str]] = {}
        for kind, message in self._failing.items():
            by_message.setdefault(message, []).append(str(kind))
        return "; ".join(f"{', '.join(k)}: {message}" for message, k in by_message.items())

    def _listing(self) -> str:
        """The status detail before the first sync: what is still to be listed, and why."""
        waiting = ", ".join(
            str(k) for k in self.kinds if k not in self._listed or k in self._failing
        )
        failing = self._failing_of()
        return f"listing {waiting}" + (f" ({failing}; retrying)" if failing else "")

    def _since(self) -> str:
        """The status detail out of sync: since when and why."""
        assert self._lost is not None
        return (
            f"out of sync with the API server since {_when(self._lost[1])} ({self._failing_of()})"
        )


class ClusterView(KindsView):
    """One workload cluster's objects and sync state (see the module doc)."""

    def __init__(self, cluster: str, stale_after: float) -> None:
        super().__init__(f"kubernetes:{cluster}", KINDS)
        self.cluster = cluster
        self.stale_after = stale_after
        self._dropped = False  # stale_after passed: the endpoints are dropped
        self._good: SiteSnapshot | None = None  # the last view parsed in sync
        self._errors: tuple[ConfigError, ...] = ()
        self._assembly = Assembly(cluster)
        self._files: dict[WatchedKind, str] = {}  # each kind's prefix of its objects' names
        # The objects changed since they were last read: only they are read again.
        self._touched: set[tuple[WatchedKind, ObjectKey]] = set()

    def apply(self, event: WatchEvent, now: float, wall: float) -> bool:
        changed = super().apply(event, now, wall)
        if self.synced:
            self._dropped = False
        return changed

    def touched(self, kind: WatchedKind, key: ObjectKey) -> None:
        self._touched.add((kind, key))

    def lost_sync(self) -> None:
        self._parse()  # the last view in sync is what serves, marked stale, from now on

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
        """Read again the objects that changed since the last read, and only them: each
        object is one file of the cluster's `Assembly`, named to sort as `documents()`."""
        if not (self._dirty or self._good is None):
            return
        touched = (
            self._touched
            if self._good is not None
            else {(kind, key) for kind in self.kinds for key in self._objects[kind]}
        )
        changes: dict[str, tuple[ClusterObject, ...]] = {}
        for kind, key in touched:
            doc = self._objects[kind].get(key)
            file = self._files.setdefault(kind, f"{self.kinds.index(kind):02d}") + "\0".join(
                ("", *key)
            )
            changes[file] = tuple(read_cluster_documents(self.cluster, [doc])) if doc else ()
        self._good = self._assembly.change(changes)
        self._errors = tuple(self._assembly.errors())
        self._touched = set()
        self._dirty = False

    def result(self) -> SiteSnapshot | None:
        return self.snapshot()

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
        notes = self._notes_of()
        if self.synced:
            if self._good is None:
                return SourceStatus(Health.STARTING, "listed every kind; reading the objects")
            if self._errors:
                detail = f"{len(self._errors)} invalid object(s) left out"
                return SourceStatus(Health.DEGRADED, "; ".join([detail, *notes]), self._errors)
            health = Health.DEGRADED if self.forbidden else Health.HEALTHY
            return SourceStatus(health, "; ".join(notes))
        if self._lost is None:  # never in sync yet
            return SourceStatus(Health.STARTING, self._listing())
        since = self._since()
        if self._dropped:
            detail = (
                f"{since}: for more than {self.stale_after:g} s, so its endpoints are dropped; "
                "its Services and exports stay, marked stale"
            )
        else:
            left = max(self.stale_after - (now - self._lost[0]), 0.0)
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
