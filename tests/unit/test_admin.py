"""The admin endpoint (`kontinuum.admin`) over a real socket: probes, and requests whose
head is over its bounds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from kontinuum.admin import AdminServer


@pytest.fixture
async def admin() -> AsyncIterator[int]:
    server = AdminServer(CollectorRegistry(), ready=lambda: True)
    port = await server.start("127.0.0.1:0")
    yield port
    await server.stop()


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request` and read until the server closes (bounded by a timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def erroneous(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in records
        if r.levelno >= logging.WARNING or r.exc_info
    ]


async def test_probes(admin: int) -> None:
    healthz = await exchange(admin, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert healthz.startswith(b"HTTP/1.1 200 OK\r\n")
    assert healthz.endswith(b"\r\n\r\nok\n")
    ready = await exchange(admin, b"GET /readyz?verbose HTTP/1.0\r\n\r\n")
    assert ready.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (await exchange(admin, b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(
        b"HTTP/1.1 405 Method Not Allowed\r\n"
    )


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", b"414 URI Too Long"),
        (b"GET /" + b"a" * 70_000, b"414 URI Too Long"),  # no end in sight
        (
            b"GET /healthz HTTP/1.1\r\nx-big: " + b"b" * 70_000 + b"\r\n\r\n",
            b"431 Request Header Fields Too Large",
        ),
        (
            b"GET /healthz HTTP/1.1\r\n" + b"x-many: c\r\n" * 1_000 + b"\r\n",
            b"431 Request Header Fields Too Large",
        ),
    ],
    ids=["long-line", "endless-line", "long-header", "many-headers"],
)
async def test_a_request_head_over_the_bounds_gets_a_status_and_no_traceback(
    admin: int, request_head: bytes, status: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await exchange(admin, request_head)
    assert response.startswith(b"HTTP/1.1 " + status + b"\r\n"), response[:100]
    assert b"connection: close\r\n" in response
    assert erroneous(caplog.records) == []
    [logged] = [r.getMessage() for r in caplog.records if r.name == "kontinuum.admin"]
    assert status.decode() in logged
    assert len(logged) < 200  # one short line
    # The endpoint still answers.
    healthz = await exchange(admin, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert healthz.startswith(b"HTTP/1.1 200 OK\r\n")
