"""`kontinuum serve --config`: a three-site fleet in standard YAML programs a real sidecar.

The consumer's Envoy runs in `eu-central`; `hello` is exported from all three sites.
Traffic prefers its own cluster, then the same region (`edge-paris`), then the rest
(`us-east`); a workspace sees another workspace's service only once it is granted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kontinuum.bootstrap import proxy_metadata
from kontinuum.discovery.static import StaticSource
from kontinuum.mesh import Mesh
from kontinuum.xds import SnapshotCache, XdsServer
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.support.fleet import cluster_profile, load_into
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

SITES = {"eu-central": "eu-central-1", "edge-paris": "eu-central-1", "us-east": "us-east-1"}
HELLO = "hello.demo.svc.clusterset.local"
BILLING = "billing.payments.svc.clusterset.local"


def _service(namespace: str, name: str, port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: "2026-01-01T00:00:00Z"}}
"""


def _slice(namespace: str, name: str, port: int) -> str:
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: demo-may-bill, namespace: payments}
spec:
  from: [{group: "", kind: Namespace, namespace: demo}]
  to: [{group: "", kind: Service, name: billing}]
"""


def _write_fleet(root: Path, backends: dict[str, Backend], billing: Backend) -> None:
    root.mkdir()
    (root / "clusters.yaml").write_text(
        "---\n".join(cluster_profile(n, r) for n, r in SITES.items())
    )
    for site, backend in backends.items():
        directory = root / "clusters" / site
        directory.mkdir(parents=True)
        (directory / "hello.yaml").write_text(_service("demo", "hello", backend.port))
        (directory / "hello-endpoints.yaml").write_text(_slice("demo", "hello", backend.port))
    eu = root / "clusters" / "eu-central"
    (eu / "billing.yaml").write_text(
        _service("payments", "billing", billing.port)
        + "---\n"
        + _slice("payments", "billing", billing.port)
    )


def _get(port: int, host: str) -> tuple[int, str]:
    reply = request(port, host, timeout=2)
    return reply.status, reply.body


async def _answered_by(port: int, host: str, expected: str, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    last: tuple[int, str] = (0, "")
    while asyncio.get_running_loop().time() < deadline:
        last = await asyncio.to_thread(_get, port, host)
        if last[0] == 200 and last[1].strip() == f"backend {expected}":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{host} never answered by {expected}; last answer {last}")


async def _reported(source: StaticSource, file: str) -> None:
    for _ in range(100):  # polled every 0.1 s by the source: 5 s at most
        if any(file in str(error) for error in source.status().errors):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{file} was never reported: {source.status()}")


@pytest.fixture
async def fleet(
    tmp_path: Path, backends: Callable[[str], Backend], serve_fleet: ServeFleet
) -> tuple[Path, StaticSource, int]:
    """The three-site fleet, its files watched as `kontinuum serve` watches them."""
    hello = {site: backends(site) for site in SITES}
    _write_fleet(tmp_path / "fleet", hello, backends("billing"))
    served = await serve_fleet(tmp_path / "fleet")
    return tmp_path / "fleet", served.source, served.xds_port


def _sidecar(envoys: StartEnvoy, xds_port: int, outbound: int, namespace: str = "demo") -> Any:
    return envoys(
        view="eu-central",
        xds_port=xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace=namespace, role="sidecar", outbound_port=outbound),
    )


async def test_locality_failover_follows_the_fleet_files(
    fleet: tuple[Path, StaticSource, int], envoys: StartEnvoy
) -> None:
    root, source, xds_port = fleet
    outbound = free_port()
    envoy = _sidecar(envoys, xds_port, outbound)

    await _answered_by(outbound, HELLO, "eu-central")
    await _answered_by(outbound, "hello.demo", "eu-central")  # same-namespace short form
    # The api_listeners of proxyless gRPC clients never reach an Envoy, which refuses them.
    assert "ApiListener" not in envoy.log_path.read_text()

    endpoints = root / "clusters" / "eu-central" / "hello-endpoints.yaml"
    good = endpoints.read_text()
    endpoints.write_text(good.replace("port: ", "port: [", 1))  # broken YAML
    await _reported(source, "hello-endpoints.yaml")
    await asyncio.sleep(0.5)
    await _answered_by(outbound, HELLO, "eu-central", seconds=2)  # the last good fleet
    endpoints.write_text(good)

    (root / "clusters" / "eu-central" / "hello-endpoints.yaml").unlink()
    await _answered_by(outbound, HELLO, "edge-paris")  # same region next
    assert source.status().errors == ()

    (root / "clusters" / "edge-paris" / "hello-endpoints.yaml").unlink()
    await _answered_by(outbound, HELLO, "us-east")  # then the rest


async def test_an_ungranted_service_is_invisible_until_granted(
    fleet: tuple[Path, StaticSource, int], envoys: StartEnvoy
) -> None:
    root, _, xds_port = fleet
    outbound = free_port()
    envoy = _sidecar(envoys, xds_port, outbound)
    await _answered_by(outbound, HELLO, "eu-central")

    await asyncio.to_thread(envoy.wait_admin)
    dump = json.dumps(await asyncio.to_thread(envoy.config_dump))
    assert "billing" not in dump
    assert (await asyncio.to_thread(_get, outbound, BILLING))[0] == 404

    (root / "grants.yaml").write_text(GRANT)
    await _answered_by(outbound, BILLING, "billing")


async def test_a_proxy_of_an_unknown_cluster_is_refused(
    fleet: tuple[Path, StaticSource, int], envoys: StartEnvoy
) -> None:
    _, _, xds_port = fleet
    envoy = envoys(
        view="mars",
        xds_port=xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="sidecar"),
    )
    await asyncio.to_thread(envoy.wait_admin)
    for _ in range(100):  # the refusal reaches Envoy's log within 10 s even on a busy machine
        if "cluster 'mars' is not in the fleet" in envoy.log_tail():
            break
        await asyncio.sleep(0.1)
    assert "cluster 'mars' is not in the fleet" in envoy.log_tail()
    # Envoy retries: its stream is up for a moment each time, until it is refused again.
    connected = 1
    for _ in range(50):
        connected = await asyncio.to_thread(envoy.stat, "control_plane.connected_state")
        if connected == 0:
            break
        await asyncio.sleep(0.1)
    assert connected == 0


async def test_a_killed_backend_is_ejected_and_traffic_goes_on(
    tmp_path: Path, backends: Callable[[str], Backend], envoys: StartEnvoy
) -> None:
    alive, doomed = backends("alive"), backends("doomed")
    _write_fleet(tmp_path / "fleet", {"eu-central": alive}, backends("billing"))
    endpoints = tmp_path / "fleet" / "clusters" / "eu-central"
    (endpoints / "hello-endpoints-2.yaml").write_text(
        _slice("demo", "hello", doomed.port).replace("name: hello-1", "name: hello-2")
    )
    for site in ("edge-paris", "us-east"):
        (tmp_path / "fleet" / "clusters" / site).mkdir(parents=True)
    cache = SnapshotCache()
    mesh = Mesh(cache)
    load_into(mesh, tmp_path / "fleet")
    server = XdsServer(cache, resolve_view=mesh.resolve_view)
    xds_port = await server.start("127.0.0.1:0")
    try:
        outbound = free_port()
        _sidecar(envoys, xds_port, outbound)
        await _answered_by(outbound, HELLO, "doomed")
        await _answered_by(outbound, HELLO, "alive")

        doomed.stop()
        # Retries move each failed attempt to another endpoint while outlier detection
        # ejects the dead one: no request fails, and then all go to the survivor.
        failures = 0
        for _ in range(20):
            status, _ = await asyncio.to_thread(_get, outbound, HELLO)
            failures += status != 200
        assert failures == 0, failures  # retried on the surviving endpoint meanwhile
        answers = [await asyncio.to_thread(_get, outbound, HELLO) for _ in range(30)]
        assert all(a == (200, "backend alive\n") for a in answers), answers
    finally:
        await server.stop(0)


async def test_a_sidecar_serves_its_own_service_through_its_inbound_listener(
    tmp_path: Path, backends: Callable[[str], Backend], envoys: StartEnvoy
) -> None:
    """Client sidecar -> the endpoint address (the server sidecar's inbound) -> workload."""
    workload = backends("eu-central")
    inbound = free_port()
    _write_fleet(tmp_path / "fleet", {"eu-central": workload}, backends("billing"))
    eu = tmp_path / "fleet" / "clusters" / "eu-central"
    # Other proxies reach hello at its endpoint, which is where its sidecar listens.
    (eu / "hello-endpoints.yaml").write_text(_slice("demo", "hello", inbound))
    (eu / "hello.yaml").write_text(_service("demo", "hello", inbound))
    for site in ("edge-paris", "us-east"):
        (tmp_path / "fleet" / "clusters" / site).mkdir(parents=True)
    cache = SnapshotCache()
    mesh = Mesh(cache)
    load_into(mesh, tmp_path / "fleet")
    server = XdsServer(cache, resolve_view=mesh.resolve_view)
    xds_port = await server.start("127.0.0.1:0")
    try:
        server_sidecar = envoys(
            view="eu-central",
            xds_port=xds_port,
            mode="delta",
            metadata=proxy_metadata(
                namespace="demo",
                role="sidecar",
                service="hello",
                inbound_port=workload.port,
                inbound_address=f"127.0.0.1:{inbound}",
                outbound_port=free_port(),
            ),
        )
        outbound = free_port()
        _sidecar(envoys, xds_port, outbound)
        await _answered_by(outbound, HELLO, "eu-central")
        await asyncio.to_thread(server_sidecar.wait_admin)
        served = await asyncio.to_thread(
            server_sidecar.stat, "cluster.inbound|80||hello.demo.svc.cluster.local.upstream_rq_2xx"
        )
        assert served is not None
        assert served >= 1
    finally:
        await server.stop(0)
