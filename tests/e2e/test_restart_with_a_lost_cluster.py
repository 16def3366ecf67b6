"""A restart while a cluster's Kubernetes API is unreachable (DESIGN principle 9): the
cluster's last view from before the restart serves, marked stale, as it would have had
kontinuum kept running, until the cluster answers again.

The cluster is kmock's API emulator over real HTTP (tests/support/kube.py), stopped and
started again; a "restart" is a second `running_fleet` with the same state directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kontinuum.app import FleetOptions, RunningFleet, readiness_notes, running_fleet
from kontinuum.control.model import KubernetesAccess, SiteAccess, SiteSnapshot
from kontinuum.discovery.aggregate import Debounce
from kontinuum.discovery.dns import DnsSource
from kontinuum.discovery.kubernetes import KubernetesSource
from kontinuum.discovery.last_seen import LastSeenViews
from kontinuum.discovery.source import Source
from tests.e2e.test_kubernetes_source import PROFILE as KUBERNETES_PROFILE
from tests.support.fleet import cluster_profile, fast
from tests.support.kube import (
    KubeCluster,
    addresses,
    endpoint_slice,
    service,
    service_export,
    write_kubeconfig,
)
from tests.support.net import eventually

pytestmark = pytest.mark.e2e

# eu, reached through its API, as test_kubernetes_source declares it, with its stale-after
PROFILE = KUBERNETES_PROFILE + "    kontinuum.io/stale-after: {stale_after}\n"


def quick_source(cluster: str, access: SiteAccess) -> Source:
    """The sources `kontinuum serve` starts, retrying within a fraction of a second."""
    if isinstance(access, KubernetesAccess):
        return KubernetesSource(
            cluster, access, stale_after=access.stale_after, backoff=(0.05, 0.2), debounce=0.05
        )
    return DnsSource(cluster, access)


def options(tmp_path: Path, eu: KubeCluster, stale_after: str, sync: float) -> FleetOptions:
    """A fleet of `us` (its files) and `eu` (its API), kept under tmp_path/state."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [eu])
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir(exist_ok=True)
    (fleet_dir / "clusters.yaml").write_text(
        PROFILE.format(kubeconfig=kubeconfig, stale_after=stale_after)
        + "---\n"
        + cluster_profile("us", "us-1")
    )
    return fast(
        path=fleet_dir,
        state_dir=tmp_path / "state",
        debounce=Debounce(after=0.05, max=0.3, sync_timeout=sync),
        site_source=quick_source,
    )


def seed(eu: KubeCluster, address: str) -> None:
    eu.put(service("web"), endpoint_slice("web-1", "web", [address]), service_export("web"))


def served_web(fleet: RunningFleet) -> list[tuple[str, str, int]]:
    """The endpoints of the cluster-set service web.shop as the mesh serves them to every
    cluster's proxies."""
    found = []
    for plane_service in fleet.mesh.plane.named("shop", "web"):
        if plane_service.scope == "":
            for port in plane_service.ports:
                found += [(e.locality.cluster, e.address, e.port) for e in port.endpoints]
    return sorted(found)


def eu_snapshot(fleet: RunningFleet) -> SiteSnapshot:
    snapshot = fleet.aggregator.fleet().snapshot("eu")
    assert snapshot is not None
    return snapshot


async def test_a_restart_while_a_cluster_is_unreachable_keeps_its_endpoints_stale(
    tmp_path: Path,
) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        fleet_options = options(tmp_path, eu, stale_after="60s", sync=1.0)
        store = LastSeenViews(tmp_path / "state")

        async with running_fleet(fleet_options) as first:
            assert served_web(first) == [("eu", "10.1.0.1", 8080)]
            saved = await eventually(
                lambda: store.load("kubernetes:eu"), timeout=5.0, what="the saved view"
            )
            assert saved is not None
            assert [(s.stale, addresses(s)) for s in saved.snapshots] == [(False, ["10.1.0.1"])]

        await eu.stop()  # gone, and while it is, kontinuum restarts
        eu.put(endpoint_slice("web-1", "web", ["10.1.0.2"]))  # what it holds meanwhile

        async with running_fleet(fleet_options) as second:  # applied after the sync timeout
            restored = eu_snapshot(second)
            assert (restored.stale, addresses(restored)) == (True, ["10.1.0.1"])
            assert [e.name for e in restored.exports] == ["web"]
            assert served_web(second) == [("eu", "10.1.0.1", 8080)]  # us's proxies keep it
            (state,) = [s for s in second.aggregator.source_states() if s.name == "kubernetes:eu"]
            assert (state.stale, state.endpoints) == (True, 1)
            assert "stale: kubernetes:eu: serving the last view it had" in readiness_notes(
                second.aggregator
            )

            await eu.start()  # back: its own view replaces the restored one
            await eventually(
                lambda: served_web(second) == [("eu", "10.1.0.2", 8080)],
                timeout=5.0,
                what="the cluster's current endpoints",
            )
            assert not eu_snapshot(second).stale
            await eventually(
                lambda: (
                    (view := store.load("kubernetes:eu")) is not None
                    and [addresses(s) for s in view.snapshots] == [["10.1.0.2"]]
                ),
                timeout=5.0,
                what="the new view saved",
            )


async def test_a_view_older_than_stale_after_comes_back_without_endpoints(
    tmp_path: Path,
) -> None:
    async with KubeCluster("eu") as eu:
        seed(eu, "10.1.0.1")
        # The view is last known current when the first run ends; the restart applies the
        # fleet 1.5 s later, past the cluster's stale-after of 1 s.
        fleet_options = options(tmp_path, eu, stale_after="1s", sync=1.5)
        store = LastSeenViews(tmp_path / "state")
        async with running_fleet(fleet_options) as first:
            assert served_web(first) == [("eu", "10.1.0.1", 8080)]
            await eventually(
                lambda: store.load("kubernetes:eu"), timeout=5.0, what="the saved view"
            )

        await eu.stop()
        async with running_fleet(fleet_options) as second:
            restored = eu_snapshot(second)
            assert (restored.stale, restored.endpoints) == (True, ())
            assert [s.name for s in restored.services] == ["web"]  # as a running source keeps
            assert [e.name for e in restored.exports] == ["web"]
            assert served_web(second) == []
