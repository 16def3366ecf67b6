"""Counters the xDS server keeps about itself: for operators, tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ServerStats:
    """Totals since the server started, keyed by type URL."""

    responses: Counter[str] = field(default_factory=Counter)
    resources: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)
    nacks: Counter[str] = field(default_factory=Counter)
    streams_opened: int = 0
    streams_closed: int = 0
    streams_refused: int = 0  # by view resolution or policy: PERMISSION_DENIED
    streams_unauthenticated: int = 0  # no acceptable credential: UNAUTHENTICATED
    # Past a bound when it opened (its node's size, the views of its identity).
    streams_limited: int = 0
