"""A client that stops reading blocks nobody, and only the latest version waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from kontinuum.xds import SnapshotCache, XdsServer, types
from tests.support.resources import cluster, load_assignment
from tests.unit.fake_stream import VIEW, base_resources, node

EDS = types.ENDPOINT
BIG_ENDPOINTS = 150_000  # a ~4 MB assignment: more than HTTP/2 flow control lets through


def resources(small_port: int, big_port: int) -> list[Any]:
    big = load_assignment("big", big_port)
    big.endpoints[0].lb_endpoints.extend(big.endpoints[0].lb_endpoints[:1] * BIG_ENDPOINTS)
    return [
        *base_resources(cla_a=load_assignment("a", small_port)),
        cluster("big"),
        big,
    ]


def first_port(response: Any) -> int:
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(response.resources[0].value)
    return int(cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value)


async def test_slow_reader_blocks_nobody_and_then_gets_only_the_latest() -> None:
    cache = SnapshotCache()
    cache.set_resources(VIEW, resources(1, 1))
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    slow_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    fast_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        slow = ads_pb2_grpc.AggregatedDiscoveryServiceStub(slow_channel).StreamAggregatedResources()
        await slow.write(
            discovery_pb2.DiscoveryRequest(node=node("slow"), type_url=EDS, resource_names=["big"])
        )
        fast = ads_pb2_grpc.AggregatedDiscoveryServiceStub(fast_channel).StreamAggregatedResources()
        await fast.write(
            discovery_pb2.DiscoveryRequest(node=node("fast"), type_url=EDS, resource_names=["a"])
        )
        response = await asyncio.wait_for(fast.read(), 10)
        async with asyncio.timeout(30):
            for update in range(2, 12):
                await fast.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=EDS,
                        resource_names=["a"],
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                cache.set_resources(VIEW, resources(update, update))
                response = await fast.read()
                assert first_port(response) == update  # the fast client keeps up

        (slow_stream,) = [s for s in server.streams() if s.connection.node.id == "slow"]
        assert slow_stream.types[EDS].responses == 1  # one blocked write, nothing queued

        first = await asyncio.wait_for(slow.read(), 30)
        assert first_port(first) == 1
        await slow.write(
            discovery_pb2.DiscoveryRequest(
                type_url=EDS,
                resource_names=["big"],
                version_info=first.version_info,
                response_nonce=first.nonce,
            )
        )
        latest = await asyncio.wait_for(slow.read(), 30)
        assert first_port(latest) == 11  # the intermediate versions were never queued
        slow.cancel()
        fast.cancel()
    finally:
        await slow_channel.close()
        await fast_channel.close()
        await server.stop(0)
