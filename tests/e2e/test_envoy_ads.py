"""A real Envoy against the xDS server, over SotW and Delta ADS, with real HTTP traffic.

Each test runs the XdsServer in its own event loop, starts one Envoy subprocess whose
`node.cluster` is the view, and sends HTTP requests through Envoy's listener to
backends on loopback. Blocking calls (Envoy's admin API, HTTP) run in threads so the
server keeps serving while the test waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from kontinuum.xds import SnapshotCache, XdsServer, types
from kontinuum.xds.push import Outcome, Push
from kontinuum.xds.snapshot import Snapshot
from tests.e2e.backends import Backend, Traffic, answer
from tests.e2e.conftest import StartEnvoy, StartServer
from tests.e2e.envoy import Envoy, Mode
from tests.support.net import async_wait_until, free_port
from tests.support.resources import cluster, http_listener, load_assignment, route_config

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("mode", ["sotw", "delta"])]

T = TypeVar("T")

VIEW = "e2e-view"
CLUSTER = "backend"
LISTENER = "ingress"
ROUTE = "ingress-routes"
NAMES = {
    types.CLUSTER: CLUSTER,
    types.ENDPOINT: CLUSTER,
    types.LISTENER: LISTENER,
    types.ROUTE: ROUTE,
}
RDS_REJECTED = f"http.{LISTENER}.rds.{ROUTE}.update_rejected"
RDS_SUCCESS = f"http.{LISTENER}.rds.{ROUTE}.update_success"


def mesh_resources(listener_port: int, backend_port: int, route: Any | None = None) -> list[Any]:
    """One listener -> one route -> one EDS cluster -> one endpoint."""
    return [
        cluster(CLUSTER),
        load_assignment(CLUSTER, backend_port),
        http_listener(LISTENER, listener_port, ROUTE),
        route if route is not None else route_config(ROUTE, CLUSTER),
    ]


def regex_route(pattern: str) -> Any:
    """The route configuration, but matching paths with a RE2 `safe_regex`."""
    rc = route_config(ROUTE, CLUSTER)
    match = rc.virtual_hosts[0].routes[0].match
    match.safe_regex.regex = pattern  # replaces the prefix (same oneof)
    return rc


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def poll(fn: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    """Poll a blocking check in a thread until it returns something truthy."""

    async def check() -> Any:
        return await asyncio.to_thread(fn)

    return await async_wait_until(check, timeout=seconds, what=what)


async def until(predicate: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll a cheap, non-blocking condition (server stats, traffic counts) in the loop."""

    async def check() -> bool:
        return predicate()

    await async_wait_until(check, timeout=seconds, what=what)


def version_of(cache: SnapshotCache, type_url: str, name: str) -> str:
    """The content version the cache holds for a resource of the view."""
    snapshot = cache.snapshot(VIEW)
    assert snapshot is not None
    return snapshot.resources(type_url)[name].version


def total(counter: Counter[str]) -> int:
    return sum(counter.values())


async def client_status(port: int) -> list[Any]:
    """CSDS `FetchClientStatus` from the server on `port`: one ClientConfig per stream."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
    return list(response.config)


async def resource_status(port: int, node_id: str) -> dict[tuple[str, str], Any]:
    """CSDS entries of `node_id`'s stream by (type URL, name); empty if it is not connected."""
    configs = [c for c in await client_status(port) if c.node.id == node_id]
    if len(configs) != 1:
        return {}
    return {(x.type_url, x.name): x for x in configs[0].generic_xds_configs}


async def wait_synced(port: int, node_id: str, seconds: float = 10.0) -> dict[tuple[str, str], Any]:
    """Wait until CSDS shows all four resources of the mesh SYNCED and ACKED."""

    async def check() -> dict[tuple[str, str], Any]:
        status = await resource_status(port, node_id)
        wanted = [status.get(key) for key in NAMES.items()]
        if all(
            e is not None
            and e.config_status == csds_pb2.SYNCED
            and e.client_status == dump_pb2.ACKED
            for e in wanted
        ):
            return status
        return {}

    return await async_wait_until(check, timeout=seconds, what="CSDS to show all resources SYNCED")


