"""What SotW and Delta ADS streams share: the run loop, nonces, ACK/NACK bookkeeping."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc

from kontinuum.xds import types, wire
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.identity import Peer, ViewRevokedError
from kontinuum.xds.limits import (
    MAX_NAME_CHARACTERS_PER_STREAM,
    MAX_NAME_LENGTH,
    MAX_NAMES_PER_STREAM,
    MAX_NAMES_PER_TYPE,
    ProtocolViolationError,
    cut,
    shown,
)
from kontinuum.xds.push import Outcome, Push
from kontinuum.xds.snapshot import EMPTY_SNAPSHOT, Snapshot
from kontinuum.xds.state import InFlight, Rejection, SyncStatus, TypeState
from kontinuum.xds.stats import ServerStats

log = logging.getLogger("kontinuum.xds")

# The bounds and the error once defined here, still importable from here.
__all__ = [
    "MAX_NAMES_PER_TYPE",
    "MAX_NAME_LENGTH",
    "Connection",
    "ProtocolViolationError",
    "Stream",
    "Write",
]

MAX_IGNORED_TYPES_LOGGED = 16
# Pushes a stream follows at once; past that, the oldest is given up on (as expired).
MAX_PENDING_PUSHES = 1024

_stream_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Connection:
    """Who is on the other end of a stream, as the server resolved it."""

    node: Any  # envoy.config.core.v3.Node
    view: str
    peer: Peer


Write = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class _Part:
    """A stream's part in a push: the types whose change is still to go out (`due`) or
    to be ACKed (`unacked`), and when its first response went."""

    due: set[str]
    unacked: set[str]
    sent: float | None = None

    @property
    def over(self) -> bool:
        return not self.due and not self.unacked


class Stream:
    """One ADS stream. Subclasses speak SotW or Delta; this class runs the loop.

    A reader task applies requests to per-type state and the writer (this coroutine)
    sends what the state says is due, one response at a time, in push order. Every type
    has at most one response in flight: until it is ACKed or NACKed, changes only mark
    the type dirty, so a client that stops reading holds the latest state and nothing
    more, and blocks no one but itself.
    """

    protocol: ClassVar[str] = ""
    nonce_tag: ClassVar[int] = 0  # the field tag of the response's nonce

    def __init__(
        self, cache: SnapshotCache, connection: Connection, stats: ServerStats | None = None
    ) -> None:
        self.id = next(_stream_ids)
        self.cache = cache
        self.stats = stats if stats is not None else ServerStats()
        self.connection = connection
        self.types: dict[str, TypeState] = {}
        self._ordered: list[TypeState] = []  # self.types in push order
        # The view's snapshot; until the view has one, nothing is sent (an empty answer
        # would wipe a reconnecting proxy's configuration before the server has loaded).
        self.snapshot: Snapshot | None = None
        self.ignored_types: set[str] = set()  # as logged: cut short
        # The resource names subscribed to, over every type: how many, how many characters.
        self._names_held = 0
        self._characters_held = 0
        self._nonces = itertools.count(1)
        self._wake = asyncio.Event()
        self._pushes: dict[Push, _Part] = {}  # insertion order: oldest first
        self._revoked: str | None = None  # why the view was taken away (`on_revoked`)

    @property
    def view(self) -> str:
        return self.connection.view

    @property
    def resources(self) -> Snapshot:
        """The snapshot this stream serves from (empty while its view has none)."""
        return self.snapshot if self.snapshot is not None else EMPTY_SNAPSHOT

    def sync_status(self) -> SyncStatus:
        """How the proxy stands as a whole: NACKED while it rejects a version it was
        sent, STALE while a response is in flight or due, NOT_SENT before its view has
        anything, SYNCED otherwise."""
        if self.snapshot is None:
            return SyncStatus.NOT_SENT
        if any(self._rejects_current(state) for state in self._ordered if state.rejected):
            return SyncStatus.NACKED
        if any(s.in_flight is not None or s.has_work or s.removals_pending for s in self._ordered):
            return SyncStatus.STALE
        return SyncStatus.SYNCED

    def _rejects_current(self, state: TypeState) -> bool:
        """Whether the client rejects a version the view still holds (a rejected resource
        since removed, or changed and not yet sent, is no longer rejected)."""
        current = self.resources.resources(state.type_url)
        for name, rejection in state.rejected.items():
            resource = current.get(name)
            if resource is not None and resource.version == rejection.version:
                return True
        return False

    # -- cache side ----------------------------------------------------------------------

    def on_snapshot(
        self, snapshot: Snapshot, changes: Mapping[str, frozenset[str]], push: Push | None = None
    ) -> None:
        first = self.snapshot is None  # requests held back until the view existed are due
        self.snapshot = snapshot
        woken = first and any(s.has_work for s in self.types.values())
        for type_url, names in changes.items():
            state = self.types.get(type_url)
            if state is None:
                continue
            if push is not None and not first and state.touched_by(names):
                self._take_part(push, type_url)
            state.mark_dirty(names)
            woken = woken or state.has_work
        if woken:
            self._wake.set()

    def on_revoked(self, reason: str) -> None:
        # Nothing of the view is sent from now on, not even a response already due.
        self.snapshot = None
        self._revoked = reason
        self._wake.set()

    def _take_part(self, push: Push, type_url: str) -> None:
        part = self._pushes.get(push)
        if part is None:
            self._forget_over_pushes()
            if len(self._pushes) >= MAX_PENDING_PUSHES:
                self._settle_push(next(iter(self._pushes)), "expired")
            part = self._pushes[push] = _Part(set(), set())
            push.join()
        part.due.add(type_url)

    def _forget_over_pushes(self) -> None:
        """Drop the parts of pushes given up on (`Push.expire`), oldest first."""
        while self._pushes:
            oldest = next(iter(self._pushes))
            if not oldest.over:
                return
            del self._pushes[oldest]

    def _settle_push(self, push: Push, outcome: Outcome) -> None:
        part = self._pushes.pop(push)
        now = time.monotonic()
        push.settle(self.connection, outcome, part.sent if part.sent is not None else now, now)

    def _nothing_due(self, state: TypeState) -> None:
        """The stream found nothing to send for a type: the client holds what the pushes
        waiting for it changed (undone since, or already held), so their part is done;
        as failed if what the view holds now is what the client rejected."""
        outcome: Outcome | None = None
        for push, part in list(self._pushes.items()):
            if state.type_url in part.due:
                part.due.discard(state.type_url)
                if part.over:
                    if outcome is None:
                        outcome = "nacked" if self._rejects_current(state) else "acked"
                    self._settle_push(push, outcome)

    def follow_fetch(self, state: TypeState) -> None:
        """A client subscribed to more of a type fetched by name (endpoints, routes,
        secrets): pushes whose clusters or listeners it is taking in wait for those too."""
        named_by = types.NAMED_BY.get(state.type_url)
        if not named_by or not self._pushes:
            return
        for part in self._pushes.values():
            if not named_by.isdisjoint(part.due) or not named_by.isdisjoint(part.unacked):
                part.due.add(state.type_url)

    # -- the loop --------------------------------------------------------------------------

    async def run(self, first: Any, requests: AsyncIterator[Any], write: Write) -> None:
        self.snapshot = self.cache.watch(self.view, self)
        reader = asyncio.create_task(self._read(first, requests), name=f"xds-read-{self.id}")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._revoked is not None:
                    raise ViewRevokedError(self._revoked)
                if reader.done():
                    reader.result()  # re-raise a protocol violation
                    return
                while (payload := self._next_response()) is not None:
                    await write(payload)
        finally:
            self.cache.cancel(self.view, self)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            for push in list(self._pushes):
                self._settle_push(push, "gone")

    async def _read(self, first: Any, requests: AsyncIterator[Any]) -> None:
        try:
            self._apply(first)
            async for request in requests:
                self._apply(request)
        finally:
            self._wake.set()

    def _apply(self, request: Any) -> None:
        state = self.handle(request)
        # Most requests are plain ACKs that leave nothing to send: don't wake the writer.
        if (
            state is not None
            and state.in_flight is None
            and (state.has_work or state.removals_pending)
        ):
            self._wake.set()

    def handle(self, request: Any) -> TypeState | None:
        """Apply one request to the stream state; returns the state of the type it touched."""
        raise NotImplementedError

    def _next_response(self) -> bytes | None:
        """The next response due, in make-before-break order, or None."""
        snapshot = self.snapshot
        if snapshot is None:
            return None
        removals = False
        held: frozenset[str] = frozenset()
        for state in self._ordered:
            if state.has_work:
                if state.in_flight is not None:
                    # Make-before-break across pushes: what references this type waits
                    # until its pending update has gone out.
                    held |= types.REFERENCED_BY.get(state.type_url, frozenset())
                    continue
                if state.type_url in held:
                    continue
                payload = self.build_update(state, snapshot)
                if payload is not None:
                    return payload
                if not state.removals_pending and self._pushes:
                    self._nothing_due(state)
            removals = removals or state.removals_pending
        if not removals or any(s.has_work for s in self._ordered):
            return None  # additions still due (waiting for an ACK): removals wait too
        for state in self._ordered:
            if state.in_flight is None and state.removals_pending:
                payload = self.build_removal(state, snapshot)
                if payload is not None:
                    return payload
                if self._pushes:
                    self._nothing_due(state)
        return None

    def build_update(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        """The response carrying what changed for a type, if anything is to be sent."""
        raise NotImplementedError

    def build_removal(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        """The response carrying the removals held back by `build_update`, if any."""
        raise NotImplementedError

    # -- shared bookkeeping -----------------------------------------------------------------

    def start_response(self, state: TypeState, flight: InFlight) -> bytes:
        """Record a response as in flight; returns its nonce field to append to the body."""
        if self._pushes:
            type_url = state.type_url
            carried = tuple(p for p, part in self._pushes.items() if type_url in part.due)
            if carried:
                flight.pushes = carried
                now = time.monotonic()
                for push in carried:
                    part = self._pushes[push]
                    part.unacked.add(type_url)
                    if not state.removals_pending:  # else the removals are still to go
                        part.due.discard(type_url)
                    part.sent = part.sent if part.sent is not None else now
        state.in_flight = flight
        state.last_nonce = flight.nonce
        state.responses += 1
        self.stats.responses[state.type_url] += 1
        self.stats.resources[state.type_url] += len(flight.versions)
        return wire.text_field(self.nonce_tag, flight.nonce)

    def next_nonce(self) -> str:
        return str(next(self._nonces))

    def state_of(self, request: Any) -> TypeState | None:
        """The state of a request's type; None for types this server does not serve."""
        if not request.type_url:
            raise ProtocolViolationError(
                grpc.StatusCode.INVALID_ARGUMENT, "an ADS request must carry a type_url"
            )
        return self.state_for(request.type_url)

    def state_for(self, type_url: str) -> TypeState | None:
        """The state of a type, created on first use; None for types this server does not serve."""
        state = self.types.get(type_url)
        if state is None:
            if type_url not in types.KNOWN_TYPES:
                logged = shown(type_url)  # what is kept of it, too
                if len(self.ignored_types) < MAX_IGNORED_TYPES_LOGGED and (
                    logged not in self.ignored_types
                ):
                    self.ignored_types.add(logged)
                    log.warning(
                        "stream %d (%s): ignoring subscription to unknown type %s",
                        self.id,
                        shown(self.connection.node.id),
                        logged,
                    )
                return None
            state = self.types[type_url] = TypeState(type_url)
            self._ordered = [self.types[t] for t in types.PUSH_ORDER if t in self.types]
        return state

    def settle(self, state: TypeState, nonce: str, error: Any | None) -> bool:
        """Apply an ACK (error None) or NACK for `nonce`; False if the nonce is not in flight."""
        flight = state.in_flight
        if flight is None or flight.nonce != nonce:
            return False
        state.in_flight = None
        (self.stats.acks if error is None else self.stats.nacks)[state.type_url] += 1
        if error is None:
            self.acknowledge(state, flight)
            if state.rejected:
                for name in flight.versions:
                    state.rejected.pop(name, None)
        else:
            message = str(error.message)[:4096]
            # Only what the client did not already hold at that version was rejected:
            # a SotW response also carries the unchanged, accepted resources.
            for name, version in flight.versions.items():
                if state.acked.get(name) != version:
                    state.rejected[name] = Rejection(version, message)
            log.warning(
                "%s NACK from %s for %s (nonce %s): %s",
                self.protocol,
                shown(self.connection.node.id),
                types.short_name(state.type_url),
                shown(nonce),
                cut(message),
            )
        # Last, so that whoever hears of a push's end sees the stream as it now stands.
        for push in flight.pushes:
            part = self._pushes.get(push)
            if part is None:
                continue
            if error is not None:
                self._settle_push(push, "nacked")
                continue
            part.unacked.discard(state.type_url)
            if part.over:
                self._settle_push(push, "acked")
        return True

    def acknowledge(self, state: TypeState, flight: InFlight) -> None:
        """Record that the client accepted `flight`."""
        raise NotImplementedError

    def hold_names(self, state: TypeState, count: int, characters: int) -> None:
        """Let a type's subscription change to `count` names of `characters` in all, or
        end the stream (RESOURCE_EXHAUSTED) when the stream's would exceed its bounds."""
        names = self._names_held + count - len(state.names)
        if names > MAX_NAMES_PER_STREAM:
            raise ProtocolViolationError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a stream may subscribe to at most {MAX_NAMES_PER_STREAM} resource names "
                f"(over all types); this one asks for {names}",
            )
        held = self._characters_held + characters - state.name_characters
        if held > MAX_NAME_CHARACTERS_PER_STREAM:
            raise ProtocolViolationError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the resource names a stream subscribes to may add up to at most "
                f"{MAX_NAME_CHARACTERS_PER_STREAM} characters; this one's add up to {held}",
            )
        self._names_held = names
        self._characters_held = held
        state.name_characters = characters

    def check_names(self, names: Any) -> None:
        """Refuse a request naming too many resources of one type, or too long a name."""
        if len(names) > MAX_NAMES_PER_TYPE:
            raise ProtocolViolationError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a request may name at most {MAX_NAMES_PER_TYPE} resources per type",
            )
        if names and max(map(len, names)) > MAX_NAME_LENGTH:
            raise ProtocolViolationError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"resource names are limited to {MAX_NAME_LENGTH} characters",
            )
