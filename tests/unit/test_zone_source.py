"""The source of a zone's site at the global (`kontinuum.discovery.zone`): what a stream
hands it becomes the site's snapshot, read as the fleet files are; an invalid object is
refused alone; a disconnected zone's view stays, stale, then loses its endpoints, as does
the view of a zone that says its own source of the site is out of sync."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kontinuum.control.model import SiteSnapshot, ZoneAccess
from kontinuum.discovery.source import Health, SourceUpdate
from kontinuum.discovery.zone import ReceivedObject, StaleState, SupersededError, ZoneSource


def obj(kind: str, name: str, body: dict[str, Any], version: str = "1") -> ReceivedObject:
    api = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}.get(
        kind, "multicluster.x-k8s.io/v1alpha1"
    )
    full = {"apiVersion": api, "kind": kind, **body}
    full["metadata"] = {"name": name, "namespace": "demo", **body.get("metadata", {})}
    return ReceivedObject(f"{kind}/demo/{name}", version, kind, full)


def hello(port: Any = 80) -> ReceivedObject:
    return obj("Service", "hello", {"spec": {"ports": [{"name": "http", "port": port}]}})


def hello_slice(address: str, version: str = "1") -> ReceivedObject:
    return obj(
        "EndpointSlice",
        "hello-1",
        {
            "metadata": {"labels": {"kubernetes.io/service-name": "hello"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        },
        version,
    )


class Updates:
    def __init__(self, source: ZoneSource) -> None:
        self._iterator: AsyncIterator[SourceUpdate] = source.updates()

    async def next(self) -> SiteSnapshot:
        async with asyncio.timeout(5):
            update = await anext(self._iterator)
        assert isinstance(update, SiteSnapshot)
        return update

    async def close(self) -> None:
        await self._iterator.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def source() -> AsyncIterator[tuple[ZoneSource, Updates]]:
    zone = ZoneSource("edge-paris", stale_after=1.0, debounce=0.01)
    updates = Updates(zone)
    yield zone, updates
    await updates.close()


def addresses(snapshot: SiteSnapshot) -> list[str]:
    return [e.addresses[0] for e in snapshot.endpoints]


async def test_a_first_response_is_the_whole_view_and_changes_follow(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    assert zone.status().health is Health.STARTING
    stream = zone.attach()
    assert zone.apply(stream, [hello(), hello_slice("10.0.0.1")], []) == []
    first = await updates.next()
    assert (first.cluster, first.stale, addresses(first)) == ("edge-paris", False, ["10.0.0.1"])
    assert zone.held() == {"Service/demo/hello": "1", "EndpointSlice/demo/hello-1": "1"}

    zone.apply(stream, [hello_slice("10.0.0.2", version="2")], [])
    assert addresses(await updates.next()) == ["10.0.0.2"]
    zone.apply(stream, [], ["EndpointSlice/demo/hello-1"])
    assert addresses(await updates.next()) == []
    assert zone.stats.objects_received == 3
    assert zone.stats.removals_received == 1


async def test_an_invalid_object_is_refused_alone_and_its_last_good_version_stays(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    refused = zone.apply(stream, [hello(port="eighty"), hello_slice("10.0.0.3", version="3")], [])
    assert refused == [
        "Service/demo/hello: Service demo/hello: spec.ports[0].port: must be an integer, got string"
    ]
    snapshot = await updates.next()
    assert addresses(snapshot) == ["10.0.0.3"]
    assert [p.port for s in snapshot.services for p in s.ports] == [80]
    assert zone.held()["Service/demo/hello"] == "1"
    assert zone.stats.objects_refused == 1


async def test_a_disconnected_zone_is_stale_then_loses_its_endpoints_until_it_is_back(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()

    zone.detach(stream, "its stream was cut")
    stale = await updates.next()
    assert (stale.stale, addresses(stale)) == (True, ["10.0.0.1"])
    assert "its zone is disconnected since" in zone.status().detail
    assert "(its stream was cut)" in zone.status().detail
    dropped = await updates.next()  # stale_after (1 s) later
    assert (dropped.stale, addresses(dropped), len(dropped.services)) == (True, [], 1)

    again = zone.attach()
    assert zone.held() == {"Service/demo/hello": "1", "EndpointSlice/demo/hello-1": "1"}
    zone.apply(again, [], [])  # nothing changed meanwhile: an empty first response
    back = await updates.next()
    assert (back.stale, addresses(back)) == (False, ["10.0.0.1"])


async def test_a_new_stream_supersedes_the_old_one(source: tuple[ZoneSource, Updates]) -> None:
    zone, _ = source
    old = zone.attach()
    new = zone.attach()
    with pytest.raises(SupersededError):
        zone.apply(old, [hello()], [])
    zone.detach(old, "replaced")  # the old stream's end leaves the new one connected
    assert zone.stats.connected
    assert zone.apply(new, [hello()], []) == []


def test_a_new_stale_after_is_taken_without_a_restart() -> None:
    zone = ZoneSource("edge-paris", stale_after=300.0)
    zone.retune(ZoneAccess(stale_after=60.0))
    assert zone.stale_after == 60.0


async def test_partial_responses_are_held_back_until_the_view_is_whole(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    assert zone.apply(stream, [hello()], [], partial=True) == []
    assert zone.status().health is Health.STARTING
    zone.apply(stream, [hello_slice("10.0.0.1")], [])
    snapshot = await updates.next()
    assert (len(snapshot.services), addresses(snapshot)) == (1, ["10.0.0.1"])
    # Once whole, a change in parts applies whole too: with its last part, at once.
    zone.apply(stream, [hello_slice("10.0.0.2", version="2")], [], partial=True)
    assert zone.held()["EndpointSlice/demo/hello-1"] == "1"
    zone.apply(stream, [hello(port=81)], ["Service/demo/gone"])
    snapshot = await updates.next()
    assert (addresses(snapshot), [p.port for s in snapshot.services for p in s.ports]) == (
        ["10.0.0.2"],
        [81],
    )
    assert zone.held()["EndpointSlice/demo/hello-1"] == "2"


async def test_a_change_cut_off_between_its_parts_applies_none_of_them(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    # The first part of a change: a new Service's endpoints (the Service comes next), and
    # the removal of the old slice; the link is cut before the second part.
    web = obj(
        "EndpointSlice",
        "web-1",
        {
            "metadata": {"labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.9"], "conditions": {"ready": True}}],
        },
    )
    assert zone.apply(stream, [web], ["EndpointSlice/demo/hello-1"], partial=True) == []
    zone.detach(stream, "its stream was cut")
    stale = await updates.next()
    assert (stale.stale, addresses(stale)) == (True, ["10.0.0.1"])
    # The next stream is told the whole change before, so the zone sends it whole again.
    again = zone.attach()
    assert zone.held() == {"Service/demo/hello": "1", "EndpointSlice/demo/hello-1": "1"}
    zone.apply(again, [web], ["EndpointSlice/demo/hello-1"], partial=True)
    web_service = obj("Service", "web", {"spec": {"ports": [{"name": "http", "port": 80}]}})
    zone.apply(again, [web_service], [])
    back = await updates.next()
    assert (back.stale, addresses(back)) == (False, ["10.0.0.9"])
    assert sorted(s.name for s in back.services) == ["hello", "web"]
    assert zone.stats.objects_received == 4


async def test_the_limits_count_a_change_held_in_parts() -> None:
    zone = ZoneSource("edge-paris")
    stream = zone.attach()
    mib = 1024 * 1024
    two = [obj("Service", f"s{i}", {"spec": {"ports": [{"port": 80}]}}) for i in range(2)]
    big = [ReceivedObject(o.name, o.version, o.kind, o.body, 300 * mib) for o in two]
    assert zone.apply(stream, big[:1], [], partial=True) == []
    refused = zone.apply(stream, big[1:], [])
    assert refused == [
        f"Service/demo/s1: the zone would hold more than the {512 * mib} bytes of objects it may"
    ]
    assert zone.objects == 1


def stale_state(since: float, version: str = "s1") -> StaleState:
    return StaleState("site/edge-paris", version, since)


async def test_a_zone_saying_its_own_source_is_out_of_sync_makes_the_site_stale_until_it_is_back(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()

    since = time.time()
    zone.apply(stream, [], [], state=stale_state(since))
    stale = await updates.next()
    assert (stale.stale, addresses(stale)) == (True, ["10.0.0.1"])
    assert zone.stats.connected
    assert zone.reported_stale
    assert "its zone says its own view of the site is out of sync since" in zone.status().detail
    assert zone.held()["site/edge-paris"] == "s1"
    assert zone.status().last_sync == pytest.approx(since)
    dropped = await updates.next()  # stale_after (1 s) later
    assert (dropped.stale, addresses(dropped), len(dropped.services)) == (True, [], 1)

    zone.apply(stream, [], ["site/edge-paris"])  # the zone's source is in sync again
    back = await updates.next()
    assert (back.stale, addresses(back)) == (False, ["10.0.0.1"])
    assert "site/edge-paris" not in zone.held()


async def test_stale_after_counts_from_when_the_zones_own_source_went_out_of_sync(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    # The zone connects already out of sync for longer than stale_after (1 s): the view is
    # stale at once, and its endpoints are dropped without waiting another second.
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [], state=stale_state(time.time() - 5))
    first = await updates.next()
    assert (first.stale, addresses(first), len(first.services)) == (True, [], 1)
    assert "its endpoints are dropped" in zone.status().detail


async def test_a_stale_zone_that_reconnects_unchanged_stays_stale(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    stream = zone.attach()
    zone.apply(stream, [hello(), hello_slice("10.0.0.1")], [], state=stale_state(time.time()))
    assert (await updates.next()).stale
    zone.detach(stream, "its stream was cut")
    dropped = await updates.next()  # stale_after after the zone's own source went out of sync
    assert addresses(dropped) == []
    assert "; the zone is disconnected (its stream was cut)" in zone.status().detail

    again = zone.attach()
    assert zone.held()["site/edge-paris"] == "s1"  # so the zone does not send it again
    # Still stale, never in sync in between; a time ahead of the global's counts as now.
    zone.apply(
        again,
        [hello_slice("10.0.0.2", version="2")],
        [],
        state=stale_state(time.time() + 60, version="s2"),
    )
    stale = await updates.next()
    assert (stale.stale, addresses(stale)) == (True, ["10.0.0.2"])
    assert "its endpoints are dropped in 1 s" in zone.status().detail
    zone.apply(again, [], ["site/edge-paris"])
    snapshot = await updates.next()
    assert (snapshot.stale, addresses(snapshot)) == (False, ["10.0.0.2"])


async def test_a_zone_holds_at_most_max_bytes_of_objects() -> None:
    # The count and each object's size are bounded; so is their product, the zone's whole.
    zone = ZoneSource("edge-paris", max_bytes=1000)
    stream = zone.attach()
    big = [
        obj("Service", f"s{i}", {"spec": {"ports": [{"port": 80}]}}, version=str(i))
        for i in range(3)
    ]
    sized = [ReceivedObject(o.name, o.version, o.kind, o.body, 400) for o in big]
    refused = zone.apply(stream, sized, [])
    assert refused == [
        "Service/demo/s2: the zone would hold more than the 1000 bytes of objects it may"
    ]
    assert zone.objects == 2
    # A changed object counts its new size, not both; a removal makes room.
    again = ReceivedObject(sized[0].name, "9", "Service", sized[0].body, 500)
    assert zone.apply(stream, [again], []) == []
    assert zone.apply(stream, [sized[2]], ["Service/demo/s1"]) == []
    assert zone.objects == 2
