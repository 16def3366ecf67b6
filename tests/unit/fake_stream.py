"""A fake ADS client that drives a real `SotwStream`/`DeltaStream` and checks every send.

In the style of go-control-plane's `mockStream`: the stream under test is the real one,
driven through its only seam, `run(first, requests, write)`. Requests come from a queue;
`write` decodes every response and checks the protocol invariants on every send, so a
test that never looks at a response still fails if the server sent a malformed one:

- the nonce is non-empty, never reused, and increases in send order;
- the response's `type_url` is a type the server serves, and every resource's
  `Any.type_url` equals it;
- SotW: `version_info` is set; Delta: every resource has a name and a version;
- no resource name appears twice in one response (nor in both resources and removed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from kontinuum.xds import types
from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.csds import client_config
from kontinuum.xds.delta import DeltaStream
from kontinuum.xds.identity import Peer
from kontinuum.xds.sotw import SotwStream
from kontinuum.xds.stream import Connection, Stream
from tests.support.resources import cluster, http_listener, load_assignment, route_config

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaDiscoveryResponse = discovery_pb2.DeltaDiscoveryResponse

VIEW = "v"
_END = object()


def base_resources(**replace: Any) -> list[Any]:
    """Clusters a and b with endpoints, listener l -> route r -> cluster a."""
    resources = {
        "cluster/a": cluster("a"),
        "cluster/b": cluster("b"),
        "cla/a": load_assignment("a", 1001),
        "cla/b": load_assignment("b", 1002),
        "listener/l": http_listener("l", 8080, "r"),
        "route/r": route_config("r", "a"),
    }
    for key, value in replace.items():
        resources[key.replace("_", "/", 1)] = value
    return [r for r in resources.values() if r is not None]


class ProtocolInvariantError(AssertionError):
    """The server sent a response that breaks an invariant of the xDS protocol."""


def node(node_id: str = "node-1", cluster: str = VIEW) -> Any:
    return base_pb2.Node(id=node_id, cluster=cluster)


def request(
    type_url: str,
    names: Iterable[str] = (),
    *,
    version: str = "",
    nonce: str = "",
    error: str | None = None,
    with_node: bool = False,
) -> Any:
    """A SotW DiscoveryRequest."""
    req = DiscoveryRequest(
        type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    if with_node:
        req.node.CopyFrom(node())
    return req


def ack(response: Any, names: Iterable[str] = ()) -> Any:
    """The SotW ACK of `response`, keeping the subscription `names`."""
    return request(response.type_url, names, version=response.version_info, nonce=response.nonce)


def nack(
    response: Any, names: Iterable[str] = (), *, version: str = "", message: str = "bad"
) -> Any:
    """The SotW NACK of `response`: the previous accepted `version` and an error."""
    return request(response.type_url, names, version=version, nonce=response.nonce, error=message)


def delta_request(
    type_url: str,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    *,
    nonce: str = "",
    initial_versions: Mapping[str, str] | None = None,
    error: str | None = None,
) -> Any:
    """A DeltaDiscoveryRequest."""
    req = DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=dict(initial_versions or {}),
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def delta_ack(response: Any) -> Any:
    return delta_request(response.type_url, nonce=response.nonce)


def delta_nack(response: Any, message: str = "bad") -> Any:
    return delta_request(response.type_url, nonce=response.nonce, error=message)


def names_of(response: Any) -> list[str]:
    """The names of the resources a SotW or Delta response carries, in order."""
    if isinstance(response, DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return [_sotw_name(response.type_url, a) for a in response.resources]


def csds_entries(fake: FakeStream) -> dict[tuple[str, str], Any]:
    """What CSDS reports for a stream: (CDS, name) -> GenericXdsConfig."""
    config = client_config(fake.stream)
    return {(types.short_name(e.type_url), e.name): e for e in config.generic_xds_configs}


def _sotw_name(type_url: str, packed: Any) -> str:
    if type_url == types.ENDPOINT:
        return str(endpoint_pb2.ClusterLoadAssignment.FromString(packed.value).cluster_name)
    # Cluster, Listener, RouteConfiguration and Secret all have `name` as field 1.
    return str(cluster_pb2.Cluster.FromString(packed.value).name)


class FakeStream:
    """Drives one real stream; collects and checks what it writes."""

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        delta: bool = False,
        view: str = VIEW,
        node_id: str = "node-1",
    ) -> None:
        kind = DeltaStream if delta else SotwStream
        self.delta = delta
        self.stream: Stream = kind(
            cache, Connection(node=node(node_id, view), view=view, peer=Peer(address="test"))
        )
        self.raw: list[bytes] = []  # every payload written, in order
        self.sent: list[Any] = []  # the same, decoded
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self.checker = ResponseChecker()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, first: Any) -> FakeStream:
        self._task = asyncio.create_task(self.stream.run(first, self._iterate(), self._write))
        await asyncio.sleep(0)
        return self

    async def close(self) -> None:
        """End the request stream and wait for `run` to return; re-raise what it raised."""
        if self._task is None:
            return
        await self._requests.put(_END)
        try:
            await asyncio.wait_for(self._task, 5)
        finally:
            self._task = None

    async def _iterate(self) -> AsyncIterator[Any]:
        while (item := await self._requests.get()) is not _END:
            yield item

    # -- the client side --------------------------------------------------------------------

    async def send(self, req: Any) -> None:
        self._check_running()
        await self._requests.put(req)
        # Let the reader apply it and the writer answer before the test looks.
        for _ in range(5):
            await asyncio.sleep(0)

    async def recv(self, timeout: float = 2.0) -> Any:
        """The next response the server sent; fails after `timeout` seconds of nothing."""
        try:
            return self._responses.get_nowait()
        except asyncio.QueueEmpty:
            pass
        self._check_running()
        getter = asyncio.ensure_future(self._responses.get())
        assert self._task is not None
        done, _ = await asyncio.wait(
            {getter, self._task}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await getter
        self._check_running()
        raise AssertionError(f"no response within {timeout}s")

    async def recv_all(self, count: int, timeout: float = 2.0) -> list[Any]:
        return [await self.recv(timeout) for _ in range(count)]

    async def expect_silence(self, seconds: float = 0.05) -> None:
        """Fail if the server sends anything within `seconds`."""
        await asyncio.sleep(seconds)
        self._check_running()
        if not self._responses.empty():
            pending = []
            while not self._responses.empty():
                pending.append(self._responses.get_nowait())
            raise AssertionError(f"expected silence, got {[_summary(r) for r in pending]}")

    def _check_running(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # re-raise an invariant violation or a server error
            raise AssertionError("the stream ended")

    # -- the invariants, checked on every send ---------------------------------------------

    async def _write(self, payload: bytes) -> None:
        assert isinstance(payload, bytes), f"the stream wrote {type(payload)!r}, not bytes"
        self.raw.append(payload)
        response = (DeltaDiscoveryResponse if self.delta else DiscoveryResponse).FromString(payload)
        self.checker.check(response)
        self.sent.append(response)
        await self._responses.put(response)


class ResponseChecker:
    """The invariants every response of one stream must satisfy, checked one by one."""

    def __init__(self) -> None:
        self._nonces: set[str] = set()
        self._last_nonce: int | None = None

    def check(self, response: Any) -> None:
        """Raise ProtocolInvariantError if `response` breaks an invariant."""
        delta = isinstance(response, DeltaDiscoveryResponse)

        def fail(problem: str) -> None:
            raise ProtocolInvariantError(f"{problem}: {_summary(response)}")

        nonce = response.nonce
        if not nonce:
            fail("empty nonce")
        if nonce in self._nonces:
            fail(f"nonce {nonce!r} reused")
        self._nonces.add(nonce)
        if nonce.isdigit():
            if self._last_nonce is not None and int(nonce) <= self._last_nonce:
                fail(f"nonce {nonce} not greater than the previous {self._last_nonce}")
            self._last_nonce = int(nonce)
        if response.type_url not in types.KNOWN_TYPES:
            fail("a type_url the server does not serve")
        if delta:
            names = []
            for resource in response.resources:
                if not resource.name:
                    fail("a Delta resource without a name")
                if not resource.version:
                    fail(f"Delta resource {resource.name!r} without a version")
                if resource.resource.type_url != response.type_url:
                    fail(f"resource {resource.name!r} has type {resource.resource.type_url}")
                names.append(resource.name)
            removed = list(response.removed_resources)
            if len(set(removed)) != len(removed):
                fail("duplicate names in removed_resources")
            if set(removed) & set(names):
                fail("a name both updated and removed")
        else:
            if not response.version_info:
                fail("no version_info")
            for packed in response.resources:
                if packed.type_url != response.type_url:
                    fail(f"a resource of type {packed.type_url}")
            names = names_of(response)
        if len(set(names)) != len(names):
            fail("duplicate resource names")


def _summary(response: Any) -> str:
    kind = types.short_name(response.type_url)
    if isinstance(response, DeltaDiscoveryResponse):
        return (
            f"<delta {kind} nonce={response.nonce!r} resources={names_of(response)} "
            f"removed={list(response.removed_resources)}>"
        )
    return (
        f"<{kind} nonce={response.nonce!r} version={response.version_info!r} "
        f"resources={names_of(response)}>"
    )


@contextlib.asynccontextmanager
async def open_stream(
    cache: SnapshotCache, first: Any, *, delta: bool = False, view: str = VIEW, node_id: str = "n"
) -> AsyncIterator[FakeStream]:
    """A started FakeStream that is closed (and checked to have ended cleanly) on exit."""
    watchers = cache.watcher_count(view)
    fake = FakeStream(cache, delta=delta, view=view, node_id=node_id)
    await fake.start(first)
    try:
        yield fake
    finally:
        await fake.close()
    assert cache.watcher_count(view) == watchers, "the stream's watch outlived it"
