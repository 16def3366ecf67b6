"""Following a push from the cache to the proxies' ACKs (kontinuum.xds.push), through real
SotW and Delta streams driven by FakeStreams."""

from __future__ import annotations

from typing import Any

import pytest

from kontinuum.xds import types
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.push import Outcome, Push
from kontinuum.xds.snapshot import Snapshot
from kontinuum.xds.state import SyncStatus
from tests.support.resources import cluster, load_assignment
from tests.unit.fake_stream import (
    VIEW,
    ack,
    base_resources,
    delta_ack,
    delta_nack,
    delta_request,
    nack,
    names_of,
    open_stream,
    request,
)

CDS, EDS = types.CLUSTER, types.ENDPOINT


class Recorder:
    """A PushObserver that keeps what it heard."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, Outcome, float, float]] = []
        self.done: list[tuple[Push, float]] = []

    def stream_settled(
        self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
    ) -> None:
        self.settled.append((str(connection.node.id), outcome, sent, now))

    def push_done(self, push: Push, now: float) -> None:
        self.done.append((push, now))


@pytest.fixture
def cache() -> SnapshotCache:
    c = SnapshotCache()
    c.set_resources(VIEW, base_resources())
    return c


def changed_endpoints(port: int) -> list[Any]:
    return base_resources(cla_a=load_assignment("a", port))


def push_endpoints(cache: SnapshotCache, recorder: Recorder, *ports: int) -> list[Push]:
    """One push per port, each setting a's endpoints to it, in turn."""
    pushes = []
    for port in ports:
        push = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(port)), push)
        push.seal()
        pushes.append(push)
    return pushes


async def test_a_push_is_done_when_every_stream_it_changed_has_acked(cache: SnapshotCache) -> None:
    recorder = Recorder()
    async with (
        open_stream(cache, delta_request(EDS, ["a"]), delta=True, node_id="one") as one,
        open_stream(cache, delta_request(EDS, ["b"]), delta=True, node_id="other") as other,
        open_stream(cache, request(EDS, ["a"]), node_id="two") as two,
    ):
        await one.send(delta_ack(await one.recv()))
        await other.send(delta_ack(await other.recv()))
        first = await two.recv()
        await two.send(ack(first, ["a"]))
        await one.expect_silence()

        push = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2001)), push)
        push.seal()
        assert push.streams == 2  # "other" watches b, which did not change
        assert recorder.done == []
        update = await one.recv()
        await one.send(delta_ack(update))
        await one.expect_silence()
        assert [s[:2] for s in recorder.settled] == [("one", "acked")]
        assert recorder.done == []
        update = await two.recv()
        await two.send(ack(update, ["a"]))
        await two.expect_silence()
        assert sorted(s[:2] for s in recorder.settled) == [("one", "acked"), ("two", "acked")]
        ((done, at),) = recorder.done
        assert done is push
        assert at >= push.started
        assert all(sent <= now for _, _, sent, now in recorder.settled)


async def test_a_nack_or_a_stream_that_ends_settles_its_part_as_failed(
    cache: SnapshotCache,
) -> None:
    recorder = Recorder()
    async with open_stream(cache, delta_request(EDS, ["a"]), delta=True, node_id="nacker") as one:
        await one.send(delta_ack(await one.recv()))
        async with open_stream(cache, request(CDS), node_id="leaver") as two:
            await two.send(ack(await two.recv()))
            push = Push(observer=recorder)
            resources = base_resources(
                cla_a=load_assignment("a", 2002), cluster_a=cluster("a", connect_timeout_s=0.3)
            )
            cache.set_snapshot(VIEW, Snapshot.of(resources), push)
            push.seal()
            assert push.streams == 2
            await one.send(delta_nack(await one.recv()))
            await one.expect_silence()
            await two.recv()  # never ACKed: the stream ends
        assert sorted(s[:2] for s in recorder.settled) == [
            ("leaver", "gone"),
            ("nacker", "nacked"),
        ]
        assert len(recorder.done) == 1
        assert push.acked == 0


