"""Composition root: the only module that wires sources, translation and the xDS server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from kontinuum.admin import AdminServer
from kontinuum.bootstrap import split_address
from kontinuum.control.model import KubernetesAccess, SiteAccess
from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.dns import DnsSource
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.sites import SiteSources
from kontinuum.discovery.source import Source
from kontinuum.discovery.static import StaticSource
from kontinuum.dns import ClusterSetResponder, DnsServer, ZoneOptions
from kontinuum.mesh import Mesh
from kontinuum.resource_files import ResourceFileError, load_snapshot, view_files
from kontinuum.telemetry.metrics import SourceCollector, XdsCollector
from kontinuum.xds import SnapshotCache, XdsServer

log = logging.getLogger("kontinuum")

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the control plane's event loop: uvloop where it is installed, else asyncio.

    grpc.aio runs on uvloop, and the xDS fan-out does about 12% more stream-updates per
    core on it (benchmarks/RESULTS.md).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def settle_garbage_collector() -> None:
    """Tune the collector for serving: call once the configuration is loaded.

    The fan-out allocates many short-lived objects per stream and update; with the
    default thresholds the collector keeps re-walking every long-lived snapshot and
    stream. Freezing what startup built moves it out of the collector's way, and a larger
    young generation makes collections rarer (measured in benchmarks/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@dataclass
class ResourceDirectory:
    """Keeps a cache in step with a directory of view files (`<view>.yaml`).

    A file that fails to parse or is inconsistent is reported and skipped: its view keeps
    the last good snapshot. A deleted file removes its view.
    """

    directory: Path
    cache: SnapshotCache
    errors: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    _missing: set[str] = field(default_factory=set)

    def reload(self) -> bool:
        """Apply what changed on disk; True if any view changed."""
        changed = False
        files = view_files(self.directory)
        gone = set(self._seen) - set(files)
        # A file must be gone on two reloads in a row: an editor that deletes and then
        # rewrites a file must not wipe the view's proxies in between.
        confirmed, self._missing = gone & self._missing, gone
        for view in confirmed:
            del self._seen[view]
            self.errors.pop(view, None)
            self.cache.remove_view(view)
            log.info("view %r removed (its file is gone)", view)
            changed = True
        for view, path in files.items():
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._seen.get(view) == stamp:
                continue
            self._seen[view] = stamp
            try:
                snapshot = load_snapshot(path)
            except ResourceFileError as error:
                self.errors[view] = str(error)
                log.error("%s (view %r keeps its last good configuration)", error, view)
                continue
            self.errors.pop(view, None)
            if self.cache.set_snapshot(view, snapshot):
                log.info("view %r updated from %s", view, path)
                changed = True
        return changed


@contextlib.asynccontextmanager
async def _serving(
    server: XdsServer,
    xds_address: str,
    admin_address: str,
    collectors: tuple[Collector, ...] = (),
) -> AsyncIterator[XdsServer]:
    """The xDS server and its admin endpoint, started and, on the way out, stopped."""
    registry = CollectorRegistry()
    registry.register(XdsCollector(server))
    for collector in collectors:
        registry.register(collector)
    admin = AdminServer(registry, ready=lambda: server.serving)
    await admin.start(admin_address)
    try:
        await server.start(xds_address)
        settle_garbage_collector()
        yield server
    finally:
        await server.stop(1.0)
        await admin.stop()


@contextlib.asynccontextmanager
async def _clusterset_dns(
    mesh: Mesh, address: str | None, options: ZoneOptions | None
) -> AsyncIterator[None]:
    """The `clusterset.local` DNS server of the mesh's current plane, if an address is set."""
    if address is None:
        yield
        return
    server = DnsServer(ClusterSetResponder(lambda: mesh.plane, options))
    await server.start(*split_address(address))
    try:
        yield
    finally:
        await server.stop()


def site_source(cluster: str, access: SiteAccess) -> Source:
    """The source of a cluster that its ClusterProfile says is reached through its Kubernetes
    API or described in DNS."""
    if isinstance(access, KubernetesAccess):
        return KubernetesSource(cluster, access)
    return DnsSource(cluster, access)


async def serve_fleet(
    path: Path,
    xds_address: str,
    admin_address: str,
    poll_interval: float = 0.5,
    dns_address: str | None = None,
    dns_options: ZoneOptions | None = None,
) -> None:
    """Serve a fleet directory to sidecars until cancelled; changes apply within a second.

    With `dns_address`, also answer `clusterset.local` DNS there (UDP and TCP), from the
    first fleet on: a name asked before would be cached as absent."""
    cache = SnapshotCache()
    mesh = Mesh(cache)

    aggregator = Aggregator([StaticSource(path, poll_interval)], mesh.apply)
    # Clusters reached through their API or DNS get a source each, as the fleet declares them.
    aggregator.on_sites = SiteSources(aggregator, site_source).reconcile
    discovery = asyncio.create_task(aggregator.run(), name="discovery")
    try:
        # A proxy served before the first fleet would be refused as of an unknown cluster.
        synced = asyncio.ensure_future(aggregator.synced.wait())
        await asyncio.wait((synced, discovery), return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        if discovery.done():
            discovery.result()  # raises what stopped discovery
            return
        server = XdsServer(cache, resolve_view=mesh.resolve_view)
        async with (
            _serving(server, xds_address, admin_address, (SourceCollector(aggregator),)),
            _clusterset_dns(mesh, dns_address, dns_options),
        ):
            await discovery
    finally:
        discovery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await discovery


async def serve_resources(
    directory: Path, xds_address: str, admin_address: str, poll_interval: float = 0.5
) -> None:
    """Serve the Envoy resources of a directory over ADS until cancelled."""
    cache = SnapshotCache()
    resources = ResourceDirectory(directory, cache)
    resources.reload()
    async with _serving(XdsServer(cache), xds_address, admin_address):
        while True:
            await asyncio.sleep(poll_interval)
            resources.reload()
