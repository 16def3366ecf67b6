"""Black-box tests of incremental (Delta) ADS, as Envoy's xDS protocol document describes it.

Every test drives a real `DeltaStream` through a `FakeStream`, which checks the protocol
invariants (nonces, type URLs, every resource named and versioned, no duplicates) on
every response it is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2

from kontinuum.xds import types, wire
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.snapshot import Snapshot
from tests.support.resources import cluster, http_listener, load_assignment, route_config
from tests.unit.fake_stream import (
    VIEW,
    FakeStream,
    base_resources,
    csds_entries,
    delta_ack,
    delta_nack,
    delta_request,
    names_of,
    open_stream,
)

CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE


@pytest.fixture
def cache() -> SnapshotCache:
    c = SnapshotCache()
    c.set_resources(VIEW, base_resources())
    return c


def versions(response: Any) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def short(responses: list[Any]) -> list[str]:
    return [types.short_name(r.type_url) for r in responses]


def delta_stream(cache: SnapshotCache, first: Any, **kwargs: Any) -> Any:
    return open_stream(cache, first, delta=True, **kwargs)


# -- subscriptions ---------------------------------------------------------------------------


async def test_legacy_wildcard_gets_every_resource_once(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        response = await fake.recv()
        assert names_of(response) == ["a", "b"]
        assert not response.removed_resources
        await fake.send(delta_ack(response))
        await fake.expect_silence()
        # Only what changed is sent next.
        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.2)))
        changed = await fake.recv()
        assert names_of(changed) == ["b"]
        assert changed.resources[0].version != versions(response)["b"]


async def test_explicit_wildcard(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(EDS, ["*"])) as fake:
        response = await fake.recv()
        assert names_of(response) == ["a", "b"]
        await fake.send(delta_ack(response))
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
        assert names_of(await fake.recv()) == ["c"]


async def test_subscribe_and_unsubscribe(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(EDS, ["a"])) as fake:
        response = await fake.recv()
        assert names_of(response) == ["a"]
        await fake.send(delta_ack(response))

        await fake.send(delta_request(EDS, ["b"]))
        response = await fake.recv()
        assert names_of(response) == ["b"]  # only the new subscription, not a again
        await fake.send(delta_ack(response))

        await fake.send(delta_request(EDS, unsubscribe=["a"]))
        await fake.expect_silence()  # an unsubscription is not answered
        cache.set_resources(VIEW, base_resources(cla_a=load_assignment("a", 1, 2)))
        await fake.expect_silence()  # nor is a change to what is no longer subscribed
        cache.set_resources(
            VIEW,
            base_resources(cla_a=load_assignment("a", 1, 2), cla_b=load_assignment("b", 2, 3)),
        )
        assert names_of(await fake.recv()) == ["b"]

        # Subscribing again sends the current version.
        await fake.send(delta_request(EDS, ["a"], nonce=fake.sent[-1].nonce))
        assert names_of(await fake.recv()) == ["a"]


async def test_a_deleted_resource_is_sent_in_removed_resources(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await fake.send(delta_ack(await fake.recv()))
        await fake.send(delta_request(EDS, ["a", "b"]))
        await fake.send(delta_ack(await fake.recv()))
        cache.set_resources(VIEW, base_resources(cluster_b=None, cla_b=None))
        responses = await fake.recv_all(2)
        assert {types.short_name(r.type_url): list(r.removed_resources) for r in responses} == {
            "CDS": ["b"],
            "EDS": ["b"],
        }
        assert all(not r.resources for r in responses)
        for response in responses:
            await fake.send(delta_ack(response))
        await fake.expect_silence()


async def test_a_subscribed_name_that_does_not_exist_is_answered_removed(
    cache: SnapshotCache,
) -> None:
    async with delta_stream(cache, delta_request(EDS, ["a", "x"])) as fake:
        response = await fake.recv()
        assert names_of(response) == ["a"]
        assert list(response.removed_resources) == ["x"]
        await fake.send(delta_ack(response))
        await fake.expect_silence()
        cache.set_resources(VIEW, [*base_resources(), cluster("x"), load_assignment("x", 9)])
        response = await fake.recv()
        assert names_of(response) == ["x"]
        assert not response.removed_resources


# -- reconnection with initial_resource_versions ---------------------------------------------------


async def _versions_of_a_first_connection(cache: SnapshotCache) -> dict[str, str]:
    async with delta_stream(cache, delta_request(CDS), node_id="before") as fake:
        response = await fake.recv()
        await fake.send(delta_ack(response))
    return versions(response)


async def test_reconnecting_with_current_versions_downloads_nothing(cache: SnapshotCache) -> None:
    held = await _versions_of_a_first_connection(cache)
    # A second replica (a fresh cache built from the same inputs) computes the same versions.
    replica = SnapshotCache()
    replica.set_resources(VIEW, base_resources())
    for c in (cache, replica):
        async with delta_stream(c, delta_request(CDS, initial_versions=held)) as fake:
            await fake.expect_silence(0.1)
            csds = csds_entries(fake)
            assert {name for _, name in csds} == {"a", "b"}
            assert all(e.config_status == csds_pb2.SYNCED for e in csds.values())


async def test_reconnecting_with_an_old_version_gets_only_that_resource(
    cache: SnapshotCache,
) -> None:
    held = await _versions_of_a_first_connection(cache)
    cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.2)))
    async with delta_stream(cache, delta_request(CDS, initial_versions=held)) as fake:
        response = await fake.recv()
        assert names_of(response) == ["b"]
        assert not response.removed_resources
        await fake.send(delta_ack(response))
        await fake.expect_silence()


async def test_reconnecting_with_a_resource_deleted_meanwhile_removes_it(
    cache: SnapshotCache,
) -> None:
    held = await _versions_of_a_first_connection(cache)
    cache.set_resources(VIEW, base_resources(cluster_b=None, cla_b=None))
    async with delta_stream(cache, delta_request(CDS, initial_versions=held)) as fake:
        response = await fake.recv()
        assert names_of(response) == []
        assert list(response.removed_resources) == ["b"]


async def test_explicit_subscription_with_initial_versions(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(EDS, ["a", "b"]), node_id="before") as fake:
        held = versions(await fake.recv())
    cache.set_resources(VIEW, base_resources(cla_a=load_assignment("a", 1, 2)))
    first = delta_request(EDS, ["a", "b"], initial_versions=held)
    async with delta_stream(cache, first) as fake:
        assert names_of(await fake.recv()) == ["a"]
        await fake.expect_silence()


# -- ACK, NACK and in-flight ---------------------------------------------------------------------


async def test_nack_is_recorded_and_not_resent(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await fake.send(delta_ack(await fake.recv()))
        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.2)))
        bad = await fake.recv()
        await fake.send(delta_nack(bad, "no thanks"))
        await fake.expect_silence(0.1)
        entry = csds_entries(fake)["CDS", "b"]
        assert entry.config_status == csds_pb2.ERROR
        assert entry.client_status == dump_pb2.NACKED
        assert entry.error_state.details == "no thanks"
        assert csds_entries(fake)["CDS", "a"].config_status == csds_pb2.SYNCED
        assert fake.stream.stats.nacks[CDS] == 1

        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.3)))
        fixed = await fake.recv()
        assert names_of(fixed) == ["b"]
        await fake.send(delta_ack(fixed))
        await fake.expect_silence()
        assert csds_entries(fake)["CDS", "b"].config_status == csds_pb2.SYNCED


async def test_each_rejected_resource_keeps_its_own_nack(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await fake.send(delta_ack(await fake.recv()))
        cache.set_resources(VIEW, base_resources(cluster_a=cluster("a", connect_timeout_s=0.2)))
        await fake.send(delta_nack(await fake.recv(), "a is wrong"))
        cache.set_resources(
            VIEW,
            base_resources(
                cluster_a=cluster("a", connect_timeout_s=0.2),
                cluster_b=cluster("b", connect_timeout_s=0.2),
            ),
        )
        only_b = await fake.recv()
        assert names_of(only_b) == ["b"]
        await fake.send(delta_nack(only_b, "b is wrong"))
        await fake.expect_silence(0.1)

        entries = csds_entries(fake)
        assert entries["CDS", "a"].config_status == csds_pb2.ERROR
        assert entries["CDS", "a"].error_state.details == "a is wrong"
        assert entries["CDS", "b"].config_status == csds_pb2.ERROR
        assert entries["CDS", "b"].error_state.details == "b is wrong"


async def test_a_stale_nonce_settles_nothing(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        first = await fake.recv()
        await fake.send(delta_ack(first))
        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.2)))
        second = await fake.recv()
        await fake.send(delta_nack(first, "stale"))
        await fake.send(delta_request(CDS, nonce="424242", error="random"))
        await fake.expect_silence()
        assert fake.stream.stats.nacks[CDS] == 0
        await fake.send(delta_ack(second))
        await fake.expect_silence()
        assert fake.stream.stats.acks[CDS] == 2


async def test_one_response_in_flight_per_type_changes_are_coalesced(
    cache: SnapshotCache,
) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await fake.send(delta_ack(await fake.recv()))
        resources = [*base_resources(), cluster("c"), load_assignment("c", 3)]
        cache.set_resources(VIEW, resources)
        second = await fake.recv()
        assert names_of(second) == ["c"]
        resources = [*base_resources(cluster_b=None, cla_b=None), cluster("c", http2=True)]
        resources += [load_assignment("c", 3), cluster("d"), load_assignment("d", 4)]
        cache.set_resources(VIEW, resources)
        await fake.expect_silence()
        await fake.send(delta_ack(second))
        updated = await fake.recv()
        assert names_of(updated) == ["c", "d"]
        await fake.expect_silence()  # the removal of b is the next CDS response: after the ACK
        await fake.send(delta_ack(updated))
        removed = await fake.recv()
        assert list(removed.removed_resources) == ["b"]
        await fake.send(delta_ack(removed))
        await fake.expect_silence()


# -- make-before-break ---------------------------------------------------------------------------


async def _synced_everywhere(fake: FakeStream, eds: list[str], rds: list[str]) -> None:
    await fake.send(delta_ack(await fake.recv()))  # CDS
    for type_url, names in ((EDS, eds), (LDS, []), (RDS, rds)):
        await fake.send(delta_request(type_url, names))
        response = await fake.recv()
        assert response.type_url == type_url
        await fake.send(delta_ack(response))
    await fake.expect_silence()


async def test_additions_are_sent_cds_eds_lds_rds(cache: SnapshotCache) -> None:
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await _synced_everywhere(fake, eds=["a", "n"], rds=["r", "rn"])
        cache.set_resources(
            VIEW,
            [
                *base_resources(),
                route_config("rn", "n"),
                http_listener("ln", 9090, "rn"),
                load_assignment("n", 5),
                cluster("n"),
            ],
        )
        responses = await fake.recv_all(4)
        assert short(responses) == ["CDS", "EDS", "LDS", "RDS"]
        assert [names_of(r) for r in responses] == [["n"], ["n"], ["ln"], ["rn"]]


async def test_removals_come_last(cache: SnapshotCache) -> None:
    cache.set_resources(VIEW, base_resources(route_r=route_config("r", "b")))
    async with delta_stream(cache, delta_request(CDS)) as fake:
        await _synced_everywhere(fake, eds=["a", "b"], rds=["r"])
        cache.set_resources(
            VIEW,
            base_resources(
                cluster_b=None,
                cla_b=None,
                route_r=route_config("r", "a"),
                listener_l=http_listener("l", 8081, "r"),
            ),
        )
        responses = await fake.recv_all(4)
        assert short(responses) == ["LDS", "RDS", "CDS", "EDS"]
        assert [list(r.removed_resources) for r in responses] == [[], [], ["b"], ["b"]]


# -- shared serialization and the wire format -----------------------------------------------------


async def test_streams_of_a_view_receive_identical_bytes_apart_from_the_nonce(
    cache: SnapshotCache,
) -> None:
    async with (
        delta_stream(cache, delta_request(LDS), node_id="one") as one,
        delta_stream(cache, delta_request(CDS), node_id="two") as two,
    ):
        await one.send(delta_ack(await one.recv()))
        await one.send(delta_request(CDS))
        r1, r2 = await one.recv(), await two.recv()
        assert r1.nonce != r2.nonce

        def body(fake: FakeStream, nonce: str) -> bytes:
            tail = wire.text_field(wire.DELTA_NONCE, nonce)
            assert fake.raw[-1].endswith(tail)
            return fake.raw[-1][: -len(tail)]

        assert body(one, r1.nonce) == body(two, r2.nonce)
        await one.send(delta_ack(r1))
        await two.send(delta_ack(r2))
        cache.set_resources(VIEW, base_resources(cluster_a=cluster("a", http2=True)))
        r1, r2 = await one.recv(), await two.recv()
        assert body(one, r1.nonce) == body(two, r2.nonce)


def test_delta_wire_bytes_parse_back_equal_to_what_protobuf_builds() -> None:
    big = load_assignment("big", *range(1, 3000))
    snapshot = Snapshot.of([*base_resources(), big, cluster("big")])
    for type_url, updated, removed in [
        (CDS, ("a", "b", "big"), ()),
        (EDS, ("a", "big"), ("gone", "x" * 300)),
        (RDS, (), ("r-old",)),
    ]:
        payload = snapshot.delta_body(type_url, updated, removed) + wire.text_field(
            wire.DELTA_NONCE, "7"
        )
        expected = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, nonce="7", removed_resources=list(removed)
        )
        for name in updated:
            resource = snapshot.resources(type_url)[name]
            entry = expected.resources.add(name=name, version=resource.version)
            entry.resource.Pack(resource.message)
        assert discovery_pb2.DeltaDiscoveryResponse.FromString(payload) == expected
