"""A proxyless gRPC client of the mesh server fails over between fleet clusters.

The fleet has two clusters in different regions; `echo` (a gRPC port) is exported from both,
each cluster's endpoints being its own real gRPC backend. The client declares the cluster
`eu-central` in its bootstrap, so it reaches eu-central's backend (its own cluster, priority
0) until eu-central's EndpointSlice is gone from the fleet directory; then us-east's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache, XdsServer
from tests.e2e import grpc_client
from tests.support.fleet import cluster_profile

pytestmark = pytest.mark.e2e

SITES = {"eu-central": "eu-central-1", "us-east": "us-east-1"}
NAMESPACE = "demo"
TARGET = "xds:///echo.demo.svc.clusterset.local:50051"
NODE_ID = "grpc-mesh-client-1"
CLIENT_SCRIPT = Path(grpc_client.__file__)
CLIENT_SECONDS = 45.0  # the client's own bound; the test is done long before
CLIENT_CALLS = 2000
STEP_TIMEOUT = 20.0  # for one observable step (first answer, following a change)


def _service(port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NAMESPACE}}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: {port}, protocol: TCP, appProtocol: grpc}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: echo, namespace: {NAMESPACE}, creationTimestamp: "2026-01-01T00:00:00Z"}}
"""


def _slice(port: int) -> str:
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP, appProtocol: grpc}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


def _write_fleet(root: Path, ports: dict[str, int]) -> None:
    root.mkdir()
    (root / "clusters.yaml").write_text(
        "---\n".join(cluster_profile(n, r) for n, r in SITES.items())
    )
    for site, port in ports.items():
        directory = root / "clusters" / site
        directory.mkdir(parents=True)
        (directory / "echo.yaml").write_text(_service(port))
        (directory / "echo-endpoints.yaml").write_text(_slice(port))


def _write_bootstrap(path: Path, xds_port: int) -> Path:
    """`kontinuum bootstrap --grpc` for a client in eu-central, namespace demo."""
    command = [sys.executable, "-m", "kontinuum", "bootstrap", "--grpc", "--node-id", NODE_ID]
    command += ["--cluster", "eu-central", "--namespace", NAMESPACE]
    command += ["--xds-address", f"127.0.0.1:{xds_port}"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    path.write_text(printed.stdout)
    return path


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """One real gRPC server per site, each answering every call with the site's name."""
    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    try:
        for name in SITES:
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


class Client:
    """The client subprocess's output, line by line."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []

    async def until(self, wanted: str) -> None:
        """Read lines until one is `wanted`; fail after STEP_TIMEOUT."""
        assert self.process.stdout is not None
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                raw = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no {wanted!r} within {STEP_TIMEOUT}s{self.describe()}"
                ) from None
            if not raw:
                raise AssertionError(f"the client exited early{self.describe()}")
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line == wanted:
                return

    async def take(self, count: int) -> list[str]:
        """The next `count` lines; fail if they do not come within STEP_TIMEOUT."""
        assert self.process.stdout is not None
        taken: list[str] = []
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                for _ in range(count):
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise AssertionError(f"the client exited early{self.describe()}")
                    taken.append(raw.decode().rstrip("\n"))
        except TimeoutError:
            raise AssertionError(
                f"fewer than {count} calls within {STEP_TIMEOUT}s{self.describe()}"
            ) from None
        finally:
            self.lines += taken
        return taken

    def describe(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"\n--- client stdout (last 20) ---\n{chr(10).join(self.lines[-20:])}" + (
            f"\n--- client stderr ---\n{stderr}" if stderr else ""
        )


async def test_proxyless_client_fails_over_to_the_other_region(
    tmp_path: Path, backends: dict[str, int]
) -> None:
    root = tmp_path / "fleet"
    _write_fleet(root, backends)
    cache = SnapshotCache()
    mesh = Mesh(root, cache)
    assert mesh.load()
    assert not mesh.errors, mesh.errors
    server = XdsServer(cache, resolve_view=mesh.resolve_view)
    xds_port = await server.start("127.0.0.1:0")
    process: asyncio.subprocess.Process | None = None
    try:
        bootstrap = _write_bootstrap(tmp_path / "bootstrap.json", xds_port)
        env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONUNBUFFERED": "1"}
        env.update({k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ})
        stderr_path = tmp_path / "client.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CLIENT_SCRIPT),
                TARGET,
                "--seconds",
                str(CLIENT_SECONDS),
                "--calls",
                str(CLIENT_CALLS),
                "--interval",
                "0.02",
                "--timeout",
                "1",
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        client = Client(process, stderr_path)

        await client.until("ok eu-central")
        following = await client.take(10)
        assert following == ["ok eu-central"] * 10, client.describe()
        assert "ok us-east" not in client.lines  # us-east is up, but priority 1

        (root / "clusters" / "eu-central" / "echo-endpoints.yaml").unlink()
        assert mesh.load()
        assert not mesh.errors, mesh.errors

        await client.until("ok us-east")
        following = await client.take(10)
        assert following == ["ok us-east"] * 10, client.describe()
    finally:
        if process is not None and process.returncode is None:
            process.kill()
        if process is not None:
            await process.wait()
        await server.stop(0)
