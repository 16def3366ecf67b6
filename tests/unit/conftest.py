"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from kontinuum.xds import SnapshotCache, XdsServer
from tests.unit.fake_stream import VIEW, base_resources
from tests.unit.test_garbage import Env


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    """A real xDS server on the loopback serving the base resources, and a channel to it."""
    cache = SnapshotCache()
    cache.set_resources(VIEW, base_resources())
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Env(server, cache, channel)
    await server.stop(0)
