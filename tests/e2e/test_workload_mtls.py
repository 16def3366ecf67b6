"""Workload mTLS with real Envoys and real certificates: the translator's TLS contexts,
SNI passthrough and RBAC carry traffic as designed (`kontinuum.control.translate.tls`).

The Envoys are static: each holds its translation as static resources and its certificate
as static secrets of the names SDS would give them (`tests.support.static_envoy`), so this
tests the translation, not the serving of secrets. All on loopback:

    caller sidecar (outbound) ──mTLS──> cart's sidecar (inbound, RBAC) ──> backend
    caller sidecar (network a) ──mTLS, SNI──> east-west gateway (passthrough) ──> cart's sidecar
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from kontinuum.control.model import ServiceRef
from kontinuum.control.plane import Locality, PlaneEndpoint, PlanePort, PlaneService, ProxyView
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.control.translate.backends import MeshRouting
from kontinuum.control.translate.gateways import east_west_gateway
from kontinuum.control.translate.networks import NetworkGateway, Networks
from kontinuum.control.translate.options import WorkloadTls
from kontinuum.telemetry.envoy_stats import stats_config
from tests.e2e.backends import Backend, request
from tests.e2e.envoy import Envoy
from tests.support.net import free_port
from tests.support.static_envoy import CertificateAuthority, Identity, static_bootstrap

pytestmark = pytest.mark.e2e

MTLS = WorkloadTls("cluster.local")
CART = "cart.shop.svc.clusterset.local"
EAST, WEST = Locality("east-1", "us-east"), Locality("west-1", "us-west")
PROBER = "spiffe://cluster.local/ns/ops/sa/prober"


def _config(resources: tuple[Any, ...], identity: Identity | None, role: str) -> dict[str, Any]:
    document = json_format.MessageToDict(
        static_bootstrap(resources, identity), preserving_proto_field_name=True
    )
    return {
        **document,
        "node": {"id": role, "cluster": "east-1", "locality": {"zone": "east-1"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": stats_config("east-1", "shop", role),
    }


StartStatic = Callable[[str, tuple[Any, ...], "Identity | None"], Envoy]


@pytest.fixture
def static_envoys(tmp_path: Path, envoy_path: str) -> Iterator[StartStatic]:
    started: list[Envoy] = []

    def start(name: str, resources: tuple[Any, ...], identity: Identity | None) -> Envoy:
        role = "gateway" if name == "gateway" else "sidecar"
        envoy = Envoy(
            tmp_path / name,
            node_id=name,
            view=f"{role}/east-1/shop",
            xds_port=0,
            mode="sotw",
            binary=envoy_path,
            config=_config(resources, identity, role),
        )
        started.append(envoy)
        envoy.start()
        envoy.wait_live()
        return envoy

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def _cart(*endpoints: PlaneEndpoint, namespace: str = "shop", name: str = "cart") -> PlaneService:
    return PlaneService(namespace, name, namespace, (PlanePort(80, "http", endpoints=endpoints),))


def _caller(
    start: StartStatic,
    name: str,
    identity: Identity,
    service: PlaneService,
    routing: MeshRouting | None = None,
) -> int:
    """A caller's sidecar with `service` as its only outbound service; its outbound port."""
    port = free_port()
    options = SidecarOptions(outbound_port=port, api_listeners=False, mtls=MTLS)
    translation = translate_sidecar([service], ProxyView("shop", "east-1"), None, options, routing)
    assert translation.errors == ()
    start(name, translation.resources, identity)
    return port


@pytest.fixture
def cart(
    static_envoys: StartStatic, authority: CertificateAuthority
) -> Iterator[tuple[Envoy, int, Backend]]:
    """cart's sidecar in front of its backend: the sidecar, its inbound port, the backend."""
    backend = Backend("cart", echo=["x-forwarded-client-cert"]).start()
    inbound = free_port()
    options = SidecarOptions(
        outbound_port=free_port(),
        api_listeners=False,
        mtls=MTLS,
        inbound_service=(ServiceRef("shop", "cart"), 80),
        inbound_port=backend.port,
        inbound_listen_port=inbound,
        inbound_listen_address="127.0.0.1",
        inbound_principals=(PROBER,),
    )
    translation = translate_sidecar([], ProxyView("shop", "east-1"), None, options)
    assert translation.errors == ()
    identity = authority.issue("spiffe://cluster.local/ns/shop/sa/cart")
    sidecar = static_envoys("cart", translation.resources, identity)
    try:
        yield sidecar, inbound, backend
    finally:
        backend.stop()


