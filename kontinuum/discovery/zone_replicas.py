"""The replicas of one zone, as the global sees them: which stream publishes the site.

A zone may run several replicas, each with its own streams, told apart by the replica id
each names (`kontinuum-zone-replica`). One stream per replica: a newer stream of the same
replica replaces its older one. Of the replicas connected, one is the **active**
publisher, whose responses are the site's view; the others are **standbys**: their
responses are checked and answered as the active's are, but kept in a view of their own
(`StandbyView`), which starts as what the global held when they connected. A standby's
view shares with the site's view every object of the same version, and counts the bytes
of what it holds besides (`own`), so that the site's source bounds all views together
(`ZoneSource` ends the standby holding the most when the active's change goes over).

- The first replica to connect is active; one that connects while another is active is a
  standby. A newer stream of the active replica (it redialed) stays active.
- When the active's stream ends, the standby connected longest whose view is whole (its
  first complete response was taken) becomes active, without the site ever being marked
  stale: its view becomes the site's, costing only the objects whose version differs (a
  change it is sending in parts goes on as the active's).
- With no standby whose view is whole, the site goes stale as for a single replica; the
  first standby whose view becomes whole is then made active.

Pure bookkeeping: `kontinuum.discovery.zone.ZoneSource` applies what it says.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kontinuum.discovery.split_change import SplitChange, undeclared
from kontinuum.discovery.zone_store import ReceivedObject

if TYPE_CHECKING:
    from kontinuum.discovery.zone import StaleState

__all__ = ["ReplicaStream", "Replicas", "StandbyView"]


Check = Callable[[ReceivedObject, ReceivedObject | None, int, int], str]
"""Why an object is refused ("" if not), given what its name holds, and the count and bytes
of the objects held, once the change in progress applies."""


@dataclass(slots=True)
class StandbyView:
    """What a standby's stream says the site is: the objects held when it connected (those
    it was told of, `declared`; None: all) and the whole changes it sent since; `state`:
    the zone's word that its own source of the site is out of sync, if it said so. A
    change sent in parts is held in `pending` (and `next_state`) until whole, as the
    site's source holds the active's (`kontinuum.discovery.split_change`)."""

    objects: dict[str, ReceivedObject]
    state: StaleState | None = None
    declared: set[str] | None = None
    received: set[str] = field(default_factory=set)
    complete: bool = False
    size: int = -1  # the objects' sizes, in all (-1: not summed yet)
    pending: SplitChange[ReceivedObject] = field(default_factory=SplitChange)
    pending_count: int = 0  # what the pending change does to the count held
    pending_bytes: int = 0  # and to the bytes held
    state_changing: bool = False  # the pending change sets the state (to `next_state`)
    next_state: StaleState | None = None
    # The site's view (the active's objects), and the bytes of what this view holds (its
    # objects and pending change) that the site's view does not hold: what it costs.
    site: Mapping[str, ReceivedObject] = field(default_factory=dict)
    own: int = -1

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = sum(obj.size for obj in self.objects.values())
        if self.own < 0:
            self.own = sum(self.cost(name) for name in self.objects)

    def cost(self, name: str) -> int:
        """The bytes this view holds under `name` that the site's view does not."""
        site = self.site.get(name)
        cost = 0
        if (obj := self.objects.get(name)) is not None and obj is not site:
            cost += obj.size
        if name in self.pending and (part := self.pending.current(name, {})) is not None:
            cost += part.size if part is not site else 0
        return cost

    def shared(self, name: str) -> None:
        """Hold the site's object of `name` where this view holds the same version, so both
        share it (call with `cost` before and after, as the site's view changes)."""
        site = self.site.get(name)
        if site is None:
            return
        if (obj := self.objects.get(name)) is not None and obj.version == site.version:
            self.objects[name] = site
        part = self.pending.current(name, {}) if name in self.pending else None
        if part is not None and part.version == site.version:
            self.pending.set(name, site)

    def apply(
        self,
        objects: Sequence[ReceivedObject],
        removed: Sequence[str],
        partial: bool,
        state: StaleState | None,
        check: Check,
    ) -> list[str]:
        """Take one response of the standby, as the site's source takes the active's; a
        line per object refused."""
        if state is not None:
            self.state_changing, self.next_state = True, state
            if not self.complete:
                self.received.add(state.name)
        elif (now := self._state_after()) is not None and now.name in removed:
            self.state_changing, self.next_state = True, None
        for name in removed:
            if self.pending.current(name, self.objects) is not None:
                before = self.cost(name)
                self._count(name, None)
                self.pending.remove(name)
                self.own += self.cost(name) - before
        refused = []
        for obj in objects:
            if not self.complete:
                self.received.add(obj.name)
            held = self.pending.current(obj.name, self.objects)
            count = len(self.objects) + self.pending_count
            if reason := check(obj, held, count, self.size + self.pending_bytes):
                refused.append(f"{obj.name}: {reason}")
                continue
            if (site := self.site.get(obj.name)) is not None and site.version == obj.version:
                obj = site  # shared with the site's view, not held twice
            before = self.cost(obj.name)
            self._count(obj.name, obj)
            self.pending.set(obj.name, obj)
            self.own += self.cost(obj.name) - before
        if not partial:
            self._commit()
        return refused

    def _state_after(self) -> StaleState | None:
        return self.next_state if self.state_changing else self.state

    def _count(self, name: str, new: ReceivedObject | None) -> None:
        old = self.pending.current(name, self.objects)
        self.pending_count += (new is not None) - (old is not None)
        self.pending_bytes += (new.size if new else 0) - (old.size if old else 0)

    def _commit(self) -> None:
        """The change is whole: into the view."""
        costs = {name: self.cost(name) for name in self.pending.names()}
        for name, obj in self.pending.take():
            before = self.objects.pop(name, None)
            self.size -= before.size if before is not None else 0
            if obj is not None:
                self.objects[name] = obj
                self.size += obj.size
            self.own += self.cost(name) - costs[name]
        if self.state_changing:
            self.state = self.next_state
        self.state_changing, self.next_state = False, None
        self.pending_count = self.pending_bytes = 0
        if not self.complete:
            self.complete = True
            self._drop_undeclared()

    def _drop_undeclared(self) -> None:
        declared, received = self.declared, self.received
        self.declared, self.received = None, set()
        if declared is None:
            return
        for name in undeclared(self.objects, declared, received):
            before = self.cost(name)
            self.size -= self.objects.pop(name).size
            self.own -= before
        if self.state is not None and self.state.name not in declared | received:
            self.state = None


