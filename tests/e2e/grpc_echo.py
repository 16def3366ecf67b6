"""The gRPC echo service of the Gateway API conformance cases, its backends and its clients.

Backends serve `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho` (methods `Echo`,
`EchoTwo`, `EchoThree`), and any other method too, with a generic handler, bytes in and
bytes out: every call is answered with JSON naming the backend, the method called and the
metadata received, so a test sees which backend a route chose and what reached it (an
UNIMPLEMENTED status comes from the proxy, never from a backend). A call with the metadata
`x-echo-delay-seconds: S` is answered S seconds later (at most 30).

A call's outcome is one short line, the same for every kind of client:

    ok <backend name>
    err <status code name>

Run as a script, this is a proxyless client: it calls `xds:///<name>` (grpcio's own xDS
resolver, configured by the bootstrap that `GRPC_XDS_BOOTSTRAP` names) in rounds, each round
making every call of `--calls` once, and prints each round as one JSON list of results
(`[outcome, metadata the backend received or null]`), flushed. It stops after `--rounds`
rounds or `--seconds` seconds, whichever comes first, and imports nothing but grpcio and
the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
METHODS = ("Echo", "EchoTwo", "EchoThree")
DELAY = "x-echo-delay-seconds"  # metadata that makes a backend answer this much later
MAX_DELAY = 30.0


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


@dataclass(frozen=True)
class Result:
    """A call's outcome line and, when a backend answered, the metadata it received (each
    key's values joined with `,`)."""

    outcome: str
    metadata: dict[str, str] | None = field(default=None, compare=False)


class EchoHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method of every service (so that a test sees where any call went), answered
    with the backend's name, the method called and the metadata received."""

    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        method = str(details.method)

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata: dict[str, list[str]] = {}
            for key, value in context.invocation_metadata() or ():
                metadata.setdefault(key, []).append(str(value))
            if DELAY in metadata:  # a slow backend, as long as the call asks (bounded)
                time.sleep(min(float(metadata[DELAY][0]), MAX_DELAY))
            reply = {"backend": self.name, "method": method, "metadata": metadata}
            return json.dumps(reply).encode()

        return grpc.unary_unary_rpc_method_handler(answer)


@contextlib.contextmanager
def echo_backends(names: Iterable[str]) -> Iterator[dict[str, int]]:
    """Real gRPC echo servers on 127.0.0.1, one per name: name -> port."""
    servers: list[grpc.Server] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            server = grpc.server(ThreadPoolExecutor(max_workers=4))
            server.add_generic_rpc_handlers((EchoHandler(name),))
            port = server.add_insecure_port("127.0.0.1:0")
            assert port, f"cannot bind {name}"
            servers.append(server)
            server.start()
            ports[name] = port
        yield ports
    finally:
        for server in servers:
            server.stop(0).wait(5)


def call_once(channel: grpc.Channel, call: Call, timeout: float = 2.0) -> Result:
    """Make `call` on `channel`."""
    stub = channel.unary_unary(call.path, request_serializer=None, response_deserializer=None)
    try:
        reply = stub(b"", timeout=timeout, metadata=call.metadata or None)
    except grpc.RpcError as error:
        return Result(f"err {error.code().name}")
    body = json.loads(reply)
    metadata = {key: ",".join(values) for key, values in body["metadata"].items()}
    return Result(f"ok {body['backend']}", metadata)


def channel(
    target: str, authority: str | None = None, root_certificates: bytes | None = None
) -> grpc.Channel:
    """A channel to `target` sending `:authority` (else the target's): plaintext, or with
    `root_certificates` TLS, whose SNI and verified name are the authority."""
    options = [("grpc.default_authority", authority)] if authority else []
    if root_certificates is None:
        return grpc.insecure_channel(target, options=options)
    if authority:
        options.append(("grpc.ssl_target_name_override", authority))
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc.secure_channel(target, credentials, options=options)


def call_through(
    address: str, call: Call, timeout: float = 2.0, root_certificates: bytes | None = None
) -> Result:
    """`call` on a fresh channel to `address` (`127.0.0.1:<port>`, an Envoy listener), with
    a deadline `timeout` seconds away; over TLS with `root_certificates`."""
    with channel(address, call.authority, root_certificates) as opened:
        return call_once(opened, call, timeout)


def _rounds(target: str, calls: Sequence[Call], rounds: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    channels = {c.authority: channel(target, c.authority) for c in calls}
    try:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            found = [call_once(channels[c.authority], c, 1.0) for c in calls]
            print(json.dumps([[r.outcome, r.metadata] for r in found]), flush=True)
            time.sleep(0.05)
    finally:
        for opened in channels.values():
            opened.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", help="e.g. xds:///echo.demo.svc.cluster.local:7070")
    parser.add_argument("--calls", required=True, help="a JSON list of calls (Call.to_json)")
    parser.add_argument("--rounds", type=int, default=400, help="stop after this many rounds")
    parser.add_argument("--seconds", type=float, default=45.0, help="stop after this long")
    args = parser.parse_args(argv)
    calls = [Call.from_json(raw) for raw in json.loads(args.calls)]
    _rounds(args.target, calls, args.rounds, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
