"""The gRPC server: ADS (SotW and Delta), CSDS, health checking and reflection."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kontinuum.xds.cache import SnapshotCache
from kontinuum.xds.csds import ClientStatusService
from kontinuum.xds.delta import DeltaStream
from kontinuum.xds.identity import (
    AnonymousAuthenticator,
    Authenticator,
    LimitExceededError,
    Peer,
    UnauthenticatedError,
    ViewResolver,
    ViewRevokedError,
    ViewUnavailableError,
    view_by_node_cluster,
)
from kontinuum.xds.limits import (
    MAX_REQUEST_BYTES,
    ProtocolViolationError,
    check_node,
    cut,
    kept_node,
    shown,
)
from kontinuum.xds.listen import ListenError, check_free
from kontinuum.xds.sotw import SotwStream
from kontinuum.xds.stats import ServerStats
from kontinuum.xds.stream import Connection, Stream

log = logging.getLogger("kontinuum.xds")

ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
CSDS_SERVICE = csds_pb2.DESCRIPTOR.services_by_name["ClientStatusDiscoveryService"].full_name

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_concurrent_streams", 1_000_000),
    # A fleet reconnecting at once after a restart opens thousands of streams together;
    # grpc's default of 1,000 pending calls would cancel the rest.
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
]


class XdsServer:
    """Serves the views of a `SnapshotCache` to xDS clients.

    Responses are written as pre-assembled bytes (grpc sends them unchanged), so the
    per-stream work of a push is choosing the bytes and appending a nonce.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        resolve_view: ViewResolver = view_by_node_cluster,
        authenticator: Authenticator | None = None,
        may_read_status: Callable[[Peer], bool] | None = None,
    ) -> None:
        """`may_read_status`: who may read CSDS (None: every caller the authenticator
        lets in)."""
        self.cache = cache
        self._resolve_view = resolve_view
        self._authenticator: Authenticator = authenticator or AnonymousAuthenticator()
        self._may_read_status = may_read_status
        self._streams: dict[int, Stream] = {}
        self.stats = ServerStats()
        self._server: grpc.aio.Server | None = None
        self.ports: tuple[int, ...] = ()  # bound ports, once started

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self,
        address: str = "127.0.0.1:18000",
        credentials: grpc.ServerCredentials | None = None,
        *,
        also: Sequence[tuple[str, grpc.ServerCredentials]] = (),
        reuse_port: bool = False,
    ) -> int:
        """Bind and start; returns the bound port (useful with port 0).

        `also`: more addresses the same services are served on, each with its own TLS
        credentials (one that requires client certificates, one that does not); their bound
        ports are in `ports` after `address`'s.

        An address something already listens on is refused (`ListenError`): two servers
        sharing a port would each get some of the proxies. `reuse_port` lets several
        servers share one on purpose (SO_REUSEPORT).
        """
        addresses = [address, *(where for where, _ in also)]
        if not reuse_port:
            for where in addresses:
                check_free(where)
        options = [*_OPTIONS, ("grpc.so_reuseport", 1 if reuse_port else 0)]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((self._ads_handler(),))
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            ClientStatusService(self.streams, self._authorize_status), server
        )
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (ADS_SERVICE, CSDS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        ports = []
        for where, creds in ((address, credentials), *also):
            try:
                port = (
                    server.add_insecure_port(where)
                    if creds is None
                    else server.add_secure_port(where, creds)
                )
            except RuntimeError:  # taken since `check_free`, or what gRPC alone refuses
                port = 0
            if port == 0:
                raise ListenError(where, "gRPC could not bind it")
            ports.append(port)
        await server.start()
        self.ports = tuple(ports)
        for service in ("", ADS_SERVICE, CSDS_SERVICE):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info(
            "xDS server listening on %s (%s)",
            ", ".join(addresses),
            "plaintext" if credentials is None else "TLS",
        )
        return ports[0]

    def _authorize_status(self, context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
        """Who may read CSDS, and until when (the credential's expiry); a refusal is logged
        (it is no xDS stream: not counted)."""
        try:
            peer = self._authenticator.authenticate(context)
            if self._may_read_status is not None and not self._may_read_status(peer):
                raise PermissionError(f"{peer.identity or peer.address} may not read client status")
        except PermissionError as refused:
            log.warning("refused a client status read from %s: %s", context.peer(), refused)
            raise
        return peer.expires_at

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    @property
    def serving(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    def streams(self) -> tuple[Stream, ...]:
        return tuple(self._streams.values())

    # -- ADS -------------------------------------------------------------------------------

    def _ads_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._stream_sotw,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=None,  # responses are already bytes
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._stream_delta,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=None,
                ),
            },
        )

    async def _stream_sotw(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        await self._serve(SotwStream, requests, context)

    async def _stream_delta(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        await self._serve(DeltaStream, requests, context)

    async def _serve(
        self,
        kind: type[SotwStream] | type[DeltaStream],
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, bytes],
    ) -> None:
        # Who the caller is comes from the connection and the call's metadata: a caller
        # that proves nothing is refused before a byte of its requests is read or logged.
        try:
            peer = self._authenticator.authenticate(context)
        except UnauthenticatedError as unproven:
            self.stats.streams_unauthenticated += 1
            log.warning("refused xDS stream from %s: %s", context.peer(), cut(unproven))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(unproven))
        except PermissionError as denied:
            self.stats.streams_refused += 1
            log.warning("refused xDS stream from %s: %s", context.peer(), cut(denied))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(denied))
        try:
            first = await anext(aiter(requests), None)
        except DecodeError as error:  # garbage bytes are the client's error, not UNKNOWN
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {error}")
        if first is None:
            return
        if not first.HasField("node"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request of a stream must carry a node"
            )
        node_id = shown(first.node.id)
        try:
            check_node(first.node)
        except ProtocolViolationError as violation:
            self.stats.streams_limited += 1
            log.warning(
                "refused xDS stream from %s (node %s): %s", context.peer(), node_id, violation
            )
            await context.abort(violation.code, str(violation))
        try:
            view = self._resolve_view(first.node, peer)
        except LimitExceededError as exhausted:
            self.stats.streams_limited += 1
            _refused(context, node_id, exhausted)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exhausted))
        except UnauthenticatedError as unproven:
            self.stats.streams_unauthenticated += 1
            _refused(context, node_id, unproven)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(unproven))
        except ViewUnavailableError as unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(unavailable))
        except PermissionError as denied:
            self.stats.streams_refused += 1
            _refused(context, node_id, denied)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(denied))
        node = kept_node(first.node)
        first = _without_node(first)
        stream = kind(self.cache, Connection(node=node, view=view, peer=peer), self.stats)
        self._streams[stream.id] = stream
        self.stats.streams_opened += 1
        log.info(
            "%s stream %d opened: node %s, view %s", kind.protocol, stream.id, node_id, shown(view)
        )
        # A stream lives no longer than the credential that opened it: a stolen or
        # expired certificate or token does not keep receiving configuration and secrets.
        lasts = None if peer.expires_at is None else max(0.0, peer.expires_at - time.time())
        scope = asyncio.timeout(lasts)
        try:
            async with scope:
                await stream.run(first, requests, context.write)
        except TimeoutError:
            if not scope.expired():
                raise
            log.info("closing stream %d of %s: its credential expired", stream.id, node_id)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the credential this stream was opened with expired: reconnect with a new one",
            )
        except ViewRevokedError as revoked:
            self.stats.streams_refused += 1
            log.warning("closing stream %d of %s: %s", stream.id, node_id, cut(revoked))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(revoked))
        except ProtocolViolationError as violation:
            log.warning("closing stream %d of %s: %s", stream.id, node_id, violation)
            await context.abort(violation.code, str(violation))
        except DecodeError as error:
            log.warning("closing stream %d of %s: malformed request", stream.id, node_id)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {error}")
        finally:
            del self._streams[stream.id]
            self.stats.streams_closed += 1
            log.info("%s stream %d closed (node %s)", kind.protocol, stream.id, node_id)


def _refused(context: grpc.aio.ServicerContext[Any, bytes], node_id: str, why: Exception) -> None:
    log.warning("refused xDS stream from %s (node %s): %s", context.peer(), node_id, cut(why))


def _without_node(request: Any) -> Any:
    """The request without its node, parsed anew: the stream holds on to its first
    request, and the message it came in would keep all the memory of the node."""
    request.ClearField("node")
    return type(request).FromString(request.SerializeToString())
