"""What one careless or hostile client can make the xDS server hold, and its port.

A real in-process `XdsServer` on the loopback and real grpcio clients: a second server is
refused a port one already listens on; a node or subscriptions past their bounds end that
client's stream with a client-error status, and nothing of a closed stream stays behind.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from types import MappingProxyType
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import struct_pb2
from prometheus_client import CollectorRegistry

from kontinuum.admin import AdminServer
from kontinuum.security import CertificateAuthority
from kontinuum.security.xds_auth import ServerCertificate
from kontinuum.status import fetch_status
from kontinuum.xds import ListenError, SnapshotCache, XdsServer, types
from kontinuum.xds.limits import (
    MAX_NAME_CHARACTERS_PER_STREAM,
    MAX_NAME_LENGTH,
    MAX_NAMES_PER_STREAM,
    MAX_NODE_BYTES,
    MAX_NODE_ID_LENGTH,
    MAX_NODE_METADATA_BYTES,
    MAX_REQUEST_BYTES,
)
from tests.unit.fake_stream import VIEW, node
from tests.unit.test_garbage import (
    CDS,
    EDS,
    Env,
    assert_serves_a_good_client,
    both,
    finish,
    first_request,
    settled,
    write_all,
)

RDS, SDS = types.ROUTE, types.SECRET


async def client_status(env: Env) -> list[Any]:
    """Every ClientConfig CSDS returns."""
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(env.channel)
    return list((await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())).config)


# -- one port, one server ------------------------------------------------------------------


@pytest.fixture
async def listening() -> AsyncIterator[tuple[XdsServer, str]]:
    server = XdsServer(SnapshotCache())
    port = await server.start("127.0.0.1:0")
    yield server, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_a_second_server_on_a_busy_port_is_refused_with_one_line(
    listening: tuple[XdsServer, str],
) -> None:
    first, address = listening
    second = XdsServer(SnapshotCache())
    with pytest.raises(ListenError) as refused:
        await second.start(address)
    message = str(refused.value)
    assert message.count("\n") == 0, message
    assert address in message, message
    assert "in use" in message, message
    assert refused.value.address == address
    assert not second.serving
    assert first.serving


async def test_a_busy_token_address_is_refused_as_well(listening: tuple[XdsServer, str]) -> None:
    _, busy = listening
    tls = ServerCertificate(CertificateAuthority.generate("cluster.local"), ["localhost"])
    second = XdsServer(SnapshotCache())
    with pytest.raises(ListenError) as refused:
        await second.start(
            "127.0.0.1:0", also=((busy, tls.credentials(require_client_certificate=False)),)
        )
    assert refused.value.address == busy
    assert not second.serving


async def test_servers_share_a_port_only_when_both_ask_to() -> None:
    first, second = XdsServer(SnapshotCache()), XdsServer(SnapshotCache())
    port = await first.start("127.0.0.1:0", reuse_port=True)
    try:
        assert await second.start(f"127.0.0.1:{port}", reuse_port=True) == port
        assert second.serving
    finally:
        await second.stop(0)
        await first.stop(0)


async def test_a_busy_admin_address_is_refused_with_one_line(
    listening: tuple[XdsServer, str],
) -> None:
    _, busy = listening
    admin = AdminServer(CollectorRegistry(), ready=lambda: True)
    with pytest.raises(ListenError) as refused:
        await admin.start(busy)
    assert refused.value.address == busy
    assert "in use" in str(refused.value)


# -- the node --------------------------------------------------------------------------------


def _metadata_of(size: int) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update({"junk": "m" * size})
    return metadata


def _oversized_nodes() -> Iterator[Any]:
    yield pytest.param(
        base_pb2.Node(id="i" * (MAX_NODE_ID_LENGTH + 1), cluster=VIEW),
        grpc.StatusCode.INVALID_ARGUMENT,
        "node.id",
        id="id",
    )
    yield pytest.param(
        base_pb2.Node(id="n", cluster="c" * (MAX_NODE_ID_LENGTH + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "node.cluster",
        id="cluster",
    )
    yield pytest.param(
        base_pb2.Node(id="n", cluster=VIEW, metadata=_metadata_of(MAX_NODE_METADATA_BYTES)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "node.metadata",
        id="metadata",
    )
    yield pytest.param(
        base_pb2.Node(id="n", cluster=VIEW, user_agent_name="u" * MAX_NODE_BYTES),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "a node is limited",
        id="node",
    )


@pytest.mark.parametrize(("big", "code", "named"), list(_oversized_nodes()))
async def test_a_node_past_its_bounds_is_refused_and_not_kept(
    env: Env, big: Any, code: grpc.StatusCode, named: str
) -> None:
    call = env.call()
    request = first_request()
    request.node.CopyFrom(big)
    await write_all(call, [request])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(call.read(), 5)
    assert refused.value.code() == code
    assert named in str(refused.value.details()), refused.value.details()
    assert env.server.stats.streams_limited == 1
    assert env.server.streams() == ()
    assert await client_status(env) == []  # CSDS neither holds nor shows it
    await assert_serves_a_good_client(env)


async def test_an_envoy_sized_node_is_served_and_shown_without_its_extension_list(
    env: Env,
) -> None:
    """Envoy's node is ~61 KB, almost all of it the extensions it was built with."""
    envoy_like = node("envoy-1")
    envoy_like.metadata.update({"kontinuum.io/namespace": "demo"})
    envoy_like.user_agent_name = "envoy"
    for index in range(520):
        envoy_like.extensions.add(
            name=f"envoy.filters.http.extension_{index:04}",
            category="envoy.filters.http",
            type_urls=[f"envoy.extensions.filters.http.extension_{index:04}.v3.Config"],
        )
    assert 40_000 < envoy_like.ByteSize() < MAX_NODE_BYTES
    call = env.call()
    request = first_request()
    request.node.CopyFrom(envoy_like)
    await call.write(request)
    await asyncio.wait_for(call.read(), 5)

    (shown,) = await client_status(env)
    assert shown.node.id == "envoy-1"
    assert shown.node.user_agent_name == "envoy"
    assert shown.node.metadata == envoy_like.metadata
    assert list(shown.node.extensions) == []
    assert env.server.stats.streams_limited == 0
    call.cancel()
    await settled(env)