async def wait_answered_by(envoy: Envoy, port: int, backend: str, seconds: float = 10.0) -> None:
    """Wait until a request through Envoy's listener is answered by `backend`."""
    await blocking(
        envoy.wait_for, lambda: answer(port) == backend, seconds, f"traffic to reach {backend}"
    )


@dataclass
class Mesh:
    """An xDS server, its cache and one Envoy routing a listener to backend `a`."""

    mode: Mode
    cache: SnapshotCache
    server: XdsServer
    xds_port: int
    envoy: Envoy
    listener_port: int
    a: Backend
    b: Backend

    def resources(self, backend: Backend, route: Any | None = None) -> list[Any]:
        return mesh_resources(self.listener_port, backend.port, route)


@pytest.fixture
async def mesh(
    mode: Mode,
    xds_servers: StartServer,
    envoys: StartEnvoy,
    backends: Callable[[str], Backend],
) -> Mesh:
    a, b = backends("a"), backends("b")
    listener_port = free_port()
    cache = SnapshotCache()
    cache.set_resources(VIEW, mesh_resources(listener_port, a.port))
    server, xds_port = await xds_servers(cache, 0)
    envoy = envoys(view=VIEW, xds_port=xds_port, mode=mode, node_id=f"e2e-{mode}")
    await blocking(envoy.wait_live)
    await wait_answered_by(envoy, listener_port, "a")
    return Mesh(mode, cache, server, xds_port, envoy, listener_port, a, b)


async def test_envoy_serves_traffic_from_xds(mesh: Mesh) -> None:
    """Listener, route, cluster and endpoints all come over ADS; HTTP reaches backend a."""
    envoy, server = mesh.envoy, mesh.server
    assert await blocking(answer, mesh.listener_port) == "a"
    assert mesh.a.requests >= 1
    assert mesh.b.requests == 0

    status = await wait_synced(mesh.xds_port, envoy.node_id)
    versions = mesh.cache.snapshot(VIEW)
    assert versions is not None
    for type_url, name in NAMES.items():
        entry = status[(type_url, name)]
        assert entry.version_info == versions.resources(type_url)[name].version
    (config,) = [c for c in await client_status(mesh.xds_port) if c.node.id == envoy.node_id]
    assert config.node.cluster == VIEW

    for type_url in NAMES:
        assert server.stats.acks[type_url] >= 1, types.short_name(type_url)
        assert server.stats.nacks[type_url] == 0, types.short_name(type_url)
    assert await blocking(envoy.stat, "control_plane.connected_state") == 1
    assert await blocking(envoy.cluster_endpoints, CLUSTER) == [mesh.a.port]

    dump = await blocking(envoy.config_dump)
    kinds = {c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]}
    assert {"ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"} <= kinds


async def test_endpoint_change_moves_traffic(mesh: Mesh) -> None:
    """A new ClusterLoadAssignment (backend b instead of a) reaches Envoy; traffic follows."""
    eds_before = mesh.server.stats.responses[types.ENDPOINT]
    changes = mesh.cache.set_resources(VIEW, mesh.resources(mesh.b))
    assert changes == {types.ENDPOINT: frozenset({CLUSTER})}

    await wait_answered_by(mesh.envoy, mesh.listener_port, "b")
    assert await blocking(mesh.envoy.cluster_endpoints, CLUSTER) == [mesh.b.port]
    await wait_synced(mesh.xds_port, mesh.envoy.node_id)
    # Only the endpoints were sent again: nothing else changed.
    assert mesh.server.stats.responses[types.ENDPOINT] == eds_before + 1
    answers = [await blocking(answer, mesh.listener_port) for _ in range(5)]
    assert answers == ["b"] * 5


