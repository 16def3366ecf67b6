"""The Kubernetes source against simulated clusters: kmock's API emulator over real HTTP, one
per cluster, read by the official client (see tests/support/kube.py).

Every wait is bounded; the timings the source is given (debounce, backoff, stale_after)
are short so that the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kontinuum.app import site_source
from kontinuum.control.mcs import build_plane
from kontinuum.control.model import ClusterSite, Fleet, FleetConfig, KubernetesAccess
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.sites import SiteSources
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate
from kontinuum.discovery.static import StaticSource
from tests.support.kube import (
    Follower,
    KubeCluster,
    addresses,
    endpoint_slice,
    service,
    service_export,
    source_of,
    write_kubeconfig,
)

pytestmark = pytest.mark.e2e

FAST: dict[str, Any] = {"debounce": 0.05, "backoff": (0.05, 0.2)}


def seed(cluster: KubeCluster, *endpoints: str) -> None:
    """`web` (exported) with `endpoints`, and `db`, known only in its own cluster."""
    cluster.put(
        service("web"),
        endpoint_slice("web-1", "web", endpoints),
        service_export("web"),
        service("db", port=5432),
        endpoint_slice("db-1", "db", [f"{endpoints[0]}9"], port=5432),
    )


async def until_status(source: KubernetesSource, health: Health, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while source.status().health != health:
        if time.monotonic() > deadline:
            raise AssertionError(f"status not {health.value} within {timeout} s: {source.status()}")
        await asyncio.sleep(0.02)


async def until_stopped(source: KubernetesSource, timeout: float = 2.0) -> float:
    """How long the source's watcher threads took to end."""
    started = time.monotonic()
    while source.watching():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"watcher threads still run {timeout} s after cancellation")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


class FixedConfig:
    """The fleet-wide objects, reported once (as a source that does not watch)."""

    name = "config"

    def __init__(self, config: FleetConfig) -> None:
        self._config = config

    def status(self) -> SourceStatus:
        return SourceStatus(Health.HEALTHY)

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        yield self._config


async def test_three_clusters_merge_into_one_cluster_set_service(tmp_path: Path) -> None:
    names = {"eu": "10.1.0.", "us": "10.2.0.", "ap": "10.3.0."}
    clusters = [KubeCluster(name) for name in names]
    for cluster in clusters:
        await cluster.start()
    try:
        for cluster in clusters:
            prefix = names[cluster.name]
            seed(cluster, f"{prefix}1", f"{prefix}2")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", clusters)
        sources = [source_of(cluster, kubeconfig, **FAST) for cluster in clusters]
        sites = tuple(ClusterSite(name, region=f"{name}-1") for name in sorted(names))
        applied: list[Fleet] = []
        aggregator = Aggregator(
            [FixedConfig(FleetConfig(sites)), *sources],
            applied.append,
            Debounce(after=0.05, max=0.3, sync_timeout=5.0),
        )
        task = asyncio.create_task(aggregator.run())
        try:
            async with asyncio.timeout(5.0):
                await aggregator.synced.wait()
            fleet = applied[-1]
            assert [s.cluster for s in fleet.snapshots] == ["ap", "eu", "us"]
            for snapshot in fleet.snapshots:
                prefix = names[snapshot.cluster]
                assert not snapshot.stale
                assert [s.name for s in snapshot.services] == ["db", "web"]
                assert [e.name for e in snapshot.exports] == ["web"]
                assert addresses(snapshot) == [f"{prefix}1", f"{prefix}19", f"{prefix}2"]
            assert {s.name: s.status().health for s in sources} == {
                f"kubernetes:{n}": Health.HEALTHY for n in names
            }

            plane = build_plane(fleet)
            web = next(s for s in plane.services if s.name == "web" and s.scope == "")
            assert web.host == "web.shop.svc.clusterset.local"
            (port,) = web.ports
            found = sorted((e.locality.cluster, e.address, e.port) for e in port.endpoints)
            assert found == sorted(
                (name, f"{prefix}{i}", 8080) for name, prefix in names.items() for i in (1, 2)
            )
            local = sorted(s.scope for s in plane.services if s.name == "db")
            assert local == ["ap", "eu", "us"]  # not exported: each only in its own cluster
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for source in sources:
            await until_stopped(source)
    finally:
        for cluster in clusters:
            await cluster.__aexit__()


PROFILE = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: eu
  labels: {{topology.kubernetes.io/region: eu-1}}
  annotations:
    kontinuum.io/source: kubernetes
    kontinuum.io/kubeconfig: {kubeconfig}
    kontinuum.io/context: eu
