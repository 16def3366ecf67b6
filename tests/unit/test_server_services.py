"""The services that share the xDS port: gRPC health checking and server reflection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kontinuum.xds import SnapshotCache, XdsServer


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = XdsServer(SnapshotCache())
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


@pytest.mark.parametrize(
    "service",
    [
        "",
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
    ],
)
async def test_health_reports_serving(channel: grpc.aio.Channel, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_rejects_unknown_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]))
    names = set()
    async for response in call:
        names.update(s.name for s in response.list_services_response.service)
    assert {
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
        "grpc.health.v1.Health",
    } <= names


async def test_reflection_describes_ads(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="envoy.service.discovery.v3.AggregatedDiscoveryService"
    )
    call = stub.ServerReflectionInfo(iter([request]))
    responses = [r async for r in call]
    assert responses[0].file_descriptor_response.file_descriptor_proto
