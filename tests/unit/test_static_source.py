"""The static source: a fleet directory read and watched; an invalid file keeps its last good
version in force, also across a restart, while every other file's changes apply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kontinuum.control.model import FleetConfig, SiteSnapshot
from kontinuum.discovery.source import Health, Source, SourceUpdate
from kontinuum.discovery.static import StaticSource

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
POLL = 0.02


def describe(update: SourceUpdate) -> str:
    if isinstance(update, FleetConfig):
        return "config:" + ",".join(site.name for site in update.sites)
    return f"snapshot:{update.cluster}"


async def test_a_one_shot_read_yields_the_config_then_one_snapshot_per_site() -> None:
    source: Source = StaticSource(EXAMPLE, watch=False)
    assert source.status().health is Health.STARTING
    got = [describe(update) async for update in source.updates()]
    assert got == [
        "config:edge-paris,eu-central,us-east",
        "snapshot:edge-paris",
        "snapshot:eu-central",
        "snapshot:us-east",
    ]
    assert source.status().health is Health.HEALTHY
    assert source.name == f"static:{EXAMPLE}"


class Watch:
    """A watching static source on a copy of the example fleet, read update by update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = StaticSource(root, poll_interval=POLL)
        self._queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for update in self.source.updates():
            self._queue.put_nowait(update)

    async def next(self, timeout: float = 5.0) -> SourceUpdate:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def nothing_for(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await self.next(seconds)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def watch(tmp_path: Path) -> AsyncIterator[Watch]:
    shutil.copytree(EXAMPLE, tmp_path / "fleet")
    watch = Watch(tmp_path / "fleet")
    for _ in range(4):  # the config and three sites
        await watch.next()
    yield watch
    await watch.close()


def endpoints_file(root: Path) -> Path:
    return root / "clusters" / "us-east" / "hello.yaml"


async def test_a_changed_cluster_is_yielded_again_and_only_it(watch: Watch) -> None:
    path = endpoints_file(watch.root)
    path.write_text(path.read_text().replace("127.0.0.22", "127.0.0.23"))
    update = await watch.next()
    assert isinstance(update, SiteSnapshot)
    assert update.cluster == "us-east"
    assert "127.0.0.23" in {e.addresses[0] for e in update.endpoints}
    await watch.nothing_for(10 * POLL)


async def test_an_invalid_change_keeps_the_file_as_it_was_and_is_reported(
    watch: Watch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kontinuum.discovery.static")
    path = endpoints_file(watch.root)
    good = path.read_text()
    path.write_text(good.replace("127.0.0.22", "not-an-address"))
    await watch.nothing_for(10 * POLL)
    status = watch.source.status()
    assert status.health is Health.DEGRADED
    assert status.detail == "1 configuration error; the last good version of 1 file serves"
    assert any("clusters/us-east/hello.yaml" in str(e) for e in status.errors)

    path.write_text(good.replace("127.0.0.22", "127.0.0.24"))  # fixed: applies again
    update = await watch.next()
    assert isinstance(update, SiteSnapshot)
    assert update.cluster == "us-east"
    assert watch.source.status().health is Health.HEALTHY
    assert "the fleet's configuration errors are fixed: every file applies" in caplog.messages


async def test_a_bad_date_is_a_reported_error_not_a_crash(watch: Watch) -> None:
    (watch.root / "clusters" / "us-east" / "broken.yaml").write_text("a: 2024-02-30\n")
    await watch.nothing_for(10 * POLL)
    assert "broken.yaml" in str(watch.source.status().errors[0])


async def test_a_removed_cluster_changes_the_config(watch: Watch) -> None:
    clusters = watch.root / "clusters.yaml"
    documents = clusters.read_text().split("---")
    clusters.write_text("---".join(d for d in documents if "name: us-east" not in d))
    shutil.rmtree(watch.root / "clusters" / "us-east")
    assert describe(await watch.next()) == "config:edge-paris,eu-central"


async def test_an_error_in_one_cluster_holds_back_no_change_in_another(watch: Watch) -> None:
    typo = watch.root / "clusters" / "eu-central" / "hello.yaml"
    typo.write_text(typo.read_text().replace("port: 80\n", "port: eighty\n"))
    await watch.nothing_for(10 * POLL)
    path = endpoints_file(watch.root)
    path.write_text(path.read_text().replace("127.0.0.22", "127.0.0.23"))
    update = await watch.next()  # applied while the typo is still there
    assert isinstance(update, SiteSnapshot)
    assert update.cluster == "us-east"
    assert "127.0.0.23" in {e.addresses[0] for e in update.endpoints}
    assert watch.source.status().health is Health.DEGRADED
