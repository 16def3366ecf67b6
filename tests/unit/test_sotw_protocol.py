"""Black-box tests of State-of-the-World ADS, as Envoy's xDS protocol document describes it.

Every test drives a real `SotwStream` through a `FakeStream`, which checks the protocol
invariants (nonces, type URLs, versions, no duplicates) on every response it is sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import any_pb2
from hypothesis import given
from hypothesis import strategies as st

from kontinuum.xds import types, wire
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.resource import Resource
from kontinuum.xds.snapshot import InconsistentSnapshotError, Snapshot, combined_version
from tests.support.resources import (
    api_listener,
    cluster,
    http_listener,
    load_assignment,
    route_config,
)
from tests.unit.fake_stream import (
    VIEW,
    FakeStream,
    ack,
    base_resources,
    csds_entries,
    nack,
    names_of,
    open_stream,
    request,
)

CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE


@pytest.fixture
def cache() -> SnapshotCache:
    c = SnapshotCache()
    c.set_resources(VIEW, base_resources())
    return c


def short(responses: list[Any]) -> list[str]:
    return [types.short_name(r.type_url) for r in responses]


# -- subscriptions ---------------------------------------------------------------------------


async def test_legacy_wildcard_empty_first_cds_request_gets_every_cluster(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS, with_node=True)) as fake:
        response = await fake.recv()
        assert response.type_url == CDS
        assert names_of(response) == ["a", "b"]
        await fake.send(ack(response))
        await fake.expect_silence()
        # An empty ACK keeps the legacy wildcard: a new cluster is pushed.
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 1)])
        assert names_of(await fake.recv()) == ["a", "b", "c"]


async def test_legacy_wildcard_lds(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(LDS)) as fake:
        assert names_of(await fake.recv()) == ["l"]


async def test_explicit_wildcard(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS, ["*"])) as fake:
        assert names_of(await fake.recv()) == ["a", "b"]
        # `*` works for types without a legacy wildcard too.
        await fake.send(request(EDS, ["*"]))
        assert names_of(await fake.recv()) == ["a", "b"]


async def test_nothing_is_sent_before_the_view_has_a_snapshot_then_everything() -> None:
    """An empty answer would wipe a reconnecting proxy's configuration before the server
    has loaded its view; once the view exists, even empty, the client is answered (an
    Envoy must not wait out its initial fetch timeout on a view with no clusters)."""
    cache = SnapshotCache()
    async with open_stream(cache, request(CDS)) as fake:
        await fake.send(request(EDS, ["a"]))
        await fake.expect_silence()
        cache.set_resources(VIEW, [])
        response = await fake.recv()
        assert response.type_url == CDS
        assert names_of(response) == []
        assert response.version_info
        await fake.send(ack(response))
        await fake.expect_silence()  # EDS "a" does not exist: nothing to say yet
        cache.set_resources(VIEW, base_resources())
        responses = await fake.recv_all(2)
        assert [(short([r]), names_of(r)) for r in responses] == [
            (["CDS"], ["a", "b"]),
            (["EDS"], ["a"]),
        ]


async def test_named_subscription_only_gets_named(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS, ["b"])) as fake:
        assert names_of(await fake.recv()) == ["b"]


async def test_eds_name_that_does_not_exist_yet_is_sent_when_it_appears(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(EDS, ["x"])) as fake:
        await fake.expect_silence()
        cache.set_resources(VIEW, [*base_resources(), cluster("x"), load_assignment("x", 7)])
        response = await fake.recv()
        assert names_of(response) == ["x"]


async def test_rds_name_that_does_not_exist_yet_is_sent_when_it_appears(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(RDS, ["r", "later"])) as fake:
        first = await fake.recv()
        assert names_of(first) == ["r"]
        await fake.send(ack(first, ["r", "later"]))
        await fake.expect_silence()
        cache.set_resources(VIEW, [*base_resources(), route_config("later", "b")])
        assert names_of(await fake.recv()) == ["later", "r"]


async def test_missing_cluster_name_is_answered_by_its_absence(cache: SnapshotCache) -> None:
    """For LDS/CDS absence from a response is how SotW says `does not exist`."""
    async with open_stream(cache, request(CDS, ["x"])) as fake:
        response = await fake.recv()
        assert names_of(response) == []
        await fake.send(ack(response, ["x"]))
        cache.set_resources(VIEW, [*base_resources(), cluster("x"), load_assignment("x", 7)])
        assert names_of(await fake.recv()) == ["x"]


async def test_eds_and_rds_responses_carry_every_subscribed_resource(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(EDS, ["a", "b"])) as fake:
        response = await fake.recv()
        assert names_of(response) == ["a", "b"]
        await fake.send(ack(response, ["a", "b"]))
        cache.set_resources(VIEW, base_resources(cla_b=load_assignment("b", 2002)))
        response = await fake.recv()
        assert names_of(response) == ["a", "b"]  # b changed; a is carried anyway
        await fake.send(ack(response, ["a", "b"]))

        await fake.send(request(RDS, ["r", "r2"]))
        response = await fake.recv()
        assert names_of(response) == ["r"]
        await fake.send(ack(response, ["r", "r2"]))
        extra = [cluster("c"), load_assignment("c", 3), route_config("r2", "c")]
        cache.set_resources(VIEW, [*base_resources(cla_b=load_assignment("b", 2002)), *extra])
        # Only RDS changed for this client (c is not subscribed in EDS).
        response = await fake.recv()
        assert response.type_url == RDS
        assert names_of(response) == ["r", "r2"]
        await fake.expect_silence()


async def test_cds_is_full_state_a_removed_cluster_disappears(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        response = await fake.recv()
        await fake.send(ack(response))
        cache.set_resources(VIEW, base_resources(cluster_b=None, cla_b=None))
        response = await fake.recv()
        assert response.type_url == CDS
        assert names_of(response) == ["a"]
        await fake.send(ack(response))
        await fake.expect_silence()


async def test_lds_is_full_state(cache: SnapshotCache) -> None:
    extra = [http_listener("l2", 8081, "r")]
    cache.set_resources(VIEW, [*base_resources(), *extra])
    async with open_stream(cache, request(LDS)) as fake:
        response = await fake.recv()
        assert names_of(response) == ["l", "l2"]
        await fake.send(ack(response))
        cache.set_resources(VIEW, base_resources())
        assert names_of(await fake.recv()) == ["l"]


async def test_unsubscribing_everything_sends_an_empty_response(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(EDS, ["a"])) as fake:
        response = await fake.recv()
        await fake.send(ack(response, []))
        response = await fake.recv()
        assert response.type_url == EDS
        assert names_of(response) == []


# -- ACK, NACK and nonces ------------------------------------------------------------------------


async def test_change_after_ack_goes_only_to_streams_subscribed_to_it(
    cache: SnapshotCache,
) -> None:
    async with (
        open_stream(cache, request(EDS, ["a"]), node_id="sub-a") as sub_a,
        open_stream(cache, request(EDS, ["b"]), node_id="sub-b") as sub_b,
        open_stream(cache, request(EDS, ["b"]), view="other", node_id="other") as other,
    ):
        await sub_a.send(ack(await sub_a.recv(), ["a"]))
        await sub_b.send(ack(await sub_b.recv(), ["b"]))
        await other.expect_silence()  # nothing in that view

        cache.set_resources(VIEW, base_resources(cla_b=load_assignment("b", 2002)))
        response = await sub_b.recv()
        assert names_of(response) == ["b"]
        assert response.version_info != sub_b.sent[0].version_info
        await sub_a.expect_silence()
        await other.expect_silence()


async def test_nack_is_recorded_and_not_answered_by_a_resend(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        good = await fake.recv()
        await fake.send(ack(good))
        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.2)))
        bad = await fake.recv()
        await fake.send(nack(bad, version=good.version_info, message="b is wrong"))
        await fake.expect_silence(0.1)

        # Recorded and surfaced (CSDS), and counted.
        entry = csds_entries(fake)["CDS", "b"]
        assert entry.config_status == csds_pb2.ERROR
        assert entry.client_status == dump_pb2.NACKED
        assert entry.error_state.details == "b is wrong"
        # a was carried unchanged and the client holds it at that version: not rejected.
        assert csds_entries(fake)["CDS", "a"].config_status == csds_pb2.SYNCED
        assert fake.stream.stats.nacks[CDS] == 1

        # A client that re-requests after its NACK (as Envoy does) gets no resend either.
        await fake.send(request(CDS, version=good.version_info, nonce=bad.nonce))
        await fake.expect_silence(0.1)

        # The next different version is sent, and its ACK clears the NACK.
        cache.set_resources(VIEW, base_resources(cluster_b=cluster("b", connect_timeout_s=0.3)))
        fixed = await fake.recv()
        assert fixed.version_info not in (good.version_info, bad.version_info)
        await fake.send(ack(fixed))
        await fake.expect_silence()
        entry = csds_entries(fake)["CDS", "b"]
        assert entry.config_status == csds_pb2.SYNCED
        assert not entry.error_state.details


async def test_a_stale_nonce_is_ignored(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        first = await fake.recv()
        await fake.send(ack(first))
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
        second = await fake.recv()

        # Requests carrying the older nonce (a NACK even, and a different subscription)
        # were sent before the client saw `second`: they change nothing.
        await fake.send(request(CDS, ["a"], version=first.version_info, nonce=first.nonce))
        await fake.send(nack(first, message="stale"))
        # A nonce this stream never sent is ignored the same way.
        await fake.send(request(CDS, ["a"], nonce="999999"))
        await fake.expect_silence()
        assert fake.stream.stats.nacks[CDS] == 0
        assert all(e.config_status != csds_pb2.ERROR for e in csds_entries(fake).values())

        # `second` is still the response in flight: its ACK is accepted, and the
        # subscription is still the wildcard (an empty ACK would otherwise change it).
        await fake.send(ack(second))
        await fake.expect_silence()
        assert fake.stream.stats.acks[CDS] == 2
        entries = csds_entries(fake)
        assert sorted(entries) == [("CDS", "a"), ("CDS", "b"), ("CDS", "c")]
        assert all(e.config_status == csds_pb2.SYNCED for e in entries.values())


async def test_a_new_type_is_answered_while_earlier_responses_are_unacked(
    cache: SnapshotCache,
) -> None:
    """Envoy requests EDS before it ACKs CDS, and RDS before it ACKs LDS."""
    async with open_stream(cache, request(CDS)) as fake:
        assert (await fake.recv()).type_url == CDS
        await fake.send(request(EDS, ["a", "b"]))
        assert names_of(await fake.recv()) == ["a", "b"]
        await fake.send(request(LDS))
        assert names_of(await fake.recv()) == ["l"]
        await fake.send(request(RDS, ["r"]))
        assert names_of(await fake.recv()) == ["r"]
        await fake.expect_silence()
        assert sum(fake.stream.stats.acks.values()) == 0


async def test_one_response_in_flight_per_type_changes_are_coalesced(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        await fake.send(ack(await fake.recv()))
        resources = base_resources()
        resources += [cluster("c"), load_assignment("c", 3)]
        cache.set_resources(VIEW, resources)
        second = await fake.recv()
        assert names_of(second) == ["a", "b", "c"]

        for name in ("d", "e"):  # two more changes before the ACK: nothing is sent
            resources += [cluster(name), load_assignment(name, 4)]
            cache.set_resources(VIEW, resources)
            await fake.expect_silence()

        await fake.send(ack(second))
        latest = await fake.recv()
        assert names_of(latest) == ["a", "b", "c", "d", "e"]
        await fake.send(ack(latest))
        await fake.expect_silence()
        assert len(fake.sent) == 3


async def test_a_change_back_to_what_the_client_has_is_not_sent(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
        first = await fake.recv()
        await fake.send(ack(first))
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
        second = await fake.recv()
        cache.set_resources(VIEW, base_resources())  # back to `first`, before the ACK
        await fake.send(ack(second))
        third = await fake.recv()
        assert third.version_info == first.version_info  # content is the version
        await fake.send(ack(third))
        cache.set_resources(VIEW, base_resources())
        await fake.expect_silence()


# -- make-before-break ---------------------------------------------------------------------------


async def _synced_everywhere(fake: FakeStream, eds: list[str], rds: list[str]) -> None:
    """Subscribe to all four types and ACK every response."""
    subscriptions = {CDS: [], EDS: eds, LDS: [], RDS: rds}
    for type_url, names in subscriptions.items():
        if type_url != CDS:
            await fake.send(request(type_url, names))
        response = await fake.recv()
        assert response.type_url == type_url
        await fake.send(ack(response, names))
    await fake.expect_silence()


async def test_additions_are_sent_cds_eds_lds_rds(cache: SnapshotCache) -> None:
    async with open_stream(cache, request(CDS)) as fake:
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
        assert [names_of(r) for r in responses] == [
            ["a", "b", "n"],
            ["a", "n"],
            ["l", "ln"],
            ["r", "rn"],
        ]
        await fake.expect_silence()


async def test_removals_are_sent_after_the_updates_that_stop_using_them(
    cache: SnapshotCache,
) -> None:
    cache.set_resources(VIEW, base_resources(route_r=route_config("r", "b")))
    async with open_stream(cache, request(CDS)) as fake:
        await _synced_everywhere(fake, eds=["a", "b"], rds=["r"])
        # One change: r now routes to a, l moves port, and cluster b goes away.
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
        assert short(responses) == ["EDS", "LDS", "RDS", "CDS"]
        assert names_of(responses[-1]) == ["a"]
        await fake.expect_silence()


async def test_a_removal_waits_for_an_unacked_route_update(cache: SnapshotCache) -> None:
    cache.set_resources(VIEW, base_resources(route_r=route_config("r", "b")))
    async with open_stream(cache, request(CDS)) as fake:
        await _synced_everywhere(fake, eds=["a", "b"], rds=["r"])
        cache.set_resources(VIEW, base_resources(route_r=route_config("r", "b", domains=("x",))))
        in_flight = await fake.recv()
        assert in_flight.type_url == RDS
        # While that RDS response is un-ACKed, r moves to a and b is removed.
        cache.set_resources(VIEW, base_resources(cluster_b=None))
        await fake.expect_silence()  # CDS must not drop b before the client has the new r
        await fake.send(ack(in_flight, ["r"]))
        responses = await fake.recv_all(2)
        assert short(responses) == ["RDS", "CDS"]
        assert names_of(responses[1]) == ["a"]


async def test_a_route_to_a_new_cluster_waits_for_an_unacked_cds(cache: SnapshotCache) -> None:
    """Push order holds across pushes: a later type never overtakes a blocked earlier one."""
    async with open_stream(cache, request(CDS)) as fake:
        await _synced_everywhere(fake, eds=["a"], rds=["r"])
        cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
        cds = await fake.recv()  # not ACKed yet
        # Cluster n and a route to it arrive while that CDS response is un-ACKed.
        resources = [*base_resources(route_r=route_config("r", "n")), cluster("c")]
        resources += [load_assignment("c", 3), cluster("n"), load_assignment("n", 5)]
        cache.set_resources(VIEW, resources)
        # Make-before-break: the route must not name n before the client was sent n.
        await fake.expect_silence()
        await fake.send(ack(cds))
        responses = await fake.recv_all(2)
        assert short(responses) == ["CDS", "RDS"]
        assert "n" in names_of(responses[0])


# -- shared serialization and the cache ----------------------------------------------------------


def _body(payload: bytes, nonce: str) -> bytes:
    tail = wire.text_field(wire.RESPONSE_NONCE, nonce)
    assert payload.endswith(tail)
    return payload[: -len(tail)]


async def test_streams_of_a_view_receive_identical_bytes_apart_from_the_nonce(
    cache: SnapshotCache,
) -> None:
    async with (
        open_stream(cache, request(LDS), node_id="one") as one,
        open_stream(cache, request(EDS, ["b", "a"]), node_id="two") as two,
    ):
        await one.recv()  # so that the two streams' nonces differ
        await one.send(request(EDS, ["a", "b"]))
        r1, r2 = await one.recv(), await two.recv()
        assert r1.nonce != r2.nonce
        assert _body(one.raw[-1], r1.nonce) == _body(two.raw[-1], r2.nonce)

        await one.send(ack(r1, ["a", "b"]))
        await two.send(ack(r2, ["b", "a"]))
        cache.set_resources(VIEW, base_resources(cla_a=load_assignment("a", 1, 2)))
        r1, r2 = await one.recv(), await two.recv()
        assert _body(one.raw[-1], r1.nonce) == _body(two.raw[-1], r2.nonce)
        assert r1.version_info == r2.version_info


async def test_an_inconsistent_snapshot_is_refused_and_the_old_one_kept(
    cache: SnapshotCache,
) -> None:
    old = cache.snapshot(VIEW)
    async with open_stream(cache, request(CDS)) as fake:
        await fake.send(ack(await fake.recv()))
        broken_sets = [
            [*base_resources(), cluster("orphan")],  # EDS cluster without endpoints
            base_resources(route_r=None),  # listener l names a missing route
            [*base_resources(), api_listener("api", "nowhere")],
            [*base_resources(), cluster("a")],  # duplicate name
        ]
        for broken in broken_sets:
            with pytest.raises(InconsistentSnapshotError):
                cache.set_resources(VIEW, broken)
            assert cache.snapshot(VIEW) is old
        await fake.expect_silence()

    # Clusters that take endpoints from elsewhere need no ClusterLoadAssignment.
    static = cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC)
    cache.set_resources(VIEW, [*base_resources(), static])


def test_eds_service_name_is_what_must_exist() -> None:
    named = cluster("a")
    named.eds_cluster_config.service_name = "a-endpoints"
    with pytest.raises(InconsistentSnapshotError, match="a-endpoints"):
        Snapshot.of([named, load_assignment("a", 1)])
    Snapshot.of([named, load_assignment("a-endpoints", 1)])


# -- the hand-assembled wire format ---------------------------------------------------------------


def _protobuf_response(snapshot: Snapshot, type_url: str, names: list[str], nonce: str) -> Any:
    resources = snapshot.resources(type_url)
    response = discovery_pb2.DiscoveryResponse(type_url=type_url, nonce=nonce)
    for name in sorted(names):
        response.resources.add().Pack(resources[name].message)
    return response


def test_sotw_wire_bytes_parse_back_equal_to_what_protobuf_builds() -> None:
    big = load_assignment("big", *range(1, 3000))  # lengths that need 3-byte varints
    snapshot = Snapshot.of([*base_resources(), big, cluster("big")])
    for type_url, names in [(CDS, None), (EDS, ["a", "big"]), (LDS, None), (RDS, ["r"])]:
        body = snapshot.sotw_body(type_url, None if names is None else frozenset(names))
        payload = body.body + wire.text_field(wire.RESPONSE_NONCE, "42")
        expected = _protobuf_response(
            snapshot, type_url, names or list(snapshot.resources(type_url)), "42"
        )
        expected.version_info = combined_version(body.carried)
        parsed = discovery_pb2.DiscoveryResponse.FromString(payload)
        assert parsed == expected
        # Fields are assembled in field-number order: protobuf's own bytes, exactly.
        assert payload == expected.SerializeToString(deterministic=True)


def test_resource_any_is_the_packed_message() -> None:
    resource = Resource.of(cluster("a"))
    parsed = discovery_pb2.DiscoveryResponse.FromString(resource.sotw_entry)
    (packed,) = parsed.resources
    assert packed.type_url == CDS
    assert cluster_pb2.Cluster.FromString(packed.value) == cluster("a")


@given(st.integers(min_value=0, max_value=2**35), st.binary(max_size=300))
def test_varint_and_field_framing_parse_back(value: int, payload: bytes) -> None:
    any_bytes = wire.field(wire.ANY_VALUE, payload)
    assert any_pb2.Any.FromString(any_bytes).value == payload
    # A varint is 7 bits per byte, continuation bit on all but the last.
    encoded = wire.varint(value)
    assert all(b & 0x80 for b in encoded[:-1])
    assert not encoded[-1] & 0x80
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(encoded)) == value
    assert len(encoded) == max(1, -(-value.bit_length() // 7))
