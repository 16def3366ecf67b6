"""Federation's wiring (docs/federation.md): the global's federation server, and the zone.

- At the global, `federation_server` serves the `Federation` service zones dial out to:
  ZoneToGlobal hands each zone's objects to its site's source; GlobalToZone sends each zone
  the fleet (`kontinuum.federation.catalog`), kept in step with every fleet the mesh applies.
- A zone (`run_zone`) publishes its site to the global and, with an xDS address, serves its
  site's proxies itself, composed exactly as `kontinuum serve` is (`kontinuum.app`): its mesh
  is fed by its site as the zone reads it (live, whatever the WAN does; stale while the
  zone's own source of it is out of sync, as the global holds it) and by its copy of
  what the global sends (`kontinuum.federation.fleet_copy`: the fleet-wide objects and the
  other sites' services, kept under the state directory). It is ready once it has read its
  site and has either a whole view from the global or the copy kept from before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from kontinuum.admin import AdminServer
from kontinuum.app import (
    FleetOptions,
    RunningFleet,
    XdsSecurity,
    first_fleet,
    running_fleet,
    serving,
)
from kontinuum.bootstrap import split_address
from kontinuum.control.model import Fleet, SiteAccess
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.zone import StaleState, ZoneSource
from kontinuum.errors import operator_listen_error
from kontinuum.federation.fleet_copy import FleetCopy
from kontinuum.federation.objects import SiteObject, stale_site
from kontinuum.federation.service import FederationService, NotReadyError, start_server
from kontinuum.federation.zone import Zone, ZoneSettings
from kontinuum.security.xds_auth import FleetAuthenticator, ServerCertificate
from kontinuum.telemetry.metrics import FederationCollector, ZoneCollector

log = logging.getLogger("kontinuum.zone")

ZONE_DEBOUNCE = 0.02  # seconds of quiet before a zone's mesh applies a change


def zone_of(aggregator: Aggregator) -> Callable[[str], ZoneSource | None]:
    """The source of a site declared with `kontinuum.io/source: zone`, by its name; before
    the first fleet, a site not found yet may still be declared: `NotReadyError`."""

    def find(site: str) -> ZoneSource | None:
        for source in aggregator.sources:
            if isinstance(source, ZoneSource) and source.cluster == site:
                return source
        if not aggregator.synced.is_set():
            raise NotReadyError("the global has not read the fleet yet: retry")
        return None

    return find


@contextlib.asynccontextmanager
async def federation_server(fleet: RunningFleet) -> AsyncIterator[None]:
    """The federation server zones dial out to, if the security names its address: mutual
    TLS with a certificate of the fleet CA, as the xDS address."""
    security = fleet.security
    if security is None or security.federation_address is None:
        yield
        return
    address = security.federation_address
    host = split_address(address)[0]
    names = [h for h in (host, *security.server_names) if h not in ("0.0.0.0", "::", "")]
    certificate = ServerCertificate(security.ca, list(dict.fromkeys(names or ["localhost"])))
    service = FederationService(FleetAuthenticator(security.ca), zone_of(fleet.aggregator))
    aggregator = fleet.aggregator

    def distribute(applied: Fleet) -> None:
        # Each source's versioned bodies: the catalog looks only at what changed in them.
        bodies = [config.bodies for config in aggregator.configs()]
        service.feed.update(bodies, applied.snapshots, applied.routing.gateways, applied.grants)

    fleet.on_applied.append(distribute)
    if aggregator.synced.is_set():
        distribute(aggregator.fleet())
    fleet.registry.register(FederationCollector(service, aggregator))
    try:
        server = await start_server(
            service, address, certificate.credentials(require_client_certificate=True)
        )
    except OSError as error:
        raise operator_listen_error(error, address, "--federation-address") from error
    try:
        yield
    finally:
        fleet.on_applied.remove(distribute)
        await server.stop(1.0)


class LocalSite:
    """The zone's own site as its mesh sees it: a `ZoneSource` fed with the objects the
    zone reads, each change as what differs from the last read. It is read locally, so
    the WAN never makes it stale; its own source does: while that is out of sync (the
    site's Kubernetes API, or its DNS), the site is stale here exactly as the global holds
    it (its `stale-after` counting from when the source went out of sync, the endpoints
    dropped after it), until the source is back."""

    def __init__(self, site: str) -> None:
        self.source = ZoneSource(site, local=True)
        self._stream = self.source.attach()
        self._versions: dict[str, str] = {}
        self._stale: str | None = None  # the name of the site's stale state, while stale

    def __call__(self, objects: list[SiteObject], stale_since: float | None = None) -> None:
        changed = [o.received() for o in objects if self._versions.get(o.name) != o.version]
        current = {o.name: o.version for o in objects}
        removed = [name for name in self._versions if name not in current]
        state = None
        if stale_since is not None:
            said = stale_site(self.source.cluster, stale_since)
            state = StaleState(said.name, said.version, said.stale_since)
            self._stale = said.name
        elif self._stale is not None:
            removed.append(self._stale)
            self._stale = None
        problems = self.source.apply(self._stream, changed, removed, state=state)
        for problem in problems:
            log.error("site object refused: %s", problem)
        self._versions = current

    def retune(self, access: SiteAccess | None) -> None:
        """Take the site's `stale-after` from its ClusterProfile, as the global sent it."""
        if access is not None:
            self.source.retune(access)


@dataclass(frozen=True, slots=True)
class ZoneServing:
    """How a zone serves its site's proxies: where, with which security (as `kontinuum
    serve`'s), where it keeps its copy of the global's fleet, and its proxies' file for
    Prometheus."""

    xds_address: str
    security: XdsSecurity
    state_dir: Path | None = None
    prometheus_sd: Path | None = None  # the file_sd file of the site's proxies, if any


async def run_zone(
    options: ZoneSettings, admin_address: str, xds: ZoneServing | None = None
) -> None:
    """Run a zone until cancelled: publish its site to the global (`kontinuum zone`) and,
    with `xds`, serve its site's proxies; its metrics on the admin endpoint."""
    if xds is None:
        await _publish_only(options, admin_address)
        return
    local = LocalSite(options.site)
    copy = FleetCopy(options.site, xds.state_dir)
    await asyncio.to_thread(copy.load)
    copy.wake()
    zone = Zone(options, on_site=local, copy=copy)
    # Both sources coalesce already (the site's debounces its changes, the global sends
    # its own debounced fleet): a short quiet period keeps the WAN path's latency down.
    fleet_options = FleetOptions(
        sources=(local.source, copy),
        status=None,
        security=xds.security,
        debounce=Debounce(after=ZONE_DEBOUNCE),
        site=options.site,
    )
    async with running_fleet(fleet_options, wait_for_first=False) as fleet:
        fleet.on_applied.append(lambda _: local.retune(copy.own_access))
        fleet.registry.register(ZoneCollector(zone.publisher, copy, zone.global_check))
        async with serving(fleet, xds.xds_address, admin_address, xds.prometheus_sd):
            running = asyncio.create_task(zone.run(), name="zone")
            try:
                await first_fleet(fleet)
                log.info("serving the site's proxies at %s", xds.xds_address)
                await asyncio.wait((running, fleet.discovery), return_when="FIRST_COMPLETED")
                for task in (running, fleet.discovery):
                    if task.done():
                        task.result()
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running


async def _publish_only(options: ZoneSettings, admin_address: str) -> None:
    """A zone that only publishes its site (ready once connected to the global)."""
    zone = Zone(options)
    registry = CollectorRegistry()
    registry.register(ZoneCollector(zone.publisher, global_check=zone.global_check))
    admin = AdminServer(registry, ready=lambda: zone.publisher.connected)
    try:
        await admin.start(admin_address)
    except OSError as error:
        raise operator_listen_error(error, admin_address, "--admin-address") from error
    try:
        await zone.run()
    finally:
        await admin.stop()