async def test_the_status_of_many_nodes_at_their_bound_is_still_read(env: Env) -> None:
    """Nodes with metadata just within the bound, more of them than gRPC's default 4 MiB
    holds: `kontinuum status` still reads the fleet's status."""
    big = node("big")
    big.metadata.CopyFrom(_metadata_of(MAX_NODE_METADATA_BYTES - 1024))
    count = 4 * 1024 * 1024 // MAX_NODE_METADATA_BYTES + 2
    calls = []
    for index in range(count):
        big.id = f"big-{index}"
        call = env.call()
        request = first_request()
        request.node.CopyFrom(big)
        await call.write(request)
        await asyncio.wait_for(call.read(), 5)
        calls.append(call)
    address = f"127.0.0.1:{env.server.ports[0]}"
    proxies = await asyncio.to_thread(fetch_status, address)
    assert sorted(p.node_id for p in proxies) == sorted(f"big-{i}" for i in range(count))
    for call in calls:
        call.cancel()
    await settled(env)


async def test_the_longest_node_id_allowed_is_served(env: Env) -> None:
    call = env.call()
    request = first_request()
    request.node.id = "i" * MAX_NODE_ID_LENGTH
    await call.write(request)
    response = await asyncio.wait_for(call.read(), 5)
    assert response.type_url == CDS
    call.cancel()
    await settled(env)


async def test_a_request_over_the_message_bound_is_refused(env: Env) -> None:
    request = first_request()
    request.node.user_agent_name = "x" * (MAX_REQUEST_BYTES + 1024)
    call = env.call()
    await write_all(call, [request])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(call.read(), 5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serves_a_good_client(env)


# -- subscriptions -----------------------------------------------------------------------------


def _long_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05}-".ljust(MAX_NAME_LENGTH, "x") for i in range(count)]


# Names of the longest length allowed, in requests that each fit the message bound, that
# add up to more than a stream may hold.
PER_REQUEST = (MAX_REQUEST_BYTES - 64 * 1024) // (MAX_NAME_LENGTH + 8)
REQUESTS = MAX_NAME_CHARACTERS_PER_STREAM // (PER_REQUEST * MAX_NAME_LENGTH) + 1


@both
async def test_names_that_add_up_past_the_stream_bound_end_the_stream(
    env: Env, delta: bool
) -> None:
    assert REQUESTS * PER_REQUEST * MAX_NAME_LENGTH > MAX_NAME_CHARACTERS_PER_STREAM
    call = env.call(delta)
    requests = []
    for index, type_url in enumerate((EDS, RDS, SDS)[:REQUESTS]):
        names = _long_names(f"r{index}", PER_REQUEST)
        # Delta: one type, subscriptions adding up; SotW: one subscription per type.
        request = first_request(EDS if delta else type_url, names, delta=delta)
        if index:
            request.ClearField("node")
        requests.append(request)
    await write_all(call, requests)
    _, code = await finish(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "characters" in str(await call.details())
    await assert_serves_a_good_client(env, delta=delta)


@both
async def test_names_over_all_types_are_bounded_per_stream(env: Env, delta: bool) -> None:
    half = MAX_NAMES_PER_STREAM // 2 + 1
    call = env.call(delta)
    second = first_request(RDS, [f"r{i}" for i in range(half)], delta=delta)
    second.ClearField("node")
    await write_all(call, [first_request(EDS, [f"e{i}" for i in range(half)], delta=delta), second])
    _, code = await finish(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {MAX_NAMES_PER_STREAM}" in str(await call.details())
    await assert_serves_a_good_client(env, delta=delta)


def _held_by(roots: list[object], prefix: str) -> list[str]:
    """The strings starting with `prefix` reachable from `roots` through containers and
    kontinuum's own objects (not through modules, functions or other libraries' objects)."""
    found: list[str] = []
    seen: set[int] = set()
    frontier = list(roots)
    while frontier:
        assert len(seen) < 5_000_000, "the walk does not end"
        current = frontier.pop()
        for referent in gc.get_referents(current):
            if isinstance(referent, str):
                if referent.startswith(prefix):
                    found.append(referent)
                continue
            if id(referent) in seen:
                continue
            container = isinstance(
                referent, dict | list | tuple | set | frozenset | MappingProxyType
            )
            if container or type(referent).__module__.startswith("kontinuum."):
                seen.add(id(referent))
                frontier.append(referent)
    return found


@both
async def test_a_closed_stream_leaves_none_of_its_names_behind(env: Env, delta: bool) -> None:
    """Names the view does not have are one client's own: once its stream is closed the
    server holds none of them (nor the stream), however many responses it was sent."""
    probe = "probe-of-a-closed-stream"
    names = [f"{probe}-{i}".ljust(1_000, "x") for i in range(200)]
    call = env.call(delta)
    await call.write(first_request(EDS, ["a", *names], delta=delta))
    response = await asyncio.wait_for(call.read(), 5)
    assert response.type_url == EDS
    (stream,) = env.server.streams()
    alive = weakref.ref(stream)
    assert _held_by([env.server, env.cache], probe)  # the walk finds what a stream holds
    del stream
    call.cancel()
    await settled(env)
    gc.collect()
    assert alive() is None
    assert _held_by([env.server, env.cache], probe) == []
