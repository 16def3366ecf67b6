"""Several config sources (the fleet files and a config cluster) cost an endpoint change what
one does: the merged routing is the very object it was, so the routes are not bound again
and a sidecar's view gets only the changed service's resources built again; a route change
in either source still reaches the views that hold it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.fleet_gen import (
    FleetShape,
    grant,
    http_route,
    route_header,
    route_path,
    service_file,
    service_path,
    write_fleet,
)
from kontinuum.control.model import Fleet, FleetConfig, SiteSnapshot
from kontinuum.discovery.aggregate import Aggregator, Debounce
from kontinuum.discovery.config_cluster import CONFIG_KINDS, ConfigView
from kontinuum.discovery.fleet_merge import FleetMerge
from kontinuum.discovery.kube_view import Changed, Listed
from kontinuum.discovery.static import FleetReader, StaticSource
from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache
from kontinuum.xds.snapshot import Snapshot
from kontinuum.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.test_aggregate import QueueSource, Recorder
from tests.unit.test_incremental_pipeline import SVC5, replace_file, sidecar

SHAPE = FleetShape(services=12, namespaces=4, clusters=3)
HUB = "kubernetes-config:hub"
KINDS = {kind.kind: kind for kind in CONFIG_KINDS}
# svc9 (ns1) sees its own namespace, ns0 (the files grant it) and ns2 (the config cluster
# does); the files route svc0 (ns0), the config cluster routes svc2 (ns2); svc5 (ns1),
# whose endpoints change, is named by no route.
VIEWER, CHANGED = 9, 5
FILES_ROUTE, HUB_ROUTE = 0, 2


def body(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def config_cluster(route_generation: int) -> ConfigView:
    """The config cluster's view, every kind listed: a route on svc2 and a grant of ns2."""
    view = ConfigView(HUB)
    objects = {
        "HTTPRoute": [body(http_route(SHAPE, HUB_ROUTE, route_generation))],
        "ReferenceGrant": [body(grant("ns2", "ns1"))],
    }
    for kind in CONFIG_KINDS:
        view.apply(Listed(kind, objects.get(kind.kind, [])), 0.0, 1000.0)
    return view


def hub_config(view: ConfigView) -> FleetConfig:
    config = view.result()
    assert config is not None
    return config


def edit_hub_route(view: ConfigView, generation: int) -> None:
    route = body(http_route(SHAPE, HUB_ROUTE, generation))
    view.apply(Changed(KINDS["HTTPRoute"], "MODIFIED", route), 1.0, 1001.0)


class TwoSources:
    """The fleet files and a config cluster, merged as the aggregator merges them."""

    def __init__(self, root: Path) -> None:
        write_fleet(root, SHAPE)
        route_path(root).write_text(http_route(SHAPE, FILES_ROUTE, generation=1))
        self.root = root
        self.reader = FleetReader(root)
        self.hub = config_cluster(route_generation=1)
        self.merge = FleetMerge()

    def fleet(self) -> Fleet:
        files, errors = self.reader.read()
        assert errors == []
        return self.merge([files.config, hub_config(self.hub)], files.snapshots)


def snapshot(mesh: Mesh, view: str) -> Snapshot:
    found = mesh.cache.snapshot(view)
    assert found is not None
    return found


def route_bytes(held: Snapshot) -> bytes:
    return b"".join(r.sotw_entry for r in held.resources(ROUTE).values())


def test_an_endpoint_change_keeps_the_merged_routing_and_every_other_resource_of_a_view(
    tmp_path: Path,
) -> None:
    sources = TwoSources(tmp_path)
    first = sources.fleet()
    mesh = Mesh(SnapshotCache())
    mesh.apply(first)
    view = mesh.resolve_view(sidecar(SHAPE, VIEWER, 0), None)
    before = snapshot(mesh, view)
    held = route_bytes(before)
    assert route_header(1).encode() in held  # both sources' routes are in the view
    assert held.count(route_header(1).encode()) == 2
    binding = mesh.routing_state.binding

    replace_file(
        service_path(tmp_path, SHAPE, CHANGED, 1), service_file(SHAPE, CHANGED, 1, generation=1)
    )
    second = sources.fleet()
    assert second.routing is first.routing  # neither source's routing changed
    assert second.grants is first.grants
    assert second.sites is first.sites
    mesh.apply(second)
    assert mesh.routing_state.binding is binding  # the routes were not bound again
    after = snapshot(mesh, view)
    assert after.changes_from(before) == {ENDPOINT: frozenset({SVC5})}
    # every other resource of the view is the one it held: not built, nor serialized, again
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        kept = {n: r for n, r in after.resources(type_url).items() if n != SVC5}
        assert kept
        assert all(r is before.resources(type_url)[n] for n, r in kept.items()), type_url


