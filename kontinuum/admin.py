"""The admin HTTP endpoint: `/healthz`, `/readyz` and `/metrics`.

Deliberately tiny (GET only, one request per connection): it serves probes and
Prometheus scrapes on a loopback or cluster-internal address, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kontinuum.bootstrap import split_address
from kontinuum.xds.listen import listen_error

log = logging.getLogger("kontinuum.admin")


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
            self._server = await asyncio.start_server(self._handle, host, port)
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
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, content_type, body = "405 Method Not Allowed", "text/plain", b""
            else:
                status, content_type, body = self._respond(path)
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()
