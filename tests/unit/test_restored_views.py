"""A cluster source's last view across a restart: saved while it runs, served (marked stale)
when the restarted source has not reported by the sync timeout, as a running source would
serve it, and replaced by the source's own view once it reports."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kontinuum.control.model import (
    ClusterSite,
    DnsAccess,
    FleetConfig,
    KubernetesAccess,
    ServiceExport,
    SiteAccess,
)
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.last_seen import LastSeenViews, SavedView
from kontinuum.discovery.sites import SiteSources
from kontinuum.discovery.source import Source
from tests.support.net import eventually
from tests.unit.test_aggregate import QueueSource, Recorder, addresses, snapshot

FAST = Debounce(after=0.05, max=0.3, sync_timeout=0.3)
LOCAL = ClusterSite("local")  # the fleet files' own


def eu_site(stale_after: float) -> ClusterSite:
    return ClusterSite("eu", access=KubernetesAccess(context="eu", stale_after=stale_after))


def eu_view(*endpoints: str) -> SavedView:
    exported = replace(
        snapshot("eu", *endpoints), exports=(ServiceExport("eu", "shop", "web", None),)
    )
    return SavedView("kubernetes:eu", (exported,), time.time())


@dataclass
class Fleet:
    """A fleet directory's source, a source per cluster it declares, and the aggregator."""

    files: QueueSource
    made: dict[str, QueueSource]
    recorder: Recorder
    aggregator: Aggregator


@contextlib.asynccontextmanager
async def running(store: LastSeenViews | None, *sites: ClusterSite) -> AsyncIterator[Fleet]:
    made: dict[str, QueueSource] = {}

    def factory(cluster: str, access: SiteAccess) -> Source:
        kind = "kubernetes" if isinstance(access, KubernetesAccess) else "dns"
        made[cluster] = QueueSource(f"{kind}:{cluster}")
        return made[cluster]

    files, recorder = QueueSource("static"), Recorder()
    aggregator = Aggregator([files], recorder, FAST, views=store)
    aggregator.on_sites = SiteSources(aggregator, factory).reconcile
    task = asyncio.create_task(aggregator.run())
    files.queue.put_nowait(FleetConfig((LOCAL, *sites)))
    try:
        yield Fleet(files, made, recorder, aggregator)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_saved(
    store: LastSeenViews, source: str, check: Callable[[SavedView], bool]
) -> SavedView:
    def saved() -> SavedView | None:
        view = store.load(source)
        return view if view is not None and check(view) else None

    found = await eventually(saved, timeout=3.0, what=f"the saved view of {source}")
    assert found is not None
    return found


async def until_made(fleet: Fleet, *clusters: str) -> None:
    await eventually(lambda: set(clusters) <= set(fleet.made), timeout=1.0, what="the sources")


async def test_a_silent_source_serves_its_view_from_before_the_restart_until_it_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LastSeenViews(tmp_path)
    saved = eu_view("10.0.0.1")
    store.save(replace(saved, current_at=saved.current_at - 5))
    async with running(store, eu_site(stale_after=60)) as fleet:
        first = await fleet.recorder.until(1)
        eu = first.snapshot("eu")
        assert eu is not None
        assert eu.stale
        assert addresses(first, "eu") == ["10.0.0.1"]
        assert eu.exports == saved.snapshots[0].exports
        (state,) = [s for s in fleet.aggregator.source_states() if s.name == "kubernetes:eu"]
        assert (state.stale, state.endpoints) == (True, 1)
        (line,) = [r.getMessage() for r in caplog.records if "before the restart" in r.message]
        said = re.fullmatch(
            r"kubernetes:eu has not reported within 0.3 s: its last view of eu from before the "
            r"restart, (\d+) s old, serves marked stale; its endpoints are kept for another "
            r"(\d+) s",
            line,
        )
        assert said is not None, line
        age, left = int(said[1]), int(said[2])
        assert 5 <= age < 60
        assert age + left in (59, 60, 61)  # each rounded
        assert "applying the fleet without a first view" not in caplog.text

        fleet.made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.2"))  # it is back
        second = await fleet.recorder.until(2)
        back = second.snapshot("eu")
        assert back is not None
        assert not back.stale
        assert addresses(second, "eu") == ["10.0.0.2"]
        await until_saved(store, "kubernetes:eu", lambda v: v.snapshots == (back,))


