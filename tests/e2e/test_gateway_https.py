"""Ingress gateways end to end with a real Envoy: redirects keep or change the port as the
Gateway API says, and HTTPS listeners terminate TLS with the certificate of the listener
the client's SNI names, served by SDS so that a renewed Secret is served without a restart."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from kontinuum.bootstrap import proxy_metadata
from tests.e2e.backends import Backend, Reply, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.e2e.test_gateways import _service
from tests.e2e.test_routing import documented
from tests.support.fleet import cluster_profile, ingress_gateway
from tests.support.net import free_port
from tests.support.server_certs import ServerCertificate, TestCa, tls_secret

pytestmark = pytest.mark.e2e

REDIRECTS = (
    ingress_gateway(
        """  - {name: web, port: PORT, protocol: HTTP}
"""
    )
    + """---
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
)


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


HTTPS = (
    ingress_gateway(
        """  - name: a
    port: PORT
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: a-cert}]}
  - name: b
    port: PORT
    protocol: HTTPS
    hostname: b.example.com
    tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: b-cert}]}
  - name: missing
    port: OTHER
    protocol: HTTPS
    hostname: c.example.com
    tls: {certificateRefs: [{name: no-such-cert}]}
"""
    )
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: demo}
spec:
  parentRefs: [{name: front}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hello}}]
    backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, hostname: example.org}}]
"""
)


@dataclass(frozen=True)
class HttpsFleet:
    root: Path
    port: int
    ca: TestCa
    a: ServerCertificate
    b: ServerCertificate


@pytest.fixture
def https_fleet(tmp_path: Path, backends: Callable[[str], Backend]) -> HttpsFleet:
    """eu-central with hello exported, and a Gateway `front` with HTTPS listeners for
    a.example.com and b.example.com on one free port, each with its Secret."""
    listen, other = free_port(), free_port()
    root = tmp_path / "fleet"
    (root / "clusters" / "eu-central").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    gateway = HTTPS.replace("PORT", str(listen)).replace("OTHER", str(other))
    (root / "gateway.yaml").write_text(gateway)
    ca = TestCa()
    a, b = ca.issue("a.example.com"), ca.issue("b.example.com")
    (root / "a-cert.yaml").write_text(tls_secret("demo", "a-cert", a.certificate, a.key))
    (root / "b-cert.yaml").write_text(tls_secret("demo", "b-cert", b.certificate, b.key))
    backend = backends("eu-hello")
    (root / "clusters" / "eu-central" / "hello.yaml").write_text(_service(backend.port))
    return HttpsFleet(root, listen, ca, a, b)


@dataclass(frozen=True)
class TlsReply:
    serial: int  # of the certificate the server presented; 0 when the request failed
    status: int = 0
    body: str = ""
    location: str = ""


def _https_get(port: int, server_name: str, ca: bytes, path: str) -> TlsReply:
    """GET over TLS with SNI `server_name`, verifying the server by `ca` and that name."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["http/1.1"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            serial = x509.load_der_x509_certificate(der).serial_number
            request_text = (
                f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
            )
            tls.sendall(request_text.encode())
            received = b""
            while len(received) < 1 << 20:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                received += chunk
    except (OSError, ssl.SSLError):
        return TlsReply(0)
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.decode().partition(":") for line in head.split(b"\r\n")[1:])
    )
    text = body.decode(errors="replace")
    return TlsReply(serial, status, text, headers.get("location", ""))


async def _until_served(
    port: int, server_name: str, ca: bytes, serial: int, path: str = "/hello/x"
) -> TlsReply:
    reply = TlsReply(0)
    for _ in range(150):  # 15 s at most
        reply = await asyncio.to_thread(_https_get, port, server_name, ca, path)
        if reply.serial == serial and reply.status == 200:
            return reply
        await asyncio.sleep(0.1)
    return reply


