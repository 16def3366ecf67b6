"""A whole fleet reconnecting at once, as after a control-plane restart, is served."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from kontinuum.xds import SnapshotCache, XdsServer, types
from tests.unit.fake_stream import VIEW, base_resources, node

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
FLEET = 1_500  # more than grpc's default of 1,000 calls pending at once


async def _first_cds(channel: grpc.aio.Channel, index: int) -> int:
    from envoy.service.discovery.v3 import discovery_pb2

    call: Any = channel.stream_stream(
        ADS,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )()
    await call.write(
        discovery_pb2.DiscoveryRequest(node=node(f"proxy-{index}"), type_url=types.CLUSTER)
    )
    response = await call.read()
    call.cancel()
    return len(response.resources)


async def test_fifteen_hundred_streams_opened_at_once_all_get_their_clusters() -> None:
    cache = SnapshotCache()
    cache.set_resources(VIEW, base_resources())
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(3)]
    try:
        async with asyncio.timeout(60):
            counts = await asyncio.gather(
                *(_first_cds(channels[i % len(channels)], i) for i in range(FLEET)),
                return_exceptions=True,
            )
    finally:
        for channel in channels:
            await channel.close()
        await server.stop(0)
    failures = [c for c in counts if not isinstance(c, int)]
    assert not failures, f"{len(failures)} of {FLEET} streams failed, e.g. {failures[0]!r}"
    assert set(counts) == {2}
