"""Following a push to the proxies: from a change of configuration to their ACKs.

A `Push` is one change of configuration, applied to any number of views
(`SnapshotCache.set_snapshot(view, snapshot, push)`). Every stream whose subscriptions the
change touches takes part in it: the push waits for that stream until the stream has
ACKed, for every type the change touched, a response that carries it. A NACK, a stream
that ends, or a later push that never gets out settle the stream's part too, as failed.
Whoever made the push hears of every stream's outcome, and of the push's end once every
stream has settled (`PushObserver`): that is how long the fleet took to converge.

What the push is about (a fleet change, a trace) is opaque here: `cause` is the caller's.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["acked", "nacked", "gone"]
_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Push:
    """One change of configuration (see the module doc); `started` is when its cause
    happened (monotonic), which may be well before the push was made."""

    started: float = field(default_factory=time.monotonic)
    cause: Any = None
    id: int = field(default_factory=lambda: next(_ids))
    streams: int = 0  # streams that took part
    settled: int = 0  # of which have settled
    acked: int = 0
    sealed: bool = False  # every view of the push is set: no stream joins any more
    observer: PushObserver | None = None

    def join(self) -> None:
        self.streams += 1

    def settle(self, connection: Any, outcome: Outcome, sent: float, now: float) -> None:
        """One stream's part is over (`sent`: when its first response of the push went)."""
        self.settled += 1
        if outcome == "acked":
            self.acked += 1
        if self.observer is not None:
            self.observer.stream_settled(self, connection, outcome, sent, now)
        self._maybe_done(now)

    def seal(self) -> None:
        """Every view the push changes has been set: it is done when its streams settle."""
        self.sealed = True
        self._maybe_done(time.monotonic())

    @property
    def done(self) -> bool:
        return self.sealed and self.settled >= self.streams

    def _maybe_done(self, now: float) -> None:
        if self.done and self.observer is not None:
            observer, self.observer = self.observer, None  # tell once
            observer.push_done(self, now)


class PushObserver(Protocol):
    """Who hears how a push went (telemetry)."""

    def stream_settled(
        self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
    ) -> None:
        """A stream's part of `push` ended: ACKed, NACKed or gone (times monotonic)."""

    def push_done(self, push: Push, now: float) -> None:
        """Every stream that took part in `push` has settled."""