async def test_one_response_carrying_two_pushes_settles_both(cache: SnapshotCache) -> None:
    """A change that comes before the last one was sent goes out with it."""
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["a"]), node_id="slow") as fake:
        await fake.send(ack(await fake.recv(), ["a"]))
        first, second = Push(observer=recorder), Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2003)), first)
        first.seal()
        update = await fake.recv()  # carries `first`; `second` comes while it is in flight
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2004)), second)
        second.seal()
        await fake.send(ack(update, ["a"]))
        latest = await fake.recv()
        await fake.send(ack(latest, ["a"]))
        await fake.expect_silence()
        assert [p.id for p, _ in recorder.done] == [first.id, second.id]


async def test_a_push_that_changes_no_subscription_is_done_at_once(cache: SnapshotCache) -> None:
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["b"]), node_id="elsewhere") as fake:
        await fake.send(ack(await fake.recv(), ["b"]))
        push = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2005)), push)
        assert recorder.done == []  # not sealed: more views may follow
        push.seal()
        assert push.streams == 0
        assert len(recorder.done) == 1


async def test_a_rejected_update_for_sotw_is_nacked(cache: SnapshotCache) -> None:
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["a"]), node_id="sotw") as fake:
        first = await fake.recv()
        await fake.send(ack(first, ["a"]))
        push = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2006)), push)
        push.seal()
        update = await fake.recv()
        await fake.send(nack(update, ["a"], version=first.version_info))
        await fake.expect_silence()
        assert [s[:2] for s in recorder.settled] == [("sotw", "nacked")]


# -- what a push waits for, and what it does not ------------------------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_change_undone_before_it_goes_out_settles_without_borrowing_a_later_ack(
    cache: SnapshotCache, delta: bool
) -> None:
    """A→B→A while the previous response is in flight: nothing is left to send, so both
    pushes are over when that response is ACKed, and a later, unrelated change's response
    settles only its own push."""
    recorder = Recorder()
    first = delta_request(EDS, ["a"]) if delta else request(EDS, ["a"])
    async with open_stream(cache, first, delta=delta, node_id="flip") as fake:

        def acked(response: Any) -> Any:
            return delta_ack(response) if delta else ack(response, ["a"])

        await fake.send(acked(await fake.recv()))
        (in_flight,) = push_endpoints(cache, recorder, 2010)
        update = await fake.recv()  # port 2010, not yet ACKed
        there, back = push_endpoints(cache, recorder, 2011, 2010)
        assert (there.streams, back.streams) == (1, 1)
        await fake.send(acked(update))
        await fake.expect_silence()  # the client holds 2010, which is current
        assert {p.id for p, _ in recorder.done} == {in_flight.id, there.id, back.id}

        later = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2012)), later)
        later.seal()
        await fake.send(acked(await fake.recv()))
        await fake.expect_silence()
        assert recorder.done[-1][0] is later
        assert len(recorder.settled) == 4  # one each, none settled twice


async def test_a_name_unsubscribed_before_its_change_goes_out_settles_the_part(
    cache: SnapshotCache,
) -> None:
    recorder = Recorder()
    async with open_stream(cache, delta_request(EDS, ["a", "b"]), delta=True) as fake:
        await fake.send(delta_ack(await fake.recv()))
        reading = Push(observer=recorder)
        cache.set_snapshot(
            VIEW, Snapshot.of(base_resources(cla_b=load_assignment("b", 2020))), reading
        )
        reading.seal()
        update = await fake.recv()  # b's change in flight
        push = Push(observer=recorder)
        cache.set_snapshot(
            VIEW,
            Snapshot.of(
                base_resources(cla_b=load_assignment("b", 2020), cla_a=load_assignment("a", 2021))
            ),
            push,
        )
        push.seal()
        assert push.streams == 1
        await fake.send(delta_request(EDS, unsubscribe=["a"], nonce=update.nonce))
        await fake.expect_silence()
        assert [p.id for p, _ in recorder.done] == [reading.id, push.id]