def test_mtls_carries_the_callers_identity_and_rbac_admits_only_the_granted(
    static_envoys: StartStatic,
    authority: CertificateAuthority,
    cart: tuple[Envoy, int, Backend],
) -> None:
    sidecar, inbound, _ = cart
    endpoint = PlaneEndpoint("127.0.0.1", inbound, EAST, mutual_tls=True)
    callers = {
        who: _caller(static_envoys, who, authority.issue(spiffe_id), _cart(endpoint))
        for who, spiffe_id in [
            ("web", "spiffe://cluster.local/ns/shop/sa/web"),  # the own namespace
            ("prober", PROBER),  # a granted identity
            ("intruder", "spiffe://cluster.local/ns/ops/sa/intruder"),  # neither
        ]
    }
    web = request(callers["web"], CART)
    assert web.status == 200, web.body
    # The workload sees who called, and only that (the proxy sets the header itself).
    certificate = web.echoed()["header x-forwarded-client-cert"]
    assert certificate.endswith("URI=spiffe://cluster.local/ns/shop/sa/web"), certificate
    forged = request(callers["web"], CART, headers={"x-forwarded-client-cert": "URI=spiffe://x"})
    assert "spiffe://x" not in forged.echoed()["header x-forwarded-client-cert"]
    assert request(callers["prober"], CART).status == 200
    denied = request(callers["intruder"], CART)
    assert denied.status == 403, denied.body
    assert "RBAC" in denied.body
    assert sidecar.stat("http.inbound.rbac.allowed") == 3
    assert sidecar.stat("http.inbound.rbac.denied") == 1
    # A plaintext caller and one without a certificate fail, counted by the listener.
    assert request(inbound, CART).status == 0
    _without_certificate(inbound)
    listener = f"listener.127.0.0.1_{inbound}.ssl."
    for counter in ("connection_error", "fail_verify_no_cert"):
        sidecar.wait_for(lambda c=counter: sidecar.stat(listener + c) == 1, what=counter)
    assert (sidecar.stat(listener + "handshake") or 0) >= 3  # callers may reuse connections
    # The stats exist under the stats matcher, with their Prometheus names and labels.
    text = sidecar.admin("/stats/prometheus")
    assert _series(text, "envoy_http_rbac_denied", 'envoy_http_conn_manager_prefix="inbound"') == 1
    address = f'envoy_listener_address="127.0.0.1_{inbound}"'
    assert _series(text, "envoy_listener_ssl_fail_verify_no_cert", address) == 1
    assert _series(text, "envoy_listener_ssl_fail_verify_san", address) == 0


def _without_certificate(port: int) -> None:
    """A TLS client that sends no certificate (and trusts anything)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: cart\r\n\r\n")
        tls.recv(1)


def _series(text: str, name: str, label: str) -> float | None:
    """The value of the series `name` whose labels include `label`, from Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_caller_checks_the_peer_holds_an_identity_of_the_services_namespace(
    static_envoys: StartStatic,
    authority: CertificateAuthority,
    cart: tuple[Envoy, int, Backend],
) -> None:
    """A payments/billing endpoint whose sidecar holds a shop identity is not billing."""
    _, inbound, backend = cart
    endpoint = PlaneEndpoint("127.0.0.1", inbound, EAST, mutual_tls=True)
    billing = _cart(endpoint, namespace="payments", name="billing")
    port = _caller(
        static_envoys,
        "payments-caller",
        authority.issue("spiffe://cluster.local/ns/shop/sa/web"),
        billing,
    )
    reply = request(port, "billing.payments.svc.clusterset.local")
    assert reply.status == 503, reply.body
    assert backend.received() == []


def test_an_east_west_gateway_passes_mtls_through_by_sni(
    static_envoys: StartStatic,
    authority: CertificateAuthority,
    cart: tuple[Envoy, int, Backend],
) -> None:
    _, inbound, _ = cart
    gateway = NetworkGateway("west-1", "127.0.0.1", free_port())
    # The gateway holds cart's sidecar as its local mutual endpoint, and no certificate.
    local = _cart(PlaneEndpoint("127.0.0.1", inbound, WEST, mutual_tls=True))
    passthrough = east_west_gateway([local], gateway, SidecarOptions(mtls=MTLS))
    envoy = static_envoys("gateway", passthrough.resources, None)
    # The caller, on network a, sees cart's endpoint in west-1 (network b) behind it.
    networks = Networks({"east-1": "a", "west-1": "b"}, {"west-1": gateway})
    remote = _cart(PlaneEndpoint("10.2.0.1", 8080, WEST, mutual_tls=True))
    port = _caller(
        static_envoys,
        "remote-web",
        authority.issue("spiffe://cluster.local/ns/shop/sa/web"),
        remote,
        MeshRouting(networks=networks),
    )
    # Its only way to cart's sidecar is the gateway; the identity arrives unchanged.
    reply = request(port, CART)
    assert reply.status == 200, reply.body
    certificate = reply.echoed()["header x-forwarded-client-cert"]
    assert certificate.endswith("URI=spiffe://cluster.local/ns/shop/sa/web"), certificate
    assert envoy.cluster_endpoints(f"outbound_.80_._.{CART}") == [inbound]
