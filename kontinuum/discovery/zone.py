"""The source of a site whose zone control plane dials out and publishes its objects.

A ClusterProfile annotated `kontinuum.io/source: zone` declares such a site
(`kontinuum.control.site_access`). Its zone connects to the global's federation address
(`kontinuum.federation.service`) and publishes the site's Services, EndpointSlices and
ServiceExports; the stream hands what it receives to this source, which reads them
exactly as the fleet files and the Kubernetes source do (`kontinuum.discovery.kube_view`),
into the site's snapshot. No I/O here: the stream does it.

- Each received object is checked as a fleet file's object is: an invalid one is refused
  (the stream NACKs it, naming it and why) and the version held before stays; the others
  apply. A zone holds at most `MAX_OBJECTS` objects, of at most `MAX_BYTES` of JSON in all;
  its standby replicas' views count too: what they hold that the site's view does not
  (an object of the same version is shared, held once) counts with the site's objects,
  and the active's change in progress, against the same `MAX_BYTES`. A standby's object
  beyond it is refused; when the active's change takes the total over it, the standby
  holding the most besides the site's view is ended (it redials from the site's view),
  never the active refused for it.
- A change the zone splits into several responses (all but the last marked partial)
  applies whole, when its last part arrives (`kontinuum.discovery.split_change`): the
  site is never seen half changed, and nothing of it is stored before. A stream cut
  between the parts drops them; the next is told the versions of whole changes only, so
  the zone sends the change whole again.
- The first snapshot comes once the zone's first complete response of a stream was applied
  (its view is then complete); after that, a new one whenever a change applies, debounced.
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
- At a zone serving xDS, its own site is such a source too (`local`), fed by the zone as
  it reads the site: stale the same way while the zone's source of it is out of sync.
- One stream per zone replica: a new one of the same replica takes over, and the one it
  replaced may apply nothing more (`SupersededError`). Of several replicas, one is the
  active publisher and the others are standbys, promoted without a stale gap when the
  active goes (`kontinuum.discovery.zone_replicas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
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
from kontinuum.discovery.split_change import SplitChange, undeclared
from kontinuum.discovery.zone_replicas import Replicas, ReplicaStream
from kontinuum.discovery.zone_store import ReceivedObject, ZoneObjects

__all__ = ["Held", "ReceivedObject", "StaleState", "SupersededError", "ZoneSource", "ZoneStats"]

log = logging.getLogger("kontinuum.discovery.zone")

MAX_OBJECTS: Final = 100_000  # objects one zone may publish
# Their JSON in all (each object's is bounded too, by the stream): far above a site of
# MAX_OBJECTS real objects, far below MAX_OBJECTS objects of the largest size.
MAX_BYTES: Final = 512 * 1024 * 1024
DEBOUNCE_LIMIT: Final = 10  # a burst is cut after this many `debounce` periods
_KINDS: Final = {kind.kind: kind for kind in KINDS}


class _Unchanged(enum.Enum):
    UNCHANGED = enum.auto()


_UNCHANGED: Final = _Unchanged.UNCHANGED


class SupersededError(Exception):
    """A stream of the zone that another, newer one of the same replica replaced."""


@dataclass(frozen=True, slots=True)
class StaleState:
    """A zone's word that its own source of the site is out of sync since `stale_since`
    (Unix time): its resource name and version."""

    name: str
    version: str
    stale_since: float


@dataclass(frozen=True, slots=True)
class Held:
    """What the site held when a stream began (`ZoneSource.holding`), for a stream
    attached later: the objects, the zone's stale state, and how many changes had applied."""

    objects: dict[str, ReceivedObject]
    state: StaleState | None
    changes: int


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
    # Objects kept from before a restart dropped: their content did not hash to their version.
    kept_altered: int = 0


class ZoneView(ClusterView):
    """A `ClusterView` of a zone's objects, with status texts of a stream, not an API."""

    def __init__(self, cluster: str, stale_after: float, local: bool = False) -> None:
        super().__init__(cluster, stale_after)
        self.name = f"zone:{cluster}"
        self.reason = ""  # why the zone's stream ended; "" while connected
        self.reported = False  # out of sync because the zone said its own source is
        self.local = local  # the zone's own site, as the zone itself serves it

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
        if self.local:
            return f"the zone's own source of the site is out of sync since {since}"
        if not self.reported:
            return f"its zone is disconnected since {since} ({self.reason})"
        said = f"its zone says its own view of the site is out of sync since {since}"
        return f"{said}; the zone is disconnected ({self.reason})" if self.reason else said


