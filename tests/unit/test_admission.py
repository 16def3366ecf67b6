"""What an authenticated proxy may claim (kontinuum.security.admission, through the mesh's
view resolver), and that a stream ends with the credential that opened it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from kontinuum.bootstrap import proxy_metadata
from kontinuum.mesh import Mesh
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.workload import WorkloadCertificates
from kontinuum.xds import Peer, SnapshotCache, XdsServer, types
from tests.support.fleet import cluster_profile, load_into
from tests.support.security import node, uri_sans
from tests.unit.fake_stream import VIEW, base_resources

TD = "cluster.local"
GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{kontinuum.io/cluster: eu}}
spec:
  gatewayClassName: kontinuum-east-west
{addresses}  listeners:
  - {{name: mesh, port: 15443, protocol: TLS, tls: {{mode: Passthrough}}}}
"""


def _gateway(namespace: str, name: str, address: str | None) -> str:
    addresses = f"  addresses: [{{type: IPAddress, value: {address}}}]\n" if address else ""
    return GATEWAY.format(namespace=namespace, name=name, addresses=addresses)


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    """eu with the real east-west Gateway (kontinuum-system/east-west) and a tenant's
    Gateway of the same class, addressed too (first by name: it must not win)."""
    root = tmp_path / "fleet"
    (root / "clusters" / "eu").mkdir(parents=True)
    (root / "clusters" / "us").mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        cluster_profile("eu", "eu-central-1") + "---\n" + cluster_profile("us", "us-east-1")
    )
    (root / "gateways.yaml").write_text(
        _gateway("aaa", "aaa-gw", "6.6.6.6")
        + "---\n"
        + _gateway("kontinuum-system", "east-west", "10.0.0.1")
    )
    built = Mesh(SnapshotCache(), WorkloadCertificates(CertificateAuthority.generate(TD)))
    load_into(built, root)
    return built


def _peer(namespace: str, account: str, cluster: str = "eu") -> Peer:
    return Peer(
        "ipv4:127.0.0.1:1",
        identity=f"spiffe://{TD}/ns/{namespace}/sa/{account}",
        claims={"via": "certificate", "cluster": cluster},
    )


def _secret_uris(mesh: Mesh, view: str) -> list[bytes]:
    snapshot = mesh.cache.views()[view]
    return [
        r.message.tls_certificate.certificate_chain.inline_bytes
        for r in snapshot.resources(types.SECRET).values()
        if r.message.HasField("tls_certificate")
    ]


def test_a_sidecar_claims_its_identity_s_workspace_and_gets_its_certificate(mesh: Mesh) -> None:
    view = mesh.resolve_view(node("web-1", "eu", "shop"), _peer("shop", "web"))
    assert view.endswith("@web")
    (chain,) = _secret_uris(mesh, view)
    assert uri_sans(chain) == [f"spiffe://{TD}/ns/shop/sa/web"]


@pytest.mark.parametrize(
    ("claimed", "peer", "reason"),
    [
        (node("x", "eu", "payments"), _peer("shop", "web"), "of workspace 'shop'"),
        (node("x", "us", "shop"), _peer("shop", "web"), "of cluster 'eu'"),
        (node("x", "eu", "shop", service_account="admin"), _peer("shop", "web"), "declares"),
        (
            node("x", "eu", "kontinuum-system"),
            _peer("kontinuum-system", "kontinuum"),
            "control plane's own identity",
        ),
    ],
)
def test_an_identity_may_not_claim_what_is_not_its(
    mesh: Mesh, claimed: Any, peer: Peer, reason: str
) -> None:
    with pytest.raises(PermissionError, match=reason):
        mesh.resolve_view(claimed, peer)


def test_only_the_gateway_in_force_s_identity_runs_the_east_west_gateway(mesh: Mesh) -> None:
    gateway = node("gw", "eu", "kontinuum-system", role="gateway")
    # The tenant's Gateway is not in force (a tenant's namespace): it gives no right, and
    # the sidecars are sent to the operators' gateway.
    assert mesh.routing_state.networks.gateways["eu"].address == "10.0.0.1"
    with pytest.raises(PermissionError, match="kontinuum-system/east-west"):
        mesh.resolve_view(gateway, _peer("aaa", "aaa-gw"))
    # Another service account of the Gateway's namespace neither.
    with pytest.raises(PermissionError, match="service account 'east-west'"):
        mesh.resolve_view(gateway, _peer("kontinuum-system", "operator"))
    view = mesh.resolve_view(gateway, _peer("kontinuum-system", "east-west"))
    assert view == "gateway/eu"
    # It passes mTLS through: no workload certificate (no key) in its view.
    assert _secret_uris(mesh, view) == []


