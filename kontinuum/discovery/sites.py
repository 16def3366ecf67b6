"""One source per cluster that is not described by the fleet files, kept in step with the
fleet: a cluster that joins gets its source, one that leaves (or changes how it is reached)
loses it.

The fleet files say which clusters exist and how each is reached (a ClusterProfile's
`access`); this module turns that into running sources of the aggregator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from kontinuum.control.model import ClusterSite, SiteAccess
from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.source import Source

log = logging.getLogger("kontinuum.discovery.sites")

SourceFactory = Callable[[str, SiteAccess], Source]
"""Builds the source of cluster `name` reached through `access`."""


class SiteSources:
    """Reconciles the aggregator's per-cluster sources with the fleet's sites."""

    def __init__(self, aggregator: Aggregator, factory: SourceFactory) -> None:
        self._aggregator = aggregator
        self._factory = factory
        self._running: dict[str, tuple[SiteAccess, str]] = {}  # cluster -> (access, source)

    @property
    def clusters(self) -> dict[str, SiteAccess]:
        return {cluster: access for cluster, (access, _) in self._running.items()}

    def reconcile(self, sites: Iterable[ClusterSite]) -> None:
        wanted = {site.name: site.access for site in sites if site.access is not None}
        for cluster, (access, name) in list(self._running.items()):
            if wanted.get(cluster) != access:
                log.info("cluster %s: stopping source %s", cluster, name)
                self._aggregator.remove(name)
                del self._running[cluster]
        for cluster, access in sorted(wanted.items()):
            if cluster in self._running or access is None:
                continue
            source = self._factory(cluster, access)
            log.info("cluster %s: starting source %s", cluster, source.name)
            self._aggregator.add(source)
            self._running[cluster] = (access, source.name)
