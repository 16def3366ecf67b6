"""The global's side of federation: the `Federation` gRPC service zones dial out to.

A zone opens `ZoneToGlobal` over mutual TLS with a certificate of the fleet CA. Before
anything it sends is read, the stream is admitted or refused:

- the certificate must prove `spiffe://<trust domain>/ns/kontinuum-system/sa/zone-<site>`
  of the cluster of that same site (a certificate of no cluster, such as a server's or a
  workload's, is refused) for the site the zone names in its
  `kontinuum-zone-site` metadata: a zone publishes the objects of its own site only;
- a certificate issued by a zone's intermediate CA publishes that zone's site only
  (`kontinuum.security.zone_ca`): a zone cannot mint another's identity;
- the site must be declared by a ClusterProfile annotated `kontinuum.io/source: zone`.

A refusal ends the stream with UNAUTHENTICATED or PERMISSION_DENIED and is counted by
reason. An admitted stream plays the xDS client's part: it subscribes with a wildcard,
naming in `initial_resource_versions` what the global already holds of the site (as much
as fits in one message, `declarable`), then hands each response to the site's source
(`kontinuum.discovery.zone`) and answers it with an ACK, or a NACK whose `error_detail`
names on one line each object refused and why (the others apply). Besides the site's
objects, a response may hold the site's state (`site/<site>`, a `SiteService`): the
zone's own source of the site is out of sync, and the source marks the site stale. A
message is at most 4 MiB (`MAX_MESSAGE_BYTES`).

Each global process draws an instance id at start (`instance`) and names it in the
`node.id` of a ZoneToGlobal stream's first request (the global is the xDS client there)
and in the `control_plane.identifier` of each GlobalToZone response (as an xDS
management server names itself): a zone that reaches one process at two addresses keeps
one link to it. A ZoneToGlobal stream is attached to the site's source at its first
response, so a link the zone closes on reading the first request replaces nothing.

A zone may run several replicas, each naming itself in `kontinuum-zone-replica`: the
global keeps one stream of each kind per replica (a newer one of the same replica ends
the older), and the site's source says which replica's view is the site's
(`kontinuum.discovery.zone_replicas`). At most `MAX_REPLICAS` replica ids of a zone are
connected at once, its streams of both kinds counted together: a stream naming another
is refused with RESOURCE_EXHAUSTED. At most `MAX_WAITING` ZoneToGlobal streams of a
replica wait for their first response at once (a zone dials a global at each of its
addresses), all told of the same view: a newer stream ends at once (ABORTED) the oldest
beyond that, and every older one told of an older view (it could not attach). Each waits
for at most `FIRST_RESPONSE_DEADLINE` seconds from its connect (then it is ended,
DEADLINE_EXCEEDED, and counted): what a zone may keep waiting is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.control.model import Grant, SiteSnapshot
from kontinuum.control.routing import Gateway
from kontinuum.discovery.zone import (
    Held,
    ReceivedObject,
    StaleState,
    SupersededError,
    ZoneSource,
)
from kontinuum.federation.catalog import FleetCatalog
from kontinuum.federation.objects import (
    GLOBAL_TO_ZONE,
    MAX_MESSAGE_BYTES,
    PARTIAL,
    REPLICA_METADATA,
    SERVICE,
    SITE_METADATA,
    TYPE_URL,
    ZONE_RESOURCE_TYPE_URL,
    ZONE_TO_GLOBAL,
    ObjectError,
    declarable,
    nack,
    received_object,
    received_site_state,
    zone_service_account,
)
from kontinuum.federation.publisher import Publisher, PublisherStats
from kontinuum.federation.v1.federation_pb2 import KubeObject, SiteService
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import CONTROL_PLANE_NAMESPACE, ISSUING_SITE_CLAIM
from kontinuum.xds.identity import Authenticator, Peer, UnauthenticatedError
from kontinuum.xds.limits import cut, shown
from kontinuum.xds.listen import ListenError, check_free

log = logging.getLogger("kontinuum.federation")

# Why a zone's stream was refused, the label of kontinuum_federation_refused_total.
REFUSED_UNAUTHENTICATED: Final = "unauthenticated"  # no certificate of the fleet CA
REFUSED_IDENTITY: Final = "identity"  # not the identity of the site it names
REFUSED_UNDECLARED: Final = "undeclared"  # no site of that name has `source: zone`
REFUSED_ISSUER: Final = "issuer"  # issued by the zone CA of another site
REFUSED_SILENT: Final = "no_first_response"  # sent no response within FIRST_RESPONSE_DEADLINE
REFUSED_REASONS: Final = (
    REFUSED_UNAUTHENTICATED,
    REFUSED_IDENTITY,
    REFUSED_UNDECLARED,
    REFUSED_ISSUER,
    REFUSED_SILENT,
)
MAX_REPLICA_ID: Final = 253  # characters of a zone's replica id kept
MAX_REPLICAS: Final = 16  # replicas of one zone connected at once
# ZoneToGlobal streams of one replica waiting for their first response at once: a zone
# dials one global at each of its addresses (IPv4 and IPv6, say) and keeps one of them.
MAX_WAITING: Final = 4
# Seconds a ZoneToGlobal stream may wait, from its connect, before its first response.
FIRST_RESPONSE_DEADLINE: Final = 30.0

_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]


class NotReadyError(Exception):
    """The global cannot tell yet whether a site is a zone (it has not read the fleet):
    the zone is asked to retry (UNAVAILABLE), not refused."""


class _RefusedError(Exception):
    def __init__(self, reason: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


@dataclass(eq=False, slots=True)
class _Connecting:
    """A ZoneToGlobal stream, what the site held when it connected (None: it no longer
    waits to attach), and why it ends now, once told (`end`): a newer stream of its
    replica connected before its first response, or the site's source ended it."""

    since: Held | None
    ending: asyncio.Event = field(default_factory=asyncio.Event)
    why: _Ended | None = None

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        if self.why is None:
            self.why = _Ended(code, reason)
        self.ending.set()


