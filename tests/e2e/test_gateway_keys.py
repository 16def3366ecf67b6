"""The TLS keys of an HTTPS Gateway reach only the Gateway's own identity, with real Envoys
proving who they are with certificates of the fleet CA (`kontinuum ca issue`).

An ingress Envoy of Gateway demo/front running as another service account of `demo` is
refused (PERMISSION_DENIED, saying which service account it takes) and never holds a
`kubernetes-gateway://` secret; one running as demo/sa/front serves HTTPS. An Envoy admitted
while its Gateway was HTTP only loses its stream when the Gateway gains an HTTPS listener,
without ever receiving the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kontinuum.app import XdsSecurity, running_fleet, serving
from kontinuum.bootstrap import envoy_bootstrap, proxy_metadata
from kontinuum.security import CertificateAuthority, SpiffeId
from kontinuum.xds import types
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.test_gateway_https import HTTPS, _https_get, _until_served
from tests.e2e.test_gateways import _service
from tests.e2e.test_xds_security import HOUR, certificate_tls
from tests.support.fleet import cluster_profile, fast, ingress_gateway, rewrite
from tests.support.net import free_port
from tests.support.security import (
    Credentials,
    metrics_text,
    node,
    refusal,
    sample,
    write_credentials,
)
from tests.support.server_certs import ServerCertificate, TestCa, tls_secret

pytestmark = pytest.mark.e2e

TD = "cluster.local"
CLUSTER = "eu-central"
FRONT = SpiffeId(TD, "demo", "front")  # the Gateway's own service account
WEB = SpiffeId(TD, "demo", "web")  # another workload's of its namespace
REFUSAL = (
    f"identity {WEB} may not run HTTPS Gateway demo/front: that takes service account "
    "'front' of namespace 'demo'"
)
HTTP_ONLY = (
    ingress_gateway(
        """  - {name: web, port: PORT, protocol: HTTP}
"""
    )
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: demo}
spec:
  parentRefs: [{name: front}]
  rules:
  - backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: 80}]
"""
)


@dataclass(frozen=True)
class Served:
    root: Path
    ca: CertificateAuthority
    mtls: str  # the xDS address: mutual TLS
    admin: str
    https_port: int  # Gateway front's HTTPS listeners (a.example.com, b.example.com)
    http_port: int  # its HTTP listener, while it is HTTP only
    server_ca: TestCa
    a: ServerCertificate

    def credentials(self, directory: Path, spiffe_id: SpiffeId) -> Credentials:
        """`kontinuum ca issue`'s files for `spiffe_id` in eu-central."""
        issued = self.ca.issue_workload(spiffe_id, CLUSTER, HOUR)
        return write_credentials(directory, issued, self.ca)

    def https(self) -> str:
        return HTTPS.replace("PORT", str(self.https_port)).replace("OTHER", str(free_port()))

    def http_only(self) -> str:
        return HTTP_ONLY.replace("PORT", str(self.http_port))


@contextlib.asynccontextmanager
async def _served(directory: Path, backend: Backend, https: bool) -> AsyncIterator[Served]:
    root = directory / "fleet"
    (root / "clusters" / CLUSTER).mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile(CLUSTER, "eu-central-1"))
    (root / "clusters" / CLUSTER / "hello.yaml").write_text(_service(backend.port))
    server_ca = TestCa()
    a, b = server_ca.issue("a.example.com"), server_ca.issue("b.example.com")
    (root / "a-cert.yaml").write_text(tls_secret("demo", "a-cert", a.certificate, a.key))
    (root / "b-cert.yaml").write_text(tls_secret("demo", "b-cert", b.certificate, b.key))
    ca = CertificateAuthority.generate(TD)
    mtls, admin = (f"127.0.0.1:{free_port()}" for _ in range(2))
    served = Served(root, ca, mtls, admin, free_port(), free_port(), server_ca, a)
    (root / "gateway.yaml").write_text(served.https() if https else served.http_only())
    async with (
        running_fleet(fast(path=root, security=XdsSecurity(ca))) as fleet,
        serving(fleet, mtls, admin),
    ):
        assert fleet.static is not None
        assert fleet.static.status().errors == (), fleet.static.status().errors
        yield served


@pytest.fixture
async def https_gateway(
    tmp_path: Path, backends: Callable[[str], Backend]
) -> AsyncIterator[Served]:
    """Gateway demo/front with HTTPS listeners for a.example.com and b.example.com."""
    async with _served(tmp_path, backends("eu-hello"), https=True) as served:
        yield served


@pytest.fixture
async def http_gateway(tmp_path: Path, backends: Callable[[str], Backend]) -> AsyncIterator[Served]:
    """Gateway demo/front with one HTTP listener, its Secrets already in the namespace."""
    async with _served(tmp_path, backends("eu-hello"), https=False) as served:
        yield served


