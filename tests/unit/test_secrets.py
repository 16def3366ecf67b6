"""Secrets (SDS) are served by name over both ADS variants, and never show in CSDS."""

from __future__ import annotations

from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from kontinuum.xds import types
from kontinuum.xds.cache import SnapshotCache
from tests.unit.fake_stream import (
    VIEW,
    ack,
    base_resources,
    csds_entries,
    delta_request,
    names_of,
    open_stream,
    request,
)

SDS = types.SECRET


def secret(name: str, key: bytes) -> Any:
    s = secret_pb2.Secret(name=name)
    s.tls_certificate.certificate_chain.inline_bytes = b"-----BEGIN CERTIFICATE-----"
    s.tls_certificate.private_key.inline_bytes = key
    return s


def _cache(key: bytes = b"private-key-1") -> SnapshotCache:
    cache = SnapshotCache()
    cache.set_resources(VIEW, [*base_resources(), secret("workload", key), secret("other", key)])
    return cache


async def test_sotw_secret_is_sent_by_name_and_follows_rotation() -> None:
    cache = _cache()
    async with open_stream(cache, request(SDS, ["workload"])) as fake:
        first = await fake.recv()
        assert names_of(first) == ["workload"]
        await fake.send(ack(first, ["workload"]))
        await fake.expect_silence()

        cache.set_resources(
            VIEW, [*base_resources(), secret("workload", b"key-2"), secret("other", b"key-2")]
        )
        rotated = await fake.recv()
        unpacked = secret_pb2.Secret.FromString(rotated.resources[0].value)
        assert unpacked.tls_certificate.private_key.inline_bytes == b"key-2"


async def test_an_empty_sds_request_is_no_wildcard() -> None:
    async with open_stream(_cache(), request(SDS, [])) as fake:
        await fake.expect_silence()


async def test_delta_secret_is_sent_by_name() -> None:
    async with open_stream(_cache(), delta_request(SDS, ["workload"]), delta=True) as fake:
        assert names_of(await fake.recv()) == ["workload"]


async def test_csds_reports_secret_versions_not_their_contents() -> None:
    key = b"do-not-print-this-key"
    async with open_stream(_cache(key), request(SDS, ["workload"])) as fake:
        first = await fake.recv()
        await fake.send(ack(first, ["workload"]))
        await fake.expect_silence()
        entries = csds_entries(fake)
        assert ("SDS", "workload") in entries
        assert key not in b"".join(e.SerializeToString() for e in entries.values())