async def test_without_a_saved_view_the_fleet_applies_without_the_cluster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(LastSeenViews(tmp_path), eu_site(stale_after=60)) as fleet:
        first = await fleet.recorder.until(1)
        assert addresses(first, "eu") == []
        assert "applying the fleet without a first view from kubernetes:eu" in caplog.text


async def test_a_source_that_reports_in_time_is_not_given_its_saved_view(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LastSeenViews(tmp_path)
    store.save(eu_view("10.0.0.1"))
    async with running(store, eu_site(stale_after=60)) as fleet:
        await until_made(fleet, "eu")
        fleet.made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.2"))
        first = await fleet.recorder.until(1)
        assert addresses(first, "eu") == ["10.0.0.2"]
        eu = first.snapshot("eu")
        assert eu is not None
        assert not eu.stale
        assert "before the restart" not in caplog.text


async def test_a_restored_view_loses_its_endpoints_once_stale_after_passes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LastSeenViews(tmp_path)
    store.save(eu_view("10.0.0.1"))
    async with running(store, eu_site(stale_after=1.0)) as fleet:
        first = await fleet.recorder.until(1)
        assert addresses(first, "eu") == ["10.0.0.1"]  # less than 1 s old
        second = await fleet.recorder.until(2, timeout=3.0)
        eu = second.snapshot("eu")
        assert eu is not None
        assert (eu.stale, eu.endpoints) == (True, ())
        assert [s.name for s in eu.services] == ["web"]  # as a running source keeps them
        assert len(eu.exports) == 1
        assert (
            "kubernetes:eu still has not reported: its view from before the restart is more "
            "than 1 s old, so its endpoints are dropped; its Services and exports stay, "
            "marked stale" in caplog.text
        )
        fleet.made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.3"))
        third = await fleet.recorder.until(3)
        assert addresses(third, "eu") == ["10.0.0.3"]


async def test_a_view_saved_longer_ago_than_stale_after_serves_without_endpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LastSeenViews(tmp_path)
    saved = eu_view("10.0.0.1")
    store.save(replace(saved, current_at=saved.current_at - 120))
    async with running(store, eu_site(stale_after=60)) as fleet:
        first = await fleet.recorder.until(1)
        eu = first.snapshot("eu")
        assert eu is not None
        assert (eu.stale, eu.endpoints) == (True, ())
        assert eu.services == saved.snapshots[0].services
        assert eu.exports == saved.snapshots[0].exports
        said = re.search(
            r"its last view of eu from before the restart is (\d+) s old, more than 60 s: its "
            r"Services and exports serve marked stale, without endpoints",
            caplog.text,
        )
        assert said is not None, caplog.text
        assert int(said[1]) >= 120


async def test_only_sources_that_drop_endpoints_after_a_time_are_saved(tmp_path: Path) -> None:
    store = LastSeenViews(tmp_path)
    us = ClusterSite("us", access=DnsAccess("us.example.net"))
    async with running(store, eu_site(stale_after=60), us) as fleet:
        await until_made(fleet, "eu", "us")
        fleet.made["us"].queue.put_nowait(snapshot("us", "10.1.0.1"))
        fleet.made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.1"))
        await fleet.recorder.until(1)
        await until_saved(store, "kubernetes:eu", lambda v: True)
        assert store.load("dns:us") is None  # a DNS site keeps its answers only as it runs
        assert not store.path("dns:us").exists()


async def test_a_cluster_that_leaves_the_fleet_has_its_saved_view_deleted(
    tmp_path: Path,
) -> None:
    store = LastSeenViews(tmp_path)
    async with running(store, eu_site(stale_after=60)) as fleet:
        await until_made(fleet, "eu")
        fleet.made["eu"].queue.put_nowait(snapshot("eu", "10.0.0.1"))
        await until_saved(store, "kubernetes:eu", lambda v: True)
        fleet.files.queue.put_nowait(FleetConfig((LOCAL,)))
        path = store.path("kubernetes:eu")
        await eventually(lambda: not path.exists(), timeout=3.0, what="the view deleted")
