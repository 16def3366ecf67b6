"""grpcio's own xDS resolver (`xds:///name`) as a second, real xDS client of the server.

The client runs in a subprocess with `GRPC_XDS_BOOTSTRAP`, so its xDS client shares nothing
with the test process. It walks LDS -> RDS -> CDS -> EDS one type after another (SotW) and
ACKs some configurations it then cannot route with, so every test is judged by real RPCs to
real gRPC backends, plus what CSDS reports about the client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2

from kontinuum.xds import SnapshotCache, XdsServer, types
from tests.e2e import grpc_client, proxyless
from tests.e2e.proxyless import STEP_TIMEOUT, ProxylessClient, grpc_backends
from tests.support.net import async_wait_until
from tests.support.resources import api_listener, cluster, load_assignment, route_config

pytestmark = pytest.mark.e2e

VIEW = "proxyless"
NODE_ID = "grpc-client-1"
# The target authority: the listener name, and the only domain its route answers for.
SERVICE = "echo.default.svc.clusterset.local:50051"
ROUTE = "echo-route"
CLUSTER = "outbound|50051||echo.default.svc.clusterset.local"
FOUR_TYPES = {types.LISTENER, types.ROUTE, types.CLUSTER, types.ENDPOINT}


def resources(
    *endpoint_ports: int, locality_weight: int | None = 1, locality: bool = True
) -> list[Any]:
    """What the proxyless client needs: api_listener -> route -> EDS cluster -> endpoints.

    gRPC is stricter than Envoy about a ClusterLoadAssignment: it NACKs a locality whose
    `locality` field is absent, and it skips a locality without `load_balancing_weight`
    (it ACKs such an assignment, then has no endpoint to route to).
    """
    endpoints = load_assignment(CLUSTER, *endpoint_ports)
    for group in endpoints.endpoints:
        if locality:
            group.locality.region = "local"
            group.locality.zone = "local-a"
        if locality_weight is not None:
            group.load_balancing_weight.value = locality_weight
    return [
        api_listener(SERVICE, ROUTE),
        route_config(ROUTE, CLUSTER, domains=(SERVICE,)),
        cluster(CLUSTER),
        endpoints,
    ]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """Two real gRPC servers, each answering every call with its own name."""
    async with grpc_backends(("backend-a", "backend-b")) as ports:
        yield ports


@dataclass
class Control:
    cache: SnapshotCache
    server: XdsServer
    port: int


@pytest.fixture
async def control() -> AsyncIterator[Control]:
    cache = SnapshotCache()
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    try:
        yield Control(cache, server, port)
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def proxyless_client(tmp_path: Path, xds_port: int) -> AsyncIterator[ProxylessClient]:
    bootstrap = grpc_client.write_bootstrap(
        tmp_path / "bootstrap.json", xds_port, node_id=NODE_ID, cluster=VIEW
    )
    async with proxyless.proxyless_client(tmp_path, bootstrap, f"xds:///{SERVICE}") as client:
        yield client


# -- helpers --------------------------------------------------------------------------------


async def client_status(xds_port: int) -> list[Any]:
    """The CSDS ClientConfigs of the proxyless client's node."""
    request = csds_pb2.ClientStatusRequest(
        node_matchers=[node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(exact=NODE_ID))]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{xds_port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = await stub.FetchClientStatus(request, timeout=5)
    return list(response.config)


def synced_with(configs: list[Any], cache: SnapshotCache) -> bool:
    """One client, and each of the four types ACKed at exactly the version the view holds."""
    if len(configs) != 1:
        return False
    snapshot = cache.snapshot(VIEW)
    assert snapshot is not None
    entries = configs[0].generic_xds_configs
    if {e.type_url for e in entries} != FOUR_TYPES:
        return False
    return all(
        e.config_status == csds_pb2.SYNCED
        and e.version_info == snapshot.resources(e.type_url)[e.name].version
        for e in entries
    )


# -- tests ----------------------------------------------------------------------------------


async def test_proxyless_client_reaches_the_backend_of_its_endpoints(
    control: Control, backends: dict[str, int], tmp_path: Path
) -> None:
    control.cache.set_resources(VIEW, resources(backends["backend-a"]))

    async with proxyless_client(tmp_path, control.port) as client:
        await client.until(lambda line: line == "ok backend-a", "reached backend-a")
        following = await client.take(10)

    assert following == ["ok backend-a"] * 10, client.describe()
    assert "ok backend-b" not in client.lines  # B is running, but not in the view's EDS


async def test_proxyless_client_follows_an_endpoint_change(
    control: Control, backends: dict[str, int], tmp_path: Path
) -> None:
    control.cache.set_resources(VIEW, resources(backends["backend-a"]))

    async with proxyless_client(tmp_path, control.port) as client:
        await client.until(lambda line: line == "ok backend-a", "reached backend-a")

        # Only the ClusterLoadAssignment changes; backend-a keeps running, so reaching
        # backend-b can only mean the client applied the new EDS response.
        changes = control.cache.set_resources(VIEW, resources(backends["backend-b"]))
        assert changes == {types.ENDPOINT: frozenset({CLUSTER})}

        await client.until(lambda line: line == "ok backend-b", "reached backend-b")
        following = await client.take(10)
        assert following == ["ok backend-b"] * 10, client.describe()

        configs = await async_wait_until(
            lambda: _synced_status(control),
            timeout=STEP_TIMEOUT,
            what="CSDS to report the client SYNCED at the new endpoints",
        )

    endpoints = [e for e in configs[0].generic_xds_configs if e.type_url == types.ENDPOINT]
    assert [e.name for e in endpoints] == [CLUSTER]


async def test_csds_reports_the_serving_proxyless_client_synced(
    control: Control, backends: dict[str, int], tmp_path: Path
) -> None:
    control.cache.set_resources(VIEW, resources(backends["backend-a"]))

    async with proxyless_client(tmp_path, control.port) as client:
        await client.until(lambda line: line == "ok backend-a", "reached backend-a")
        configs = await async_wait_until(
            lambda: _synced_status(control),
            timeout=STEP_TIMEOUT,
            what="CSDS to report the client SYNCED",
        )

    (config,) = configs
    assert config.node.id == NODE_ID
    assert config.node.cluster == VIEW
    by_type = {e.type_url: e for e in config.generic_xds_configs}
    assert len(by_type) == len(config.generic_xds_configs) == 4
    assert by_type[types.LISTENER].name == SERVICE
    assert by_type[types.ROUTE].name == ROUTE
    assert by_type[types.CLUSTER].name == CLUSTER
    assert by_type[types.ENDPOINT].name == CLUSTER
    for entry in config.generic_xds_configs:
        assert entry.config_status == csds_pb2.SYNCED, entry
        assert entry.client_status == dump_pb2.ACKED, entry


async def _synced_status(control: Control) -> list[Any]:
    """The client's CSDS configs once it is SYNCED on all four types, else []."""
    configs = await client_status(control.port)
    return configs if synced_with(configs, control.cache) else []


async def test_an_unweighted_locality_is_acked_but_unroutable_for_grpc(
    control: Control, backends: dict[str, int], tmp_path: Path
) -> None:
    """Why the translator must weight localities: CSDS says SYNCED, yet no call gets through."""
    control.cache.set_resources(VIEW, resources(backends["backend-a"], locality_weight=None))

    async with proxyless_client(tmp_path, control.port) as client:
        await async_wait_until(
            lambda: _synced_status(control),
            timeout=STEP_TIMEOUT,
            what="CSDS to report the client SYNCED",
        )
        after_sync = await client.take(5)

    assert all(line.startswith("err UNAVAILABLE") for line in after_sync), client.describe()
    assert "ok backend-a" not in client.lines


async def test_a_nack_from_grpc_is_surfaced_and_a_fix_is_accepted(
    control: Control, backends: dict[str, int], tmp_path: Path
) -> None:
    """A weighted locality without `locality` is NACKed by gRPC: CSDS shows the error, the
    server does not resend it in a loop, and the corrected assignment gets through."""
    control.cache.set_resources(VIEW, resources(backends["backend-a"], locality=False))

    async with proxyless_client(tmp_path, control.port) as client:

        async def nacked() -> Any:
            configs = await client_status(control.port)
            entries = {e.type_url: e for c in configs for e in c.generic_xds_configs}
            endpoints = entries.get(types.ENDPOINT)
            if endpoints is None or endpoints.config_status != csds_pb2.ERROR:
                return None
            return entries

        entries = await async_wait_until(nacked, timeout=STEP_TIMEOUT, what="CSDS to show the NACK")
        rejected = entries[types.ENDPOINT]
        assert rejected.client_status == dump_pb2.NACKED
        assert "locality" in rejected.error_state.details
        snapshot = control.cache.snapshot(VIEW)
        assert snapshot is not None
        assert (
            rejected.error_state.version_info == snapshot.resources(types.ENDPOINT)[CLUSTER].version
        )
        for type_url in (types.LISTENER, types.ROUTE, types.CLUSTER):
            assert entries[type_url].config_status == csds_pb2.SYNCED, entries[type_url]

        await client.take(5)  # the client keeps calling (and failing) for a while ...
        assert control.server.stats.responses[types.ENDPOINT] == 1  # ... and nothing is resent
        assert "ok backend-a" not in client.lines

        control.cache.set_resources(VIEW, resources(backends["backend-a"]))
        await client.until(lambda line: line == "ok backend-a", "reached backend-a after the fix")
        await async_wait_until(
            lambda: _synced_status(control),
            timeout=STEP_TIMEOUT,
            what="CSDS to report the client SYNCED after the fix",
        )