async def test_a_push_joins_only_the_streams_its_change_concerns(cache: SnapshotCache) -> None:
    """Work an earlier push left due does not make a stream part of a later push that
    changed nothing it watches."""
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["a"]), node_id="a-only") as fake:
        await fake.send(ack(await fake.recv(), ["a"]))
        earlier = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2040)), earlier)
        earlier.seal()
        update = await fake.recv()  # in flight
        pending = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2041)), pending)
        pending.seal()  # a is due again, until the response in flight is ACKed
        unrelated = Push(observer=recorder)
        changed_b = base_resources(
            cla_a=load_assignment("a", 2041), cla_b=load_assignment("b", 2042)
        )
        cache.set_snapshot(VIEW, Snapshot.of(changed_b), unrelated)
        unrelated.seal()
        assert unrelated.streams == 0
        assert recorder.done[-1][0] is unrelated
        await fake.send(ack(update, ["a"]))
        await fake.send(ack(await fake.recv(), ["a"]))
        await fake.expect_silence()
        assert pending.done
        assert earlier.done


async def test_a_new_cluster_has_converged_when_its_endpoints_are_acked(
    cache: SnapshotCache,
) -> None:
    """The endpoints a client starts to fetch for a cluster of the push are part of it."""
    recorder = Recorder()
    async with open_stream(cache, request(CDS), node_id="warming") as fake:
        await fake.send(ack(await fake.recv()))
        await fake.send(request(EDS, ["a", "b"]))
        await fake.send(ack(await fake.recv(), ["a", "b"]))
        push = Push(observer=recorder)
        resources = base_resources(cluster_c=cluster("c"), cla_c=load_assignment("c", 2050))
        cache.set_snapshot(VIEW, Snapshot.of(resources), push)
        push.seal()
        clusters = await fake.recv()
        # As Envoy does, it asks for the new cluster's endpoints before ACKing the clusters.
        await fake.send(request(EDS, ["a", "b", "c"], version="x", nonce=fake.sent[-2].nonce))
        endpoints = await fake.recv()
        await fake.send(ack(clusters))
        await fake.expect_silence()
        assert recorder.done == []  # the cluster is warming: its endpoints are not ACKed
        await fake.send(ack(endpoints, ["a", "b", "c"]))
        await fake.expect_silence()
        assert [p.id for p, _ in recorder.done] == [push.id]
        assert [outcome for _, outcome, _, _ in recorder.settled] == ["acked"]


async def test_a_removal_held_for_make_before_break_is_part_of_the_push(
    cache: SnapshotCache,
) -> None:
    recorder = Recorder()
    async with open_stream(cache, request(CDS), node_id="mbb") as fake:
        await fake.send(ack(await fake.recv()))
        push = Push(observer=recorder)
        # b goes, a changes: the update keeps carrying b; a second response drops it.
        resources = base_resources(
            cluster_b=None, cla_b=None, cluster_a=cluster("a", connect_timeout_s=0.4)
        )
        cache.set_snapshot(VIEW, Snapshot.of(resources), push)
        push.seal()
        update = await fake.recv()
        await fake.send(ack(update))
        removal = await fake.recv()
        assert recorder.done == []
        await fake.send(ack(removal))
        await fake.expect_silence()
        assert len(recorder.done) == 1


# -- pushes given up on, and observers that fail --------------------------------------------


async def test_an_expired_push_hears_nothing_more(cache: SnapshotCache) -> None:
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["a"]), node_id="slow") as fake:
        await fake.send(ack(await fake.recv(), ["a"]))
        push = Push(observer=recorder)
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2060)), push)
        push.seal()
        update = await fake.recv()
        assert push.expire() == 1
        await fake.send(ack(update, ["a"]))
        await fake.expect_silence()
        assert recorder.settled == []
        assert recorder.done == []


async def test_a_stream_that_falls_far_behind_gives_up_its_oldest_push(
    cache: SnapshotCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kontinuum.xds.stream.MAX_PENDING_PUSHES", 2)
    recorder = Recorder()
    async with open_stream(cache, request(EDS, ["a"]), node_id="stuck") as fake:
        await fake.send(ack(await fake.recv(), ["a"]))
        pushes = [Push(observer=recorder) for _ in range(3)]
        for port, push in zip((2070, 2071, 2072), pushes, strict=True):
            cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(port)), push)
            push.seal()
        assert [s[1] for s in recorder.settled] == ["expired"]
        assert recorder.done[0][0] is pushes[0]


