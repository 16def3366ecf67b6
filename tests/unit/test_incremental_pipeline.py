"""A change costs what it touches: files re-read, services merged, pieces built, views told.

The oracle (`test_incremental_oracle`) proves the incremental result equals a translation
from scratch; these tests prove it is incremental: what a change does not touch is neither
read, nor merged, nor built, nor sent again.
"""

from __future__ import annotations

import os
from pathlib import Path

from envoy.config.core.v3 import base_pb2

from benchmarks.fleet_gen import (
    FleetShape,
    http_route,
    route_path,
    service_file,
    service_path,
    write_fleet,
)
from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.mcs import build_plane
from kontinuum.control.plane_builder import PlaneBuilder
from kontinuum.discovery.static import FleetReader
from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache
from kontinuum.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

SHAPE = FleetShape(services=12, namespaces=4, clusters=3)
SVC5 = "outbound|80||svc5.ns1.svc.clusterset.local"  # svc5 is in ns1 (fleet_gen)


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def sidecar(shape: FleetShape, service: int, cluster: int) -> base_pb2.Node:
    node = base_pb2.Node(id=f"{service}.{cluster}", cluster=shape.cluster(cluster))
    node.metadata.update(
        {
            "kontinuum.io/namespace": shape.namespace(service),
            "kontinuum.io/service": shape.service(service),
            "kontinuum.io/inbound-port": "8080",
        }
    )
    return node


def test_a_reread_parses_only_the_changed_file_and_keeps_every_other_object(
    tmp_path: Path,
) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    first, errors = reader.read()
    assert errors == []
    files = reader.parsed
    assert files == 2 + SHAPE.services * SHAPE.clusters

    again, _ = reader.read()
    assert reader.parsed == files  # nothing changed: nothing parsed
    assert again.snapshots == first.snapshots
    assert all(a is b for a, b in zip(again.snapshots, first.snapshots, strict=True))

    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    changed, _ = reader.read()
    assert reader.parsed == files + 1
    assert changed.config == first.config
    assert (changed.sites, changed.routing) == (first.sites, first.routing)
    assert changed.routing is first.routing  # the fleet-wide files were not read again
    # only cluster c1's snapshot is new, and in it every other service is the same object
    new = [a is not b for a, b in zip(changed.snapshots, first.snapshots, strict=True)]
    assert new == [False, True, False]
    before, after = first.snapshots[1], changed.snapshots[1]
    assert sum(a is not b for a, b in zip(before.endpoints, after.endpoints, strict=True)) == 2
    assert before.services == after.services  # its file was read again: equal, not the same
    assert [a is b for a, b in zip(before.services, after.services, strict=True)].count(False) == 1


def test_a_reread_after_an_inotify_batch_looks_only_at_the_files_it_named(
    tmp_path: Path,
) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    first, _ = reader.read()
    named, unnamed = service_path(tmp_path, SHAPE, 5, 1), service_path(tmp_path, SHAPE, 6, 1)
    replace_file(named, service_file(SHAPE, 5, 1, generation=1))
    replace_file(unnamed, service_file(SHAPE, 6, 1, generation=1))
    # inotify names every file that changes; here it is told of one, and the other file,
    # known and not named, is not even looked at (no stat), so its change is not seen yet.
    temporary = named.with_name(f".{named.name}.tmp")  # an editor's, renamed over it
    changed, _ = reader.read({str(named), str(temporary)})
    assert changed.snapshots[1] != first.snapshots[1]
    assert reader.parsed == 2 + SHAPE.services * SHAPE.clusters + 1
    # A batch that names a directory (a ConfigMap swapping its `..data` link, a new
    # cluster) looks at every file again; so does the periodic rescan (None).
    (tmp_path / "..data").mkdir()
    reader.read({str(tmp_path / "..data")})
    assert reader.parsed == 2 + SHAPE.services * SHAPE.clusters + 2


def test_the_plane_merges_again_only_the_changed_service(tmp_path: Path) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    builder = PlaneBuilder()
    fleet, _ = reader.read()
    assert builder.update(fleet).everything
    before = builder.plane
    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    fleet, _ = reader.read()
    change = builder.update(fleet)
    assert change.keys == {(SHAPE.namespace(5), SHAPE.service(5))}
    assert not change.everything
    assert builder.plane == build_plane(fleet)
    untouched = [s for s in before.services if s.name != SHAPE.service(5)]
    assert all(s in builder.plane.services for s in untouched)
    kept = {id(s) for s in builder.plane.services}
    assert all(id(s) in kept for s in untouched)  # the very objects, not copies


def test_an_endpoint_change_updates_only_the_views_that_can_see_it(tmp_path: Path) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    mesh = Mesh(SnapshotCache())
    mesh.apply(reader.read()[0])
    views = {
        (s, c): mesh.resolve_view(sidecar(SHAPE, s, c), None)
        for s in range(SHAPE.services)
        for c in range(SHAPE.clusters)
    }
    before = {name: mesh.cache.snapshot(name) for name in views.values()}
    # svc5 is in ns1; ns1 grants ns2 (the ring of fleet_gen): their sidecars see it
    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    mesh.apply(reader.read()[0])

    seeing = {SHAPE.namespace(5), SHAPE.namespace(6)}
    expected = {n for (s, _), n in views.items() if SHAPE.namespace(s) in seeing}
    updated = {n for n in views.values() if mesh.cache.snapshot(n) is not before[n]}
    assert updated == expected
    assert mesh.views_updated == len(expected)
    # what changed in those views is the one assignment, in every cluster's view of it
    for name in expected:
        snapshot, old = mesh.cache.snapshot(name), before[name]
        assert snapshot is not None
        assert snapshot.changes_from(old) == {ENDPOINT: frozenset({SVC5})}
    # and one Cluster resource per consumer cluster serves every view that holds it
    held = {
        id(snap.resources(CLUSTER)[SVC5])
        for n in expected
        if (snap := mesh.cache.snapshot(n)) is not None
    }
    assert len(held) == SHAPE.clusters