def _ingress_envoy(
    envoys: StartEnvoy, served: Served, credentials: Credentials, node_id: str
) -> Envoy:
    """An ingress Envoy of demo/front, as `kontinuum bootstrap --role ingress --gateway
    front --xds-ca ... --xds-cert ... --xds-key ...` writes it."""
    document = envoy_bootstrap(
        node_id=node_id,
        cluster=CLUSTER,
        xds_address=served.mtls,
        admin_port=0,
        reconnect_backoff=("0.1s", "1s"),
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
        tls=certificate_tls(credentials),
    )
    return envoys(view=CLUSTER, xds_port=0, mode="delta", node_id=node_id, config=document)


def _secrets_held(envoy: Envoy) -> set[str]:
    """The names of the secrets Envoy holds from SDS, warming or active."""
    names: set[str] = set()
    for config in envoy.config_dump().get("configs", []):
        if config.get("@type", "").endswith("SecretsConfigDump"):
            for key in ("dynamic_active_secrets", "dynamic_warming_secrets"):
                names.update(entry["name"] for entry in config.get(key, []))
    return names


async def _refused(served: Served, at_least: float) -> float:
    """The control plane's count of refused streams, once it is `at_least` (bounded)."""
    count: float | None = 0.0
    for _ in range(150):  # 15 s at most
        text = await metrics_text(served.admin)
        count = sample(text, "kontinuum_xds_streams_refused_total", {"reason": "denied"})
        if count is not None and count >= at_least:
            return count
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {count} streams were refused")


async def _envoy_logged(envoy: Envoy, text: str) -> bool:
    for _ in range(100):  # 10 s at most
        if text in envoy.log_path.read_text(errors="replace"):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_only_the_gateway_s_own_identity_gets_its_tls_keys(
    https_gateway: Served, envoys: StartEnvoy, tmp_path: Path
) -> None:
    served = https_gateway
    web = served.credentials(tmp_path / "web", WEB)
    # A real ADS client as demo/sa/web: refused, saying which identity it takes.
    claim = node("probe", CLUSTER, "demo", role="ingress", gateway="front")
    refused = await refusal(served.mtls, web.channel_credentials(), claim, types.LISTENER)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED, refused
    assert refused.details.startswith(REFUSAL), refused.details

    # An Envoy as demo/sa/web: its every stream refused, it holds no key, serves nothing.
    intruder = _ingress_envoy(envoys, served, web, "front-web")
    intruder.wait_admin()
    await _refused(served, at_least=3)  # the probe's, and the Envoy's retries
    assert await _envoy_logged(intruder, "may not run HTTPS Gateway demo/front"), (
        intruder.log_tail()
    )
    assert not any(n.startswith("kubernetes-gateway://") for n in _secrets_held(intruder))
    reply = await asyncio.to_thread(
        _https_get, served.https_port, "a.example.com", served.server_ca.pem, "/hello/x"
    )
    assert reply.serial == 0
    intruder.stop()

    # The Gateway's own identity serves HTTPS with the listener's certificate.
    front = served.credentials(tmp_path / "front", FRONT)
    gateway = _ingress_envoy(envoys, served, front, "front-1")
    a = await _until_served(
        served.https_port, "a.example.com", served.server_ca.pem, served.a.serial
    )
    assert (a.serial, a.status, a.body) == (served.a.serial, 200, "backend eu-hello\n")
    gateway.wait_admin()
    assert "kubernetes-gateway://demo/a-cert" in _secrets_held(gateway)


async def test_a_gateway_gaining_an_https_listener_ends_another_identity_s_stream_keyless(
    http_gateway: Served, envoys: StartEnvoy, tmp_path: Path
) -> None:
    served = http_gateway
    web = served.credentials(tmp_path / "web", WEB)
    envoy = _ingress_envoy(envoys, served, web, "front-web")
    envoy.wait_admin()
    # HTTP only: any identity of the namespace runs it, as before.
    for _ in range(150):  # 15 s at most
        reply = await asyncio.to_thread(request, served.http_port, "www.example.com", "/", None, 2)
        if reply.status == 200:
            break
        await asyncio.sleep(0.1)
    assert (reply.status, reply.body) == (200, "backend eu-hello\n")

    rewrite(served.root / "gateway.yaml", served.https())
    await _refused(served, at_least=1)
    assert await _envoy_logged(envoy, "may not run HTTPS Gateway demo/front"), envoy.log_tail()
    assert not any(n.startswith("kubernetes-gateway://") for n in _secrets_held(envoy))
    reply_tls = await asyncio.to_thread(
        _https_get, served.https_port, "a.example.com", served.server_ca.pem, "/hello/x"
    )
    assert reply_tls.serial == 0
    assert _no_key_in(json.dumps(envoy.config_dump()), served)


def _no_key_in(text: str, served: Served) -> bool:
    body = b"".join(served.a.key.splitlines()[1:-1]).decode()
    return body[:40] not in text
