"""Composition root: the only module that wires sources, translation and the xDS server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from kontinuum.admin import AdminServer
from kontinuum.bootstrap import split_address
from kontinuum.control.model import DnsAccess, Fleet, KubernetesAccess, SiteAccess
from kontinuum.control.wording import plural
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.config_cluster import ConfigClusterSource
from kontinuum.discovery.dns import DnsSource
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.last_seen import LastSeenViews
from kontinuum.discovery.sites import SiteSources, SourceFactory
from kontinuum.discovery.source import Health, Source
from kontinuum.discovery.static import StaticSource
from kontinuum.discovery.zone import ZoneSource
from kontinuum.discovery.zone_store import ZoneObjects
from kontinuum.dns import ClusterSetResponder, DnsServer, DnsThread, ZoneOptions
from kontinuum.errors import operator_listen_error
from kontinuum.federation.objects import content_version
from kontinuum.mesh import Mesh
from kontinuum.resource_files import ResourceFileError, load_snapshot, view_files
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.workload import DEFAULT_VALIDITY, WorkloadCertificates
from kontinuum.security.xds_auth import (
    FleetAuthenticator,
    ServerCertificate,
    operator_identity,
    server_hosts,
)
from kontinuum.telemetry.metrics import (
    CertificateCollector,
    PushMetrics,
    SourceCollector,
    StatusCollector,
    XdsCollector,
)
from kontinuum.telemetry.prometheus_sd import ServiceDiscoveryFile
from kontinuum.telemetry.pushes import PushTelemetry, tracer_provider
from kontinuum.writeback import StatusOptions, StatusRuntime
from kontinuum.xds import SnapshotCache, XdsServer

log = logging.getLogger("kontinuum")

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T | None:
    """Run the control plane's event loop: uvloop where it is installed, else asyncio.

    grpc.aio runs on uvloop, and the xDS fan-out does about 12% more stream-updates per
    core on it (benchmarks/RESULTS.md). SIGTERM (how Kubernetes stops a pod) ends `main`
    as Ctrl-C does: cancelled, so that it cleans up (a leader hands its Lease over); the
    result is then None.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_until_terminated(main))
    return uvloop.run(_until_terminated(main))


async def _until_terminated(main: Coroutine[Any, Any, T]) -> T | None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            return None  # SIGTERM: a clean stop
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


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


_Listeners = tuple[grpc.ServerCredentials | None, tuple[tuple[str, grpc.ServerCredentials], ...]]


@contextlib.asynccontextmanager
async def _serving(
    server: XdsServer,
    xds_address: str,
    admin_address: str,
    collectors: tuple[Collector, ...] = (),
    registry: CollectorRegistry | None = None,
    mesh: Mesh | None = None,
    listeners: _Listeners = (None, ()),
    readiness: tuple[Callable[[], bool], Callable[[], list[str]]] = (lambda: True, list),
) -> AsyncIterator[XdsServer]:
    """The xDS server and its admin endpoint (`registry` on `/metrics`, with the server's
    own collectors and `collectors` added), started and, on the way out, stopped.
    `listeners`: the credentials of `xds_address` (None: plaintext) and more addresses;
    `readiness`: whether `/readyz` may say ready besides the server listening, and its notes."""
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(XdsCollector(server, mesh))
    for collector in collectors:
        registry.register(collector)
    ready, notes = readiness
    admin = AdminServer(registry, ready=lambda: server.serving and ready(), notes=notes)
    try:
        await admin.start(admin_address)
    except OSError as error:
        raise operator_listen_error(error, admin_address, "--admin-address") from error
    try:
        credentials, also = listeners
        await server.start(xds_address, credentials, also=also)
        settle_garbage_collector()
        yield server
    finally:
        await server.stop(1.0)
        await admin.stop()


