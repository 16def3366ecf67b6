"""Subscription edge cases: wildcards switched off and on, unsubscribing mid-flight, limits,
and a type's backlog holding back only what references it."""

from __future__ import annotations

import pytest
from envoy.service.status.v3 import csds_pb2

from kontinuum.xds import types
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.stream import MAX_NAMES_PER_TYPE, ProtocolViolationError
from tests.support.resources import cluster, load_assignment
from tests.unit.fake_stream import (
    VIEW,
    ack,
    base_resources,
    csds_entries,
    delta_ack,
    delta_request,
    names_of,
    open_stream,
    request,
)

CDS, EDS, LDS = types.CLUSTER, types.ENDPOINT, types.LISTENER


@pytest.fixture
def cache() -> SnapshotCache:
    c = SnapshotCache()
    c.set_resources(VIEW, base_resources())
    return c


async def test_sotw_explicit_wildcard_then_empty_list_unsubscribes_everything(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS, ["*"])) as fake:
        first = await fake.recv()
        assert names_of(first) == ["a", "b"]
        await fake.send(ack(first, []))  # no longer a wildcard: subscribed to nothing
        assert names_of(await fake.recv()) == []


async def test_sotw_legacy_wildcard_stays_while_lists_stay_empty(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        first = await fake.recv()
        await fake.send(ack(first, []))
        await fake.expect_silence()
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
        assert names_of(await fake.recv()) == ["a", "b", "c"]


async def test_delta_empty_wildcard_view_is_answered() -> None:
    empty = SnapshotCache()
    empty.set_resources(VIEW, [])
    async with open_stream(empty, delta_request(LDS), delta=True) as fake:
        response = await fake.recv()
        assert list(response.resources) == []
        assert list(response.removed_resources) == []


async def test_delta_unsubscribed_mid_flight_is_not_acked_back(cache: SnapshotCache) -> None:
    async with open_stream(cache, delta_request(EDS, ["a", "b"]), delta=True) as fake:
        response = await fake.recv()
        await fake.send(delta_request(EDS, unsubscribe=["b"]))
        await fake.send(delta_ack(response))
        await fake.expect_silence()
        assert ("EDS", "b") not in csds_entries(fake)
        assert ("EDS", "a") in csds_entries(fake)


async def test_delta_wildcard_off_then_on_resends_what_only_it_covered(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, delta_request(CDS, ["*"]), delta=True) as fake:
        await fake.send(delta_ack(await fake.recv()))
        await fake.send(delta_request(CDS, unsubscribe=["*"]))
        await fake.expect_silence()
        assert not [k for k in csds_entries(fake) if k[0] == "CDS"]
        await fake.send(delta_request(CDS, ["*"]))
        assert names_of(await fake.recv()) == ["a", "b"]


async def test_delta_subscriptions_add_up_to_the_limit(cache: SnapshotCache) -> None:
    half = MAX_NAMES_PER_TYPE // 2 + 1

    async def subscribe_twice() -> None:
        first = delta_request(EDS, [f"x{i}" for i in range(half)])
        async with open_stream(cache, first, delta=True) as fake:
            await fake.send(delta_request(EDS, [f"y{i}" for i in range(half)]))
            await fake.recv()

    with pytest.raises(ProtocolViolationError, match="at most"):
        await subscribe_twice()


async def test_an_endpoint_backlog_does_not_hold_back_a_new_listener_subscription(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(EDS, ["a"])) as fake:
        await fake.recv()  # EDS in flight, never ACKed
        cache.set_resources(VIEW, base_resources(cla_a=load_assignment("a", 4242)))
        await fake.send(request(LDS))
        assert types.short_name((await fake.recv()).type_url) == "LDS"


async def test_sotw_ack_carrying_the_node_again_is_still_an_unchanged_subscription(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS, with_node=True)) as fake:
        first = await fake.recv()
        again = ack(first, [])
        again.node.id = "node-1"
        await fake.send(again)
        await fake.expect_silence()
        assert fake.stream.types[CDS].subscription_key.find(b"node-1") == -1


async def test_sotw_reconnect_with_the_current_version_downloads_nothing(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        current = (await fake.recv()).version_info
    async with open_stream(cache, request(CDS, version=current)) as fake:
        await fake.expect_silence()
        assert csds_entries(fake)["CDS", "a"].config_status == csds_pb2.SYNCED
    async with open_stream(cache, request(CDS, version="an-old-version")) as fake:
        assert names_of(await fake.recv()) == ["a", "b"]
