"""The source of a site whose zone control plane dials out and publishes its objects.

A ClusterProfile annotated `kontinuum.io/source: zone` declares such a site
(`kontinuum.control.site_access`). Its zone connects to the global's federation address
(`kontinuum.federation.service`) and publishes the site's Services, EndpointSlices and
ServiceExports; the stream hands what it receives to this source, which reads them
exactly as the fleet files and the Kubernetes source do (`kontinuum.discovery.kube_view`),
into the site's snapshot. No I/O here: the stream does it.

- Each received object is checked as a fleet file's object is: an invalid one is refused
  (the stream NACKs it, naming it and why) and the version held before stays; the others
  apply. A zone holds at most `MAX_OBJECTS` objects, of at most `MAX_BYTES` of JSON in all.
- The first snapshot comes once the zone's first complete response of a stream was applied
  (its view is then complete: the responses before, marked partial, are held back); after
  that, a new one whenever an object changes, debounced.
- When the stream ends, the last view is served marked stale, and after `stale_after`
  seconds without the zone, without its endpoints (its Services and exports stay), as
  for a Kubernetes cluster whose API cannot be reached. A new stream of the zone brings it
  back in sync; the objects held are what the global says it holds when it reconnects
  (`held`), so the zone sends only what changed meanwhile; when the stream was told only
  part of it (`attach`'s `declared`: what fits in one message), what is held besides and
  not sent again is dropped once the stream's view is whole. With a store
  (`kontinuum.discovery.zone_store`, `keep`), what is held also outlasts a restart.
- While the zone says its own source of the site (its Kubernetes API) is out of sync (a
  `StaleState`, its `site/<site>` resource), the view is stale exactly as when the zone
  disconnects, `stale_after` counting from when the zone's source went out of sync (a
  time in the future counts as now); when the zone removes it, the view is in sync again.
- One stream per zone replica: a new one of the same replica takes over, and the one it
  replaced may apply nothing more (`SupersededError`). Of several replicas, one is the
  active publisher and the others are standbys, promoted without a stale gap when the
  active goes (`kontinuum.discovery.zone_replicas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kontinuum.control.fleet import read_cluster_documents
from kontinuum.control.model import SiteAccess, ZoneAccess
from kontinuum.control.objects import Document
from kontinuum.discovery.kube_view import (
    KINDS,
    Changed,
    ClusterView,
    Debouncer,
    Failed,
    Listed,
    WatchedKind,
)
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate
from kontinuum.discovery.zone_replicas import Replicas, ReplicaStream
from kontinuum.discovery.zone_store import ReceivedObject, ZoneObjects

__all__ = ["ReceivedObject", "StaleState", "SupersededError", "ZoneSource", "ZoneStats"]

log = logging.getLogger("kontinuum.discovery.zone")

MAX_OBJECTS: Final = 100_000  # objects one zone may publish
# Their JSON in all (each object's is bounded too, by the stream): far above a site of
# MAX_OBJECTS real objects, far below MAX_OBJECTS objects of the largest size.
MAX_BYTES: Final = 512 * 1024 * 1024
DEBOUNCE_LIMIT: Final = 10  # a burst is cut after this many `debounce` periods
_KINDS: Final = {kind.kind: kind for kind in KINDS}


class SupersededError(Exception):
    """A stream of the zone that another, newer one of the same replica replaced."""


@dataclass(frozen=True, slots=True)
class StaleState:
    """A zone's word that its own source of the site is out of sync since `stale_since`
    (Unix time): its resource name and version."""

    name: str
    version: str
    stale_since: float


@dataclass(slots=True)
class ZoneStats:
    """What the zone's streams brought (counters, and the current state)."""

    connected: bool = False
    connections: int = 0
    objects_received: int = 0  # objects applied, each new or changed one once
    objects_refused: int = 0
    removals_received: int = 0
    last_sync: float | None = None  # Unix time a response was last applied
    last_transition: float | None = None  # Unix time it last connected or disconnected


