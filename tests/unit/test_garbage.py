"""Garbage input against a real in-process `XdsServer`, over gRPC on the loopback.

Whatever one client sends (unknown types, absurd name lists, random nonces, bytes that
are not protobuf, a NACK full of junk, no node, a disconnect mid-response) ends at worst
that client's own stream with a client-error status. The server keeps serving every
other client, and every stream it opened is closed and unwatched again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kontinuum.xds import SnapshotCache, XdsServer, types, wire
from kontinuum.xds.csds import client_config
from kontinuum.xds.stream import MAX_NAME_LENGTH, MAX_NAMES_PER_TYPE
from tests.support.resources import cluster, load_assignment
from tests.unit.fake_stream import VIEW, ResponseChecker, base_resources, names_of, node

CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD = ADS + "StreamAggregatedResources"
DELTA_METHOD = ADS + "DeltaAggregatedResources"

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest

# What a client's garbage may earn it; UNKNOWN or INTERNAL would mean the server broke.
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

CLIENT_WRITE_FAILED, CORE_ERROR = grpc.StatusCode.INTERNAL, "Internal error from Core"


@dataclass
class Env:
    server: XdsServer
    cache: SnapshotCache
    channel: grpc.aio.Channel

    def call(self, delta: bool = False) -> Any:
        """A new ADS stream of protobuf messages."""
        if delta:
            return self.channel.stream_stream(
                DELTA_METHOD,
                request_serializer=DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )()
        return self.channel.stream_stream(
            SOTW_METHOD,
            request_serializer=DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()

    def raw_call(self, delta: bool = False) -> Any:
        """A new ADS stream of raw bytes, both ways."""
        method = DELTA_METHOD if delta else SOTW_METHOD
        return self.channel.stream_stream(
            method, request_serializer=None, response_deserializer=None
        )()


@pytest.fixture(autouse=True)
def no_unexpected_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """grpc logs an exception a handler did not expect (status UNKNOWN): none may.

    Only grpc's own record of a servicer exception counts: grpc-aio's poller may also log
    "Event loop is closed" when it wakes a previous test's loop, which says nothing about
    the server.
    """
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    errors = [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR
        and r.name.startswith("grpc")
        and "raised by servicer method" in r.getMessage()
    ]
    assert not errors


def first_request(type_url: str = CDS, names: Iterable[str] = (), *, delta: bool = False) -> Any:
    if delta:
        return DeltaDiscoveryRequest(
            node=node("fuzz"), type_url=type_url, resource_names_subscribe=list(names)
        )
    return DiscoveryRequest(node=node("fuzz"), type_url=type_url, resource_names=list(names))


async def write_all(call: Any, requests: Iterable[Any], *, done: bool = False) -> None:
    """Write requests; stop quietly once the server has ended the call.

    A client that writes after the server ended the call sees INTERNAL "Internal error
    from Core" from its own failed write (grpc-python) instead of the server's status, so
    tests that expect a status stop writing at the request that earns it.
    """
    try:
        for req in requests:
            await call.write(req)
        if done:
            await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the server already ended the call: `finish` tells how


async def finish(call: Any, timeout: float = 10.0) -> tuple[list[Any], grpc.StatusCode]:
    """Read until the server ends the call; the responses and the final status."""
    responses: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while (response := await call.read()) is not grpc.aio.EOF:
                responses.append(response)
    except grpc.aio.AioRpcError:
        pass
    return responses, await call.code()


async def settled(env: Env, streams: int = 0) -> None:
    """Wait until exactly `streams` streams are open and watching."""
    for _ in range(200):
        if len(env.server.streams()) == streams and env.cache.watcher_count() == streams:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"{len(env.server.streams())} streams open and {env.cache.watcher_count()} watching, "
        f"expected {streams}"
    )


async def assert_serves_a_good_client(env: Env, *, delta: bool = False, others: int = 0) -> None:
    """A well-behaved client still gets its CDS response; `others` streams stay open."""
    call = env.call(delta)
    await call.write(first_request(delta=delta))
    response = await asyncio.wait_for(call.read(), 5)
    ResponseChecker().check(response)
    assert response.type_url == CDS
    assert names_of(response) == ["a", "b"]
    call.cancel()
    await settled(env, others)


both = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])


# -- unknown types, absurd names, bad nonces ---------------------------------------------------


@both
async def test_unknown_type_urls_are_ignored_and_the_stream_goes_on(env: Env, delta: bool) -> None:
    junk = [
        "type.googleapis.com/no.such.Message",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster ",
        "type.googleapis.com/google.protobuf.Empty",
        "\u2603" * 1000,
        "x" * 100_000,
    ]
    call = env.call(delta)
    await call.write(first_request(junk[0], ["a"], delta=delta))
    for type_url in junk[1:]:
        await call.write(first_request(type_url, ["*"], delta=delta))
    await call.write(first_request(CDS, delta=delta))
    response = await asyncio.wait_for(call.read(), 5)
    assert response.type_url == CDS  # the junk was not answered
    assert names_of(response) == ["a", "b"]
    assert len(env.server.streams()) == 1
    await write_all(call, [], done=True)
    _, code = await finish(call)
    assert code == grpc.StatusCode.OK
    await assert_serves_a_good_client(env, delta=delta)


@both
async def test_an_empty_type_url_ends_only_that_stream(env: Env, delta: bool) -> None:
    call = env.call(delta)
    await write_all(call, [first_request(delta=delta), first_request("", delta=delta)])
    _, code = await finish(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await assert_serves_a_good_client(env, delta=delta)


@both
async def test_an_absurd_name_list_ends_the_stream_with_resource_exhausted(
    env: Env, delta: bool
) -> None:
    names = [f"n{i}" for i in range(200_000)]
    assert len(names) > MAX_NAMES_PER_TYPE
    call = env.call(delta)
    await write_all(call, [first_request(EDS, names, delta=delta)])
    _, code = await finish(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serves_a_good_client(env, delta=delta)


async def test_absurd_delta_unsubscribe_and_initial_versions(env: Env) -> None:
    many = {f"n{i}": "v" for i in range(MAX_NAMES_PER_TYPE + 1)}
    for req in (
        DeltaDiscoveryRequest(type_url=EDS, resource_names_unsubscribe=list(many)),
        DeltaDiscoveryRequest(type_url=CDS, initial_resource_versions=many),
    ):
        req.node.CopyFrom(node("fuzz"))
        call = env.call(delta=True)
        await write_all(call, [req])
        _, code = await finish(call)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serves_a_good_client(env, delta=True)


@both
async def test_very_long_names(env: Env, delta: bool) -> None:
    call = env.call(delta)
    await write_all(call, [first_request(CDS, ["n" * (MAX_NAME_LENGTH + 1)], delta=delta)])
    _, code = await finish(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    # The longest name allowed is accepted (and answered: it does not exist).
    call = env.call(delta)
    await call.write(first_request(CDS, ["a", "n" * MAX_NAME_LENGTH], delta=delta))
    response = await asyncio.wait_for(call.read(), 5)
    assert names_of(response) == ["a"]
    call.cancel()
    await assert_serves_a_good_client(env, delta=delta)


async def test_a_request_over_the_receive_limit(env: Env) -> None:
    huge = first_request()
    huge.node.user_agent_name = "x" * (17 * 1024 * 1024)
    call = env.call()
    await write_all(call, [huge])
    _, code = await finish(call)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serves_a_good_client(env)


BAD_NONCES = ["zzz", "-1", "0", "99999999999999999999999", "1\x00", "\u2603", "2" * 5000]


async def test_bad_stale_and_random_nonces_are_ignored(env: Env) -> None:
    call = env.call()
    checker = ResponseChecker()
    await call.write(first_request())
    response = await asyncio.wait_for(call.read(), 5)
    checker.check(response)
    for nonce in BAD_NONCES:
        await call.write(
            DiscoveryRequest(type_url=CDS, response_nonce=nonce, version_info="\u2603")
        )
    await call.write(
        DiscoveryRequest(
            type_url=CDS, response_nonce="zzz", error_detail=status_pb2.Status(message="?")
        )
    )
    await call.write(
        DiscoveryRequest(
            type_url=CDS, response_nonce=response.nonce, version_info=response.version_info
        )
    )
    env.cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
    response = await asyncio.wait_for(call.read(), 5)
    checker.check(response)
    assert names_of(response) == ["a", "b", "c"]
    assert env.server.stats.nacks[CDS] == 0
    assert env.server.stats.acks[CDS] == 1
    call.cancel()
    env.cache.set_resources(VIEW, base_resources())
    await assert_serves_a_good_client(env)


async def test_bad_nonces_on_a_delta_stream(env: Env) -> None:
    call = env.call(delta=True)
    checker = ResponseChecker()
    await call.write(first_request(delta=True))
    response = await asyncio.wait_for(call.read(), 5)
    checker.check(response)
    for nonce in BAD_NONCES:
        await call.write(DeltaDiscoveryRequest(type_url=CDS, response_nonce=nonce))
    await call.write(DeltaDiscoveryRequest(type_url=CDS, response_nonce=response.nonce))
    env.cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
    response = await asyncio.wait_for(call.read(), 5)
    checker.check(response)
    assert names_of(response) == ["c"]
    assert env.server.stats.acks[CDS] == 1
    call.cancel()
    env.cache.set_resources(VIEW, base_resources())
    await assert_serves_a_good_client(env, delta=True)


# -- bytes that are not what they claim to be ----------------------------------------------------


def _malformed_payloads(delta: bool) -> list[list[bytes]]:
    valid = first_request(delta=delta).SerializeToString()
    # error_detail (field 6 in both requests) holding bytes that are no google.rpc.Status.
    bad_status = wire.field(0x32, b"\x0a\xff\xff\xff\xff\x0f")
    return [
        [b"\xff\xff\xff\xff"],
        [b"\x0a\x80"],  # a length that runs past the end
        [valid[: len(valid) // 2]],
        [valid, b"\x00\x01\x02\x03garbage"],
        [valid, valid + bad_status],
        [bytes(range(256)) * 64],
    ]


@both
async def test_malformed_bytes_end_only_that_stream(env: Env, delta: bool) -> None:
    for payloads in _malformed_payloads(delta):
        call = env.raw_call(delta)
        await write_all(call, payloads)
        _, code = await finish(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, payloads
        await settled(env, 0)
    await assert_serves_a_good_client(env, delta=delta)


async def test_a_nack_whose_error_detail_is_junk(env: Env) -> None:
    call = env.call()
    await call.write(first_request())
    response = await asyncio.wait_for(call.read(), 5)
    error = status_pb2.Status(code=-5, message="\u2603" * 1_000_000)
    error.details.append(any_pb2.Any(type_url="not a url", value=b"\xff\xfe\x00"))
    error.details.append(any_pb2.Any(type_url="type.googleapis.com/google.rpc.Status"))
    error.details[-1].value = b"\x0a\xff\xff"  # claims to be a Status; is not one
    await call.write(
        DiscoveryRequest(type_url=CDS, response_nonce=response.nonce, error_detail=error)
    )
    await asyncio.sleep(0.1)
    assert env.server.stats.nacks[CDS] == 1
    (stream,) = env.server.streams()
    entry = next(e for e in client_config(stream).generic_xds_configs if e.name == "a")
    assert 0 < len(entry.error_state.details) <= 4096  # recorded, and bounded
    # The stream goes on: the next version is sent.
    env.cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", 3)])
    assert names_of(await asyncio.wait_for(call.read(), 5)) == ["a", "b", "c"]
    call.cancel()
    env.cache.set_resources(VIEW, base_resources())
    await assert_serves_a_good_client(env)


@both
async def test_a_first_request_without_node_is_refused(env: Env, delta: bool) -> None:
    req = first_request(delta=delta)
    req.ClearField("node")
    call = env.call(delta)
    await write_all(call, [req])
    responses, code = await finish(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert responses == []
    assert env.server.stats.streams_opened == 0
    await assert_serves_a_good_client(env, delta=delta)


@both
async def test_a_stream_without_requests(env: Env, delta: bool) -> None:
    call = env.call(delta)
    await write_all(call, [], done=True)
    responses, code = await finish(call)
    assert (responses, code) == ([], grpc.StatusCode.OK)
    assert env.server.stats.streams_opened == 0


# -- clients that go away ------------------------------------------------------------------------


@both
async def test_clients_that_disconnect_mid_response_leave_nothing_behind(
    env: Env, delta: bool
) -> None:
    many = [m for i in range(3000) for m in (cluster(f"c{i}"), load_assignment(f"c{i}", i + 1))]
    env.cache.set_resources(VIEW, [*base_resources(), *many])
    for i in range(20):
        call = env.call(delta)
        await call.write(first_request(delta=delta))
        if i % 2:
            await asyncio.sleep(0.001 * i)
        call.cancel()
    await settled(env, 0)
    assert env.server.stats.streams_opened == env.server.stats.streams_closed
    env.cache.set_resources(VIEW, base_resources())
    await assert_serves_a_good_client(env, delta=delta)


async def test_a_client_that_stops_reading_holds_only_the_latest_state(env: Env) -> None:
    call = env.call()
    await call.write(first_request())
    await asyncio.wait_for(call.read(), 5)  # never ACKed, never read again
    for i in range(50):
        env.cache.set_resources(VIEW, [*base_resources(), cluster("c"), load_assignment("c", i)])
        env.cache.set_resources(VIEW, base_resources())
    await asyncio.sleep(0.1)
    assert env.server.stats.responses[CDS] == 1  # one in flight, nothing queued behind it
    await assert_serves_a_good_client(env, others=1)
    call.cancel()
    await settled(env, 0)


# -- property: no sequence of requests breaks the server -----------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_names = st.lists(
    st.one_of(st.sampled_from(["a", "b", "c", "*", "l", "r", "x", ""]), _text), max_size=6
)
_type_urls = st.one_of(
    st.sampled_from([CDS, EDS, LDS, RDS, types.SECRET]),
    st.sampled_from([CDS, CDS, EDS]),
    st.sampled_from(["", "junk", "type.googleapis.com/google.protobuf.Empty"]),
    _text,
)
_nonces = st.one_of(st.sampled_from(["", "1", "2", "3", "4", "5", "0", "-1"]), _text)
_errors = st.one_of(
    st.none(),
    st.builds(
        status_pb2.Status,
        code=st.integers(-(2**31), 2**31 - 1),
        message=_text,
        details=st.lists(
            st.builds(any_pb2.Any, type_url=_text, value=st.binary(max_size=40)), max_size=2
        ),
    ),
)


@st.composite
def sotw_requests(draw: st.DrawFn) -> Any:
    req = DiscoveryRequest(
        type_url=draw(_type_urls),
        resource_names=draw(_names),
        response_nonce=draw(_nonces),
        version_info=draw(_text),
    )
    error = draw(_errors)
    if error is not None:
        req.error_detail.CopyFrom(error)
    if draw(st.integers(0, 3)):
        req.node.CopyFrom(node(draw(_text), cluster=draw(st.sampled_from([VIEW, VIEW, "other"]))))
    return req


@st.composite
def delta_requests(draw: st.DrawFn) -> Any:
    req = DeltaDiscoveryRequest(
        type_url=draw(_type_urls),
        resource_names_subscribe=draw(_names),
        resource_names_unsubscribe=draw(_names),
        response_nonce=draw(_nonces),
        initial_resource_versions=draw(st.dictionaries(_text, _text, max_size=3)),
    )
    error = draw(_errors)
    if error is not None:
        req.error_detail.CopyFrom(error)
    if draw(st.integers(0, 3)):
        req.node.CopyFrom(node(draw(_text), cluster=draw(st.sampled_from([VIEW, VIEW, "other"]))))
    return req


# Each step: a request, and whether the view changes (cluster c comes or goes) after it.
_sotw_steps = st.lists(st.tuples(sotw_requests(), st.booleans()), min_size=1, max_size=10)
_delta_steps = st.lists(st.tuples(delta_requests(), st.booleans()), min_size=1, max_size=10)
_fuzz = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _fuzz_one_stream(env: Env, steps: list[tuple[Any, bool]], *, delta: bool) -> None:
    call = env.call(delta)
    with_c = False
    try:
        for req, change in steps:
            await call.write(req)
            if change:
                with_c = not with_c
                extra = [cluster("c"), load_assignment("c", 3)] if with_c else []
                env.cache.set_resources(VIEW, [*base_resources(), *extra])
            await asyncio.sleep(0)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the server ended the stream: its status is checked below
    responses, code = await finish(call)
    details = await call.details()
    # A write after the server ended the call hides the server's status behind the client's
    # own INTERNAL; what the server did is then checked by `no_unexpected_server_errors`.
    assert code in CLIENT_ERRORS or (code, details) == (CLIENT_WRITE_FAILED, CORE_ERROR), (
        code,
        details,
    )
    checker = ResponseChecker()
    for response in responses:
        checker.check(response)
    env.cache.set_resources(VIEW, base_resources())
    await settled(env, 0)
    await assert_serves_a_good_client(env, delta=delta)
    await assert_serves_a_good_client(env, delta=not delta)


@_fuzz
@given(steps=_sotw_steps)
async def test_random_sotw_request_sequences_never_break_the_server(
    env: Env, steps: list[tuple[Any, bool]]
) -> None:
    await _fuzz_one_stream(env, steps, delta=False)


@_fuzz
@given(steps=_delta_steps)
async def test_random_delta_request_sequences_never_break_the_server(
    env: Env, steps: list[tuple[Any, bool]]
) -> None:
    await _fuzz_one_stream(env, steps, delta=True)