@pytest.mark.parametrize("edited", ["files", "config cluster"])
def test_a_route_change_in_either_source_makes_a_new_routing_that_reaches_the_view(
    tmp_path: Path, edited: str
) -> None:
    sources = TwoSources(tmp_path)
    first = sources.fleet()
    mesh = Mesh(SnapshotCache())
    mesh.apply(first)
    view = mesh.resolve_view(sidecar(SHAPE, VIEWER, 0), None)
    before = snapshot(mesh, view)

    if edited == "files":
        replace_file(route_path(tmp_path), http_route(SHAPE, FILES_ROUTE, generation=2))
    else:
        edit_hub_route(sources.hub, generation=2)
    second = sources.fleet()
    assert second.routing is not first.routing
    routes = {r.name: r for r in second.routing.routes}
    assert set(routes) == {"bench-svc0", "bench-svc2"}
    mesh.apply(second)
    after = snapshot(mesh, view)
    assert set(after.changes_from(before)) == {ROUTE}
    held = route_bytes(after)
    assert held.count(route_header(2).encode()) == 1
    assert held.count(route_header(1).encode()) == 1  # the other source's route as it was


def test_a_cluster_reported_by_two_sources_is_merged_again_only_when_a_part_changes() -> None:
    files, errors = FleetReader(Path(__file__).resolve().parents[2] / "examples" / "fleet").read()
    assert errors == []
    merge = FleetMerge()
    cluster = files.snapshots[0]
    extra = SiteSnapshot(cluster.cluster, stale=True)
    first = merge([files.config], [cluster, extra])
    again = merge([files.config], [cluster, extra])
    assert again.snapshots[0] is first.snapshots[0]
    assert first.snapshots[0].stale
    assert all(a is b for a, b in zip(again.snapshots, first.snapshots, strict=True))
    changed = merge([files.config], [cluster, SiteSnapshot(cluster.cluster)])
    assert changed.snapshots[0] is not first.snapshots[0]
    assert not changed.snapshots[0].stale
    assert all(a is b for a, b in zip(changed.snapshots[1:], first.snapshots[1:], strict=True))


FAST = Debounce(after=0.05, max=0.3, sync_timeout=5.0)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_aggregator_hands_over_the_same_routing_after_an_endpoint_change(
    tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    write_fleet(tmp_path, SHAPE)
    route_path(tmp_path).write_text(http_route(SHAPE, FILES_ROUTE, generation=1))
    hub = QueueSource(HUB)
    recorder = Recorder()
    files = StaticSource(tmp_path, poll_interval=0.05, watch=True)
    aggregator = Aggregator([files, hub], recorder, FAST)
    running.append(asyncio.create_task(aggregator.run()))
    hub.queue.put_nowait(hub_config(config_cluster(route_generation=1)))
    first = await recorder.until(1, timeout=10.0)
    assert {r.name for r in first.routing.routes} == {"bench-svc0", "bench-svc2"}

    replace_file(
        service_path(tmp_path, SHAPE, CHANGED, 1), service_file(SHAPE, CHANGED, 1, generation=1)
    )
    cluster = SHAPE.cluster(1)
    old = first.snapshot(cluster)
    second = first
    for _ in range(5):  # the files are read again once inotify (or polling) tells
        second = await recorder.until(len(recorder.applied) + 1, timeout=10.0)
        if second.snapshot(cluster) is not old:
            break
    assert second.snapshot(cluster) is not old
    assert second.routing is first.routing
    assert second.grants is first.grants
