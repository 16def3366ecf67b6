"""The admin HTTP endpoint: `/healthz`, `/readyz` and `/metrics`.

Deliberately tiny (GET only, one request per connection): it serves probes and
Prometheus scrapes on a loopback or cluster-internal address, nothing else.

Bounded like every input: a request line over 8 KiB gets 414, request headers over 8 KiB
in all (or over 100 lines) get 431, and a request not read within 10 s ends its
connection. After such an answer the server stops sending and reads on for a while (at
most 1 MiB or 2 s), so that the client gets the status rather than a connection reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kontinuum.bootstrap import split_address
from kontinuum.xds.listen import listen_error

log = logging.getLogger("kontinuum.admin")

MAX_REQUEST_LINE: Final = 8192
MAX_HEADER_BYTES: Final = 8192
MAX_HEADER_LINES: Final = 100
REQUEST_TIMEOUT: Final = 10.0
LINGER_BYTES: Final = 1 << 20
LINGER_TIMEOUT: Final = 2.0


class _HeadTooLargeError(Exception):
    """The request's head is over a bound: `status` says which."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


async def _read_head(reader: asyncio.StreamReader) -> str:
    """The request line; the headers are read and dropped (nothing here uses them)."""
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _HeadTooLargeError("414 URI Too Long") from None
    header_bytes = 0
    for _ in range(MAX_HEADER_LINES + 1):
        try:
            header = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _HeadTooLargeError("431 Request Header Fields Too Large") from None
        header_bytes += len(header)
        if header == b"\r\n":
            return line.decode("latin-1")
        if header_bytes > MAX_HEADER_BYTES:
            break
    raise _HeadTooLargeError("431 Request Header Fields Too Large")


def _response(status: str, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send end-of-stream and read what the client still sends, within bounds: closing with
    unread data would reset the connection, and the client could lose the response."""
    if writer.transport.is_closing() or not writer.can_write_eof():
        return
    writer.write_eof()
    received = 0
    async with asyncio.timeout(LINGER_TIMEOUT):
        while received < LINGER_BYTES:
            chunk = await reader.read(65536)
            if not chunk:
                return
            received += len(chunk)


class AdminServer:
    """Answers probes from `ready()` and scrapes from `registry`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        notes: Callable[[], list[str]] = list,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._notes = notes  # lines after `ready` / `not ready`: what is degraded or awaited
        self._server: asyncio.Server | None = None

    async def start(self, address: str) -> int:
        host, port = split_address(address)
        try:
            self._server = await asyncio.start_server(
                self._handle, host, port, limit=max(MAX_REQUEST_LINE, MAX_HEADER_BYTES)
            )
        except OSError as error:
            raise listen_error(address, error) from None
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("admin endpoint on http://%s:%d (/healthz, /readyz, /metrics)", host, bound)
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            body = "".join(f"{line}\n" for line in self._notes()).encode()
            if self._ready():
                return "200 OK", "text/plain", b"ready\n" + body
            return "503 Service Unavailable", "text/plain", b"not ready\n" + body
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return "404 Not Found", "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            try:
                line = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
            except _HeadTooLargeError as too_large:
                peer = writer.get_extra_info("peername")
                log.debug("admin endpoint: %s to %s", too_large.status, peer)
                if not writer.transport.is_closing():
                    writer.write(_response(too_large.status, "text/plain", b""))
                    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
                    await _linger(reader, writer)
            else:
                method, _, rest = line.partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                if method != "GET":
                    status, content_type, body = "405 Method Not Allowed", "text/plain", b""
                else:
                    status, content_type, body = self._respond(path)
                # A reset can come with the request: uvloop raises on a write to its transport.
                if not writer.transport.is_closing():
                    writer.write(_response(status, content_type, body))
                    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        writer.close()