class ZoneView(ClusterView):
    """A `ClusterView` of a zone's objects, with status texts of a stream, not an API."""

    def __init__(self, cluster: str, stale_after: float) -> None:
        super().__init__(cluster, stale_after)
        self.name = f"zone:{cluster}"
        self.reason = ""  # why the zone's stream ended; "" while connected
        self.reported = False  # out of sync because the zone said its own source is

    def _listing(self) -> str:
        return "waiting for its zone to connect"

    def lost_at(self, now: float, wall: float, since: float) -> None:
        """Out of sync since wall time `since` (not later than `wall`), not since now."""
        since = min(since, wall)
        self._lost = (now - (wall - since), since)
        self._dropped = False
        if self.last_sync is None or self.last_sync > since:
            self.last_sync = since

    def _since(self) -> str:
        assert self._lost is not None
        since = datetime.fromtimestamp(self._lost[1], UTC).isoformat(timespec="seconds")
        since = since.replace("+00:00", "Z")
        if not self.reported:
            return f"its zone is disconnected since {since} ({self.reason})"
        said = f"its zone says its own view of the site is out of sync since {since}"
        return f"{said}; the zone is disconnected ({self.reason})" if self.reason else said


class ZoneSource:
    """The site of a zone, as a `Source` fed by the zone's stream (see the module doc)."""

    def __init__(self, cluster: str, stale_after: float = 300.0, debounce: float = 0.1) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after}")
        self._cluster = cluster
        self._view = ZoneView(cluster, stale_after)
        self._objects: dict[str, ReceivedObject] = {}
        self._bytes = 0  # the objects' sizes, in all
        self._stream = 0  # the current stream's token; 0: none
        self._streams = 0
        self._complete = False  # the current stream's first response was applied
        # What the current stream was told is held (None: all of it), and what it sent
        # before its view was whole: what is held besides is gone at the zone.
        self._declared: set[str] | None = None
        self._received: set[str] = set()
        self._debounce = debounce
        self._changed = False
        self._woken = asyncio.Event()
        self.stats = ZoneStats()
        self._status = SourceStatus(Health.STARTING, self._view._listing())
        self._store: ZoneObjects | None = None
        self._unsaved: dict[str, ReceivedObject | None] = {}  # changes not stored yet
        self._state: StaleState | None = None  # the zone's own source is out of sync
        self._replicas = Replicas()  # the open streams, active and standby

    def keep(self, store: ZoneObjects) -> None:
        """Keep what is held in `store`, and start from what it holds (blocking: call
        before the zone connects, when the source is created)."""
        if self._streams == 0 and not self._objects:
            self._objects = {obj.name: obj for obj in store.load() if obj.kind in _KINDS}
            self._bytes = sum(obj.size for obj in self._objects.values())
        self._store = store

    @property
    def name(self) -> str:
        return f"zone:{self._cluster}"

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def stale_after(self) -> float:
        return self._view.stale_after

    def retune(self, access: SiteAccess) -> None:
        """Take a new `stale_after`; the view and its staleness stay."""
        if isinstance(access, ZoneAccess):
            self._view.stale_after = access.stale_after

    def status(self) -> SourceStatus:
        return SourceStatus(
            self._status.health,
            self._status.detail,
            self._status.errors,
            last_sync=self._view.last_sync,
        )

    @property
    def objects(self) -> int:
        return len(self._objects)

    def held(self) -> dict[str, str]:
        """What the global holds of the zone (name -> version): the `initial_resource_versions`
        of a new stream."""
        held = {name: obj.version for name, obj in self._objects.items()}
        if self._state is not None:
            held[self._state.name] = self._state.version
        return held

    @property
    def reported_stale(self) -> bool:
        """Whether the zone says its own source of the site is out of sync."""
        return self._state is not None

    # -- what the stream calls --------------------------------------------------------

    def replicas(self) -> list[tuple[str, bool]]:
        """The replicas connected (their ids, in the order they connected), and whether
        each is the active one."""
        return [(stream.replica, stream.active) for stream in self._replicas]

    @property
    def promotions(self) -> int:
        """Standbys made active since the global started."""
        return self._replicas.promotions

    def attach(self, declared: Collection[str] | None = None, replica: str = "") -> int:
        """A stream of the zone's replica `replica` begins (replacing any other of that
        replica); its token. `declared`: the names of what is held that the stream was told
        of (None: all of them); once its view is whole, what is held but was neither
        declared nor sent is dropped, as the zone sends no removal of what it was not told
        of. The stream is active or a standby (see `kontinuum.discovery.zone_replicas`)."""
        self._streams += 1
        token = self._streams
        if not self._replicas:
            self.stats.last_transition = time.time()
        stream, _ = self._replicas.add(token, replica, self._objects, self._state, declared)
        self.stats.connected = True
        self.stats.connections += 1
        if stream.active:
            self._stream = token
            self._complete = False
            self._declared = set(declared) if declared is not None else None
            self._received = set()
        return token

    def detach(self, stream: int, reason: str) -> None:
        """A stream ends; when it was the active one, a standby whose view is whole takes
        over, or else the view goes stale."""
        if self._replicas.remove(stream) is None:
            return
        if not self._replicas:
            self.stats.connected = False
            self.stats.last_transition = time.time()
        if stream != self._stream:
            return
        self._stream = 0
        if (successor := self._replicas.successor()) is not None:
            log.info("%s: its active replica left (%s): another takes over", self.name, reason)
            self._adopt(successor)
            return
        self._complete = False  # a standby taking over lists every kind anew
        self._view.reason = reason
        self._post([Failed(kind, reason) for kind in KINDS])

    def _adopt(self, stream: ReplicaStream) -> None:
        """Make a standby whose view is whole the active one: its view becomes the site's,
        costing the objects whose version differs."""
        view = self._replicas.promote(stream)
        was_complete, before = self._complete, self._state
        self._stream = stream.token
        self._complete = True
        self._declared, self._received = None, set()
        held = self._objects
        removed = [name for name in held if name not in view.objects]
        changed = [
            obj
            for name, obj in view.objects.items()
            if (old := held.get(name)) is None or old.version != obj.version
        ]
        events = self._removed(removed)
        for obj in changed:
            events += self._taken(obj)
        self._state = view.state
        self._view.reason = ""
        if not was_complete:  # the view was stale or not yet whole: every kind listed anew
            self._post(self._listed())
            self._follow_state()
            return
        self._post(events)
        if self._state != before:
            if before is not None:
                self._post(self._listed())
            self._follow_state()

    def apply(
        self,
        stream: int,
        objects: Sequence[ReceivedObject],
        removed: Sequence[str],
        partial: bool = False,
        state: StaleState | None = None,
    ) -> list[str]:
        """Apply one response of `stream`: the objects new or changed, the names of those
        removed, and the zone's stale state if it sent one; `partial`: more of the same
        change follows. Returns a line per object refused (the rest applies)."""
        if stream != self._stream:
            return self._apply_standby(stream, objects, removed, partial, state)
        refused: list[str] = []
        events: list[Listed | Changed] = []
        before = self._state
        if state is not None:
            self._state = state
            if not self._complete:
                self._received.add(state.name)
        elif self._state is not None and self._state.name in removed:
            self._state = None
        events += self._removed(removed)
        for obj in objects:
            if not self._complete:
                self._received.add(obj.name)
            problem = self._problem(obj)
            if problem:
                refused.append(f"{obj.name}: {problem}")
                continue
            events += self._taken(obj)
        self.stats.objects_refused += len(refused)
        self.stats.last_sync = time.time()
        if not self._complete and partial:
            return refused  # held back until the stream's view is whole
        if not self._complete:  # the view is complete: every kind listed anew
            self._complete = True
            self._drop_undeclared()
            self._view.reason = ""
            self._post(self._listed())
            self._follow_state()
        else:
            self._post(events)
            if self._state != before:
                if before is not None:
                    self._post(self._listed())  # in sync, until the new state says otherwise
                self._follow_state()
        return refused

    def _apply_standby(
        self,
        token: int,
        objects: Sequence[ReceivedObject],
        removed: Sequence[str],
        partial: bool,
        state: StaleState | None,
    ) -> list[str]:
        """A standby's response: checked as the active's, kept in its own view; once that
        view is whole while no replica is active, the standby becomes the active one."""
        stream = self._replicas.get(token)
        if stream is None or stream.view is None:
            raise SupersededError("another stream of this zone replica replaced this one")
        refused = stream.view.apply(objects, removed, partial, state, self._problem)
        self.stats.objects_refused += len(refused)
        if self._replicas.successor() is stream:
            log.info("%s: a standby replica takes over", self.name)
            self._adopt(stream)
        return refused

    def _removed(self, names: Sequence[str]) -> list[Listed | Changed]:
        """Drop the objects named; their events."""
        events: list[Listed | Changed] = []
        for name in names:
            gone = self._objects.pop(name, None)
            if gone is not None:
                self._bytes -= gone.size
                self._stored(name, None)
                self.stats.removals_received += 1
                events.append(Changed(_KINDS[gone.kind], "DELETED", gone.body))
        return events

    def _taken(self, obj: ReceivedObject) -> list[Listed | Changed]:
        """Hold an object (checked already); its event."""
        before = self._objects.get(obj.name)
        self._bytes += obj.size - (before.size if before is not None else 0)
        self._objects[obj.name] = obj
        self._stored(obj.name, obj)
        self.stats.objects_received += 1
        return [Changed(_KINDS[obj.kind], "MODIFIED", obj.body)]

    def _drop_undeclared(self) -> None:
        """Drop what is held that the stream was neither told of nor sent."""
        declared, received = self._declared, self._received
        self._declared, self._received = None, set()
        if declared is None:
            return
        for name in [n for n in self._objects if n not in declared and n not in received]:
            self._bytes -= self._objects.pop(name).size
            self._stored(name, None)
            self.stats.removals_received += 1
        if self._state is not None and self._state.name not in declared | received:
            self._state = None

    def _listed(self) -> list[Listed]:
        """Every kind listed anew with the objects held: the view is in sync."""
        self._view.reported = False
        by_kind: dict[WatchedKind, list[Mapping[str, Any]]] = {kind: [] for kind in KINDS}
        for obj in self._objects.values():
            by_kind[_KINDS[obj.kind]].append(obj.body)
        return [Listed(kind, by_kind[kind]) for kind in KINDS]

    def _follow_state(self) -> None:
        """Out of sync since when the zone says, if it says its source is."""
        state = self._state
        if state is None:
            return
        reason = "the zone's own source of the site is out of sync"
        self._post([Failed(kind, reason) for kind in KINDS])
        self._view.reported = True
        self._view.lost_at(asyncio.get_running_loop().time(), time.time(), state.stale_since)

    def _stored(self, name: str, obj: ReceivedObject | None) -> None:
        if self._store is not None:
            self._unsaved[name] = obj

    def _problem(
        self,
        obj: ReceivedObject,
        objects: Mapping[str, ReceivedObject] | None = None,
        size: int | None = None,
    ) -> str:
        """Why an object is refused, or "" (checked as a fleet file's object is), given
        what is held and its size (default: the site's)."""
        objects = self._objects if objects is None else objects
        size = self._bytes if size is None else size
        if obj.kind not in _KINDS:
            return f"kind {obj.kind!r} is not published by a zone"
        if obj.name not in objects and len(objects) >= MAX_OBJECTS:
            return f"the zone already holds the {MAX_OBJECTS} objects it may"
        held = objects.get(obj.name)
        if size - (held.size if held is not None else 0) + obj.size > MAX_BYTES:
            return f"the zone would hold more than the {MAX_BYTES} bytes of objects it may"
        document = Document(f"zone:{self._cluster}", dict(obj.body))
        for read in read_cluster_documents(self._cluster, [document]):
            if read.errors:
                return "; ".join(_without_file(str(e), document.file) for e in read.errors)
        return ""

    def _post(self, events: Sequence[Listed | Changed | Failed]) -> None:
        now = asyncio.get_running_loop().time()
        wall = time.time()
        for event in events:
            self._changed = self._view.apply(event, now, wall) or self._changed
        self._woken.set()

    # -- the Source ---------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        loop = asyncio.get_running_loop()
        debouncer = Debouncer(self._debounce, self._debounce * DEBOUNCE_LIMIT)
        yielded: SourceUpdate | None = None
        while True:
            deadlines = [d for d in (debouncer.deadline, self._view.deadline) if d is not None]
            timeout = max(min(deadlines) - loop.time(), 0.0) if deadlines else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._woken.wait()
            self._woken.clear()
            if self._unsaved and self._store is not None:
                unsaved, self._unsaved = self._unsaved, {}
                await asyncio.to_thread(self._store.save, unsaved)
            now = loop.time()
            changed, self._changed = self._changed, False
            if self._view.expire(now) or changed:
                debouncer.touch(now)
            if debouncer.due(now):
                debouncer.reset()
                result = self._view.result()
                self._status = self._view.status(now)
                if result is not None and result != yielded:
                    self._report(result, yielded)
                    yielded = result
                    yield result
            self._status = self._view.status(loop.time())

    def _report(self, update: SourceUpdate, previous: SourceUpdate | None) -> None:
        stale = getattr(update, "stale", False)
        if stale and not getattr(previous, "stale", False):
            log.warning("%s: %s", self.name, self._status.detail)
        elif not stale and getattr(previous, "stale", False):
            log.info("%s: in sync again", self.name)
        for error in self._status.errors:
            log.error("%s", error)


def _without_file(text: str, file: str) -> str:
    return text.removeprefix(f"{file}: ")