@contextlib.asynccontextmanager
async def _clusterset_dns(
    mesh: Mesh, address: str | None, options: ZoneOptions | None
) -> AsyncIterator[None]:
    """The `clusterset.local` DNS server of the mesh's current plane, if an address is set,
    in a thread of its own: a flood of queries does not hold up xDS or the admin endpoint.
    The thread reads `mesh.plane`, which is replaced, never changed."""
    if address is None:
        yield
        return
    thread = DnsThread(DnsServer(ClusterSetResponder(lambda: mesh.plane, options)))
    try:
        try:
            await asyncio.wrap_future(thread.start(*split_address(address)))
        except OSError as error:
            raise operator_listen_error(error, address, "--dns-address") from error
        yield
    finally:
        await asyncio.wrap_future(thread.stop())
        thread.join()


def site_source(cluster: str, access: SiteAccess) -> Source:
    """The source of a cluster that its ClusterProfile says is reached through its Kubernetes
    API, described in DNS, or published by its zone."""
    if isinstance(access, KubernetesAccess):
        return KubernetesSource(cluster, access, stale_after=access.stale_after)
    if isinstance(access, DnsAccess):
        return DnsSource(cluster, access)
    # A zone coalesces a burst into one response already (one in flight at a time): a short
    # debounce here keeps the path from one zone to another short.
    return ZoneSource(cluster, stale_after=access.stale_after, debounce=0.02)


@dataclass(frozen=True, slots=True)
class XdsSecurity:
    """Who may connect to the xDS server, and the CA of the fleet's identities.

    - `ca`: issues the xDS server's certificate, workload certificates (SDS) and bootstrap
      tokens; proxies trust its root.
    - `plaintext`: serve xDS without TLS and believe what nodes declare: local development
      only. Workload mTLS works the same.
    - `token_address`: also serve xDS there, over TLS without client certificates, to
      proxies proving who they are with a bootstrap token.
    - `server_names`: DNS names and IP addresses in the server certificate, besides the
      listening hosts (what gRPC clients check; Envoy pins the server's SPIFFE ID).
    - `workload_validity`: lifetime of workload certificates; renewed at half of it.
    - `federation_address`: where zones dial in (mutual TLS, docs/federation.md); None:
      nowhere.
    """

    ca: CertificateAuthority
    plaintext: bool = False
    token_address: str | None = None
    server_names: tuple[str, ...] = ()
    workload_validity: timedelta = DEFAULT_VALIDITY
    federation_address: str | None = None

    def __post_init__(self) -> None:
        # A plaintext server signs whatever identity a node declares: its CA must be its
        # own (`kontinuum serve --plaintext-xds` makes one), and no proxy may trust it.
        if self.plaintext and self.token_address is not None:
            raise ValueError("a plaintext xDS server has no token address")
        if self.plaintext and self.federation_address is not None:
            raise ValueError("zones prove who they are with the fleet CA: not with --plaintext-xds")


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """Where the fleet comes from, how fast changes apply, and whether status is written
    (`status=None`: never)."""

    path: Path | None = None  # the fleet directory
    config_cluster: KubernetesAccess | None = None  # where fleet-wide objects are read too
    poll_interval: float = 0.5
    debounce: Debounce = field(default_factory=Debounce)
    status: StatusOptions | None = field(default_factory=StatusOptions)
    site_source: SourceFactory = site_source
    otlp_endpoint: str | None = None  # where push traces go (OTLP/gRPC); None: no traces
    security: XdsSecurity | None = None  # None: plaintext, no workload certificates
    # where the last good fleet files and the clusters' last views are kept; None: nowhere
    state_dir: Path | None = None
    # more sources declaring the fleet, run as they are (a zone's site and its copy of the
    # global's fleet: `kontinuum.federation_app`)
    sources: tuple[Source, ...] = ()
    site: str | None = None  # a zone's own site: the only one whose Gateways it reports