class FleetFeed:
    """The catalog zones are sent, and the streams to wake when it changes."""

    def __init__(self) -> None:
        self.catalog = FleetCatalog()
        self.ready = asyncio.Event()  # the first fleet is in the catalog
        self._streams: dict[asyncio.Event, Publisher] = {}

    def update(
        self,
        bodies: Sequence[object],
        snapshots: Sequence[SiteSnapshot],
        gateways: Sequence[Gateway] = (),
        grants: Sequence[Grant] = (),
    ) -> None:
        """The fleet as applied (`FleetCatalog.update`); the streams it changes are woken."""
        changed = self.catalog.update(bodies, snapshots, gateways, grants)
        self.ready.set()
        if changed:
            for wake, publisher in self._streams.items():
                publisher.touched(changed)
                wake.set()

    def follow(self, wake: asyncio.Event, publisher: Publisher) -> None:
        self._streams[wake] = publisher

    def leave(self, wake: asyncio.Event) -> None:
        self._streams.pop(wake, None)


class FederationService:
    """The `Federation` service of the global (see the module doc). `zone_of(site)` is
    the source of a site declared with `source: zone`, or None; it raises `NotReadyError`
    before the fleet is known. `feed`: what GlobalToZone streams send.
    `first_response_deadline`: seconds a ZoneToGlobal stream may wait for its first
    response."""

    def __init__(
        self,
        authenticator: Authenticator,
        zone_of: Callable[[str], ZoneSource | None],
        feed: FleetFeed | None = None,
        first_response_deadline: float = FIRST_RESPONSE_DEADLINE,
    ) -> None:
        self._authenticator = authenticator
        self._first_response_deadline = first_response_deadline
        self._zone_of = zone_of
        self.feed = feed or FleetFeed()
        self.refused: Counter[str] = Counter()
        # What GlobalToZone streams sent each zone (by site), since the global started.
        self.sent: dict[str, PublisherStats] = {}
        self.subscribed: Counter[str] = Counter()  # GlobalToZone streams open, by site
        self.subscriptions: Counter[str] = Counter()  # and admitted, since the start
        # The newest GlobalToZone stream of each zone replica (its wake event), by (site,
        # replica), as ZoneToGlobal; an older one (its link was cut unnoticed, say) ends at
        # its next wake.
        self._subscriptions: dict[tuple[str, str], asyncio.Event] = {}
        # Since when (Unix time) a zone's GlobalToZone streams have a response not answered,
        # or a change not sent yet (the oldest of its replicas'); absent while they hold
        # everything they were sent. By replica in `_behind`.
        self.behind_since: dict[str, float] = {}
        self._behind: dict[str, dict[str, float]] = {}
        # The open streams of either kind, by site and replica id: a zone has at most
        # MAX_REPLICAS replica ids connected, its streams of both kinds counted together.
        self._replica_streams: dict[str, Counter[str]] = {}
        # The ZoneToGlobal streams of each zone replica connected but not attached yet
        # (they have sent no response), oldest first, with what the site held when each
        # connected: all the same one (a newer stream told of another ends the older at
        # once), at most MAX_WAITING of them.
        self._connecting: dict[tuple[str, str], list[_Connecting]] = {}
        # This process's instance id, drawn at start: a zone that reaches it at two
        # addresses keeps one link to it (`kontinuum.federation.global_links`).
        self.instance = secrets.token_hex(8)

    def lag(self, source: ZoneSource, now: float) -> float:
        """How long the zone has been behind the global (seconds): since the oldest response
        of the fleet it has not acknowledged yet (0 when none); while its ZoneToGlobal
        stream is down, since it went down if that is earlier (it hears nothing meanwhile)."""
        behind = [self.behind_since.get(source.cluster)]
        if not source.stats.connected:
            behind.append(source.stats.last_transition)
        since = min((t for t in behind if t is not None), default=now)
        return max(0.0, now - since)

    def _behind_from(self, site: str, replica: str, since: float | None) -> None:
        """A replica's GlobalToZone stream is behind since `since` (None: caught up)."""
        of_site = self._behind.setdefault(site, {})
        if since is None:
            of_site.pop(replica, None)
        else:
            of_site.setdefault(replica, since)
        if of_site:
            self.behind_since[site] = min(of_site.values())
        else:
            self._behind.pop(site, None)
            self.behind_since.pop(site, None)

    async def _join(
        self, context: grpc.aio.ServicerContext[Any, Any], site: str, replica: str
    ) -> None:
        """Count a stream of a zone replica, or abort it (RESOURCE_EXHAUSTED) when it names
        a replica id beyond the zone's MAX_REPLICAS connected; `_leave` when it ends."""
        streams = self._replica_streams.setdefault(site, Counter())
        if replica not in streams and len(streams) >= MAX_REPLICAS:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"zone {site} has {MAX_REPLICAS} replicas connected already",
            )
        streams[replica] += 1

    def _leave(self, site: str, replica: str) -> None:
        streams = self._replica_streams.get(site)
        if streams is None:
            return
        streams[replica] -= 1
        if streams[replica] <= 0:
            del streams[replica]
        if not streams:
            del self._replica_streams[site]

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                ZONE_TO_GLOBAL: grpc.stream_stream_rpc_method_handler(
                    self._zone_to_global,
                    request_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
                    response_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                ),
                GLOBAL_TO_ZONE: grpc.stream_stream_rpc_method_handler(
                    self._global_to_zone,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
                ),
            },
        )

    def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[ZoneSource, Peer]:
        """The source of the zone on the other end and who it is, or `_RefusedError`
        saying why not."""
        metadata = dict(context.invocation_metadata() or ())
        site = str(metadata.get(SITE_METADATA, ""))
        try:
            peer = self._authenticator.authenticate(context)
        except UnauthenticatedError as error:
            raise _RefusedError(
                REFUSED_UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED, str(error)
            ) from None
        if problem := _identity_problem(peer, site):
            raise _RefusedError(REFUSED_IDENTITY, grpc.StatusCode.PERMISSION_DENIED, problem)
        issuing_site = peer.claims.get(ISSUING_SITE_CLAIM)
        if issuing_site is not None and issuing_site != site:
            raise _RefusedError(
                REFUSED_ISSUER,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{peer.identity} may not publish site {shown(site)}: its certificate is "
                f"issued by the zone CA of site {shown(issuing_site)}",
            )
        source = self._zone_of(site)
        if source is None:
            raise _RefusedError(
                REFUSED_UNDECLARED,
                grpc.StatusCode.PERMISSION_DENIED,
                f"site {shown(site)} is not declared as a zone: its ClusterProfile needs the "
                "annotation kontinuum.io/source: zone",
            )
        return source, peer

    async def _admitted(
        self, context: grpc.aio.ServicerContext[Any, Any], what: str
    ) -> tuple[ZoneSource, Peer] | None:
        """`_admit`, or the stream aborted saying why not (None); `what`: the stream's kind
        in the log."""
        try:
            return self._admit(context)
        except NotReadyError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        except _RefusedError as refused:
            self.refused[refused.reason] += 1
            log.warning("refused a zone %s from %s: %s", what, context.peer(), cut(refused))
            await context.abort(refused.code, cut(refused))
        return None

    def _revoked(self, source: ZoneSource, peer: Peer) -> tuple[grpc.StatusCode, str] | None:
        """Why an admitted stream ends now (its status and reason): its certificate expired,
        or its site is no longer declared as a zone; None while neither."""
        if peer.expires_at is not None and time.time() >= peer.expires_at:
            return grpc.StatusCode.UNAUTHENTICATED, (
                "its certificate expired: reconnect with a new one"
            )
        if self._zone_of(source.cluster) is not source:
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"site {source.cluster} is no longer declared as a zone"
            )
        return None

    async def _zone_to_global(
        self,
        responses: AsyncIterator[discovery_pb2.DeltaDiscoveryResponse],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        admitted = await self._admitted(context, "stream")
        if admitted is None:
            return
        source, peer = admitted
        replica = _replica(context)
        await self._join(context, source.cluster, replica)
        declared = declarable(source.held())
        # Attached at its first response: a zone closes at once a link to an instance it
        # reaches already (it reads the node.id), replacing no stream of its replica. The
        # streams of a replica waiting share one copy of what was held (a newer one told
        # of another ends the older at once: they could not attach), at most MAX_WAITING
        # of them (the oldest ends), each for at most the first response deadline: what
        # a replica may keep waiting is bounded in count, bytes and time.
        deadline = asyncio.get_running_loop().time() + self._first_response_deadline
        key, connecting = (source.cluster, replica), _Connecting(source.holding())
        waiting = self._connecting.setdefault(key, [])
        told_alike = [c for c in waiting if c.since is connecting.since and c.why is None]
        kept = told_alike[max(0, len(told_alike) + 1 - MAX_WAITING) :]  # the newest
        for older in waiting:
            if older not in kept:
                older.end(
                    grpc.StatusCode.ABORTED,
                    "a newer stream of this zone replica connected before this one's first "
                    "response",
                )
        waiting[:] = [*kept, connecting]
        stream = 0
        reason = "its stream ended"
        try:
            yield discovery_pb2.DeltaDiscoveryRequest(
                type_url=TYPE_URL,
                resource_names_subscribe=["*"],
                initial_resource_versions=declared,
                node=Node(id=self.instance),
            )
            response = await self._next_response(responses, connecting, deadline)
            while response is not None:
                if isinstance(response, _Ended):
                    reason = response.reason
                    if response.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        self.refused[REFUSED_SILENT] += 1
                        log.warning("ended a zone stream from %s: %s", context.peer(), cut(reason))
                    await context.abort(response.code, reason)
                if revoked := self._revoked(source, peer):
                    reason = revoked[1]
                    await context.abort(*revoked)
                if not stream:
                    stream = self._attach(source, replica, declared.keys(), connecting)
                    log.info(
                        "zone %s connected from %s%s", source.cluster, context.peer(), _of(replica)
                    )
                yield self._take(source, stream, response)
                response = await self._next_response(responses, connecting, None)
        except SupersededError:
            reason = "another stream of the zone replica replaced it"
            await context.abort(grpc.StatusCode.ABORTED, reason)
        except asyncio.CancelledError:
            reason = "its stream was cut"
            raise
        finally:
            self._waited(key, connecting)
            if stream:
                source.detach(stream, reason)
                log.info("zone %s disconnected%s: %s", source.cluster, _of(replica), reason)
            self._leave(source.cluster, replica)

    async def _next_response(
        self,
        responses: AsyncIterator[discovery_pb2.DeltaDiscoveryResponse],
        connecting: _Connecting,
        deadline: float | None,
    ) -> discovery_pb2.DeltaDiscoveryResponse | _Ended | None:
        """A stream's next response (None: it ended), or why it ends without one: it was
        told to (`_Connecting.end`), or `deadline` (loop time) passed."""

        async def next_one() -> discovery_pb2.DeltaDiscoveryResponse | None:
            return await anext(aiter(responses), None)

        if connecting.why is not None:
            return connecting.why
        reading = asyncio.ensure_future(next_one())
        ending = asyncio.ensure_future(connecting.ending.wait())
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait(
                (reading, ending), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ending.cancel()
            if not reading.done():
                reading.cancel()
        if connecting.why is not None:
            return connecting.why
        if reading.done() and not reading.cancelled():
            return reading.result()
        return _Ended(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no first response within {self._first_response_deadline:g} s of connecting",
        )

    def _attach(
        self, source: ZoneSource, replica: str, declared: Iterable[str], connecting: _Connecting
    ) -> int:
        """Attach a stream at its first response; `SupersededError` when a newer stream of
        its replica connected meanwhile."""
        since = connecting.since
        if since is None or connecting.why is not None:
            raise SupersededError("a newer stream of this zone replica connected")
        self._waited((source.cluster, replica), connecting)

        def ended(reason: str) -> None:  # the source ended it (a standby over the bound)
            connecting.end(grpc.StatusCode.ABORTED, reason)

        return source.attach(list(declared), replica, since, ended)

    def _waited(self, key: tuple[str, str], connecting: _Connecting) -> None:
        """A stream no longer waits to attach."""
        connecting.since = None
        waiting = self._connecting.get(key, [])
        if connecting in waiting:
            waiting.remove(connecting)
        if not waiting:
            self._connecting.pop(key, None)

    async def _global_to_zone(
        self,
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """Send the zone what it needs of the fleet: only what differs from what it holds
        (its first request's `initial_resource_versions`), then each change, one response
        in flight at a time."""
        admitted = await self._admitted(context, "subscription")
        if admitted is None:
            return
        source, peer = admitted
        site, replica = source.cluster, _replica(context)
        await self._join(context, site, replica)
        try:
            async for response in self._subscription(requests, context, source, peer, replica):
                yield response
        finally:
            self._leave(site, replica)

    async def _subscription(
        self,
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
        source: ZoneSource,
        peer: Peer,
        replica: str,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """An admitted GlobalToZone stream of a counted replica (`_global_to_zone`)."""
        site = source.cluster
        first = await anext(aiter(requests), None)
        if first is None:
            return
        if first.type_url != ZONE_RESOURCE_TYPE_URL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type {shown(first.type_url)} is not {ZONE_RESOURCE_TYPE_URL}",
            )
        await self.feed.ready.wait()
        publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL, tracking=True)
        publisher.stats = self.sent.setdefault(site, PublisherStats())
        publisher.publish_mapping(self.feed.catalog.for_zone(site))
        publisher.connect(dict(first.initial_resource_versions))
        wake = asyncio.Event()
        wake.set()
        replaced = self._subscriptions.get((site, replica))
        self._subscriptions[site, replica] = wake
        if replaced is not None:
            replaced.set()
        self.feed.follow(wake, publisher)
        self.subscribed[site] += 1
        self.subscriptions[site] += 1
        log.info(
            "zone %s subscribed from %s%s, holding %d resource(s)",
            site,
            context.peer(),
            _of(replica),
            len(first.initial_resource_versions),
        )

        async def answers() -> None:
            async for request in requests:
                answer = publisher.answer(request)
                if answer is not None and not answer.accepted:
                    log.warning("zone %s refused resources: %s", site, cut(answer.error))
                wake.set()

        reader = asyncio.ensure_future(answers())
        try:
            while not reader.done():
                waiting = asyncio.ensure_future(wake.wait())
                await asyncio.wait((waiting, reader), return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                wake.clear()
                if reader.done():
                    break
                if self._subscriptions.get((site, replica)) is not wake:
                    await context.abort(
                        grpc.StatusCode.ABORTED,
                        "another subscription of the zone replica replaced it",
                    )
                if revoked := self._revoked(source, peer):
                    await context.abort(*revoked)
                if publisher.unanswered:
                    continue  # its answer wakes this again
                publisher.publish_mapping(self.feed.catalog.for_zone(site))
                response = publisher.response()
                if response is None:  # everything sent was answered: caught up
                    self._behind_from(site, replica, None)
                    continue
                self._behind_from(site, replica, time.time())
                response.control_plane.identifier = self.instance
                yield response
                wake.set()  # more may follow (a large change in several responses)
        finally:
            reader.cancel()
            self.feed.leave(wake)
            if self._subscriptions.get((site, replica)) is wake:
                del self._subscriptions[site, replica]
                self._behind_from(site, replica, None)  # a newer stream's marker stays
            self.subscribed[site] -= 1
            log.info("zone %s unsubscribed%s", site, _of(replica))

    def _take(
        self, source: ZoneSource, stream: int, response: discovery_pb2.DeltaDiscoveryResponse
    ) -> discovery_pb2.DeltaDiscoveryRequest:
        """Apply one response; its ACK, or its NACK naming what was refused."""
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=TYPE_URL, response_nonce=response.nonce
        )
        if response.type_url != TYPE_URL:  # nothing of it applies
            nack(request, f"type {shown(response.type_url)} is not {TYPE_URL}")
            return request
        refused: list[str] = []
        objects: list[ReceivedObject] = []
        state: StaleState | None = None
        for resource in response.resources:
            if resource.name.startswith("site/"):
                said = SiteService()
                try:
                    if not resource.resource.Unpack(said):
                        raise ObjectError(f"holds a {shown(resource.resource.type_url)}")
                    found = received_site_state(
                        source.cluster, resource.name, resource.version, said
                    )
                except ObjectError as error:
                    refused.append(f"{shown(resource.name)}: {error}")
                    continue
                state = StaleState(found.name, found.version, found.stale_since)
                continue
            message = KubeObject()
            try:
                if not resource.resource.Unpack(message):
                    raise ObjectError(f"holds a {shown(resource.resource.type_url)}")
                obj = received_object(resource.name, resource.version, message)
            except ObjectError as error:
                refused.append(f"{shown(resource.name)}: {error}")
                continue
            objects.append(obj.received())
        partial = response.system_version_info == PARTIAL
        refused += source.apply(stream, objects, list(response.removed_resources), partial, state)
        if refused:
            detail = cut(f"{len(refused)} object(s) refused: " + "; ".join(refused))
            log.warning("zone %s: %s", source.cluster, detail)
            nack(request, detail)
        return request


@dataclass(frozen=True, slots=True)
class _Ended:
    """Why a ZoneToGlobal stream ends before its first response: its status and reason."""

    code: grpc.StatusCode
    reason: str


def _replica(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The replica id a zone names (bounded: a longer one is cut); "" when it names none."""
    metadata = dict(context.invocation_metadata() or ())
    return str(metadata.get(REPLICA_METADATA, ""))[:MAX_REPLICA_ID]


def _of(replica: str) -> str:
    """A replica as the log names it."""
    return f" (replica {shown(replica)})" if replica else ""


def _identity_problem(peer: Peer, site: str) -> str:
    """Why `peer` may not publish `site`, or "": it must prove the site's zone identity,
    `ns/kontinuum-system/sa/zone-<site>`, of the site's cluster (named, as in every
    certificate `kontinuum ca issue` writes)."""
    if not site:
        return f"name the site in the {SITE_METADATA} metadata"
    expected = f"ns/{CONTROL_PLANE_NAMESPACE}/sa/{zone_service_account(site)}"
    refusal = f"{peer.identity or 'an anonymous peer'} may not publish site {shown(site)}"
    try:
        identity = SpiffeId.parse(peer.identity or "")
    except ValueError:
        return f"{refusal}: a zone of that site proves {expected}"
    if (identity.namespace, identity.service_account) != (
        CONTROL_PLANE_NAMESPACE,
        zone_service_account(site),
    ):
        return f"{refusal}: a zone of that site proves {expected}"
    cluster = peer.claims.get("cluster")
    if not cluster:
        # A server's certificate or a workload's (SDS), of no cluster: no zone credential.
        return (
            f"{refusal}: its certificate names no cluster; a zone's names its site "
            f"(`kontinuum ca issue --cluster {site}`)"
        )
    if cluster != site:
        return f"{refusal}: its certificate is for cluster {shown(cluster)}"
    return ""


async def start_server(
    service: FederationService, address: str, credentials: grpc.ServerCredentials
) -> grpc.aio.Server:
    """The federation server on `address` (mutual TLS), started; `ListenError` when the
    address cannot be listened on."""
    check_free(address)
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((service.handler(),))
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ListenError(address, "gRPC could not bind it")
    await server.start()
    log.info(
        "federation server listening on %s (mutual TLS), instance %s", address, service.instance
    )
    return server
