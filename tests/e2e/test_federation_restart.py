"""A global that restarts while a zone is away serves the zone's last view, stale, as it
does a Kubernetes cluster's (DESIGN principle 9), until the zone is back; and it still
holds the zone's objects, so the zone sends only what changed.

In-process: the zone's stream is played on the zone's source (`ZoneSource`), as the
federation service does; a "restart" is a second `running_fleet` with the same state
directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kontinuum.app import running_fleet
from kontinuum.discovery.aggregate import Debounce
from kontinuum.discovery.last_seen import LastSeenViews
from kontinuum.discovery.zone import ReceivedObject, ZoneSource
from kontinuum.discovery.zone_store import ZoneObjects
from kontinuum.federation.objects import content_version, site_object
from kontinuum.federation_app import zone_of
from tests.support.fleet import cluster_profile, fast
from tests.support.net import eventually

pytestmark = pytest.mark.e2e

PROFILE = cluster_profile("edge-paris", "eu-central-1").replace(
    "spec:", "  annotations: {kontinuum.io/source: zone}\nspec:"
)


def objects(address: str) -> list[ReceivedObject]:
    meta = {"namespace": "demo"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", **meta},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}, **meta},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [address]}],
    }
    # At their versions on the wire: what the global keeps is checked against them.
    return [site_object(service).received(), site_object(endpoints).received()]


async def test_a_restarted_global_serves_a_zone_s_last_view_stale_until_it_is_back(
    tmp_path: Path,
) -> None:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    (fleet_dir / "clusters.yaml").write_text(PROFILE + "---\n" + cluster_profile("us", "us-1"))
    options = fast(
        path=fleet_dir,
        state_dir=tmp_path / "state",
        debounce=Debounce(after=0.05, max=0.3, sync_timeout=1.0),
    )
    store = LastSeenViews(tmp_path / "state")

    async with running_fleet(options, wait_for_first=False) as first:
        zone = await eventually(
            lambda: next((s for s in first.aggregator.sources if isinstance(s, ZoneSource)), None),
            timeout=5.0,
            what="the zone's source",
        )
        zone.apply(zone.attach(), objects("10.2.0.1"), [])
        await eventually(lambda: store.load("zone:edge-paris"), timeout=5.0, what="saved")
        stored = ZoneObjects(tmp_path / "state", "edge-paris", content_version)
        await eventually(lambda: len(stored.load()) == 2, timeout=5.0, what="objects stored")

    async with running_fleet(options) as second:  # the zone is away: past the sync timeout
        snapshot = second.aggregator.fleet().snapshot("edge-paris")
        assert snapshot is not None
        assert snapshot.stale
        assert [e.addresses for e in snapshot.endpoints] == [("10.2.0.1",)]

        zone = zone_of(second.aggregator)("edge-paris")
        assert zone is not None
        # what a reconnecting zone is told the global holds: what it held before
        assert zone.held() == {o.name: o.version for o in objects("10.2.0.1")}
        zone.apply(zone.attach(), objects("10.2.0.2")[1:], [])  # only what changed

        def current() -> bool:
            found = second.aggregator.fleet().snapshot("edge-paris")
            return (
                found is not None
                and not found.stale
                and [e.addresses for e in found.endpoints] == [("10.2.0.2",)]
            )

        await eventually(current, timeout=5.0, what="the zone's own view")
