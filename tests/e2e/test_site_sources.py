"""`kontinuum serve` with a site described in DNS: the ClusterProfile's annotations start a
DNS source, and a real sidecar reaches the service the zone's SRV records point at."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kontinuum.bootstrap import proxy_metadata
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.support.dns_server import INSTALL_HINT, DnsServer, find_named
from tests.support.fleet import cluster_profile
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"


@pytest.fixture
def zone() -> Iterator[DnsServer]:
    if find_named() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with DnsServer("edge.test", "", ttl=1) as server:
        yield server


def _edge_profile(server: str) -> str:
    profile = cluster_profile("edge", "eu-central-1")
    return profile.replace(
        "  labels:\n",
        "  annotations:\n"
        "    kontinuum.io/source: dns\n"
        "    kontinuum.io/dns-domain: edge.test\n"
        f"    kontinuum.io/dns-server: '{server}'\n"
        "    kontinuum.io/dns-services: demo/hello:http\n"
        "  labels:\n",
    )


async def _until(port: int, expected: tuple[int, str]) -> tuple[int, str]:
    answer: tuple[int, str] = (0, "")
    for _ in range(150):  # 15 s at most
        reply = await asyncio.to_thread(request, port, HELLO, timeout=2)
        answer = (reply.status, reply.body)
        if answer == expected:
            break
        await asyncio.sleep(0.1)
    return answer


async def test_a_dns_described_site_serves_a_sidecar(
    tmp_path: Path,
    zone: DnsServer,
    backends: Callable[[str], Backend],
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
) -> None:
    first, second = backends("edge-1"), backends("edge-2")
    zone.update(add=[f"_http._tcp.hello 1 SRV 0 0 {first.port} a.hello", "a.hello 1 A 127.0.0.1"])
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "clusters.yaml").write_text(
        cluster_profile("eu-central", "eu-central-1") + "---\n" + _edge_profile(zone.server)
    )
    served = await serve_fleet(root)
    outbound = free_port()
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="sidecar", outbound_port=outbound),
    )
    assert await _until(outbound, (200, "backend edge-1\n")) == (200, "backend edge-1\n")

    # The zone moves the service: the sidecar follows within the TTL and the debounce.
    zone.update(
        add=[f"_http._tcp.hello 1 SRV 0 0 {second.port} a.hello"],
        delete=["_http._tcp.hello SRV"],
    )
    assert await _until(outbound, (200, "backend edge-2\n")) == (200, "backend edge-2\n")
    (state,) = [s for s in served.aggregator.source_states() if s.name == "dns:edge"]
    assert (state.health.value, state.endpoints) == ("healthy", 1)