"""


async def test_a_cluster_profile_annotated_for_kubernetes_gets_its_source(tmp_path: Path) -> None:
    """The way `kontinuum serve` wires it: the fleet files declare the cluster, the
    composition root's factory starts its source."""
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [eu])
        fleet_dir = tmp_path / "fleet"
        fleet_dir.mkdir()
        (fleet_dir / "clusters.yaml").write_text(PROFILE.format(kubeconfig=kubeconfig))
        applied: list[Fleet] = []
        aggregator = Aggregator(
            [StaticSource(fleet_dir, poll_interval=0.1)],
            applied.append,
            Debounce(after=0.05, max=0.3, sync_timeout=5.0),
        )
        aggregator.on_sites = SiteSources(aggregator, site_source).reconcile
        task = asyncio.create_task(aggregator.run())
        try:
            async with asyncio.timeout(5.0):
                await aggregator.synced.wait()
            fleet = applied[-1]
            assert fleet.site("eu") == ClusterSite(
                "eu", "eu-1", access=KubernetesAccess(str(kubeconfig), "eu")
            )
            snapshot = fleet.snapshot("eu")
            assert snapshot is not None
            assert addresses(snapshot) == ["10.1.0.1", "10.1.0.19"]
            (source,) = [s for s in aggregator.sources if s.name == "kubernetes:eu"]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert isinstance(source, KubernetesSource)
        await until_stopped(source)


async def test_endpoints_added_and_removed_show_within_a_second(tmp_path: Path) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        source = source_of(eu, write_kubeconfig(tmp_path / "kubeconfig", [eu]), **FAST)
        async with Follower(source) as follower:
            first = await follower.until(lambda s: True, timeout=3.0)
            assert addresses(first) == ["10.1.0.1", "10.1.0.19"]
            assert source.endpoints == 2
            assert source.objects == 5
            assert source.last_sync is not None
            assert source.last_sync <= time.time()

            eu.put(endpoint_slice("web-1", "web", ["10.1.0.1", "10.1.0.2"]))  # modified
            await follower.until(lambda s: "10.1.0.2" in addresses(s), timeout=1.0)
            eu.put(endpoint_slice("web-2", "web", ["10.1.0.3"]))  # added
            await follower.until(lambda s: "10.1.0.3" in addresses(s), timeout=1.0)
            eu.remove("EndpointSlice", "shop", "web-1")  # deleted
            last = await follower.until(lambda s: "10.1.0.1" not in addresses(s), timeout=1.0)
            assert addresses(last) == ["10.1.0.19", "10.1.0.3"]
            assert eu.lists["EndpointSlice"] == 1  # all of it through the watch

            count = len(follower.snapshots)
            for i in range(20):  # a burst: one snapshot (or two), not twenty
                eu.put(endpoint_slice("web-2", "web", [f"10.1.1.{i}"]))
            last = await follower.until(lambda s: "10.1.1.19" in addresses(s), timeout=1.0)
            assert len(follower.snapshots) - count <= 2
        assert await until_stopped(source) < 1.0


async def test_a_cluster_that_goes_away_is_stale_then_dropped_then_back(tmp_path: Path) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [eu])
        source = source_of(eu, kubeconfig, stale_after=1.0, **FAST)
        async with Follower(source) as follower:
            await follower.until(lambda s: True, timeout=3.0)
            port = eu.port

            gone = time.monotonic()
            await eu.stop()
            stale = await follower.until(lambda s: s.stale, timeout=1.0)
            assert addresses(stale) == ["10.1.0.1", "10.1.0.19"]  # the last endpoints serve
            status = source.status()
            assert status.health is Health.DEGRADED
            assert "out of sync with the API server since" in status.detail
            assert "cannot reach the API server" in status.detail

            dropped = await follower.until(lambda s: not s.endpoints, timeout=2.0)
            assert time.monotonic() - gone >= 1.0
            assert dropped.stale
            assert [s.name for s in dropped.services] == ["db", "web"]  # only endpoints go
            assert "its endpoints are dropped" in source.status().detail
            assert [s.stale for s in follower.snapshots[-2:]] == [True, True]  # once each

            eu.put(endpoint_slice("web-2", "web", ["10.1.0.2"]))  # changed while away
            lists = eu.lists["EndpointSlice"]
            await eu.start()
            assert eu.port == port
            back = await follower.until(lambda s: not s.stale, timeout=3.0)
            assert addresses(back) == ["10.1.0.1", "10.1.0.19", "10.1.0.2"]
            assert eu.lists["EndpointSlice"] > lists  # listed anew
            await until_status(source, Health.HEALTHY)


