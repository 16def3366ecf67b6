"""A proxyless gRPC client of the mesh server fails over between fleet clusters.

The fleet has two clusters in different regions; `echo` (a gRPC port) is exported from both,
each cluster's endpoints being its own real gRPC backend. The client declares the cluster
`eu-central` in its bootstrap, so it reaches eu-central's backend (its own cluster, priority
0) until eu-central's EndpointSlice is gone from the fleet directory; then us-east's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from kontinuum.app import XdsSecurity, running_fleet, serving
from kontinuum.mesh import Mesh
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.xds import SnapshotCache, XdsServer
from tests.e2e import grpc_client
from tests.e2e.proxyless import ProxylessClient, grpc_backends, proxyless_client
from tests.support.fleet import cluster_profile, fast, load_into
from tests.support.net import free_port
from tests.support.security import write_credentials

pytestmark = pytest.mark.e2e

SITES = {"eu-central": "eu-central-1", "us-east": "us-east-1"}
NAMESPACE = "demo"
TARGET = "xds:///echo.demo.svc.clusterset.local:50051"
NODE_ID = "grpc-mesh-client-1"


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


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, int]]:
    """One real gRPC server per site, each answering every call with the site's name."""
    async with grpc_backends(SITES) as ports:
        yield ports


async def test_proxyless_client_fails_over_to_the_other_region(
    tmp_path: Path, backends: dict[str, int]
) -> None:
    root = tmp_path / "fleet"
    _write_fleet(root, backends)
    cache = SnapshotCache()
    mesh = Mesh(cache)
    load_into(mesh, root)
    server = XdsServer(cache, resolve_view=mesh.resolve_view)
    xds_port = await server.start("127.0.0.1:0")
    try:
        bootstrap = grpc_client.write_bootstrap(
            tmp_path / "bootstrap.json",
            xds_port,
            node_id=NODE_ID,
            cluster="eu-central",
            namespace=NAMESPACE,
        )
        async with proxyless_client(tmp_path, bootstrap, TARGET) as client:
            await _answered_by(client, "eu-central")
            following = await client.take(10)
            assert following == ["ok eu-central"] * 10, client.describe()
            assert "ok us-east" not in client.lines  # us-east is up, but priority 1

            (root / "clusters" / "eu-central" / "echo-endpoints.yaml").unlink()
            load_into(mesh, root)

            await _answered_by(client, "us-east")
            following = await client.take(10)
            assert following == ["ok us-east"] * 10, client.describe()
    finally:
        await server.stop(0)


async def _answered_by(client: ProxylessClient, site: str) -> None:
    await client.until(lambda line: line == f"ok {site}", f"answered by {site}")


async def test_proxyless_client_proves_its_identity_over_mutual_tls(
    tmp_path: Path, backends: dict[str, int]
) -> None:
    """`kontinuum bootstrap --grpc --xds-ca --xds-cert --xds-key`: gRPC's own xDS client
    reaches the fleet's TLS server with its certificate, and is served its workspace."""
    root = tmp_path / "fleet"
    _write_fleet(root, backends)
    ca = CertificateAuthority.generate("cluster.local")
    identity = SpiffeId("cluster.local", NAMESPACE, "client")
    issued = ca.issue_workload(identity, "eu-central", timedelta(hours=1))
    files = write_credentials(tmp_path / "credentials", issued, ca)
    xds, admin = free_port(), free_port()
    async with (
        running_fleet(fast(path=root, security=XdsSecurity(ca))) as fleet,
        serving(fleet, f"127.0.0.1:{xds}", f"127.0.0.1:{admin}") as server,
    ):
        printed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "kontinuum", "bootstrap", "--grpc", "--node-id", NODE_ID,
             "--cluster", "eu-central", "--namespace", NAMESPACE,
             "--xds-address", f"127.0.0.1:{xds}", "--xds-ca", str(files.ca),
             "--xds-cert", str(files.certificate), "--xds-key", str(files.key)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(printed.stdout)
        async with proxyless_client(tmp_path, bootstrap, TARGET) as client:
            await _answered_by(client, "eu-central")
            assert await client.take(5) == ["ok eu-central"] * 5, client.describe()
            # The stream is the certificate's identity's, not what the node declared.
            assert {s.connection.peer.identity for s in server.streams()} == {str(identity)}
        assert server.stats.streams_unauthenticated == 0