async def test_an_observer_that_fails_does_not_take_the_stream_down(cache: SnapshotCache) -> None:
    class Failing(Recorder):
        def stream_settled(
            self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
        ) -> None:
            raise RuntimeError("telemetry broke")

    async with open_stream(cache, request(EDS, ["a"]), node_id="fine") as fake:
        await fake.send(ack(await fake.recv(), ["a"]))
        push = Push(observer=Failing())
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2080)), push)
        push.seal()
        await fake.send(ack(await fake.recv(), ["a"]))
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2081)))
        assert names_of(await fake.recv()) == ["a"]  # still serving
        assert push.done


# -- how a proxy stands as a whole (kontinuum_xds_proxies_sync) -----------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_proxy_is_nacked_only_while_the_rejected_version_is_current(
    cache: SnapshotCache, delta: bool
) -> None:
    first = delta_request(EDS, ["a", "b"]) if delta else request(EDS, ["a", "b"])
    async with open_stream(cache, first, delta=delta, node_id="rejecter") as fake:
        stream = fake.stream
        initial = await fake.recv()
        await fake.send(delta_ack(initial) if delta else ack(initial, ["a", "b"]))
        assert stream.sync_status() is SyncStatus.SYNCED

        async def rejected(port: int) -> Any:
            """a's endpoints moved to `port`, and the update NACKed."""
            cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(port)))
            update = await fake.recv()
            await fake.send(delta_nack(update) if delta else nack(update, ["a", "b"]))
            await fake.expect_silence()
            return update

        await rejected(2090)
        assert stream.sync_status() is SyncStatus.NACKED
        # The rejected endpoints are replaced by a version not yet sent... then sent, ACKed.
        cache.set_snapshot(VIEW, Snapshot.of(changed_endpoints(2091)))
        update = await fake.recv()
        assert stream.sync_status() is SyncStatus.STALE
        await fake.send(delta_ack(update) if delta else ack(update, ["a", "b"]))
        await fake.expect_silence()
        assert stream.sync_status() is SyncStatus.SYNCED

        # Rejected again, then the proxy stops asking for it: nothing it holds is rejected.
        update = await rejected(2092)
        assert stream.sync_status() is SyncStatus.NACKED
        if delta:
            await fake.send(delta_request(EDS, unsubscribe=["a"]))
            await fake.expect_silence()
        else:  # SotW answers the new subscription; its ACK leaves b synced
            await fake.send(request(EDS, ["b"], version="x", nonce=update.nonce))
            await fake.send(ack(await fake.recv(), ["b"]))
            await fake.expect_silence()
        assert stream.sync_status() is SyncStatus.SYNCED


async def test_a_proxy_that_rejected_a_resource_since_removed_is_no_longer_nacked(
    cache: SnapshotCache,
) -> None:
    async with open_stream(cache, request(CDS), node_id="rejecter") as fake:
        stream = fake.stream
        initial = await fake.recv()
        await fake.send(ack(initial))
        cache.set_snapshot(
            VIEW, Snapshot.of(base_resources(cluster_c=cluster("c"), cla_c=load_assignment("c", 1)))
        )
        update = await fake.recv()
        await fake.send(nack(update, version=initial.version_info))
        await fake.expect_silence()
        assert stream.sync_status() is SyncStatus.NACKED
        cache.set_snapshot(VIEW, Snapshot.of(base_resources()))  # c is gone again
        assert stream.sync_status() is not SyncStatus.NACKED


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_change_back_to_a_version_the_proxy_rejects_is_nacked_not_acked(
    cache: SnapshotCache, delta: bool
) -> None:
    recorder = Recorder()
    first = delta_request(EDS, ["a"]) if delta else request(EDS, ["a"])
    async with open_stream(cache, first, delta=delta, node_id="picky") as fake:
        initial = await fake.recv()
        await fake.send(delta_ack(initial) if delta else ack(initial, ["a"]))
        push_endpoints(cache, recorder, 2100)
        update = await fake.recv()
        push_endpoints(cache, recorder, 2101, 2100)  # away, and back while it is in flight
        await fake.send(
            delta_nack(update) if delta else nack(update, ["a"], version=initial.version_info)
        )
        await fake.expect_silence()  # 2100 again: rejected, not sent again
        assert [outcome for _, outcome, _, _ in recorder.settled] == ["nacked"] * 3
