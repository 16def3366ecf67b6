"""The gRPC echo service of the Gateway API conformance cases, its backends and its clients.

Backends serve `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho` (methods `Echo`,
`EchoTwo`, `EchoThree`), and any other method too, with a generic handler, bytes in and
bytes out: every call is answered with JSON naming the backend, the method called and the
metadata received, so a test sees which backend a route chose and what reached it (an
UNIMPLEMENTED status comes from the proxy, never from a backend).

A call's outcome is one short line, the same for every kind of client:

    ok <backend name>
    err <status code name>

Run as a script, this is a proxyless client: it calls `xds:///<name>` (grpcio's own xDS
resolver, configured by the bootstrap that `GRPC_XDS_BOOTSTRAP` names) in rounds, each round
making every call of `--calls` once, and prints each round as one JSON list of outcomes,
flushed. It stops after `--rounds` rounds or `--seconds` seconds, whichever comes first,
and imports nothing but grpcio and the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
METHODS = ("Echo", "EchoTwo", "EchoThree")


@dataclass(frozen=True)
class Call:
    """One call to make: a method of the echo service, its metadata and `:authority`."""

    method: str = "Echo"
    metadata: tuple[tuple[str, str], ...] = ()
    authority: str | None = None
    service: str = SERVICE

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "method": self.method,
            "metadata": [list(pair) for pair in self.metadata],
            "authority": self.authority,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Call:
        pairs = tuple((str(k), str(v)) for k, v in raw.get("metadata", ()))
        return cls(raw["method"], pairs, raw.get("authority"), raw.get("service", SERVICE))


@dataclass
class Echoed:
    """What the last call that a backend answered brought it."""

    backend: str
    method: str
    metadata: dict[str, list[str]] = field(default_factory=dict)


class EchoHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method of every service (so that a test sees where any call went), answered
    with the backend's name, the method called and the metadata received."""

    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        method = str(details.method)  # type: ignore[attr-defined]

        async def answer(request: bytes, context: Any) -> bytes:
            metadata: dict[str, list[str]] = {}
            for key, value in context.invocation_metadata() or ():
                metadata.setdefault(key, []).append(str(value))
            reply = {"backend": self.name, "method": method, "metadata": metadata}
            return json.dumps(reply).encode()

        return grpc.unary_unary_rpc_method_handler(answer)


@contextlib.asynccontextmanager
async def echo_backends(names: Iterable[str]) -> AsyncIterator[dict[str, int]]:
    """Real gRPC echo servers on 127.0.0.1, one per name: name -> port."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((EchoHandler(name),))
            port = server.add_insecure_port("127.0.0.1:0")
            assert port, f"cannot bind {name}"
            servers.append(server)
            await server.start()
            ports[name] = port
        yield ports
    finally:
        await asyncio.gather(*(s.stop(0) for s in servers))


async def call_once(
    channel: grpc.aio.Channel, call: Call, timeout: float = 2.0
) -> tuple[str, Echoed | None]:
    """Make `call` on `channel`: (outcome line, what the backend saw if one answered)."""
    stub = channel.unary_unary(call.path, request_serializer=None, response_deserializer=None)
    try:
        reply = await stub(b"", timeout=timeout, metadata=call.metadata or None)
    except grpc.aio.AioRpcError as error:
        return f"err {error.code().name}", None
    body = json.loads(reply)
    echoed = Echoed(body["backend"], body["method"], body["metadata"])
    return f"ok {echoed.backend}", echoed


@contextlib.asynccontextmanager
async def channel_to(address: str, authority: str | None = None) -> AsyncIterator[grpc.aio.Channel]:
    """A plaintext channel to `address` (`127.0.0.1:<port>`) sending `:authority`."""
    options = [("grpc.default_authority", authority)] if authority else []
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        yield channel


async def outcomes(address: str, calls: Sequence[Call]) -> list[str]:
    """One round of `calls` to `address`, each on a channel with its own `:authority`."""
    found = []
    for call in calls:
        async with channel_to(address, call.authority) as channel:
            found.append((await call_once(channel, call))[0])
    return found


async def _rounds(target: str, calls: list[Call], rounds: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    channels: dict[str | None, grpc.aio.Channel] = {}
    try:
        for call in calls:
            if call.authority not in channels:
                options = [("grpc.default_authority", call.authority)] if call.authority else []
                channels[call.authority] = grpc.aio.insecure_channel(target, options=options)
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            found = [(await call_once(channels[c.authority], c, 1.0))[0] for c in calls]
            print(json.dumps(found), flush=True)
            await asyncio.sleep(0.05)
    finally:
        await asyncio.gather(*(c.close() for c in channels.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", help="e.g. xds:///echo.demo.svc.cluster.local:7070")
    parser.add_argument("--calls", required=True, help="a JSON list of calls (Call.to_json)")
    parser.add_argument("--rounds", type=int, default=400, help="stop after this many rounds")
    parser.add_argument("--seconds", type=float, default=45.0, help="stop after this long")
    args = parser.parse_args(argv)
    calls = [Call.from_json(raw) for raw in json.loads(args.calls)]
    asyncio.run(_rounds(args.target, calls, args.rounds, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
