"""Client Status Discovery Service: what every connected client was sent and accepted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from kontinuum.xds import types
from kontinuum.xds.identity import UnauthenticatedError
from kontinuum.xds.state import SyncStatus, TypeState
from kontinuum.xds.stream import Stream

_CONFIG_STATUS = {
    SyncStatus.SYNCED: csds_pb2.SYNCED,
    SyncStatus.STALE: csds_pb2.STALE,
    SyncStatus.NACKED: csds_pb2.ERROR,
    SyncStatus.NOT_SENT: csds_pb2.NOT_SENT,
}
_CLIENT_STATUS = {
    SyncStatus.SYNCED: dump_pb2.ACKED,
    SyncStatus.STALE: dump_pb2.ACKED,  # holds an older ACKed version (REQUESTED if none)
    SyncStatus.NACKED: dump_pb2.NACKED,
    SyncStatus.NOT_SENT: dump_pb2.REQUESTED,
}


def resource_names(stream: Stream, state: TypeState) -> list[str]:
    """The names a client's status covers: what it subscribed to, was sent or holds."""
    names = set(state.names) | state.sent.keys() | state.acked.keys()
    if state.wildcard:
        names.update(stream.resources.resources(state.type_url))
    return sorted(names)


def resource_statuses(stream: Stream) -> Iterable[tuple[str, str, SyncStatus, TypeState]]:
    """(type URL, name, status, type state) for every resource of a stream."""
    for type_url in types.PUSH_ORDER:
        state = stream.types.get(type_url)
        if state is None:
            continue
        available = stream.resources.resources(type_url)
        for name in resource_names(stream, state):
            yield type_url, name, state.status_of(name, available.get(name)), state


def client_config(stream: Stream) -> Any:
    """One CSDS ClientConfig; resource contents are never included (they may be secrets)."""
    config = csds_pb2.ClientConfig(node=stream.connection.node)
    for type_url, name, status, state in resource_statuses(stream):
        entry = config.generic_xds_configs.add(
            type_url=type_url,
            name=name,
            version_info=state.acked.get(name, ""),
            config_status=_CONFIG_STATUS[status],
            client_status=_CLIENT_STATUS[status],
        )
        if name not in stream.resources.resources(type_url) and name not in state.sent:
            entry.client_status = dump_pb2.DOES_NOT_EXIST
        elif status is SyncStatus.STALE and name not in state.acked:
            entry.client_status = dump_pb2.REQUESTED
        sent = state.sent.get(name)
        rejection = state.rejected.get(name)
        if status is SyncStatus.NACKED and rejection is not None:
            entry.error_state.version_info = rejection.version
            entry.error_state.details = rejection.message
            entry.error_state.last_update_attempt.FromSeconds(int(rejection.at))
        elif status is SyncStatus.STALE and sent is not None and sent != entry.version_info:
            # The version sent and not yet accepted; no details: nothing was rejected.
            entry.error_state.version_info = sent
    return config


def _string_matches(matcher: Any, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind is None:
        return True
    pattern = getattr(matcher, kind)
    if kind == "exact":
        return bool(value == pattern)
    if kind == "prefix":
        return value.startswith(pattern)
    if kind == "suffix":
        return value.endswith(pattern)
    if kind == "contains":
        return pattern in value
    return False


def matches(stream: Stream, request: Any) -> bool:
    """Whether a stream's node satisfies the request's node matchers (node id only)."""
    node_id = str(stream.connection.node.id)
    return all(
        not m.HasField("node_id") or _string_matches(m.node_id, node_id)
        for m in request.node_matchers
    )


class ClientStatusService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """CSDS over every stream. `authorize` may refuse a caller (PermissionError): the status
    names every proxy and resource of the fleet, which not every proxy may know."""

    def __init__(
        self,
        streams: Callable[[], Iterable[Stream]],
        authorize: Callable[[grpc.aio.ServicerContext[Any, Any]], float | None] | None = None,
    ) -> None:
        self._streams = streams
        self._authorize = authorize

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
        """Refuse a caller `authorize` refuses, or whose credential has expired (on a
        connection opened while it was valid); else when it expires (Unix time; None:
        never). Every call is checked, unary ones too."""
        if self._authorize is None:
            return None
        try:
            expires = self._authorize(context)
        except UnauthenticatedError as unproven:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(unproven))
        except PermissionError as denied:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(denied))
        if expires is not None and time.time() >= expires:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the credential of this call expired: reconnect with a new one",
            )
        return expires

    def status(self, request: Any) -> Any:
        configs = [
            client_config(s)
            for s in sorted(self._streams(), key=lambda s: (str(s.connection.node.id), s.id))
            if matches(s, request)
        ]
        return csds_pb2.ClientStatusResponse(config=configs)

    async def FetchClientStatus(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        await self._check(context)
        return self.status(request)

    async def StreamClientStatus(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        expires = await self._check(context)
        async for request in request_iterator:
            # Nothing more once the caller's credential has expired.
            if expires is not None and time.time() >= expires:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "the credential of this stream expired"
                )
            yield self.status(request)
