"""One source per cluster reached through its API or DNS, in step with the fleet's sites."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from kontinuum.control.model import (
    ClusterSite,
    DnsAccess,
    Fleet,
    FleetConfig,
    KubernetesAccess,
    SiteAccess,
)
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.sites import SiteSources
from kontinuum.discovery.source import Source
from tests.unit.test_aggregate import QueueSource, Recorder, snapshot

FAST = Debounce(after=0.05, max=0.3, sync_timeout=1.0)


@contextlib.asynccontextmanager
async def running(aggregator: Aggregator) -> AsyncIterator[None]:
    """The aggregator's `run()` in a task, cancelled at the end."""
    task = asyncio.create_task(aggregator.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


EU_API = ClusterSite("eu", access=KubernetesAccess(context="eu"))
US_DNS = ClusterSite("us", access=DnsAccess("us.example.net"))


async def test_sites_get_sources_and_lose_them_with_what_they_reported() -> None:
    made: dict[str, QueueSource] = {}

    def factory(cluster: str, access: SiteAccess) -> Source:
        kind = "kubernetes" if isinstance(access, KubernetesAccess) else "dns"
        made[cluster] = QueueSource(f"{kind}:{cluster}")
        return made[cluster]

    files = QueueSource("static")
    recorder = Recorder()
    aggregator = Aggregator([files], recorder, FAST)
    sites = SiteSources(aggregator, factory)
    async with running(aggregator):
        files.queue.put_nowait(FleetConfig((EU_API, US_DNS, ClusterSite("local"))))
        fleet: Fleet = await recorder.until(1)
        sites.reconcile(fleet.sites)
        assert sorted(sites.clusters) == ["eu", "us"]  # "local" is the files' own
        made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.1"))
        fleet = await recorder.until(2)
        eu = fleet.snapshot("eu")
        assert eu is not None
        assert [e.addresses[0] for e in eu.endpoints] == ["10.0.0.1"]

        # eu changes context: a new source replaces the old one, whose view is forgotten.
        moved = ClusterSite("eu", access=KubernetesAccess(context="eu-2"))
        sites.reconcile((moved, US_DNS))
        assert sites.clusters["eu"] == KubernetesAccess(context="eu-2")
        fleet = await recorder.until(3)
        eu = fleet.snapshot("eu")
        assert eu is not None
        assert eu.endpoints == ()

        sites.reconcile((moved,))  # us left the fleet
        assert sorted(sites.clusters) == ["eu"]
        assert [s.name for s in aggregator.sources] == ["static", "kubernetes:eu"]


async def test_the_first_fleet_waits_for_the_sources_its_config_declares() -> None:
    made: dict[str, QueueSource] = {}

    def factory(cluster: str, access: SiteAccess) -> Source:
        made[cluster] = QueueSource(f"dns:{cluster}")
        return made[cluster]

    files = QueueSource("static")
    recorder = Recorder()
    aggregator = Aggregator([files], recorder, FAST)
    aggregator.on_sites = SiteSources(aggregator, factory).reconcile
    async with running(aggregator):
        files.queue.put_nowait(FleetConfig((US_DNS,)))
        for _ in range(50):  # the config starts the us source at once: 1 s at most
            if "us" in made:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(3 * FAST.after)
        assert recorder.applied == []  # held back: the new source has not reported yet
        made["us"].queue.put_nowait(snapshot("us", "10.1.0.1"))
        fleet = await recorder.until(1)
        us = fleet.snapshot("us")
        assert us is not None
        assert [e.addresses[0] for e in us.endpoints] == ["10.1.0.1"]


class TunableSource(QueueSource):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.tuned: list[SiteAccess] = []

    def retune(self, access: SiteAccess) -> None:
        self.tuned.append(access)


async def test_a_new_stale_after_retunes_the_source_and_keeps_its_view() -> None:
    made: list[TunableSource] = []

    def factory(cluster: str, access: SiteAccess) -> Source:
        made.append(TunableSource(f"kubernetes:{cluster}"))
        return made[-1]

    files = QueueSource("static")
    recorder = Recorder()
    aggregator = Aggregator([files], recorder, FAST)
    sites = SiteSources(aggregator, factory)
    async with running(aggregator):
        files.queue.put_nowait(FleetConfig((EU_API,)))
        await recorder.until(1)
        sites.reconcile((EU_API,))
        made[0].queue.put_nowait(snapshot("eu", "10.0.0.1"))
        await recorder.until(2)
        assert sites.unreported() == set()

        patient = ClusterSite("eu", access=KubernetesAccess(context="eu", stale_after=3600))
        sites.reconcile((patient,))
        assert len(made) == 1  # not restarted
        assert made[0].tuned == [patient.access]
        assert sites.clusters["eu"] == patient.access
        assert aggregator.snapshot_of("kubernetes:eu", "eu") is not None  # its view stays


async def test_a_cluster_is_unreported_until_its_source_reports_it() -> None:
    made: dict[str, QueueSource] = {}

    def factory(cluster: str, access: SiteAccess) -> Source:
        made[cluster] = QueueSource(f"kubernetes:{cluster}")
        return made[cluster]

    files = QueueSource("static")
    recorder = Recorder()
    aggregator = Aggregator([files], recorder, FAST)
    sites = SiteSources(aggregator, factory)
    us_api = ClusterSite("us", access=KubernetesAccess(context="us"))
    async with running(aggregator):
        files.queue.put_nowait(FleetConfig((EU_API, us_api)))
        await recorder.until(1)
        sites.reconcile((EU_API, us_api))
        assert sites.unreported() == {"eu", "us"}
        made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.1"))
        made["us"].queue.put_nowait(replace(snapshot("us", "10.1.0.1"), stale=True))
        await recorder.until(2)
        assert sites.unreported() == set()  # a stale view is a view
