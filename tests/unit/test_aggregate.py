"""The aggregator: sources merged into one fleet, bursts coalesced, a slow start waited for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kontinuum.control.model import (
    ClusterSite,
    Endpoint,
    Fleet,
    FleetConfig,
    Grant,
    Service,
    SiteSnapshot,
)
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.fleet_merge import merge
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate
from kontinuum.discovery.static import StaticSource

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
EU, US = ClusterSite("eu", "eu-1"), ClusterSite("us", "us-1")
FAST = Debounce(after=0.05, max=0.3, sync_timeout=2.0)


class QueueSource:
    """A source whose updates the test hands over one by one."""

    def __init__(self, name: str, fail_after: int | None = None) -> None:
        self.name = name
        self.queue: asyncio.Queue[SourceUpdate | None] = asyncio.Queue()
        self._fail_after = fail_after

    def status(self) -> SourceStatus:
        return SourceStatus(Health.HEALTHY)

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        given = 0
        while (update := await self.queue.get()) is not None:
            if self._fail_after is not None and given == self._fail_after:
                raise RuntimeError("the source broke")
            given += 1
            yield update


def snapshot(cluster: str, *addresses: str, stale: bool = False) -> SiteSnapshot:
    service = Service(cluster, "shop", "web")
    endpoints = tuple(Endpoint(cluster, "shop", "web", (a,)) for a in addresses)
    return SiteSnapshot(cluster, (service,), endpoints, stale=stale)


def addresses(fleet: Fleet, cluster: str) -> list[str]:
    found = fleet.snapshot(cluster)
    return [e.addresses[0] for e in found.endpoints] if found else []


class Recorder:
    """An `apply` that records every fleet and can wait for the n-th."""

    def __init__(self, fail_first: bool = False) -> None:
        self.applied: list[Fleet] = []
        self._fail_first = fail_first
        self._event = asyncio.Event()

    def __call__(self, fleet: Fleet) -> None:
        self.applied.append(fleet)
        self._event.set()
        if self._fail_first and len(self.applied) == 1:
            raise ValueError("a translation bug")

    async def until(self, count: int, timeout: float = 3.0) -> Fleet:
        async with asyncio.timeout(timeout):
            while len(self.applied) < count:
                self._event.clear()
                await self._event.wait()
        return self.applied[-1]


class Running:
    """An aggregator running in the background, recording every fleet it applies."""

    def __init__(
        self,
        *sources: QueueSource | StaticSource,
        debounce: Debounce = FAST,
        recorder: Recorder | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()
        self.applied = self.recorder.applied
        self.aggregator = Aggregator(sources, self.recorder, debounce)
        self.task = asyncio.create_task(self.aggregator.run())

    async def until_applied(self, count: int, timeout: float = 3.0) -> Fleet:
        return await self.recorder.until(count, timeout)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def stop_all() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        await running.stop()


def test_merge_unions_what_several_sources_say_of_one_cluster() -> None:
    fleet = merge(
        [FleetConfig((EU,), (Grant("shop", "web"),)), FleetConfig((EU, US), ())],
        [snapshot("eu", "10.0.0.1"), snapshot("eu", "10.0.0.2", stale=True), snapshot("mars")],
    )
    assert [s.name for s in fleet.sites] == ["eu", "us"]
    assert addresses(fleet, "eu") == ["10.0.0.1", "10.0.0.2"]
    eu = fleet.snapshot("eu")
    assert eu is not None
    assert eu.stale  # any stale part makes the whole stale
    assert fleet.snapshot("us") == SiteSnapshot("us")  # declared, nothing reported yet
    assert fleet.snapshot("mars") is None  # reported, but no config declares it
    assert fleet.grants == (Grant("shop", "web"),)


async def test_a_burst_of_updates_is_applied_once(stop_all: list[Running]) -> None:
    source = QueueSource("burst")
    running = Running(source)
    stop_all.append(running)
    source.queue.put_nowait(FleetConfig((EU,)))
    first = await running.until_applied(1)
    assert [s.name for s in first.sites] == ["eu"]
    for i in range(50):
        source.queue.put_nowait(snapshot("eu", f"10.0.0.{i}"))
    fleet = await running.until_applied(2)
    await asyncio.sleep(3 * FAST.after)
    assert len(running.applied) == 2  # fifty updates, one push
    assert addresses(fleet, "eu") == ["10.0.0.49"]  # the latest wins
    assert running.aggregator.updates == 51


async def test_a_flapping_source_is_pushed_at_most_every_max_seconds(
    stop_all: list[Running],
) -> None:
    source = QueueSource("flapping")
    running = Running(source)
    stop_all.append(running)
    source.queue.put_nowait(FleetConfig((EU,)))
    await running.until_applied(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while loop.time() - started < 1.0:  # an update every 20 ms: never quiet for 50 ms
        source.queue.put_nowait(snapshot("eu", f"10.0.{sent // 250}.{sent % 250}"))
        sent += 1
        await asyncio.sleep(0.02)
    pushes = len(running.applied) - 1
    # Never starved (a push at least every `max`), never one push per update.
    assert 2 <= pushes <= 1.0 / FAST.max + 2, pushes
    assert sent >= 20


async def test_the_first_fleet_waits_for_every_source(stop_all: list[Running]) -> None:
    fast, slow = QueueSource("fast"), QueueSource("slow")
    running = Running(fast, slow)
    stop_all.append(running)
    fast.queue.put_nowait(FleetConfig((EU, US)))
    fast.queue.put_nowait(snapshot("eu", "10.0.0.1"))
    await asyncio.sleep(5 * FAST.after)
    assert running.applied == []  # "slow" has not reported yet
    slow.queue.put_nowait(snapshot("us", "10.1.0.1"))
    fleet = await running.until_applied(1)
    assert (addresses(fleet, "eu"), addresses(fleet, "us")) == (["10.0.0.1"], ["10.1.0.1"])


async def test_a_silent_cluster_source_holds_the_start_only_until_the_sync_timeout(
    stop_all: list[Running],
) -> None:
    fast, silent = QueueSource("fast"), QueueSource("silent")
    running = Running(fast, debounce=Debounce(after=0.05, max=0.3, sync_timeout=0.3))
    stop_all.append(running)
    await asyncio.sleep(0)  # running
    running.aggregator.add(silent)  # a cluster's own source, as the fleet declares it
    fast.queue.put_nowait(FleetConfig((EU,)))
    fleet = await running.until_applied(1, timeout=2.0)
    assert [s.name for s in fleet.sites] == ["eu"]


async def test_a_source_that_declares_the_fleet_is_waited_for_however_long(
    stop_all: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    # A fleet directory that takes longer than the sync timeout to read: applying without
    # it would serve an empty fleet and refuse every proxy as of an unknown cluster.
    fast, slow = QueueSource("fast"), QueueSource("slow")
    running = Running(fast, slow, debounce=Debounce(after=0.05, max=0.3, sync_timeout=0.2))
    stop_all.append(running)
    fast.queue.put_nowait(FleetConfig((EU,)))
    with pytest.raises(TimeoutError):
        await running.until_applied(1, timeout=1.0)  # five sync timeouts
    assert running.aggregator.waiting_for() == ["slow"]
    assert "still waiting for the first view of slow" in caplog.text
    slow.queue.put_nowait(FleetConfig((US,)))
    fleet = await running.until_applied(1, timeout=2.0)
    assert [s.name for s in fleet.sites] == ["eu", "us"]
    assert running.aggregator.waiting_for() == []


async def test_a_failing_source_keeps_its_last_view_and_the_others_go_on(
    stop_all: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    config, broken = QueueSource("config"), QueueSource("broken", fail_after=1)
    running = Running(config, broken)
    stop_all.append(running)
    config.queue.put_nowait(FleetConfig((EU, US)))
    broken.queue.put_nowait(snapshot("us", "10.1.0.1"))
    await running.until_applied(1)
    broken.queue.put_nowait(snapshot("us", "10.1.0.2"))  # raises inside the source
    config.queue.put_nowait(snapshot("eu", "10.0.0.1"))
    fleet = await running.until_applied(2)
    assert addresses(fleet, "us") == ["10.1.0.1"]
    assert addresses(fleet, "eu") == ["10.0.0.1"]
    assert "source broken failed; its last view stays in force" in caplog.text


async def test_an_apply_that_raises_does_not_stop_discovery(
    stop_all: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    source = QueueSource("source")
    running = Running(source, recorder=Recorder(fail_first=True))
    stop_all.append(running)
    source.queue.put_nowait(FleetConfig((EU,)))
    await running.until_applied(1)
    source.queue.put_nowait(snapshot("eu", "10.0.0.1"))
    fleet = await running.until_applied(2)
    assert addresses(fleet, "eu") == ["10.0.0.1"]
    assert "applying the fleet failed" in caplog.text


async def test_the_static_source_feeds_the_aggregator(stop_all: list[Running]) -> None:
    running = Running(StaticSource(EXAMPLE, watch=False))
    stop_all.append(running)
    fleet = await running.until_applied(1)
    assert [s.name for s in fleet.sites] == ["edge-paris", "eu-central", "us-east"]
    assert all(fleet.snapshot(site.name) for site in fleet.sites)
    await asyncio.sleep(3 * FAST.after)
    assert len(running.applied) == 1  # config and three snapshots: one push


async def test_source_states_and_their_metrics(stop_all: list[Running]) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from kontinuum.telemetry.metrics import SourceCollector

    source = QueueSource("kubernetes:eu")
    running = Running(source)
    stop_all.append(running)
    source.queue.put_nowait(FleetConfig((EU,)))
    source.queue.put_nowait(snapshot("eu", "10.0.0.1", "10.0.0.2", stale=True))
    await running.until_applied(1)
    (state,) = running.aggregator.source_states()
    assert (state.name, state.stale, state.clusters, state.endpoints) == (
        "kubernetes:eu",
        True,
        1,
        2,
    )
    assert state.last_update is not None
    registry = CollectorRegistry()
    registry.register(SourceCollector(running.aggregator))
    text = generate_latest(registry).decode()
    assert 'kontinuum_source_stale{source="kubernetes:eu"} 1.0' in text
    assert 'kontinuum_source_endpoints{source="kubernetes:eu"} 2.0' in text
    assert 'kontinuum_source_up{source="kubernetes:eu"} 1.0' in text  # QueueSource: healthy
    assert "kontinuum_fleet_applies_total 1.0" in text
