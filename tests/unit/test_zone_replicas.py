"""Several replicas of one zone at the global (`kontinuum.discovery.zone_replicas`): one
active publisher, whose view is the site's; standbys answered but kept aside; on the
active's end, the standby connected longest with a whole view takes over without the site
going stale, costing only what differs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from kontinuum.discovery.zone import MAX_BYTES, ReceivedObject, SupersededError, ZoneSource
from tests.unit.test_zone_source import Updates, addresses, hello, hello_slice, obj


@pytest.fixture
async def source() -> AsyncIterator[tuple[ZoneSource, Updates]]:
    zone = ZoneSource("edge-paris", stale_after=30.0, debounce=0.01)
    updates = Updates(zone)
    yield zone, updates
    await updates.close()


async def test_the_first_replica_is_active_and_a_second_one_is_a_standby(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    assert addresses(await updates.next()) == ["10.0.0.1"]

    b = zone.attach(zone.held().keys(), replica="b")
    # The standby's different view is answered, not applied; neither stream replaces the other.
    assert zone.apply(b, [hello_slice("10.0.0.2", version="2")], []) == []
    assert zone.replicas() == [("a", True), ("b", False)]
    assert zone.held()["EndpointSlice/demo/hello-1"] == "1"
    zone.apply(a, [hello_slice("10.0.0.3", version="3")], [])
    assert addresses(await updates.next()) == ["10.0.0.3"]
    assert zone.stats.connections == 2
    assert zone.stats.connected


async def test_the_standby_takes_over_without_going_stale_and_costs_what_differs(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")
    zone.apply(b, [hello_slice("10.0.0.2", version="2")], [])  # its whole view
    received = zone.stats.objects_received

    zone.detach(a, "its stream was cut")
    assert zone.replicas() == [("b", True)]
    taken = await updates.next()
    assert (taken.stale, addresses(taken)) == (False, ["10.0.0.2"])
    assert zone.stats.objects_received == received + 1  # the Service was held already
    assert zone.promotions == 1
    assert zone.stats.connected
    # From now on the promoted stream's responses are the site's.
    zone.apply(b, [hello_slice("10.0.0.4", version="4")], [])
    assert addresses(await updates.next()) == ["10.0.0.4"]


async def test_the_standby_connected_longest_takes_over(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")
    c = zone.attach(zone.held().keys(), replica="c")
    zone.apply(c, [hello_slice("10.0.0.3", version="3")], [])
    zone.apply(b, [hello_slice("10.0.0.2", version="2")], [])
    zone.detach(a, "gone")
    assert addresses(await updates.next()) == ["10.0.0.2"]
    assert zone.replicas() == [("b", True), ("c", False)]


async def test_a_newer_stream_replaces_only_its_own_replica(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, _ = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello()], [])
    b = zone.attach(zone.held().keys(), replica="b")
    b_again = zone.attach(zone.held().keys(), replica="b")
    with pytest.raises(SupersededError):
        zone.apply(b, [], [])
    zone.detach(b, "replaced")
    assert zone.replicas() == [("a", True), ("b", False)]
    a_again = zone.attach(zone.held().keys(), replica="a")  # the active redialed: still active
    assert zone.replicas() == [("b", False), ("a", True)]
    assert zone.apply(a_again, [], []) == []
    assert zone.apply(b_again, [], []) == []
    assert zone.promotions == 0


async def test_without_a_whole_standby_the_site_goes_stale_until_one_is(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")  # connected, no response yet
    zone.detach(a, "gone")
    stale = await updates.next()
    assert (stale.stale, addresses(stale)) == (True, ["10.0.0.1"])
    assert zone.stats.connected  # b still is

    zone.apply(b, [hello_slice("10.0.0.2", version="2")], [], partial=True)
    assert zone.replicas() == [("b", False)]  # not whole yet
    zone.apply(b, [], [])
    back = await updates.next()
    assert (back.stale, addresses(back)) == (False, ["10.0.0.2"])
    assert zone.replicas() == [("b", True)]
    assert zone.promotions == 1


async def test_a_standby_is_checked_as_the_active_is(source: tuple[ZoneSource, Updates]) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello()], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")
    refused = zone.apply(b, [hello(port="eighty")], [])
    assert refused == [
        "Service/demo/hello: Service demo/hello: spec.ports[0].port: must be an integer, got string"
    ]
    zone.detach(a, "gone")
    assert zone.held()["Service/demo/hello"] == "1"  # its last good version, as for the active


async def test_a_change_the_standby_sends_in_parts_goes_on_once_it_is_active(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")
    zone.apply(b, [], [])  # its whole view: the same as a's
    zone.apply(b, [hello_slice("10.0.0.2", version="2")], [], partial=True)  # half a change
    zone.detach(a, "gone")
    assert zone.replicas() == [("b", True)]
    assert zone.held()["EndpointSlice/demo/hello-1"] == "1"  # not half a change
    zone.apply(b, [], [])  # its last part
    assert addresses(await updates.next()) == ["10.0.0.2"]
    assert zone.held()["EndpointSlice/demo/hello-1"] == "2"


async def test_a_stream_attached_after_a_change_starts_from_what_it_was_told(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [hello(), hello_slice("10.0.0.1")], [])
    await updates.next()
    # b is told what is held, and attaches at its first response, after a change of a.
    told, declared = zone.holding(), list(zone.held())
    assert zone.holding() is told  # streams told of the same objects share one copy
    zone.apply(a, [hello_slice("10.0.0.3", version="3")], [])
    assert addresses(await updates.next()) == ["10.0.0.3"]
    zone.detach(a, "gone")
    assert (await updates.next()).stale
    b = zone.attach(declared, replica="b", since=told)
    assert zone.replicas() == [("b", False)]  # a standby from what it was told
    zone.apply(b, [], [])  # b holds what it was told: nothing to send
    back = await updates.next()
    assert (back.stale, addresses(back)) == (False, ["10.0.0.1"])
    assert zone.held()["EndpointSlice/demo/hello-1"] == "1"
    assert zone.replicas() == [("b", True)]


def sized(name: str, megabytes: int, version: str = "1") -> ReceivedObject:
    """A Service said to be `megabytes` MiB of JSON (its size as the stream measured it)."""
    body = {"spec": {"ports": [{"name": "http", "port": 80}]}}
    return replace(obj("Service", name, body, version), size=megabytes * 1024 * 1024)


async def test_the_standbys_objects_count_with_the_site_s_against_its_bytes(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    assert MAX_BYTES == 512 * 1024 * 1024
    a = zone.attach(replica="a")
    zone.apply(a, [sized("shared", 300)], [])
    await updates.next()
    b = zone.attach(zone.held().keys(), replica="b")
    c = zone.attach(zone.held().keys(), replica="c")
    # What a standby shares with the site's view costs nothing more, whatever its version
    # arrived as; what it holds of its own counts with the site's and the other standbys'.
    assert zone.apply(b, [sized("shared", 300), sized("b-own", 150)], []) == []
    refused = zone.apply(c, [sized("shared", 300), sized("c-own", 150)], [])
    assert refused == [
        f"Service/demo/c-own: the zone's views would hold more than the {MAX_BYTES} bytes of "
        "objects it may, its standby replicas' with its active one's"
    ]
    assert zone.apply(c, [sized("c-own", 50)], []) == []
    # b's object, sent by c too, is c's own while the site's view does not hold it ...
    assert len(zone.apply(c, [sized("b-own", 150)], [])) == 1
    # ... and shared once it does.
    zone.apply(a, [sized("b-own", 150)], [])
    assert zone.apply(c, [sized("b-own", 150)], []) == []


async def test_the_active_s_new_versions_end_the_standby_holding_most_of_the_old_ones(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    names = ["a", "b", "c", "d"]
    active = zone.attach(replica="active")
    zone.apply(active, [sized(n, 50) for n in names], [])  # 200 MiB
    await updates.next()
    ended: list[tuple[str, str]] = []
    for generation in range(2, 8):
        # A standby connects (it shares the current view), then the active sends new
        # versions of everything: the standbys keep the old ones.
        replica = f"standby-{generation}"
        zone.attach(
            zone.held().keys(), replica=replica, ended=lambda why, r=replica: ended.append((r, why))
        )
        assert zone.apply(active, [sized(n, 50, str(generation)) for n in names], []) == []
        assert zone.held() == dict.fromkeys((f"Service/demo/{n}" for n in names), str(generation))
        assert zone.bytes_held <= MAX_BYTES
    # Each time two standbys held an old generation each, one was ended (of two holding as
    # much, the one connected longest), to redial from the site's view.
    assert [replica for replica, _ in ended] == [f"standby-{g}" for g in range(2, 7)]
    assert "standby replica's view, the one holding the most" in ended[0][1]
    assert zone.replicas() == [("active", True), ("standby-7", False)]
    assert zone.bytes_held == 400 * 1024 * 1024  # the site's view and one old generation


async def test_a_change_in_progress_counts_with_the_standbys_views(
    source: tuple[ZoneSource, Updates],
) -> None:
    zone, updates = source
    a = zone.attach(replica="a")
    zone.apply(a, [sized("base", 300)], [])
    await updates.next()
    ended: list[str] = []
    b = zone.attach(zone.held().keys(), replica="b", ended=ended.append)
    assert zone.apply(b, [sized("b-own", 150)], []) == []
    # The active's change, in parts, is not applied yet but is held: the standby holding
    # the most besides the site's view is ended, not the active refused.
    assert zone.apply(a, [sized("more", 100)], [], partial=True) == []
    assert len(ended) == 1
    assert zone.replicas() == [("a", True)]
    with pytest.raises(SupersededError):
        zone.apply(b, [], [])
    # A standby's object counts with the change in progress too.
    c = zone.attach(zone.held().keys(), replica="c")
    refused = zone.apply(c, [sized("c-own", 150)], [])
    assert refused == [
        f"Service/demo/c-own: the zone's views would hold more than the {MAX_BYTES} bytes of "
        "objects it may, its standby replicas' with its active one's"
    ]
    zone.apply(a, [], [])  # the change's last part
    assert zone.held().keys() == {"Service/demo/base", "Service/demo/more"}
    assert zone.bytes_held <= MAX_BYTES