def test_an_endpoint_change_builds_nothing_of_a_view_but_that_service_s_assignment(
    tmp_path: Path,
) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    mesh = Mesh(SnapshotCache())
    mesh.apply(reader.read()[0])
    view = mesh.resolve_view(sidecar(SHAPE, 9, 0), None)  # svc9 (ns1) sees svc5 (ns1)
    before = mesh.cache.snapshot(view)
    assert before is not None
    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    mesh.apply(reader.read()[0])
    after = mesh.cache.snapshot(view)
    assert after is not None
    assert after.changes_from(before) == {ENDPOINT: frozenset({SVC5})}
    # every other resource of the view is the one it held: not built, nor serialized, again
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        kept = {n: r for n, r in after.resources(type_url).items() if n != SVC5}
        assert kept
        assert all(r is before.resources(type_url)[n] for n, r in kept.items()), type_url


def test_routes_are_bound_again_only_when_a_service_they_name_changes(tmp_path: Path) -> None:
    write_fleet(tmp_path, SHAPE)
    # svc1 (ns1) routes to svc5 (ns1): the route names svc1 and svc5
    replace_file(route_path(tmp_path), http_route(SHAPE, 1, generation=1))
    reader = FleetReader(tmp_path)
    mesh = Mesh(SnapshotCache())
    mesh.apply(reader.read()[0])
    bound = mesh.routing_state.binding
    assert [b.route.name for b in bound.routes] == ["bench-svc1"]

    replace_file(service_path(tmp_path, SHAPE, 2, 0), service_file(SHAPE, 2, 0, generation=1))
    mesh.apply(reader.read()[0])
    assert mesh.routing_state.binding is bound  # svc2 is not named: the binding stands

    replace_file(service_path(tmp_path, SHAPE, 5, 0), service_file(SHAPE, 5, 0, generation=1))
    mesh.apply(reader.read()[0])
    rebound = mesh.routing_state.binding
    assert rebound is not bound  # its backend changed: bound again, to the new svc5
    (backend,) = rebound.routes[0].rules[0].backends
    now = mesh.plane.named(SHAPE.namespace(5), SHAPE.service(5))
    assert all(a is b for a, b in zip(backend.services, now, strict=True))


def test_a_view_whose_group_changed_keeps_its_own_inbound_side(tmp_path: Path) -> None:
    write_fleet(tmp_path, SHAPE)
    reader = FleetReader(tmp_path)
    mesh = Mesh(SnapshotCache())
    mesh.apply(reader.read()[0])
    # svc9 (ns1) sees svc5 (ns1): its view gets a new snapshot, with the same inbound side
    view = mesh.resolve_view(sidecar(SHAPE, 9, 0), None)
    before = mesh.cache.snapshot(view)
    assert before is not None
    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    mesh.apply(reader.read()[0])
    after = mesh.cache.snapshot(view)
    assert after is not None
    assert after is not before
    inbound = [n for n in before.resources(LISTENER) if n != "outbound"]
    assert inbound
    assert all(after.resources(LISTENER)[n] is before.resources(LISTENER)[n] for n in inbound)


def east_west_gateway(cluster: str, address: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: east-west-{cluster}
  namespace: kontinuum-system
  labels: {{kontinuum.io/cluster: {cluster}}}
spec:
  gatewayClassName: kontinuum-east-west
  addresses: [{{type: IPAddress, value: {address}}}]
  listeners: [{{name: mesh, port: 15443, protocol: TLS, tls: {{mode: Passthrough}}}}]
"""


def test_an_east_west_gateway_is_translated_again_only_for_its_own_clusters_endpoints(
    tmp_path: Path,
) -> None:
    write_fleet(tmp_path, SHAPE)
    gateways = [east_west_gateway(SHAPE.cluster(c), f"127.0.0.{10 + c}") for c in (0, 1)]
    (tmp_path / "gateways.yaml").write_text("---\n".join(gateways))
    reader = FleetReader(tmp_path)
    mesh = Mesh(SnapshotCache())
    mesh.apply(reader.read()[0])
    views = []
    for c in (0, 1):
        node = base_pb2.Node(id=f"gateway-{c}", cluster=SHAPE.cluster(c))
        node.metadata.update(proxy_metadata(namespace="kontinuum-system", role="gateway"))
        views.append(mesh.resolve_view(node, None))
    before = [mesh.cache.snapshot(view) for view in views]
    assert all(snapshot is not None and snapshot.resources(ENDPOINT) for snapshot in before)

    # svc5's endpoints in c1 change: c1's gateway routes to them, c0's does not
    replace_file(service_path(tmp_path, SHAPE, 5, 1), service_file(SHAPE, 5, 1, generation=1))
    mesh.apply(reader.read()[0])
    after = [mesh.cache.snapshot(view) for view in views]
    assert after[0] is before[0]
    assert after[1] is not None
    assert before[1] is not None
    assert after[1].changes_from(before[1]) == {
        ENDPOINT: frozenset({f"outbound|80|{SHAPE.cluster(1)}|svc5.ns1.svc.clusterset.local"})
    }
