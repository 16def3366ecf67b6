"""Response bodies: shared by the streams of a view while they are in step, and bounded in
the memory they hold over every snapshot, however many views a fleet has."""

from __future__ import annotations

import gc
import tracemalloc

from kontinuum.xds import types
from kontinuum.xds.snapshot import MAX_SHARED_BYTES, SHARED_BODIES, Snapshot
from tests.support.resources import load_assignment


def big_snapshot(name: str, endpoints: int) -> Snapshot:
    """One ClusterLoadAssignment with `endpoints` endpoints (about 20 bytes each)."""
    return Snapshot.of([load_assignment(name, *range(1000, 1000 + endpoints))])


def test_streams_asking_the_same_of_one_snapshot_share_one_body() -> None:
    snapshot = big_snapshot("a", 10)
    names = (("a",), ())
    assert snapshot.delta_body(types.ENDPOINT, *names) is snapshot.delta_body(
        types.ENDPOINT, *names
    )
    wildcard = snapshot.sotw_body(types.ENDPOINT, None)
    assert snapshot.sotw_body(types.ENDPOINT, None) is wildcard
    assert snapshot.sotw_body(types.ENDPOINT, frozenset({"a"})).body == wildcard.body


def test_a_snapshot_never_serves_another_snapshots_body() -> None:
    # the same content key in two snapshots of other content: each its own bytes
    first, second = big_snapshot("a", 3), big_snapshot("a", 4)
    one = first.delta_body(types.ENDPOINT, ("a",), ())
    two = second.delta_body(types.ENDPOINT, ("a",), ())
    assert one != two
    assert first.delta_body(types.ENDPOINT, ("a",), ()) == one


def test_the_bodies_of_live_snapshots_hold_a_bounded_amount_of_memory() -> None:
    # Every view's first responses, built once its proxies connect, and the views live on:
    # what the bodies hold stays within the bound, not the sum of every view's responses.
    snapshots = [big_snapshot(f"view-{i}", 20_000) for i in range(8)]
    body_size = len(snapshots[0].delta_body(types.ENDPOINT, ("view-0",), ()))
    views = 2 * MAX_SHARED_BYTES // body_size + 1  # bodies of twice the bound
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(views):
            snapshot = snapshots[i % len(snapshots)]
            # a distinct response each time (another removed name), as distinct views have
            snapshot.delta_body(types.ENDPOINT, (f"view-{i % len(snapshots)}",), (f"gone-{i}",))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert views * body_size > 2 * MAX_SHARED_BYTES
    assert held < MAX_SHARED_BYTES * 1.1
    assert SHARED_BODIES.size <= MAX_SHARED_BYTES