async def test_rejected_resource_is_nacked_once_and_last_good_config_stays(mesh: Mesh) -> None:
    """An invalid RouteConfiguration is NACKed, surfaced in CSDS and never resent."""
    envoy, server = mesh.envoy, mesh.server
    rejected_before = await blocking(envoy.stat, RDS_REJECTED) or 0
    rds_responses = server.stats.responses[types.ROUTE]

    # RE2 cannot compile this: Envoy rejects the whole RouteConfiguration on ingestion.
    mesh.cache.set_resources(VIEW, mesh.resources(mesh.a, regex_route("/(unclosed")))
    await poll(
        lambda: (envoy.stat(RDS_REJECTED) or 0) > rejected_before, "Envoy to reject the route"
    )
    await until(lambda: server.stats.nacks[types.ROUTE] == 1, "the server to record the NACK")

    status = await resource_status(mesh.xds_port, envoy.node_id)
    entry = status[(types.ROUTE, ROUTE)]
    bad_version = version_of(mesh.cache, types.ROUTE, ROUTE)
    assert entry.config_status == csds_pb2.ERROR
    assert entry.client_status == dump_pb2.NACKED
    assert entry.error_state.version_info == bad_version
    assert entry.version_info != bad_version  # the accepted version is still the old one
    assert "/(unclosed" in entry.error_state.details, entry.error_state.details
    for type_url in (types.CLUSTER, types.ENDPOINT, types.LISTENER):
        assert status[(type_url, NAMES[type_url])].config_status == csds_pb2.SYNCED

    # No resend loop: for ~2 s the server sends no RDS response and Envoy rejects
    # nothing more, while the last good route keeps serving traffic.
    rejected = await blocking(envoy.stat, RDS_REJECTED)
    assert server.stats.responses[types.ROUTE] == rds_responses + 1
    responses = total(server.stats.responses)
    deadline = time.monotonic() + 2.0
    served = 0
    while time.monotonic() < deadline and served < 200:
        assert await blocking(answer, mesh.listener_port) == "a"
        served += 1
        await asyncio.sleep(0.05)
    assert served >= 10
    assert total(server.stats.responses) == responses
    assert server.stats.nacks[types.ROUTE] == 1
    assert await blocking(envoy.stat, RDS_REJECTED) == rejected

    # A corrected route is sent, accepted and serves.
    success_before = await blocking(envoy.stat, RDS_SUCCESS) or 0
    mesh.cache.set_resources(VIEW, mesh.resources(mesh.a, regex_route("/.*")))
    await poll(lambda: (envoy.stat(RDS_SUCCESS) or 0) > success_before, "Envoy to accept the route")
    status = await wait_synced(mesh.xds_port, envoy.node_id)
    good_version = version_of(mesh.cache, types.ROUTE, ROUTE)
    entry = status[(types.ROUTE, ROUTE)]
    assert entry.version_info == good_version
    assert not entry.HasField("error_state")
    assert server.stats.responses[types.ROUTE] == rds_responses + 2
    assert await blocking(envoy.stat, RDS_REJECTED) == rejected
    assert await blocking(answer, mesh.listener_port) == "a"
    dumped = await blocking(envoy.config_dump, "dynamic_route_configs")
    assert "/.*" in str(dumped)


async def test_rejected_cluster_leaves_the_accepted_ones_synced(mesh: Mesh) -> None:
    """One Cluster Envoy rejects among good ones: only it is NACKED; the rest keep serving.

    A SotW CDS response carries every cluster, so the NACK of the response also names the
    unchanged cluster Envoy already holds; CSDS must still show that one SYNCED.
    """
    envoy, server = mesh.envoy, mesh.server
    cds_rejected = "cluster_manager.cds.update_rejected"
    rejected_before = await blocking(envoy.stat, cds_rejected) or 0
    bad = cluster("rejected")
    # Only ORIGINAL_DST clusters may leave load balancing to the cluster.
    bad.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    mesh.cache.set_resources(
        VIEW, [*mesh.resources(mesh.a), bad, load_assignment("rejected", mesh.b.port)]
    )
    await poll(lambda: (envoy.stat(cds_rejected) or 0) > rejected_before, "Envoy to reject it")
    await until(lambda: server.stats.nacks[types.CLUSTER] == 1, "the server to record the NACK")

    status = await resource_status(mesh.xds_port, envoy.node_id)
    entry = status[(types.CLUSTER, "rejected")]
    assert entry.config_status == csds_pb2.ERROR
    assert entry.client_status == dump_pb2.NACKED
    assert entry.error_state.version_info == version_of(mesh.cache, types.CLUSTER, "rejected")
    assert "cluster provided LB" in entry.error_state.details, entry.error_state.details
    good = status[(types.CLUSTER, CLUSTER)]
    assert good.config_status == csds_pb2.SYNCED, good
    assert good.client_status == dump_pb2.ACKED
    assert not good.HasField("error_state")
    clusters = {s["name"] for s in (await blocking(envoy.clusters))["cluster_statuses"]}
    assert CLUSTER in clusters
    assert "rejected" not in clusters
    assert await blocking(answer, mesh.listener_port) == "a"

    # Dropping the bad cluster settles everything again, without another rejection.
    mesh.cache.set_resources(VIEW, mesh.resources(mesh.a))
    status = await wait_synced(mesh.xds_port, envoy.node_id)
    await until(lambda: server.stats.acks[types.CLUSTER] >= 2, "Envoy to ACK the removal")
    status = await resource_status(mesh.xds_port, envoy.node_id)
    assert (types.CLUSTER, "rejected") not in status
    assert await blocking(envoy.stat, cds_rejected) == rejected_before + 1
    assert await blocking(answer, mesh.listener_port) == "a"