@dataclass(frozen=True, slots=True)
class RunningFleet:
    """A fleet being discovered, applied to a mesh, and (if enabled) written status of;
    `registry` holds the metrics observed as it runs (translation, convergence)."""

    mesh: Mesh
    aggregator: Aggregator
    static: StaticSource | None
    config: ConfigClusterSource | None
    status: StatusRuntime | None
    discovery: asyncio.Task[None]
    registry: CollectorRegistry
    pushes: PushTelemetry
    security: XdsSecurity | None = None
    # called with each fleet once the mesh applied it (e.g. what zones are sent follows it)
    on_applied: list[Callable[[Fleet], None]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_fleet(
    options: FleetOptions, wait_for_first: bool = True
) -> AsyncIterator[RunningFleet]:
    """Discover the fleet (files, a config cluster, and a source per cluster they declare),
    keep a mesh in step with it, and write status as the Lease's holder; entered once the
    first fleet is applied (`wait_for_first`), or at once (the mesh then asks proxies to
    retry until it is: see `first_fleet`). Everything stops on the way out."""
    if options.path is None and options.config_cluster is None and not options.sources:
        raise ValueError("a fleet needs a directory, a config cluster, or both")
    security = options.security
    certificates = (
        WorkloadCertificates(security.ca, security.workload_validity) if security else None
    )
    mesh = Mesh(SnapshotCache(), certificates, options.site)
    registry = CollectorRegistry()
    provider = tracer_provider(options.otlp_endpoint)
    pushes = PushTelemetry(PushMetrics(registry), provider)
    mesh.translated = pushes.translated
    static = (
        StaticSource(options.path, options.poll_interval, state_dir=options.state_dir)
        if options.path
        else None
    )
    config = ConfigClusterSource(options.config_cluster) if options.config_cluster else None
    status: StatusRuntime | None = None

    def apply(fleet: Fleet) -> None:
        push = pushes.start(aggregator.change)
        started = time.perf_counter()
        try:
            mesh.apply(fleet, push)
        finally:
            push.seal()
        _log_applied(mesh, fleet, aggregator, time.perf_counter() - started)
        if status is not None:
            status.applied()
        for hook in running.on_applied:
            hook(fleet)

    aggregator = Aggregator(
        [*(s for s in (static, config) if s is not None), *options.sources],
        apply,
        options.debounce,
        views=LastSeenViews(options.state_dir) if options.state_dir else None,
    )
    # Clusters reached through their API or DNS get a source each, as the fleet declares them.
    sites = SiteSources(aggregator, _keeping_zones(options.site_source, options.state_dir))
    aggregator.on_sites = sites.reconcile
    if options.status is not None and (options.status.lease_cluster or config is not None):
        status = StatusRuntime(mesh, options.status, config, sites.unreported)
    elif options.status is not None:
        log.info("status is not written: there is no config cluster, and no --lease-cluster")
    discovery = asyncio.create_task(aggregator.run(), name="discovery")
    running = RunningFleet(
        mesh, aggregator, static, config, status, discovery, registry, pushes, security
    )
    writing = asyncio.create_task(status.run(), name="status") if status else None
    renewing = (
        asyncio.create_task(_renew_certificates(mesh, pushes), name="certificates")
        if certificates is not None
        else None
    )
    for task in (writing, renewing):
        if task is not None:
            task.add_done_callback(_report_failure)
    try:
        if wait_for_first:
            await first_fleet(running)
        yield running
    finally:
        tasks = [t for t in (discovery, writing, renewing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if provider is not None:  # what is buffered goes out, within a few seconds
            await asyncio.to_thread(provider.shutdown)


def _keeping_zones(factory: SourceFactory, state_dir: Path | None) -> SourceFactory:
    """`factory`, its zone sources keeping what they hold under `state_dir` (if any)."""
    if state_dir is None:
        return factory

    def build(cluster: str, access: SiteAccess) -> Source:
        source = factory(cluster, access)
        if isinstance(source, ZoneSource):
            source.keep(ZoneObjects(state_dir, cluster, content_version))
        return source

    return build


async def first_fleet(fleet: RunningFleet) -> None:
    """Return once the first fleet is applied; raise what stopped discovery before it."""
    synced = asyncio.ensure_future(fleet.aggregator.synced.wait())
    try:
        await asyncio.wait((synced, fleet.discovery), return_when=asyncio.FIRST_COMPLETED)
    finally:
        synced.cancel()
    if not fleet.aggregator.synced.is_set():
        fleet.discovery.result()  # raises what stopped discovery
        raise RuntimeError("discovery ended before the first fleet")


def _log_applied(mesh: Mesh, fleet: Fleet, aggregator: Aggregator, took: float) -> None:
    """One line per applied fleet: what it holds the first time, what changed after."""
    errors = sum(len(s.status().errors) for s in aggregator.sources)
    problems = f"; {plural(errors, 'configuration error')}" if errors else ""
    if mesh.applied == 1:
        routing = fleet.routing
        log.info(
            "applied the first fleet: %s (%s), %s, %s, %s, %s%s",
            plural(len(fleet.sites), "cluster"),
            ", ".join(site.name for site in fleet.sites),
            plural(len({(s.namespace, s.name) for s in mesh.plane.services}), "service"),
            plural(len(routing.routes), "route"),
            plural(len(routing.gateways), "Gateway"),
            plural(len(fleet.grants), "grant"),
            problems,
        )
        return
    change = aggregator.change
    sources = f" from {', '.join(change.sources)}" if change and change.sources else ""
    log.info(
        "applied a change%s: %s, %s updated in %.0f ms%s",
        sources,
        plural(mesh.services_changed, "service") + " changed",
        plural(mesh.views_updated, "view"),
        took * 1000,
        problems,
    )


async def _renew_certificates(mesh: Mesh, pushes: PushTelemetry) -> None:
    """Renew workload certificates as they come due, each renewal an SDS push."""
    assert mesh.certificates is not None
    while True:
        due = mesh.certificates.next_renewal()
        wait = 1.0 if due is None else (due - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(min(max(wait, 0.05), 30.0))
        due = mesh.certificates.next_renewal()
        if due is None or due > datetime.now(UTC):
            continue
        push = pushes.start(None)
        try:
            renewed = mesh.renew_certificates(push)
        except Exception:  # e.g. the CA itself expiring: say so, and try again
            log.exception("renewing workload certificates failed; retrying in 5 s")
            await asyncio.sleep(5.0)
            continue
        finally:
            push.seal()
        log.info("renewed the workload certificates of views: %d", renewed)


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log a background task that failed (a cancelled one has not)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


async def serve_fleet(
    options: FleetOptions,
    xds_address: str,
    admin_address: str,
    dns_address: str | None = None,
    dns_options: ZoneOptions | None = None,
    prometheus_sd: Path | None = None,
) -> None:
    """Serve a fleet to sidecars until cancelled; changes apply within a second.

    With `dns_address`, also answer `clusterset.local` DNS there (UDP and TCP), from the
    first fleet on: a name asked before would be cached as absent. With `prometheus_sd`,
    keep that file-based service discovery file of the connected proxies' stats."""
    async with (
        running_fleet(options, wait_for_first=False) as fleet,
        serving(fleet, xds_address, admin_address, prometheus_sd),
    ):
        # Listening already: a proxy that connects now is asked to retry, and /readyz
        # says what is awaited, until the first complete fleet is applied.
        await first_fleet(fleet)
        settle_garbage_collector()
        async with _clusterset_dns(fleet.mesh, dns_address, dns_options):
            await fleet.discovery


@contextlib.asynccontextmanager
async def serving(
    fleet: RunningFleet, xds_address: str, admin_address: str, prometheus_sd: Path | None = None
) -> AsyncIterator[XdsServer]:
    """A running fleet's xDS server and admin endpoint (every metric of the mesh on
    `/metrics`), with `prometheus_sd` Prometheus' file of the connected Envoys, and the
    federation server if the security names its address."""
    from kontinuum.federation_app import federation_server  # it composes this module's parts

    mesh = fleet.mesh
    security = fleet.security
    authenticator = (
        FleetAuthenticator(security.ca, plaintext=security.plaintext) if security else None
    )
    server = XdsServer(
        mesh.cache,
        resolve_view=mesh.resolve_view,
        authenticator=authenticator,
        may_read_status=operator_identity if security else None,
    )
    collectors: list[Collector] = [SourceCollector(fleet.aggregator)]
    if mesh.certificates is not None:
        collectors.append(CertificateCollector(mesh.certificates))
        _warn_of_ca_expiry(mesh.certificates)
    if fleet.status is not None:
        collectors.append(StatusCollector(fleet.status.election, fleet.status.writer))
    listeners = _listeners(security, xds_address)
    async with (
        _serving(
            server,
            xds_address,
            admin_address,
            tuple(collectors),
            fleet.registry,
            mesh,
            listeners,
            (fleet.aggregator.synced.is_set, lambda: readiness_notes(fleet.aggregator)),
        ),
        _discovery_file(server, mesh, prometheus_sd),
        _background(_forget_idle_views(server, mesh), "views"),
        federation_server(fleet),
    ):
        yield server


def readiness_notes(aggregator: Aggregator) -> list[str]:
    """What `/readyz` tells besides ready or not: the sources awaited, and those degraded
    or stale (their last good view serves: ready all the same)."""
    notes = [f"waiting for the first view of {name}" for name in aggregator.waiting_for()]
    for state in aggregator.source_states():
        if state.health is Health.DEGRADED:
            notes.append(f"degraded: {state.name}: {state.detail or 'serving a stale view'}")
        elif state.stale:  # e.g. a cluster's view from before a restart, its API silent
            notes.append(f"stale: {state.name}: serving the last view it had")
    return notes


# A view no proxy has used this long is dropped (a pod's sidecar has a view of its own);
# an identity at `mesh.MAX_VIEWS_PER_IDENTITY` is told so when refused a new one.
VIEW_IDLE_SECONDS = 600.0


async def _forget_idle_views(server: XdsServer, mesh: Mesh) -> None:
    while True:
        await asyncio.sleep(VIEW_IDLE_SECONDS / 10)
        in_use = {str(stream.connection.view) for stream in server.streams()}
        if dropped := mesh.forget_idle(in_use, VIEW_IDLE_SECONDS):
            log.info("dropped the views no proxy used for %.0f s: %d", VIEW_IDLE_SECONDS, dropped)


@contextlib.asynccontextmanager
async def _background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """`work` running as a task while the block runs; cancelled at its end."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(_report_failure)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _warn_of_ca_expiry(certificates: WorkloadCertificates) -> None:
    """Say so when the CA ends within 30 days: certificates cannot outlive it."""
    left = certificates.ca.not_after - datetime.now(UTC)
    if left < timedelta(days=30):
        log.warning(
            "the fleet CA expires at %s (in %s): renew it (docs/security.md); workload "
            "certificates are cut to its end",
            certificates.ca.not_after.isoformat(),
            left,
        )


def _listeners(security: XdsSecurity | None, xds_address: str) -> _Listeners:
    """The TLS credentials of the xDS address (mutual TLS) and of the token address."""
    if security is None:
        return None, ()
    if security.plaintext:  # never with a token address (XdsSecurity refuses it)
        log.warning(
            "the xDS server at %s is plaintext (--plaintext-xds) and believes what proxies "
            "declare: for local development only",
            xds_address,
        )
        return None, ()
    addresses = [xds_address, *([security.token_address] if security.token_address else [])]
    hosts = [split_address(a)[0] for a in addresses]
    certificate = ServerCertificate(
        security.ca, server_hosts(security.ca, hosts, security.server_names)
    )
    also: tuple[tuple[str, grpc.ServerCredentials], ...] = ()
    if security.token_address is not None:
        tokens = certificate.credentials(require_client_certificate=False)
        also = ((security.token_address, tokens),)
    return certificate.credentials(require_client_certificate=True), also


@contextlib.asynccontextmanager
async def _discovery_file(server: XdsServer, mesh: Mesh, path: Path | None) -> AsyncIterator[None]:
    """Prometheus' file of the connected proxies, kept up to date, if a path is set."""
    if path is None:
        yield
        return
    async with _background(ServiceDiscoveryFile(path, server, mesh).run(), "file_sd"):
        yield


async def serve_resources(
    directory: Path, xds_address: str, admin_address: str, poll_interval: float = 0.5
) -> None:
    """Serve the Envoy resources of a directory over ADS until cancelled: plaintext, for
    trying resources out on a trusted host (a fleet is served by `serve_fleet`)."""
    cache = SnapshotCache()
    resources = ResourceDirectory(directory, cache)
    resources.reload()
    log.warning(
        "serving %s over plaintext xDS to anyone who connects: for trying resources out "
        "on a trusted host only",
        directory,
    )
    async with _serving(XdsServer(cache), xds_address, admin_address):
        while True:
            await asyncio.sleep(poll_interval)
            resources.reload()
