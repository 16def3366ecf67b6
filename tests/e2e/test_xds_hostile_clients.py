"""Careless or hostile clients of an authenticated xDS server, end to end.

The fleet of test_xds_security is served with its CA (mutual TLS, and a token address);
real gRPC clients send what no proxy should: nothing at all, a node id of a megabyte, a
view per port, a status read with a certificate that has since expired. Each is refused
with the status a client can act on, and what the server logs and holds stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from kontinuum.mesh import MAX_VIEWS_PER_IDENTITY
from kontinuum.security import issue_token
from kontinuum.xds import types
from kontinuum.xds.limits import MAX_LOGGED_MESSAGE_LENGTH, MAX_NODE_ID_LENGTH
from tests.e2e.test_xds_security import (
    BILLING,
    CLUSTER,
    FRONTEND,
    HOUR,
    OPERATOR,
    Secured,
    issue,
    refused_count,
    secured_fleet,
)
from tests.support.security import SOTW_METHOD, ads, node, refusal, root_only, write_credentials

pytestmark = pytest.mark.e2e

# No log line the server writes about a client is longer than its message, an address,
# a node id cut short and the words around them.
LONGEST_LOG_LINE = MAX_LOGGED_MESSAGE_LENGTH + 600


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_fleet(tmp_path) as served:
        yield served


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="kontinuum")
    return caplog


def _longest_line(caplog: pytest.LogCaptureFixture) -> int:
    return max((len(r.getMessage()) for r in caplog.records), default=0)


# -- item: refuse before reading -------------------------------------------------------------


async def test_a_stream_without_credential_is_refused_before_it_sends_anything(
    secured: Secured,
) -> None:
    async with grpc.aio.secure_channel(secured.token, root_only(secured.ca)) as channel:
        call: Any = channel.stream_stream(
            SOTW_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )(timeout=20)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(call.read(), 5)  # it writes nothing at all
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bootstrap token" in str(refused.value.details())
    assert await refused_count(secured, "unauthenticated") == 1.0


async def test_a_megabyte_node_id_without_credential_is_neither_read_nor_logged(
    secured: Secured, logs: pytest.LogCaptureFixture
) -> None:
    huge = "h" * (1024 * 1024)
    for _ in range(3):
        refused = await refusal(
            secured.token, root_only(secured.ca), node(huge, CLUSTER, "demo"), types.CLUSTER
        )
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED, refused
    assert await refused_count(secured, "unauthenticated") == 3.0
    logged = [r.getMessage() for r in logs.records if "refused xDS stream" in r.getMessage()]
    assert len(logged) == 3, logged
    assert _longest_line(logs) < LONGEST_LOG_LINE
    assert not [m for m in logged if "hhhhhhhh" in m]  # not even a piece of it


async def test_an_authenticated_node_id_is_bounded_and_logged_cut_short(
    secured: Secured, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    bearer = (("authorization", f"Bearer {issue_token(secured.ca, FRONTEND, CLUSTER, HOUR)}"),)
    too_long = await refusal(
        secured.token,
        root_only(secured.ca),
        node("t" * (MAX_NODE_ID_LENGTH + 1), CLUSTER, "demo"),
        types.CLUSTER,
        metadata=bearer,
    )
    assert too_long.code == grpc.StatusCode.INVALID_ARGUMENT, too_long
    assert f"limited to {MAX_NODE_ID_LENGTH} characters" in too_long.details

    # Within the bound, but claiming what its identity may not: logged, cut short.
    long_id = "d" * MAX_NODE_ID_LENGTH
    frontend = issue(secured, tmp_path / "frontend", FRONTEND).channel_credentials()
    denied = await refusal(
        secured.mtls, frontend, node(long_id, CLUSTER, "payments"), types.CLUSTER
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED, denied
    (line,) = [
        r.getMessage()
        for r in logs.records
        if "refused xDS stream" in r.getMessage() and "'payments'" in r.getMessage()
    ]
    assert "ddddd" in line
    assert long_id not in line
    assert _longest_line(logs) < LONGEST_LOG_LINE
    assert await refused_count(secured, "limit") == 1.0
    assert await refused_count(secured, "denied") == 1.0


# -- item: views per identity ----------------------------------------------------------------


async def _open_view(channel: grpc.aio.Channel, claim: Any) -> None:
    """Open a SotW stream claiming `claim`, wait for its first answer, and close it."""
    call: Any = channel.stream_stream(
        SOTW_METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )(timeout=10)
    await call.write(discovery_pb2.DiscoveryRequest(node=claim, type_url=types.CLUSTER))
    try:
        await call.read()
    finally:
        call.cancel()


def _sidecar(index: int, outbound: int, namespace: str = "demo") -> Any:
    return node(f"{namespace}-{index}", CLUSTER, namespace, outbound_port=outbound)


async def test_one_identity_holds_a_bounded_number_of_views(
    secured: Secured, tmp_path: Path
) -> None:
    """One certificate claiming a new outbound port per stream: past the bound its new
    views are refused (RESOURCE_EXHAUSTED, counted), while its views in use, and every
    other identity, are served as before."""
    frontend = issue(secured, tmp_path / "frontend", FRONTEND).channel_credentials()
    async with grpc.aio.secure_channel(secured.mtls, frontend) as channel:
        for index in range(MAX_VIEWS_PER_IDENTITY):
            await _open_view(channel, _sidecar(index, 20_000 + index))
        views = len(secured.fleet.mesh.cache.views())
        assert views == MAX_VIEWS_PER_IDENTITY

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _open_view(channel, _sidecar(9_999, 30_000))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"{MAX_VIEWS_PER_IDENTITY} views" in str(refused.value.details())
        assert str(FRONTEND) in str(refused.value.details())
        assert len(secured.fleet.mesh.cache.views()) == views  # nothing more held
        assert await refused_count(secured, "limit") == 1.0

        await _open_view(channel, _sidecar(0, 20_000))  # a view it has is served

    billing = issue(secured, tmp_path / "billing", BILLING).channel_credentials()
    served = await ads(
        secured.mtls, billing, _sidecar(1, 15_001, "payments"), [(types.CLUSTER, [])]
    )
    assert served[types.CLUSTER].resources

    # Once its views go unused long enough to be dropped, it may have new ones.
    assert secured.fleet.mesh.forget_idle(set(), idle_for=0) >= MAX_VIEWS_PER_IDENTITY
    async with grpc.aio.secure_channel(secured.mtls, frontend) as channel:
        await _open_view(channel, _sidecar(9_999, 30_000))
    assert await refused_count(secured, "limit") == 1.0


# -- item: an expired certificate on a connection opened while it held -----------------------


async def test_client_status_refuses_an_operator_certificate_that_expired_on_an_open_connection(
    secured: Secured, tmp_path: Path
) -> None:
    lifetime = timedelta(seconds=3)
    issued = secured.ca.issue_workload(OPERATOR, CLUSTER, lifetime)
    operator = write_credentials(tmp_path / "operator", issued, secured.ca)
    frontend = issue(secured, tmp_path / "frontend", FRONTEND).channel_credentials()
    async with (
        grpc.aio.secure_channel(secured.mtls, frontend) as proxy,
        grpc.aio.secure_channel(secured.mtls, operator.channel_credentials()) as channel,
    ):
        call: Any = proxy.stream_stream(
            SOTW_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )(timeout=30)
        claim = node("frontend-csds", CLUSTER, "demo")
        await call.write(discovery_pb2.DiscoveryRequest(node=claim, type_url=types.CLUSTER))
        await call.read()  # a proxy connected, for the status to name
        status = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        answer = await status.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
        assert [c.node.id for c in answer.config] == ["frontend-csds"]

        ends = time.time() + lifetime.total_seconds()
        await asyncio.sleep(ends - time.time() + 0.5)  # past its end: at most 3.5 s
        for _ in range(2):  # each call is checked, not only the connection's first
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await status.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
            # UNAUTHENTICATED, not UNAVAILABLE: the connection opened before is the one used.
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "expired" in str(refused.value.details())
        call.cancel()
