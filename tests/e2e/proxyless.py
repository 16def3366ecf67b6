"""A proxyless gRPC client in a subprocess, and real gRPC backends, for the e2e tests.

The client (`grpc_client.py`) uses grpcio's own xDS resolver with `GRPC_XDS_BOOTSTRAP`, so
its xDS client shares nothing with the test process; it prints one line per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import grpc

from tests.e2e import grpc_client

CLIENT_SCRIPT = Path(grpc_client.__file__)
CLIENT_SECONDS = 45.0  # the client's own bound; every test is done long before
STEP_TIMEOUT = 20.0  # for one observable step (first answer, following a change)


@contextlib.asynccontextmanager
async def grpc_backends(names: Iterable[str]) -> AsyncIterator[dict[str, int]]:
    """Real gRPC servers on 127.0.0.1, each answering every call with its name: name -> port."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((grpc_client.backend_handler(name),))
            port = server.add_insecure_port("127.0.0.1:0")
            assert port, f"cannot bind {name}"
            servers.append(server)
            await server.start()
            ports[name] = port
        yield ports
    finally:
        await asyncio.gather(*(s.stop(0) for s in servers))


class ProxylessClient:
    """The client subprocess: its output, line by line, and everything it said so far."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []

    async def next_line(self, deadline: float) -> str:
        assert self.process.stdout is not None
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        raw = await asyncio.wait_for(self.process.stdout.readline(), remaining)
        if not raw:
            raise AssertionError(f"the client exited early{self.describe()}")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def until(self, wanted: Callable[[str], bool], what: str) -> str:
        """Read lines until one is `wanted`; fail after STEP_TIMEOUT."""
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        try:
            while not wanted(line := await self.next_line(deadline)):
                pass
        except TimeoutError:
            raise AssertionError(
                f"no call {what} within {STEP_TIMEOUT}s{self.describe()}"
            ) from None
        return line

    async def take(self, count: int) -> list[str]:
        """The next `count` lines; fail if they do not come within STEP_TIMEOUT."""
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        try:
            return [await self.next_line(deadline) for _ in range(count)]
        except TimeoutError:
            raise AssertionError(
                f"fewer than {count} calls within {STEP_TIMEOUT}s{self.describe()}"
            ) from None

    def describe(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"\n--- client stdout (last 20) ---\n{chr(10).join(self.lines[-20:])}" + (
            f"\n--- client stderr ---\n{stderr}" if stderr else ""
        )


@contextlib.asynccontextmanager
async def proxyless_client(
    tmp_path: Path, bootstrap: Path, target: str
) -> AsyncIterator[ProxylessClient]:
    """The client calling `target` (`xds:///...`) with `bootstrap`; killed on the way out."""
    stderr_path = tmp_path / "client.stderr"
    env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONUNBUFFERED": "1"}
    env.update({k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ})
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT_SCRIPT),
            target,
            "--seconds",
            str(CLIENT_SECONDS),
            "--calls",
            "2000",
            "--interval",
            "0.02",
            "--timeout",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        yield ProxylessClient(process, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
