"""The `clusterset.local` DNS server: UDP and TCP on one port, on asyncio.

The server reads the current service plane through a callable (the mesh keeps the plane;
this package knows only `kontinuum.control`) and rebuilds its zone when the plane object
changes, so a fleet change is answered from the next query on. Every query is answered in
the event loop without awaiting anything (the zone is a dictionary), so UDP needs no queue.
`DnsThread` (thread.py) runs the server on an event loop of its own, away from xDS.

Bounds, so that no client can hold the server (the size of a query is bounded in
`answer.py`): a TCP connection may stay idle 10 s between queries, must deliver a query
within 5 s of its length and take a response within 5 s; a query over TCP longer than
4096 bytes ends its connection. A connection's queries are answered one at a time, in
order: the server reads ahead at most about 8 KiB of them and stops reading until the
client takes its answers. At most 256 TCP connections are open at once and 8 from one
client address; more are closed on arrival. A message that is a response, or too short to
have a header, gets no answer (and ends a TCP connection). An answer the UDP socket cannot
send at once is kept only while less than 1 MiB waits; beyond, answers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from kontinuum.control.plane import ServicePlane
from kontinuum.dns.answer import MAX_QUERY, respond
from kontinuum.dns.zone import Zone, ZoneOptions, build_zone

log = logging.getLogger("kontinuum.dns")

PlaneProvider = Callable[[], ServicePlane]

TCP_IDLE_TIMEOUT: Final = 10.0
TCP_IO_TIMEOUT: Final = 5.0
MAX_TCP_QUERY: Final = MAX_QUERY
MAX_TCP_CONNECTIONS: Final = 256
MAX_TCP_CONNECTIONS_PER_CLIENT: Final = 8
# The stream reader stops reading a connection once twice this much waits unanswered.
TCP_READ_AHEAD: Final = MAX_TCP_QUERY + 2
MAX_UDP_BACKLOG: Final = 1 << 20


class ClusterSetResponder:
    """Answers wire-format queries from the zone of the current plane.

    The zone is rebuilt when `plane()` returns another object (planes are immutable); its
    SOA serial moves on only when the records changed, to the current Unix time or one past
    the last serial, whichever is greater (as serials go, RFC 1982). `plane()` is called on
    the server's thread, for every query: it must only read a reference (see thread.py)."""

    def __init__(
        self,
        plane: PlaneProvider,
        options: ZoneOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._plane = plane
        self._options = options or ZoneOptions()
        self._clock = clock
        self._source: ServicePlane | None = None
        self._zone: Zone | None = None

    def zone(self) -> Zone:
        """The zone of the current plane."""
        plane = self._plane()
        if self._zone is not None and plane is self._source:
            return self._zone
        previous = self._zone
        zone = build_zone(plane, self._options, serial=previous.serial if previous else 0)
        if previous is None or zone.nodes != previous.nodes:
            zone = zone.with_serial(max(int(self._clock()), previous.serial + 1 if previous else 0))
            log.debug("clusterset.local zone: %d names, serial %d", len(zone.nodes), zone.serial)
        self._source, self._zone = plane, zone
        return zone

    def respond(self, wire: bytes, *, tcp: bool) -> bytes | None:
        return respond(wire, self.zone(), tcp=tcp)


class _DatagramSocket(Protocol):
    """What the UDP side uses of its transport (asyncio's and uvloop's both have it all)."""

    def sendto(self, data: bytes, addr: tuple[str | int, ...]) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, responder: ClusterSetResponder) -> None:
        self._responder = responder
        self._transport: _DatagramSocket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an instance of DatagramTransport in asyncio or uvloop, yet it is one.
        self._transport = cast(_DatagramSocket, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        transport = self._transport
        try:
            reply = self._responder.respond(data, tcp=False)
        except Exception:  # a bug: logged, and the socket keeps serving (asyncio would close it)
            log.exception("DNS over UDP: no answer to a %d-byte message", len(data))
            return
        if reply is None or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() < MAX_UDP_BACKLOG:
            transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS over UDP: %s", exc)


class DnsServer:
    """Serves a `ClusterSetResponder` over UDP and TCP on one address and port."""

    def __init__(
        self,
        responder: ClusterSetResponder,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
        io_timeout: float = TCP_IO_TIMEOUT,
        max_connections: int = MAX_TCP_CONNECTIONS,
        max_connections_per_client: int = MAX_TCP_CONNECTIONS_PER_CLIENT,
    ) -> None:
        self.responder = responder
        self._idle_timeout = idle_timeout
        self._io_timeout = io_timeout
        self._max_connections = max_connections
        self._max_per_client = max_connections_per_client
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._per_client: dict[str, int] = {}
        self._handlers: set[asyncio.Task[Any]] = set()  # one per open TCP connection

    @property
    def tcp_connections(self) -> int:
        """TCP connections open now."""
        return len(self._connections)

    @property
    def tcp_clients(self) -> int:
        """Client addresses with a TCP connection open now."""
        return len(self._per_client)

    async def start(self, host: str, port: int) -> int:
        """Listen on `host`, UDP and TCP on `port` (0: one free for both); returns the port."""
        loop = asyncio.get_running_loop()
        for _ in range(20 if port == 0 else 1):
            tcp = await asyncio.start_server(self._serve_tcp, host, port, limit=TCP_READ_AHEAD)
            bound = int(tcp.sockets[0].getsockname()[1])
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self.responder), local_addr=(host, bound)
                )
            except OSError:
                tcp.close()
                await tcp.wait_closed()
                if port:
                    raise
                continue
            self._tcp, self._udp = tcp, udp
            log.info("clusterset.local DNS on %s port %d (UDP and TCP)", host, bound)
            return bound
        raise OSError(f"no port free for both UDP and TCP on {host}")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._connections):
                writer.close()
            # Their handlers end on the closed stream; wait so none outlives the loop.
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=self._io_timeout)
            await self._tcp.wait_closed()
            self._tcp = None

    def _admit(self, client: str) -> bool:
        """Whether one more connection from `client` fits the bounds; counted if it does."""
        held = self._per_client.get(client, 0)
        if len(self._connections) >= self._max_connections or held >= self._max_per_client:
            return False
        self._per_client[client] = held + 1
        return True

    def _release(self, client: str) -> None:
        held = self._per_client.pop(client, 1) - 1
        if held > 0:
            self._per_client[client] = held

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._admit(client):
            log.debug("DNS over TCP: closed a connection from %s, over the limit", client)
            writer.close()
            return
        self._connections.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            await self._answer_queries(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or was too slow: its connection ends
        except Exception:  # a bug: logged, and only this connection ends
            log.exception("DNS over TCP: the connection from %s failed", client)
        finally:
            self._connections.discard(writer)
            self._release(client)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self._io_timeout)

    async def _answer_queries(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer length-prefixed queries in order until the client stops or breaks a rule."""
        while True:
            prefix = await asyncio.wait_for(reader.readexactly(2), self._idle_timeout)
            length = int.from_bytes(prefix, "big")
            if not 0 < length <= MAX_TCP_QUERY:
                return
            wire = await asyncio.wait_for(reader.readexactly(length), self._io_timeout)
            reply = self.responder.respond(wire, tcp=True)
            # A reset can arrive with the query it cut off: the transport is closed then,
            # and uvloop raises RuntimeError on a write to it.
            if reply is None or writer.transport.is_closing():
                return
            writer.write(len(reply).to_bytes(2, "big") + reply)
            await asyncio.wait_for(writer.drain(), self._io_timeout)
