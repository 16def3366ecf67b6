"""The identity seam refuses streams; CSDS reports every state over both of its methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2

from kontinuum.xds import Peer, SnapshotCache, XdsServer, types
from tests.support.net import async_wait_until
from tests.support.resources import load_assignment
from tests.unit.fake_stream import VIEW, base_resources, node


def only_view_a(node: Any, peer: Peer) -> str:
    if node.cluster != VIEW:
        raise PermissionError(f"node {node.id} may not receive view {node.cluster!r}")
    return str(node.cluster)


@pytest.fixture
async def served() -> AsyncIterator[tuple[XdsServer, grpc.aio.Channel]]:
    cache = SnapshotCache()
    cache.set_resources(VIEW, base_resources())
    server = XdsServer(cache, resolve_view=only_view_a)
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, channel
    await server.stop(0)


async def test_a_refused_view_ends_the_stream_with_permission_denied(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(
        discovery_pb2.DiscoveryRequest(node=node("intruder", "other"), type_url=types.CLUSTER)
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not receive view 'other'" in str(error.value.details())
    assert server.stats.streams_refused == 1
    assert not server.streams()


async def test_csds_shows_stale_then_synced_and_streams_status(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(
        discovery_pb2.DiscoveryRequest(node=node("proxy-1"), type_url=types.ENDPOINT,
                                       resource_names=["a", "missing"])
    )  # fmt: skip
    response = await call.read()
    csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
    request = csds_pb2.ClientStatusRequest(
        node_matchers=[node_pb2.NodeMatcher(node_id={"prefix": "proxy-"})]
    )

    async def entries() -> dict[str, Any]:
        status = await csds.FetchClientStatus(request)
        return {e.name: e for c in status.config for e in c.generic_xds_configs}

    sent = await entries()
    assert sent["a"].config_status == csds_pb2.STALE  # sent, not yet ACKed
    assert sent["a"].client_status == dump_pb2.REQUESTED
    assert sent["a"].error_state.version_info  # the version sent
    assert sent["missing"].client_status == dump_pb2.DOES_NOT_EXIST
    assert sent["missing"].config_status == csds_pb2.NOT_SENT

    await call.write(
        discovery_pb2.DiscoveryRequest(type_url=types.ENDPOINT, resource_names=["a", "missing"],
                                       version_info=response.version_info,
                                       response_nonce=response.nonce)
    )  # fmt: skip
    await async_wait_until(
        lambda: _synced(entries), timeout=5, what="the ACK to show as SYNCED in CSDS"
    )

    server.cache.set_resources(VIEW, base_resources(cla_a=load_assignment("a", 9)))
    await call.read()
    streamed = csds.StreamClientStatus()
    await streamed.write(request)
    status = await streamed.read()
    (entry,) = [e for c in status.config for e in c.generic_xds_configs if e.name == "a"]
    assert entry.config_status == csds_pb2.STALE
    assert entry.client_status == dump_pb2.ACKED  # it still holds the older version
    await streamed.done_writing()
    call.cancel()


async def _synced(entries: Any) -> bool:
    current = await entries()
    return bool(current["a"].config_status == csds_pb2.SYNCED)


async def test_csds_node_matchers_filter_by_node_id(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    _, channel = served
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=node("edge-7"), type_url=types.CLUSTER))
    await call.read()
    csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)

    async def ids(**matcher: str) -> list[str]:
        request = csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_id=matcher)]
        )
        return [c.node.id for c in (await csds.FetchClientStatus(request)).config]

    assert await ids(exact="edge-7") == ["edge-7"]
    assert await ids(suffix="-7") == ["edge-7"]
    assert await ids(exact="edge-8") == []
    call.cancel()