def test_a_plaintext_node_is_believed_but_never_as_the_control_plane(mesh: Mesh) -> None:
    anonymous = Peer("ipv4:127.0.0.1:1")
    view = mesh.resolve_view(node("w", "eu", "shop", service_account="web"), anonymous)
    assert view.endswith("@web")
    with pytest.raises(PermissionError, match="control plane's own identity"):
        mesh.resolve_view(
            node("k", "eu", "kontinuum-system", service_account="kontinuum"), anonymous
        )


class _Expiring:
    """An authenticator whose every credential expires `lasts` seconds from now."""

    def __init__(self, lasts: float) -> None:
        self.lasts = lasts

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        return Peer(str(context.peer()), identity="x", expires_at=time.time() + self.lasts)


@pytest.fixture
async def expiring() -> AsyncIterator[grpc.aio.Channel]:
    cache = SnapshotCache()
    cache.set_resources(VIEW, base_resources())
    server = XdsServer(cache, authenticator=_Expiring(1.0))
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


async def test_a_stream_ends_when_the_credential_that_opened_it_expires(
    expiring: grpc.aio.Channel,
) -> None:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(expiring).StreamAggregatedResources()
    first = discovery_pb2.DiscoveryRequest(node=node("p", VIEW, "demo"), type_url=types.CLUSTER)
    await call.write(first)
    response = await call.read()
    assert response.resources  # served while the credential holds
    opened = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), 5)  # bounded: a stream that lives on fails
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in str(ended.value.details())
    assert 0.5 < time.monotonic() - opened < 5


def test_proxy_metadata_declares_the_service_account() -> None:
    assert (
        proxy_metadata(namespace="a", role="sidecar", service_account="web")[
            "kontinuum.io/service-account"
        ]
        == "web"
    )


def test_a_view_no_proxy_uses_is_dropped_after_a_while_with_its_certificate(
    mesh: Mesh,
) -> None:
    web = mesh.resolve_view(node("web-1", "eu", "shop"), _peer("shop", "web"))
    api = mesh.resolve_view(node("api-1", "eu", "shop"), _peer("shop", "api"))
    assert mesh.forget_idle({web}, idle_for=600, now=1000.0) == 0  # idle from now on
    assert mesh.forget_idle({web}, idle_for=600, now=1599.0) == 0
    assert mesh.forget_idle({web}, idle_for=600, now=1600.0) == 1
    assert set(mesh.cache.views()) == {web}
    assert mesh.view_key(api) is None
    # Its identity is no longer renewed; a proxy coming back gets the view anew.
    assert mesh.renew_certificates() == 0
    assert mesh.resolve_view(node("api-1", "eu", "shop"), _peer("shop", "api")) == api
    assert set(mesh.cache.views()) == {web, api}


def test_a_certificate_that_cannot_be_issued_refuses_the_proxy_and_stops_nothing_else(
    tmp_path: Path,
) -> None:
    """A CA past its end: the new proxy is refused, its view not kept half made, and the
    views already served keep theirs through the next fleet."""
    root = tmp_path / "fleet"
    (root / "clusters" / "eu").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu", "eu-central-1"))
    ca = CertificateAuthority.generate(TD, validity=timedelta(seconds=2))
    mesh = Mesh(SnapshotCache(), WorkloadCertificates(ca, timedelta(seconds=2)))
    load_into(mesh, root)
    web = mesh.resolve_view(node("web-1", "eu", "shop"), _peer("shop", "web"))
    time.sleep(2.1)  # the CA has expired
    with pytest.raises(PermissionError, match="no workload certificate"):
        mesh.resolve_view(node("api-1", "eu", "shop"), _peer("shop", "api"))
    assert set(mesh.cache.views()) == {web}
    assert mesh.view_key(web) is not None
    load_into(mesh, root)  # the next fleet applies; web keeps its last configuration
    assert set(mesh.cache.views()) == {web}


async def test_a_status_stream_answers_nothing_once_its_credential_expired(
    expiring: grpc.aio.Channel,
) -> None:
    call = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(expiring).StreamClientStatus()
    await call.write(csds_pb2.ClientStatusRequest())
    assert (await asyncio.wait_for(call.read(), 5)) is not None  # answered while it holds
    await asyncio.sleep(1.2)
    await call.write(csds_pb2.ClientStatusRequest())
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), 5)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


class _Expired:
    """An authenticator that lets in a credential which expired a second ago."""

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
        return Peer(str(context.peer()), identity="x", expires_at=time.time() - 1.0)


async def test_a_status_read_with_an_expired_credential_is_refused() -> None:
    """Every CSDS call, the unary one too, is refused once the caller's credential expired,
    whatever the authenticator let in."""
    server = XdsServer(SnapshotCache(), authenticator=_Expired())
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await status.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
    finally:
        await server.stop(0)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in str(refused.value.details())
