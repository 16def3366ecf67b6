"""Who may run an ingress gateway (kontinuum.security.admission through the mesh's view
resolver): a Gateway with an HTTPS listener only its own identity, whose view alone carries
the listeners' TLS keys; an HTTP-only Gateway any identity of its namespace. A view whose
Gateway gains an HTTPS listener while another identity holds it is revoked: its stream
ends with PERMISSION_DENIED and no key is ever sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from kontinuum.mesh import Mesh
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.workload import WorkloadCertificates
from kontinuum.xds import Peer, SnapshotCache, XdsServer, types
from tests.support.fleet import cluster_profile, load_into, rewrite
from tests.support.security import node
from tests.support.server_certs import TestCa, tls_secret

TD = "cluster.local"
GATEWAY_KEY = "kubernetes-gateway://shop/shop-cert"
GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: front
  namespace: shop
  labels: {{kontinuum.io/cluster: eu}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: web, port: 8080, protocol: HTTP}}
{https}"""
HTTPS_LISTENER = """  - name: secure
    port: 8443
    protocol: HTTPS
    hostname: shop.example.com
    tls: {certificateRefs: [{name: shop-cert}]}
"""


@dataclass
class Fleet:
    root: Path
    mesh: Mesh

    def gateway(self, https: bool) -> None:
        """Declare Gateway shop/front with an HTTP listener, and an HTTPS one if `https`."""
        text = GATEWAY.format(https=HTTPS_LISTENER if https else "")
        rewrite(self.root / "gateway.yaml", text)
        load_into(self.mesh, self.root)


def _fleet(tmp_path: Path, https: bool) -> Fleet:
    root = tmp_path / "fleet"
    (root / "clusters" / "eu").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu", "eu-central-1"))
    certificate = TestCa().issue("shop.example.com")
    (root / "cert.yaml").write_text(
        tls_secret("shop", "shop-cert", certificate.certificate, certificate.key)
    )
    fleet = Fleet(
        root, Mesh(SnapshotCache(), WorkloadCertificates(CertificateAuthority.generate(TD)))
    )
    fleet.gateway(https)
    return fleet


@pytest.fixture
def https(tmp_path: Path) -> Fleet:
    """eu with Gateway shop/front: HTTP on 8080, HTTPS on 8443 with Secret shop/shop-cert."""
    return _fleet(tmp_path, https=True)


@pytest.fixture
def http_only(tmp_path: Path) -> Fleet:
    """eu with Gateway shop/front, HTTP on 8080 only (Secret shop/shop-cert unused)."""
    return _fleet(tmp_path, https=False)


def _peer(namespace: str, account: str) -> Peer:
    return Peer(
        "ipv4:127.0.0.1:1",
        identity=f"spiffe://{TD}/ns/{namespace}/sa/{account}",
        claims={"via": "certificate", "cluster": "eu"},
    )


def _ingress(**declared: Any) -> Any:
    return node("front-1", "eu", "shop", role="ingress", gateway="front", **declared)


def _secret_names(mesh: Mesh, view: str) -> set[str]:
    return set(mesh.cache.views()[view].resources(types.SECRET))


def test_an_https_gateway_s_proxy_of_another_service_account_is_refused(https: Fleet) -> None:
    with pytest.raises(PermissionError) as refused:
        https.mesh.resolve_view(_ingress(), _peer("shop", "web"))
    assert str(refused.value).startswith(
        f"identity spiffe://{TD}/ns/shop/sa/web may not run HTTPS Gateway shop/front: that "
        "takes service account 'front' of namespace 'shop'"
    )
    assert https.mesh.cache.views() == {}  # no view, so no key, was made for it


def test_an_https_gateway_s_own_service_account_gets_its_keys(https: Fleet) -> None:
    view = https.mesh.resolve_view(_ingress(), _peer("shop", "front"))
    assert view == "ingress/eu/shop/front@front"
    assert GATEWAY_KEY in _secret_names(https.mesh, view)


def test_an_http_only_gateway_s_proxy_may_be_of_any_service_account_of_its_namespace(
    http_only: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    view = http_only.mesh.resolve_view(_ingress(), _peer("shop", "web"))
    assert view == "ingress/eu/shop/front@web"
    assert not any(
        n.startswith("kubernetes-gateway://") for n in _secret_names(http_only.mesh, view)
    )
    # It is told which identity it takes once the Gateway has an HTTPS listener.
    assert any(
        "has no HTTPS listener" in r.getMessage() and "'front'" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    with pytest.raises(PermissionError, match="of workspace 'other'"):
        http_only.mesh.resolve_view(_ingress(), _peer("other", "front"))


def test_without_authentication_the_declared_service_account_is_held_to_the_same_rule(
    https: Fleet,
) -> None:
    anonymous = Peer("ipv4:127.0.0.1:1")
    with pytest.raises(PermissionError, match="may not run HTTPS Gateway shop/front"):
        https.mesh.resolve_view(_ingress(service_account="web"), anonymous)
    # A node that declares none is taken as its Gateway's own, as Istio's gateways run.
    view = https.mesh.resolve_view(_ingress(), anonymous)
    assert view == "ingress/eu/shop/front@front"
    assert GATEWAY_KEY in _secret_names(https.mesh, view)


class _As:
    """An authenticator that finds every caller to be `peer`."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        return self.peer


@pytest.fixture
async def served_http_only(http_only: Fleet) -> AsyncIterator[tuple[Fleet, int]]:
    """The HTTP-only fleet served over ADS to callers who are all shop/sa/web."""
    server = XdsServer(
        http_only.mesh.cache,
        resolve_view=http_only.mesh.resolve_view,
        authenticator=_As(_peer("shop", "web")),
    )
    port = await server.start("127.0.0.1:0")
    yield http_only, port
    await server.stop(0)


async def test_a_gateway_gaining_an_https_listener_revokes_another_identity_s_view(
    served_http_only: tuple[Fleet, int],
) -> None:
    fleet, port = served_http_only
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(discovery_pb2.DiscoveryRequest(node=_ingress(), type_url=types.LISTENER))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.type_url == types.LISTENER  # served while its Gateway is HTTP only
        await call.write(
            discovery_pb2.DiscoveryRequest(type_url=types.LISTENER, response_nonce=first.nonce)
        )
        # It asks for the key by name, as an Envoy given the HTTPS listener would.
        await call.write(
            discovery_pb2.DiscoveryRequest(type_url=types.SECRET, resource_names=[GATEWAY_KEY])
        )
        fleet.gateway(https=True)
        received: list[Any] = []
        ended = await _ended(call, received)
    assert ended.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"identity spiffe://{TD}/ns/shop/sa/web may not run HTTPS Gateway shop/front" in str(
        ended.details()
    )
    assert not any(_is_gateway_key(r) for response in received for r in response.resources)
    assert "ingress/eu/shop/front@web" not in fleet.mesh.cache.views()
    # Coming back, it is refused as a new proxy would be.
    with pytest.raises(PermissionError, match="may not run HTTPS Gateway shop/front"):
        fleet.mesh.resolve_view(_ingress(), _peer("shop", "web"))


async def _ended(call: Any, received: list[Any]) -> grpc.aio.AioRpcError:
    """How a stream that must end does, with the responses it sent before in `received`."""
    try:
        for _ in range(10):  # bounded: the stream must end, not go on
            received.append(await asyncio.wait_for(call.read(), 5))
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"the stream went on: {received}")


def _is_gateway_key(packed: Any) -> bool:
    secret = secret_pb2.Secret()
    packed.Unpack(secret)
    return secret.name.startswith("kubernetes-gateway://")
