"""Ingress gateways end to end with a real Envoy: redirects keep or change the port as the
Gateway API says, and HTTPS listeners terminate TLS with the certificate of the listener
the client's SNI names, served by SDS so that a renewed Secret is served without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from kontinuum.bootstrap import proxy_metadata
from tests.e2e.backends import Backend, Reply, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.e2e.test_gateways import _service
from tests.support.fleet import cluster_profile
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

REDIRECTS = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: front
  namespace: demo
  labels: {kontinuum.io/cluster: eu-central}
spec:
  gatewayClassName: kontinuum
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: web, port: PORT, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirects, namespace: demo}
spec:
  parentRefs: [{name: front}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hostname-only}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /same-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /https}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /https-8443}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, port: 8443}
  - matches: [{path: {type: PathPrefix, value: /https-same-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
"""


@pytest.fixture
def redirect_fleet(tmp_path: Path, backends: Callable[[str], Backend]) -> tuple[Path, int]:
    """eu-central with a Gateway `front` on a free HTTP port and redirect rules."""
    listen = free_port()
    root = tmp_path / "fleet"
    (root / "clusters" / "eu-central").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "gateway.yaml").write_text(REDIRECTS.replace("PORT", str(listen)))
    backend = backends("eu-hello")
    (root / "clusters" / "eu-central" / "hello.yaml").write_text(_service(backend.port))
    return root, listen


async def _until_status(port: int, host: str, path: str, status: int) -> Reply:
    reply = Reply(0, "", {}, 0.0)
    for _ in range(100):  # 10 s at most
        reply = await asyncio.to_thread(request, port, host, path, None, 2)
        if reply.status == status:
            return reply
        await asyncio.sleep(0.1)
    return reply


async def test_a_redirect_keeps_the_listener_port_unless_its_scheme_or_port_says_otherwise(
    redirect_fleet: tuple[Path, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    root, listen = redirect_fleet
    served = await serve_fleet(root)
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
    )
    first = await _until_status(listen, "www.example.com", "/hostname-only/a?q=1", 302)
    # No scheme and no port: the listener's port, as the client reached it.
    assert first.headers["location"] == f"http://example.org:{listen}/hostname-only/a?q=1"
    expected = {
        # Same host: the request's host (its port stripped) with the listener's port.
        (
            "/same-host/b",
            f"www.example.com:{listen}",
        ): f"http://www.example.com:{listen}/same-host/b",
        ("/same-host/b", "www.example.com"): f"http://www.example.com:{listen}/same-host/b",
        # Port 80 is http's own: left out.
        ("/port-80", "www.example.com"): "http://example.org/port-80",
        # A scheme without a port: its well-known port, left out.
        ("/https", f"www.example.com:{listen}"): "https://example.org/https",
        ("/https-8443", "www.example.com"): "https://example.org:8443/https-8443",
        (
            "/https-same-host/c",
            f"www.example.com:{listen}",
        ): "https://www.example.com/https-same-host/c",
    }
    for (path, host), location in expected.items():
        reply = await asyncio.to_thread(request, listen, host, path, None, 2)
        assert reply.status in (301, 302), (path, reply)
        assert reply.headers["location"] == location, (path, host)