async def test_control_plane_restart_keeps_traffic_and_resyncs(
    mesh: Mesh, xds_servers: StartServer
) -> None:
    """Envoy serves through a control-plane outage and resyncs with a fresh server."""
    envoy = mesh.envoy
    traffic = Traffic(mesh.listener_port, interval=0.02, limit=1_000, max_seconds=20).start()
    try:
        await until(lambda: traffic.total >= 5, "traffic to flow")

        await mesh.server.stop(0)
        stopped_at = time.monotonic()
        sent_before_outage = traffic.total
        await poll(
            lambda: envoy.stat("control_plane.connected_state") == 0,
            "Envoy to notice the control plane is gone",
        )
        # Stay down for at least a second of steady traffic.
        await until(
            lambda: (
                time.monotonic() - stopped_at >= 1.0 and traffic.total - sent_before_outage >= 20
            ),
            "a second of traffic during the outage",
        )
        assert not traffic.failures, traffic.failures[:5]

        # A new server, a new cache with the same resources: the same content versions.
        cache = SnapshotCache()
        cache.set_resources(VIEW, mesh.resources(mesh.a))
        server, port = await xds_servers(cache, mesh.xds_port)
        assert port == mesh.xds_port
        await poll(
            lambda: envoy.stat("control_plane.connected_state") == 1,
            "Envoy to reconnect",
            seconds=15,
        )
        status = await wait_synced(port, envoy.node_id)
        for type_url, name in NAMES.items():
            assert status[(type_url, name)].version_info == version_of(mesh.cache, type_url, name)
        await until(lambda: traffic.total - sent_before_outage >= 60, "traffic after the restart")
    finally:
        traffic.stop()

    assert not traffic.failures, traffic.failures[:5]
    assert set(traffic.answers) == {"a"}
    assert traffic.total >= 60
    # Envoy presented the versions it holds (Delta: initial_resource_versions; SotW: the
    # version_info of its first request per type), all current: nothing is resent.
    assert total(server.stats.resources) == 0, dict(server.stats.resources)
    assert total(server.stats.nacks) == 0

    # The new server still drives Envoy: an endpoint change moves traffic to b.
    cache.set_resources(VIEW, mesh.resources(mesh.b))
    await wait_answered_by(envoy, mesh.listener_port, "b")
    await wait_synced(port, envoy.node_id)
    assert server.stats.resources[types.ENDPOINT] >= 1


async def test_a_push_adding_a_cluster_converges_once_its_endpoints_are_acked(
    mesh: Mesh,
) -> None:
    """Envoy asks for a new cluster's endpoints while it warms it: the push that brought
    the cluster waits for their ACK, so "converged" means the proxy can route to it."""
    server, envoy = mesh.server, mesh.envoy
    at_settle: list[tuple[Outcome, bool]] = []

    class Watch:
        def stream_settled(
            self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
        ) -> None:
            (stream,) = [s for s in server.streams() if s.connection.node.id == envoy.node_id]
            endpoints = stream.types[types.ENDPOINT]
            at_settle.append((outcome, "second" in endpoints.acked))

        def push_done(self, push: Push, now: float) -> None:
            pass

    push = Push(observer=Watch())
    second = [cluster("second"), load_assignment("second", mesh.b.port)]
    mesh.cache.set_snapshot(VIEW, Snapshot.of([*mesh.resources(mesh.a), *second]), push)
    push.seal()
    await until(lambda: push.done, "the push to settle")
    assert at_settle == [("acked", True)]
    assert await blocking(envoy.cluster_endpoints, "second") == [mesh.b.port]
