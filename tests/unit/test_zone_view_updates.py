"""A zone serving its proxies: another site's endpoint change, as the global sends it, costs
the zone's proxies' views that one service (DESIGN principle 8), however many they see.

The global's catalog is sent to the zone's copy as GlobalToZone sends it; the copy's
updates are merged as the aggregator merges them and applied to the zone's mesh.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from envoy.config.core.v3 import base_pb2

from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.model import (
    Endpoint,
    EndpointPort,
    FleetConfig,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.discovery.fleet_merge import merge
from kontinuum.federation.catalog import FleetCatalog
from kontinuum.federation.fleet_copy import FleetCopy
from kontinuum.federation.objects import ZONE_RESOURCE_TYPE_URL
from kontinuum.federation.publisher import Publisher
from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache
from kontinuum.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

SERVICES = 200  # per site: a sidecar of the zone sees both sites' 400
PROFILES: list[object] = [
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {
            "name": name,
            "namespace": "fleet",
            "annotations": {"kontinuum.io/source": "zone"},
        },
    }
    for name in ("paris", "lyon")
]


def site(name: str, moved: dict[int, str] | None = None) -> SiteSnapshot:
    """`SERVICES` exported services of one endpoint each; `moved`: other addresses."""
    names = [f"{name}-svc-{i}" for i in range(SERVICES)]
    addresses = [(moved or {}).get(i, f"10.1.{i // 200}.{i % 200 + 1}") for i in range(SERVICES)]
    return SiteSnapshot(
        name,
        services=tuple(Service(name, "demo", s, (ServicePort(80, "http"),)) for s in names),
        endpoints=tuple(
            Endpoint(name, "demo", s, (a,), (EndpointPort(8080, "http"),))
            for s, a in zip(names, addresses, strict=True)
        ),
        exports=tuple(ServiceExport(name, "demo", s) for s in names),
    )


def send(catalog: FleetCatalog, publisher: Publisher, copy: FleetCopy) -> None:
    """What GlobalToZone sends the zone of lyon, each response answered."""
    publisher.publish_mapping(catalog.for_zone("lyon"))
    while (response := publisher.response()) is not None:
        publisher.answer(copy.take(response))


async def next_update(updates: AsyncIterator[object]) -> object:
    return await asyncio.wait_for(anext(updates), 5)


def sidecar() -> base_pb2.Node:
    node = base_pb2.Node(id="web-1", cluster="lyon")
    node.metadata.update(proxy_metadata(namespace="demo", role="sidecar", outbound_port=15001))
    return node


async def test_a_remote_endpoint_change_reaches_a_zone_s_sidecar_as_that_one_assignment() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("paris")])
    copy = FleetCopy("lyon")
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    send(catalog, publisher, copy)
    updates = copy.updates()
    config, paris = await next_update(updates), await next_update(updates)
    assert isinstance(config, FleetConfig)
    assert isinstance(paris, SiteSnapshot)
    lyon = site("lyon")
    mesh = Mesh(SnapshotCache())
    mesh.apply(merge([config], [lyon, paris]))
    view = mesh.resolve_view(sidecar(), None)
    before = mesh.cache.snapshot(view)
    assert before is not None
    assert len(before.resources(ENDPOINT)) == 2 * SERVICES

    # One endpoint of paris's svc-7 moves; the global sends that one service.
    catalog.update(PROFILES, [site("paris", moved={7: "10.9.9.9"})])
    send(catalog, publisher, copy)
    paris = await next_update(updates)
    assert isinstance(paris, SiteSnapshot)
    mesh.apply(merge([config], [lyon, paris]))
    after = mesh.cache.snapshot(view)
    assert after is not None

    moved = "outbound|80||paris-svc-7.demo.svc.clusterset.local"
    assert after.changes_from(before) == {ENDPOINT: frozenset({moved})}
    assert "10.9.9.9" in str(after.resources(ENDPOINT)[moved].message)
    # Everything else the sidecar holds is what it held: the very resources, not rebuilt.
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        kept = {n: r for n, r in after.resources(type_url).items() if n != moved}
        assert kept
        assert all(r is before.resources(type_url)[n] for n, r in kept.items()), type_url


async def test_a_remote_service_s_new_port_is_translated_as_a_whole_view_would_be() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("paris")])
    copy = FleetCopy("lyon")
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    send(catalog, publisher, copy)
    updates = copy.updates()
    config, paris = await next_update(updates), await next_update(updates)
    assert isinstance(config, FleetConfig)
    assert isinstance(paris, SiteSnapshot)
    mesh = Mesh(SnapshotCache())
    mesh.apply(merge([config], [site("lyon"), paris]))
    view = mesh.resolve_view(sidecar(), None)

    # More than endpoints: svc-7 of paris gains a port, which its routes name too.
    changed = site("paris", moved={7: "10.9.9.9"})
    ports = (ServicePort(80, "http"), ServicePort(9090, "grpc"))
    services = tuple(
        replace(s, ports=ports) if s.name == "paris-svc-7" else s for s in changed.services
    )
    catalog.update(PROFILES, [replace(changed, services=services)])
    send(catalog, publisher, copy)
    paris = await next_update(updates)
    assert isinstance(paris, SiteSnapshot)
    fleet = merge([config], [site("lyon"), paris])
    mesh.apply(fleet)
    scratch = Mesh(SnapshotCache())
    scratch.apply(fleet)
    assert scratch.resolve_view(sidecar(), None) == view
    got, want = mesh.cache.snapshot(view), scratch.cache.snapshot(view)
    assert got is not None
    assert want is not None
    assert got.changes_from(want) == {}
    assert "outbound|9090||paris-svc-7.demo.svc.clusterset.local" in got.resources(CLUSTER)
    routes = str(got.resources(ROUTE)["outbound"].message)
    assert "paris-svc-7.demo.svc.clusterset.local:9090" in routes