@dataclass(slots=True)
class ReplicaStream:
    """An open stream of a replica: its token and replica id; `view` while a standby."""

    token: int
    replica: str
    view: StandbyView | None = None

    @property
    def active(self) -> bool:
        return self.view is None


class Replicas:
    """The open streams of one zone's replicas, in the order they connected (see the
    module doc)."""

    def __init__(self) -> None:
        self._streams: dict[int, ReplicaStream] = {}  # insertion order: connection order
        self.promotions = 0  # standbys made active

    def __iter__(self) -> Iterator[ReplicaStream]:
        return iter(self._streams.values())

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, token: int) -> ReplicaStream | None:
        return self._streams.get(token)

    @property
    def active(self) -> ReplicaStream | None:
        return next((s for s in self._streams.values() if s.active), None)

    def add(
        self,
        token: int,
        replica: str,
        held: Mapping[str, ReceivedObject],
        state: StaleState | None,
        declared: Collection[str] | None,
        current: bool = True,
        site: Mapping[str, ReceivedObject] | None = None,
    ) -> tuple[ReplicaStream, ReplicaStream | None]:
        """A stream of `replica` begins: it, and the stream of the same replica it replaces
        (if any). It is active when it replaces the active one, or when there is no active
        stream and `held` and `state` are what the site holds now (`current`); else a
        standby starting from them (what it was told of: `declared`); `site`: the site's
        view (None: `held`), what a standby's objects cost is counted against."""
        replaced = next((s for s in self._streams.values() if s.replica == replica), None)
        if replaced is not None:
            del self._streams[replaced.token]
        stream = ReplicaStream(token, replica)
        takes_over = replaced is not None and replaced.active
        if not takes_over and (self.active is not None or not current):
            stream.view = StandbyView(
                dict(held),
                state,
                set(declared) if declared is not None else None,
                site=held if site is None else site,
            )
        self._streams[token] = stream
        return stream, replaced

    def standbys(self) -> Iterator[StandbyView]:
        return (s.view for s in self._streams.values() if s.view is not None)

    def remove(self, token: int) -> ReplicaStream | None:
        """A stream ends: it, if it was open."""
        return self._streams.pop(token, None)

    def successor(self) -> ReplicaStream | None:
        """The standby to make active while none is: connected longest, its view whole."""
        if self.active is not None:
            return None
        return next(
            (s for s in self._streams.values() if s.view is not None and s.view.complete), None
        )

    def promote(self, stream: ReplicaStream) -> StandbyView:
        """Make `stream` active; the view it had as a standby."""
        view = stream.view
        assert view is not None
        stream.view = None
        self.promotions += 1
        return view
