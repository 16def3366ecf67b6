"""One source per cluster that is not described by the fleet files, kept in step with the
fleet: a cluster that joins gets its source, one that leaves (or changes how it is reached)
loses it; one whose other settings change (how long it stays stale) keeps its source,
retuned.

The fleet files say which clusters exist and how each is reached (a ClusterProfile's
`access`); this module turns that into running sources of the aggregator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from kontinuum.control.model import ClusterSite, KubernetesAccess, SiteAccess, ZoneAccess
from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.source import Source

log = logging.getLogger("kontinuum.discovery.sites")

SourceFactory = Callable[[str, SiteAccess], Source]
"""Builds the source of cluster `name` reached through `access`."""


@runtime_checkable
class Retunable(Protocol):
    """A source that can take new settings of its access without starting over."""

    def retune(self, access: SiteAccess) -> None: ...


def _same_connection(a: SiteAccess, b: SiteAccess) -> bool:
    if isinstance(a, KubernetesAccess) and isinstance(b, KubernetesAccess):
        return a.connection == b.connection
    if isinstance(a, ZoneAccess) and isinstance(b, ZoneAccess):
        return True  # the zone dials in: nothing to reconnect
    return a == b


def _keep_stale_for(access: SiteAccess) -> float | None:
    """How long the cluster's source keeps its endpoints once the cluster is lost; None
    when it keeps its last answers as long as it runs (a DNS-described site)."""
    return access.stale_after if isinstance(access, KubernetesAccess | ZoneAccess) else None


class SiteSources:
    """Reconciles the aggregator's per-cluster sources with the fleet's sites."""

    def __init__(self, aggregator: Aggregator, factory: SourceFactory) -> None:
        self._aggregator = aggregator
        self._factory = factory
        self._running: dict[str, tuple[SiteAccess, Source]] = {}  # cluster -> (access, source)

    @property
    def clusters(self) -> dict[str, SiteAccess]:
        return {cluster: access for cluster, (access, _) in self._running.items()}

    def unreported(self) -> set[str]:
        """The clusters whose source has not reported them yet (it has just started)."""
        return {
            cluster
            for cluster, (_, source) in self._running.items()
            if self._aggregator.snapshot_of(source.name, cluster) is None
        }

    def reconcile(self, sites: Iterable[ClusterSite]) -> None:
        wanted = {site.name: site.access for site in sites if site.access is not None}
        for cluster, (access, source) in list(self._running.items()):
            new = wanted.get(cluster)
            if new == access:
                continue
            if new is not None and _same_connection(new, access) and isinstance(source, Retunable):
                log.info("cluster %s: retuning source %s", cluster, source.name)
                source.retune(new)
                self._running[cluster] = (new, source)
                continue
            log.info("cluster %s: stopping source %s", cluster, source.name)
            self._aggregator.remove(source.name)
            del self._running[cluster]
        for cluster, access in sorted(wanted.items()):
            if cluster in self._running or access is None:
                continue
            source = self._factory(cluster, access)
            log.info("cluster %s: starting source %s", cluster, source.name)
            self._aggregator.add(source, keep_stale_for=_keep_stale_for(access))
            self._running[cluster] = (access, source)
