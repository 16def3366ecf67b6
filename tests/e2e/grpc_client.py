"""A proxyless gRPC client and the tiny backends it calls, for the xDS end-to-end tests.

Run as a script, this is the client: it calls `xds:///<name>` (grpcio's own xDS resolver,
configured by the bootstrap file that `GRPC_XDS_BOOTSTRAP` names) again and again and prints
one line per call, flushed, so a test can follow which backend answered:

    ok <backend name>
    err <status code name> <details>

It stops after `--calls` calls or `--seconds` seconds, whichever comes first. The script
imports nothing but grpcio and the standard library, so it starts quickly and shares no
state with the test process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import grpc

SERVICE = "kontinuum.e2e.Echo"
METHOD = "Who"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


def backend_handler(name: str) -> grpc.GenericRpcHandler[bytes, bytes]:
    """A generic handler (bytes in, bytes out) that answers every call with `name`."""
    answer = name.encode()

    async def who(request: bytes, context: Any) -> bytes:
        return answer

    return grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(who)}
    )


def write_bootstrap(
    path: Path, xds_port: int, *, node_id: str, cluster: str, namespace: str = "default"
) -> Path:
    """The gRPC xDS bootstrap `kontinuum bootstrap --grpc` prints, written to `path`."""
    import subprocess

    command = [sys.executable, "-m", "kontinuum", "bootstrap", "--grpc", "--node-id", node_id]
    command += ["--cluster", cluster, "--namespace", namespace]
    command += ["--xds-address", f"127.0.0.1:{xds_port}"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    path.write_text(printed.stdout)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", help="e.g. xds:///echo.default")
    parser.add_argument("--calls", type=int, default=600, help="stop after this many calls")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between calls")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline of each call")
    args = parser.parse_args(argv)

    deadline = time.monotonic() + args.seconds
    with grpc.insecure_channel(args.target) as channel:
        # No serializers: bytes in, bytes out.
        call = channel.unary_unary(FULL_METHOD, request_serializer=None, response_deserializer=None)
        for _ in range(args.calls):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = call(b"", timeout=min(args.timeout, remaining))
                line = f"ok {reply.decode()}"
            except grpc.RpcError as error:
                details = (error.details() or "").splitlines()[:1]
                line = f"err {error.code().name} {' '.join(details)}"
            print(line, flush=True)
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
