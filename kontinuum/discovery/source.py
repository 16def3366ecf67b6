"""The seam every source of service discovery implements: static files, Kubernetes, DNS.

A source watches part of the fleet and reports its whole current view of each part: a
`SiteSnapshot` per cluster it covers and, if it holds fleet-wide objects (the static
directory, later a Kubernetes config cluster), a `FleetConfig`. The aggregator
(`kontinuum.discovery.aggregate`) merges the latest of every source, coalesces and debounces
them, and hands one `Fleet` to translation.

The contract of `Source.updates()`:

- It yields a `SiteSnapshot` for each cluster the source covers as soon as it has a first
  view of it, then a new one whenever that view changes; likewise a `FleetConfig`. An update
  replaces the source's previous one of the same cluster (or its previous config) entirely
  (no deltas), so the consumer only needs the latest and may skip intermediate ones.
- When the source loses contact with a cluster, it yields the last view it had with
  `stale=True` instead of an empty one (bad input never breaks the mesh), and a fresh
  snapshot once it is back.
- Invalid input is never yielded: the source keeps its last good view and reports the
  problem through `status()`.
- The iterator ends only when the source is stopped (its task cancelled) or, for a source
  that does not watch, after its one view.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeAlias

from kontinuum.control.model import ConfigError, FleetConfig, SiteSnapshot

SourceUpdate: TypeAlias = SiteSnapshot | FleetConfig


class Health(Enum):
    STARTING = "starting"  # no first view yet
    HEALTHY = "healthy"  # every cluster's view is current and valid
    DEGRADED = "degraded"  # serving a stale view for some cluster, or some input is invalid


@dataclass(frozen=True, slots=True)
class SourceStatus:
    health: Health
    detail: str = ""
    errors: tuple[ConfigError, ...] = ()  # problems with the input, for `validate` and status
    last_sync: float | None = None  # when (Unix time) the view was last known current


class Source(Protocol):
    @property
    def name(self) -> str:
        """A stable name for logs and metrics, e.g. `static:/etc/fleet` or `kubernetes:eu`."""
        ...

    def status(self) -> SourceStatus:
        """How the source is doing right now; cheap, never blocks."""
        ...

    def updates(self) -> AsyncIterator[SourceUpdate]:
        """The views of what this source covers, as described in the module doc."""
        ...
