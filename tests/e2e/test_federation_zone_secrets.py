"""Federation: a zone is sent, and keeps on disk, only the TLS Secrets its own site's
Gateways name, and its ingress gateway terminates TLS with them.

Real processes: `kontinuum serve --federation-address` (the global) with a fleet of `eu`
and the zone `edge-paris`, HTTPS Gateways of both sites and Secrets in its files;
`kontinuum zone --site edge-paris --xds-address --state-dir` serving an Envoy ingress
gateway of the site; an HTTP backend. What the zone keeps is read from its state
directory's `global.json`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kontinuum.bootstrap import envoy_bootstrap, proxy_metadata
from tests.e2e.backends import Backend
from tests.e2e.conftest import StartEnvoy
from tests.e2e.routing_fleet import endpoint_slice, service
from tests.e2e.test_federation import kontinuum, until
from tests.e2e.test_federation_zone_xds import FLEET, plaintext_zone
from tests.e2e.test_gateway_https import TlsReply, _https_get
from tests.support.net import free_port
from tests.support.server_certs import ServerCertificate, TestCa, tls_secret

pytestmark = pytest.mark.e2e

CA = TestCa()


def gateways(port: int, *listeners: str) -> str:
    """An HTTPS Gateway `front` of edge-paris on `port` with `listeners` (name, hostname and
    certificate ref each), its HTTPRoute to the site's hello, and an HTTPS Gateway of eu."""
    lines = "".join(
        f"""  - name: {name}
    port: {port}
    protocol: HTTPS
    hostname: {name}.example.com
    tls: {{certificateRefs: [{ref}]}}
"""
        for name, ref in (listener.split(" ", 1) for listener in listeners)
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: front
  namespace: demo
  labels: {{kontinuum.io/cluster: edge-paris}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{lines}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: front, namespace: demo}}
spec:
  parentRefs: [{{name: front}}]
  rules:
  - backendRefs: [{{name: hello, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: eu-front
  namespace: demo
  labels: {{kontinuum.io/cluster: eu}}
spec:
  gatewayClassName: kontinuum
  listeners:
  - name: eu
    port: 443
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: eu-cert}}]}}
"""


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-of-demo, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: demo}]
  to: [{group: "", kind: Secret, name: b-cert}]
"""


def kept_secrets(state: Path) -> set[str] | None:
    """The Secrets in the zone's kept copy of the global (None before it is written)."""
    try:
        resources = json.loads((state / "global.json").read_text())["resources"]
    except (OSError, ValueError):
        return None
    return {name for name in resources if name.startswith("fleet/Secret/")}


async def served(port: int, name: str, certificate: ServerCertificate) -> bool:
    """Whether `port` terminates TLS for `name` with `certificate`, and the request reaches
    the site's backend."""
    reply = await asyncio.to_thread(_https_get, port, f"{name}.example.com", CA.pem, "/")
    return reply == TlsReply(certificate.serial, 200, "backend paris-1\n")


async def refused(port: int, name: str) -> bool:
    """Whether `port` has no certificate for `name` (no listener of it is served)."""
    reply = await asyncio.to_thread(_https_get, port, f"{name}.example.com", CA.pem, "/")
    return reply.serial == 0


async def test_a_zone_is_sent_and_keeps_only_the_secrets_its_gateways_name(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    backend = Backend("paris-1")
    backend.start()
    try:
        ca = tmp_path / "ca"
        await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
        fleet = tmp_path / "fleet"
        (fleet / "clusters" / "eu").mkdir(parents=True)
        (fleet / "clusters.yaml").write_text(FLEET)
        listen = free_port()
        a_listener, b_listener = "a {name: a-cert}", "b {name: b-cert, namespace: certs}"
        (fleet / "gateways.yaml").write_text(gateways(listen, a_listener, b_listener))
        (fleet / "grant.yaml").write_text(GRANT)
        a, b, c = (CA.issue(f"{n}.example.com") for n in "abc")
        eu = CA.issue("eu.example.com")
        secrets = {
            "demo/a-cert": a,
            "certs/b-cert": b,
            "demo/c-cert": c,  # named by no Gateway, until the end
            "demo/eu-cert": eu,  # named by eu's Gateway only
        }
        (fleet / "secrets.yaml").write_text(
            "---\n".join(
                tls_secret(*name.split("/"), cert.certificate, cert.key)
                for name, cert in secrets.items()
            )
        )
        site = tmp_path / "edge-paris"
        site.mkdir()
        (site / "hello.yaml").write_text(
            service("demo", "hello") + "---\n" + endpoint_slice("demo", "hello", backend.port)
        )
        state = tmp_path / "zone-state"
        logs = (tmp_path / "global.log", tmp_path / "zone.log")
        async with plaintext_zone(tmp_path, ca, fleet, site) as zone_xds:
            envoys(
                view="edge-paris",
                xds_port=0,
                mode="delta",
                node_id="front-1",
                config=envoy_bootstrap(
                    node_id="front-1",
                    cluster="edge-paris",
                    xds_address=f"127.0.0.1:{zone_xds}",
                    admin_port=0,
                    metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
                ),
            )
            # The zone's gateway terminates TLS with the Secrets the global sent it: its
            # own namespace's, and another's its grant allows.
            await until(lambda: served(listen, "a", a), "a.example.com", 60, logs)
            await until(lambda: served(listen, "b", b), "b.example.com", 30, logs)
            # It holds those two, on disk too; eu's and the one no Gateway names never came.
            await until(lambda: kept_secrets(state) is not None, "the zone's kept copy", 30, logs)
            assert kept_secrets(state) == {
                "fleet/Secret/demo/a-cert",
                "fleet/Secret/certs/b-cert",
            }
            text = (state / "global.json").read_text()
            assert "c-cert" not in text  # nothing of it at all (no Gateway names it either)
            # eu's Gateway, whose Secret the zone lacks, is the global's to report.
            assert "eu-front" not in (tmp_path / "zone.log").read_text()

            # The grant is withdrawn: b's Secret is removed from the zone, and from its disk.
            (fleet / "grant.yaml").unlink()
            await until(
                lambda: kept_secrets(state) == {"fleet/Secret/demo/a-cert"},
                "certs/b-cert dropped from the zone's copy",
                30,
                logs,
            )
            # Its listener is no longer served (as at the global); a's still is.
            await until(lambda: refused(listen, "b"), "b.example.com not served", 30, logs)
            assert await served(listen, "a", a)

            # A listener starts naming c-cert: it is sent, kept, and served.
            c_listener = "c {name: c-cert}"
            (fleet / "gateways.yaml").write_text(gateways(listen, a_listener, c_listener))
            await until(lambda: served(listen, "c", c), "c.example.com", 30, logs)
            await until(
                lambda: (
                    kept_secrets(state) == {"fleet/Secret/demo/a-cert", "fleet/Secret/demo/c-cert"}
                ),
                "c-cert kept",
                30,
                logs,
            )
    finally:
        backend.stop()
