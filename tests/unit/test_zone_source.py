"""The source of a zone's site at the global (`kontinuum.discovery.zone`): what a stream
hands it becomes the site's snapshot, read as the fleet files are; an invalid object is
refused alone; a disconnected zone's view stays, stale, then loses its endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kontinuum.control.model import SiteSnapshot, ZoneAccess
from kontinuum.discovery.source import Health, SourceUpdate
from kontinuum.discovery.zone import ReceivedObject, SupersededError, ZoneSource


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
    # once whole, a partial response applies as it comes: it is a change like any other
    zone.apply(stream, [hello_slice("10.0.0.2", version="2")], [], partial=True)
    assert addresses(await updates.next()) == ["10.0.0.2"]
