"""Following a push to the proxies: from a change of configuration to their ACKs.

A `Push` is one change of configuration, applied to any number of views
(`SnapshotCache.set_snapshot(view, snapshot, push)`). Every stream subscribed to something
the change touched takes part in it, for the types it touched: the stream's part is over,
as ACKed, once the proxy has ACKed, for each of those types, a response carrying the
change, or has been found to hold it already (a change undone before it went out, a
version the proxy already had). Endpoints and routes the proxy starts to fetch for the
clusters and listeners of the push are part of it too: a new cluster has converged when
its endpoints are ACKed, not when the proxy starts warming it. A NACK ends the part as
failed, and a stream that ends as gone.

Whoever made the push hears of every stream's outcome, and of the push's end once every
stream has settled (`PushObserver`): how long the fleet took to converge. A push some
stream never settles can be given up (`expire`): the streams still owing their part are
told, as expired, and nothing is heard of the push after that.

What the push is about (a fleet change, a trace) is opaque here: `cause` is the caller's.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

log = logging.getLogger("kontinuum.xds")

Outcome = Literal["acked", "nacked", "gone", "expired"]
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
    over: bool = False  # done or expired: nothing more is heard of it
    observer: PushObserver | None = None

    def join(self) -> None:
        self.streams += 1

    def settle(self, connection: Any, outcome: Outcome, sent: float, now: float) -> None:
        """One stream's part is over (`sent`: when its first response of the push went)."""
        if self.over:
            return
        self.settled += 1
        if outcome == "acked":
            self.acked += 1
        if self.observer is not None:
            try:
                self.observer.stream_settled(self, connection, outcome, sent, now)
            except Exception:  # telemetry must not take a stream down
                log.exception("push %d: observer failed", self.id)
        self._maybe_done(now)

    def seal(self) -> None:
        """Every view the push changes has been set: it is done when its streams settle."""
        self.sealed = True
        self._maybe_done(time.monotonic())

    def expire(self) -> int:
        """Give up on the streams still owing their part; returns how many there were."""
        if self.over:
            return 0
        self.over = True
        return self.streams - self.settled

    @property
    def done(self) -> bool:
        return self.sealed and self.settled >= self.streams

    def _maybe_done(self, now: float) -> None:
        if self.done and not self.over:
            self.over = True  # tell once
            if self.observer is not None:
                try:
                    self.observer.push_done(self, now)
                except Exception:
                    log.exception("push %d: observer failed", self.id)


class PushObserver(Protocol):
    """Who hears how a push went (telemetry)."""

    def stream_settled(
        self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
    ) -> None:
        """A stream's part of `push` ended: ACKed, NACKed, gone or expired (monotonic)."""

    def push_done(self, push: Push, now: float) -> None:
        """Every stream that took part in `push` has settled."""