class ZoneSource:
    """The site of a zone, as a `Source` fed by the zone's stream (see the module doc);
    `max_bytes`: the bound of its views' objects together (`MAX_BYTES`)."""

    def __init__(
        self,
        cluster: str,
        stale_after: float = 300.0,
        debounce: float = 0.1,
        local: bool = False,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after}")
        self._cluster = cluster
        self._max_bytes = max_bytes  # of objects, the site's views together
        self._view = ZoneView(cluster, stale_after, local)
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
        # The change the stream is sending in parts, held until whole (and what it does to
        # the count and bytes held, and to the state: `_UNCHANGED` when nothing).
        self._change: SplitChange[ReceivedObject] = SplitChange()
        self._change_count = 0
        self._change_bytes = 0
        self._next_state: StaleState | _Unchanged | None = _UNCHANGED
        self._replicas = Replicas()  # the open streams, active and standby
        # How to end each stream (by token) the source ends itself: a standby over the bound.
        self._enders: dict[int, Callable[[str], None]] = {}
        self._changes = 0  # changes applied, since the source was made
        self._holding: Held | None = None  # the last `holding`

    def keep(self, store: ZoneObjects) -> None:
        """Keep what is held in `store`, and start from what it holds (blocking: call
        before the zone connects, when the source is created)."""
        if self._streams == 0 and not self._objects:
            self._objects = {obj.name: obj for obj in store.load() if obj.kind in _KINDS}
            self._bytes = sum(obj.size for obj in self._objects.values())
            self.stats.kept_altered += store.altered
            self._changes += 1
            self._holding = None
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

    @property
    def bytes_held(self) -> int:
        """The bytes of objects the site's views hold together: the site's (with the change
        in progress, once it applies) and what its standbys hold besides; at most
        `MAX_BYTES`."""
        return self._bytes + self._change_bytes + sum(v.own for v in self._replicas.standbys())

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

    def holding(self) -> Held:
        """What is held now, for a stream told of it that `attach`es later (one copy for
        every stream that connects while no change applies)."""
        if self._holding is None:
            self._holding = Held(dict(self._objects), self._state, self._changes)
        return self._holding

    def attach(
        self,
        declared: Collection[str] | None = None,
        replica: str = "",
        since: Held | None = None,
        ended: Callable[[str], None] | None = None,
    ) -> int:
        """A stream of the zone's replica `replica` begins (replacing any other of that
        replica); its token. `declared`: the names of what is held that the stream was told
        of (None: all of them); once its view is whole, what is held but was neither
        declared nor sent is dropped, as the zone sends no removal of what it was not told
        of. `since`: what was held when the stream was told of it (None: now); when
        changes applied since, the stream starts as a standby from it, unless it replaces
        its own replica's active stream. The stream is active or a standby (see
        `kontinuum.discovery.zone_replicas`). `ended(reason)`: called when the source ends
        the stream itself (a standby whose view is over the bound, `_bound_standbys`)."""
        self._streams += 1
        token = self._streams
        if not self._replicas:
            self.stats.last_transition = time.time()
        held, state = (
            (self._objects, self._state) if since is None else (since.objects, since.state)
        )
        current = since is None or since.changes == self._changes
        stream, _ = self._replicas.add(
            token, replica, held, state, declared, current, site=self._objects
        )
        self.stats.connected = True
        self.stats.connections += 1
        if stream.active:
            self._stream = token
            self._complete = False
            self._forget_change()  # what the stream it replaces sent of a change
            self._declared = set(declared) if declared is not None else None
            self._received = set()
        if ended is not None:
            self._enders[token] = ended
        self._bound_standbys()
        return token

    def detach(self, stream: int, reason: str) -> None:
        """A stream ends; when it was the active one, a standby whose view is whole takes
        over, or else the view goes stale."""
        self._enders.pop(stream, None)
        if self._replicas.remove(stream) is None:
            return
        if not self._replicas:
            self.stats.connected = False
            self.stats.last_transition = time.time()
        if stream != self._stream:
            return
        self._stream = 0
        self._forget_change()
        if (successor := self._replicas.successor()) is not None:
            log.info("%s: its active replica left (%s): another takes over", self.name, reason)
            self._adopt(successor)
            return
        self._complete = False  # a standby taking over lists every kind anew
        self._view.reason = reason
        self._post([Failed(kind, reason) for kind in KINDS])

    def _adopt(self, stream: ReplicaStream) -> None:
        """Make a standby whose view is whole the active one: its view becomes the site's,
        costing the objects whose version differs; a change it is sending in parts goes on
        as the active's."""
        view = self._replicas.promote(stream)
        self._stream = stream.token
        self._declared, self._received = None, set()
        held = self._objects
        for name in [name for name in held if name not in view.objects]:
            self._change.remove(name)
        for name, obj in view.objects.items():
            if (old := held.get(name)) is None or old.version != obj.version:
                self._change.set(name, obj)
        self._next_state = view.state
        self._apply_change()  # lists every kind anew if the view was not whole or stale
        for name, part in view.pending.take():
            self._count_change(name, part)
            if part is None:
                self._change.remove(name)
            else:
                self._change.set(name, part)
        if view.state_changing:
            self._next_state = view.next_state
        self._bound_standbys()

    def _bound_standbys(self) -> None:
        """Hold the site's views to `MAX_BYTES` together: while the site's view (once its
        change in progress applies) and what the standbys hold besides are over it, end
        the standby holding the most besides. It redials, and starts from the site's view
        as it is then (costing nothing), rather than the active replica being refused."""
        while True:
            standbys = [s for s in self._replicas if s.view is not None]
            if not standbys or self.bytes_held <= self._max_bytes:
                return
            largest = max(standbys, key=lambda s: s.view.own if s.view is not None else 0)
            reason = (
                f"the zone's views would hold more than the {self._max_bytes} bytes of objects "
                "it may: this standby replica's view, the one holding the most the site's does "
                "not, is dropped (redial to start from the site's view)"
            )
            log.warning("%s: ended a standby replica's stream: %s", self.name, reason)
            ender = self._enders.get(largest.token)
            self.detach(largest.token, reason)
            if ender is not None:
                ender(reason)

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
        refused = stream.view.apply(objects, removed, partial, state, self._standby_checked)
        self.stats.objects_refused += len(refused)
        if self._replicas.successor() is stream:
            log.info("%s: a standby replica takes over", self.name)
            self._adopt(stream)
        return refused

    def apply(
        self,
        stream: int,
        objects: Sequence[ReceivedObject],
        removed: Sequence[str],
        partial: bool = False,
        state: StaleState | None = None,
    ) -> list[str]:
        """Take one response of `stream`: the objects new or changed, the names of those
        removed, and the zone's stale state if it sent one; `partial`: more of the same
        change follows, and the change applies once whole (`SplitChange`). Returns a line
        per object refused (the rest applies)."""
        if stream != self._stream:
            return self._apply_standby(stream, objects, removed, partial, state)
        if state is not None:
            self._next_state = state
            if not self._complete:
                self._received.add(state.name)
        elif (held := self._state_after()) is not None and held.name in removed:
            self._next_state = None
        for name in removed:
            if self._change.current(name, self._objects) is not None:
                self._count_change(name, None)
                self._change.remove(name)
        refused: list[str] = []
        for obj in objects:
            if not self._complete:
                self._received.add(obj.name)
            problem = self._problem(obj)
            if problem:
                refused.append(f"{obj.name}: {problem}")
                continue
            self._count_change(obj.name, obj)
            self._change.set(obj.name, obj)
        self.stats.objects_refused += len(refused)
        if not partial:
            self._apply_change()
        self._bound_standbys()
        return refused

    def _state_after(self) -> StaleState | None:
        """The zone's stale state once the change in progress applies."""
        return self._state if self._next_state is _UNCHANGED else self._next_state

    def _count_change(self, name: str, new: ReceivedObject | None) -> None:
        """Count what setting (or removing, None) `name` in the change does to the limits."""
        old = self._change.current(name, self._objects)
        self._change_count += (new is not None) - (old is not None)
        self._change_bytes += (new.size if new else 0) - (old.size if old else 0)

    def _forget_change(self) -> None:
        """The change in progress ends with its stream: none of it applies."""
        if dropped := self._change.discard():
            log.info("%s: dropped %d object(s) of a change cut off midway", self.name, dropped)
        self._next_state = _UNCHANGED
        self._change_count = self._change_bytes = 0

    def _apply_change(self) -> None:
        """The change is whole: apply it at once."""
        events: list[Listed | Changed] = []
        before = self._state
        if self._next_state is not _UNCHANGED:
            self._state = self._next_state
        for name, obj in self._change.take():
            held = self._objects.get(name)
            if obj is None:
                if held is None:
                    continue
                self._set_object(name, None)
                self._bytes -= held.size
                self._stored(name, None)
                self.stats.removals_received += 1
                events.append(Changed(_KINDS[held.kind], "DELETED", held.body))
                continue
            self._bytes += obj.size - (held.size if held is not None else 0)
            self._set_object(name, obj)
            self._stored(name, obj)
            self.stats.objects_received += 1
            events.append(Changed(_KINDS[obj.kind], "MODIFIED", obj.body))
        self._forget_change()
        self._changes += 1
        self._holding = None  # kept by the streams told of it only, not by the source
        self.stats.last_sync = time.time()
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

    def _drop_undeclared(self) -> None:
        """Drop what is held that the stream was neither told of nor sent."""
        declared, received = self._declared, self._received
        self._declared, self._received = None, set()
        if declared is None:
            return
        for name in undeclared(self._objects, declared, received):
            dropped = self._set_object(name, None)
            self._bytes -= dropped.size if dropped is not None else 0
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

    def _problem(self, obj: ReceivedObject) -> str:
        """Why an object is refused, or "" (checked as a fleet file's object is)."""
        held = self._change.current(obj.name, self._objects)
        count = len(self._objects) + self._change_count
        return self._checked(obj, held, count, self._bytes + self._change_bytes)

    def _checked(
        self, obj: ReceivedObject, held: ReceivedObject | None, count: int, size: int
    ) -> str:
        """Why an object is refused, or "", given what its name holds, and how many objects
        of how many bytes are held, once the change in progress applies."""
        if obj.kind not in _KINDS:
            return f"kind {obj.kind!r} is not published by a zone"
        if held is None and count >= MAX_OBJECTS:
            return f"the zone already holds the {MAX_OBJECTS} objects it may"
        if size - (held.size if held is not None else 0) + obj.size > self._max_bytes:
            return f"the zone would hold more than the {self._max_bytes} bytes of objects it may"
        document = Document(f"zone:{self._cluster}", dict(obj.body))
        for read in read_cluster_documents(self._cluster, [document]):
            if read.errors:
                return "; ".join(_without_file(str(e), document.file) for e in read.errors)
        return ""

    def _standby_checked(
        self, obj: ReceivedObject, held: ReceivedObject | None, count: int, size: int
    ) -> str:
        """`_checked`, and the site's bytes in all: a standby's objects the site's view does
        not hold count with it and with the other standbys' against `MAX_BYTES`."""
        if reason := self._checked(obj, held, count, size):
            return reason
        site = self._objects.get(obj.name)
        if site is not None and site.version == obj.version:
            return ""  # shared with the site's view
        standbys = sum(view.own for view in self._replicas.standbys())
        if self._bytes + self._change_bytes + standbys + obj.size > self._max_bytes:
            return (
                f"the zone's views would hold more than the {self._max_bytes} bytes of objects it "
                "may, its standby replicas' with its active one's"
            )
        return ""

    def _set_object(self, name: str, obj: ReceivedObject | None) -> ReceivedObject | None:
        """Set (None: remove) an object of the site's view; what it held. What a standby's
        view costs follows: an object it holds too is shared."""
        views = list(self._replicas.standbys())
        costs = [view.cost(name) for view in views]
        held = self._objects.pop(name, None) if obj is None else self._objects.get(name)
        if obj is not None:
            self._objects[name] = obj
        for view, before in zip(views, costs, strict=True):
            view.shared(name)
            view.own += view.cost(name) - before
        return held

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