async def test_a_flapping_cluster_causes_no_snapshots(tmp_path: Path) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [eu])
        source = source_of(eu, kubeconfig, debounce=1.0, backoff=(0.05, 0.1))
        async with Follower(source) as follower:
            await follower.until(lambda s: True, timeout=3.0)
            lists = eu.lists["Service"]
            for _ in range(3):  # each time long enough for the watchers to notice
                await eu.stop()
                await asyncio.sleep(0.25)
                await eu.start()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.6)  # a quiet debounce period and then some
            assert eu.lists["Service"] > lists  # it noticed, and listed again
            seen = [(s.stale, addresses(s)) for s in follower.snapshots]
            assert len(seen) == 1, seen  # but the view never changed
            assert source.status().health is Health.HEALTHY


@pytest.mark.parametrize("gone", ["event", "status"])
async def test_an_expired_watch_lists_again_and_loses_nothing(tmp_path: Path, gone: Any) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        source = source_of(eu, write_kubeconfig(tmp_path / "kubeconfig", [eu]), **FAST)
        async with Follower(source) as follower:
            await follower.until(lambda s: True, timeout=3.0)
            assert eu.lists["EndpointSlice"] == 1

            def change() -> None:  # no open watch sends this: only a new list shows it
                eu.remove("EndpointSlice", "shop", "web-1")
                eu.put(endpoint_slice("web-2", "web", ["10.1.0.2"]))

            eu.expire(change, gone=gone)
            last = await follower.until(lambda s: "10.1.0.2" in addresses(s), timeout=2.0)
            assert addresses(last) == ["10.1.0.19", "10.1.0.2"]
            assert eu.gone["EndpointSlice"] >= 1
            assert eu.lists["EndpointSlice"] == 2
            assert not any(s.stale for s in follower.snapshots)  # a relist is no outage
            assert source.status().health is Health.HEALTHY

            eu.put(endpoint_slice("web-2", "web", ["10.1.0.3"]))  # and it watches again
            await follower.until(lambda s: "10.1.0.3" in addresses(s), timeout=1.0)


async def test_bookmarks_keep_a_quiet_watch_current(tmp_path: Path) -> None:
    async with KubeCluster("eu", bookmark_interval=0.05) as eu:
        seed(eu, "10.1.0.1")
        source = source_of(eu, write_kubeconfig(tmp_path / "kubeconfig", [eu]), **FAST)
        async with Follower(source) as follower:
            await follower.until(lambda s: True, timeout=3.0)
            eu.put(service("api"))  # a change of another kind: the version moves on
            await asyncio.sleep(0.3)  # the EndpointSlice watch hears of the version by bookmark
            eu.compact()
            eu.end_watches(gone=False)  # they resume from the last version they know
            await asyncio.sleep(0.3)
            assert eu.watches["EndpointSlice"] >= 2
            assert eu.gone["EndpointSlice"] == 0  # resumed from the bookmark's version
            assert eu.lists["EndpointSlice"] == 1  # so no list was needed

            eu.put(endpoint_slice("web-1", "web", ["10.1.0.5"]))
            await follower.until(lambda s: "10.1.0.5" in addresses(s), timeout=1.0)


async def test_an_invalid_object_is_reported_and_the_rest_served(tmp_path: Path) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        eu.put(endpoint_slice("web-bad", "web", ["10.1.0.300"]))
        source = source_of(eu, write_kubeconfig(tmp_path / "kubeconfig", [eu]), **FAST)
        async with Follower(source) as follower:
            first = await follower.until(lambda s: True, timeout=3.0)
            assert addresses(first) == ["10.1.0.1", "10.1.0.19"]
            status = source.status()
            assert status.health is Health.DEGRADED
            assert "1 invalid object(s) left out" in status.detail
            (error,) = status.errors
            assert str(error) == (
                "kubernetes:eu: EndpointSlice shop/web-bad: endpoints[0].addresses[0]: "
                "must be a valid IPv4 address, got '10.1.0.300'"
            )

            eu.put(endpoint_slice("web-bad", "web", ["10.1.0.30"]))  # fixed
            await follower.until(lambda s: "10.1.0.30" in addresses(s), timeout=1.0)
            await until_status(source, Health.HEALTHY)
            assert source.status().errors == ()


async def test_a_cluster_without_the_service_export_api(tmp_path: Path) -> None:
    async with KubeCluster("eu", exports_api=False) as eu:
        seed(eu, "10.1.0.1")
        source = source_of(eu, write_kubeconfig(tmp_path / "kubeconfig", [eu]), **FAST)
        async with Follower(source) as follower:
            first = await follower.until(lambda s: True, timeout=3.0)
            assert [s.name for s in first.services] == ["db", "web"]
            assert first.exports == ()
            status = source.status()
            assert status.health is Health.HEALTHY
            assert "Multi-Cluster Services CRD installed?" in status.detail