async def test_https_listeners_serve_each_hostname_its_certificate_and_rotate_without_restart(
    https_fleet: HttpsFleet,
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = https_fleet
    served = await serve_fleet(fleet.root)
    envoy = envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
    )
    ca = fleet.ca.pem
    a = await _until_served(fleet.port, "a.example.com", ca, fleet.a.serial)
    assert (a.serial, a.status, a.body) == (fleet.a.serial, 200, "backend eu-hello\n")
    b = await asyncio.to_thread(_https_get, fleet.port, "b.example.com", ca, "/hello/y")
    assert (b.serial, b.status, b.body) == (fleet.b.serial, 200, "backend eu-hello\n")
    # Redirects on an HTTPS listener: the listener's port and scheme, unless set.
    moved = await asyncio.to_thread(_https_get, fleet.port, "a.example.com", ca, "/moved/x")
    assert (moved.status, moved.location) == (302, f"https://example.org:{fleet.port}/moved/x")
    plain = await asyncio.to_thread(_https_get, fleet.port, "b.example.com", ca, "/plain")
    assert (plain.status, plain.location) == (302, "http://example.org/plain")
    # A name no listener has gets no certificate at all (no default chain).
    assert (await asyncio.to_thread(_https_get, fleet.port, "z.example.com", ca, "/")).serial == 0

    # The listener whose Secret does not exist is not served, and says why.
    (status,) = served.mesh.routing_state.binding.gateway_statuses
    listeners = {li.name: li for li in status.listeners}
    conditions = {c.type: c for c in listeners["missing"].conditions}
    resolved = conditions["ResolvedRefs"]
    assert (resolved.status, resolved.reason) == ("False", "InvalidCertificateRef")
    assert resolved.message == "no Secret demo/no-such-cert"
    assert (conditions["Programmed"].status, conditions["Programmed"].reason) == (
        "False",
        "Invalid",
    )
    assert {c.type: c.status for c in listeners["a"].conditions}["ResolvedRefs"] == "True"

    # A renewed certificate: only the Secret changes, and Envoy serves it on new connections.
    envoy.wait_admin()
    pid = envoy.pid
    renewed = fleet.ca.issue("a.example.com")
    secret = tls_secret("demo", "a-cert", renewed.certificate, renewed.key)
    (fleet.root / "a-cert.yaml").write_text(secret)
    a = await _until_served(fleet.port, "a.example.com", ca, renewed.serial)
    assert (a.serial, a.status) == (renewed.serial, 200)
    assert envoy.pid == pid
    # The listener was never updated or drained: the secret alone changed.
    assert envoy.stat("listener_manager.lds.update_success") == 1
    b = await asyncio.to_thread(_https_get, fleet.port, "b.example.com", ca, "/hello/y")
    assert (b.serial, b.status) == (fleet.b.serial, 200)
    # A renewal gone wrong (the key of another certificate): the last good one keeps
    # serving, and the listener's status says why.
    broken = tls_secret("demo", "a-cert", fleet.b.certificate, renewed.key)
    (fleet.root / "a-cert.yaml").write_text(broken)

    def a_resolved() -> str:
        (status,) = served.mesh.routing_state.binding.gateway_statuses
        (a_listener,) = [li for li in status.listeners if li.name == "a"]
        return next(c.reason for c in a_listener.conditions if c.type == "ResolvedRefs")

    for _ in range(100):  # 10 s at most
        if a_resolved() == "InvalidCertificateRef":
            break
        await asyncio.sleep(0.1)
    assert a_resolved() == "InvalidCertificateRef"
    a = await asyncio.to_thread(_https_get, fleet.port, "a.example.com", ca, "/hello/x")
    assert (a.serial, a.status) == (renewed.serial, 200)
    # No key material is ever logged.
    for key in (fleet.a.key, fleet.b.key, renewed.key):
        body = b"".join(key.splitlines()[1:-1]).decode()
        assert body[:40] not in caplog.text


async def test_the_documented_https_gateway_serves_both_names_and_redirects_to_https(
    tmp_path: Path,
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
    backends: Callable[[str], Backend],
) -> None:
    """docs/routing.md's HTTPS example as written, with real certificates in its Secrets and
    free ports: each name gets its certificate (one from another namespace, granted), and the
    plain listener redirects to https on the HTTPS port."""
    secure, plain = free_port(), free_port()
    example = documented("secure")
    secret_doc = re.search(
        r"^apiVersion: v1\nkind: Secret\n.*?(?=^---\n)", example, re.DOTALL | re.MULTILINE
    )
    assert secret_doc is not None
    ca = TestCa()
    www, api = ca.issue("www.example.com"), ca.issue("api.example.com")
    example = example.replace(
        secret_doc.group(0),
        tls_secret("demo", "www-example-com", www.certificate, www.key)
        + "---\n"
        + tls_secret("certs", "api-example-com", api.certificate, api.key),
    )
    example = (
        example.replace("127.0.0.50", "127.0.0.1")
        .replace("8443", str(secure))
        .replace("8080", str(plain))
    )
    root = tmp_path / "fleet"
    (root / "clusters" / "eu-central").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "secure.yaml").write_text(example)
    backend = backends("eu-hello")
    (root / "clusters" / "eu-central" / "hello.yaml").write_text(_service(backend.port))
    served = await serve_fleet(root)
    (status,) = [s for s in served.mesh.routing_state.binding.gateway_statuses]
    for listener in status.listeners:
        assert all(
            c.status == ("False" if c.type == "Conflicted" else "True") for c in listener.conditions
        ), listener
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="secure"),
    )
    reply = await _until_served(secure, "www.example.com", ca.pem, www.serial)
    assert (reply.serial, reply.status, reply.body) == (www.serial, 200, "backend eu-hello\n")
    reply = await asyncio.to_thread(_https_get, secure, "api.example.com", ca.pem, "/hello")
    assert (reply.serial, reply.status) == (api.serial, 200)
    redirect = await _until_status(plain, "www.example.com", "/hello/x", 301)
    assert redirect.headers["location"] == f"https://www.example.com:{secure}/hello/x"
