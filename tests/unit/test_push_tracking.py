"""Following a push from the cache to the proxies' ACKs (kontinuum.xds.push), through real
SotW and Delta streams driven by FakeStreams."""

from __future__ import annotations

from typing import Any

import pytest

from kontinuum.xds import types
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.push import Outcome, Push
from kontinuum.xds.snapshot import Snapshot
from tests.support.resources import cluster, load_assignment
from tests.unit.fake_stream import (
    VIEW,
    ack,
    base_resources,
    delta_ack,
    delta_nack,
    delta_request,
    nack,
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
