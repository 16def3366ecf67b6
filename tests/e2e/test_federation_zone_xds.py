"""Federation, second slice: the global programs the zone, and the zone serves its proxies
(Envoy sidecars, ingress gateways, proxyless gRPC) through a cut of its link to the global.

Real processes: `kontinuum serve --federation-address` (the global) with a fleet of two
sites, `eu` (its files at the global) and `edge-paris` (a zone); `kontinuum zone --site
edge-paris --xds-address` reading its own files and serving xDS; HTTP backends; Envoy
sidecars of edge-paris bootstrapped to the zone. What each process counts is read from its
`/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, proxy_metadata
from kontinuum.security.xds_auth import control_plane_identity
from tests.e2e import grpc_client
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.proxyless import grpc_backends, proxyless_client
from tests.e2e.routing_fleet import Workload, endpoint_slice, service, workload_yaml
from tests.e2e.test_federation import KONTINUUM, TD, Process, issue, kontinuum, until
from tests.support.net import free_port
from tests.support.security import entry_uris, envoy_certificates

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"
WEB = "web.demo.svc.clusterset.local"
ZONE_HOST = "zone.edge-paris.example"  # the zone's xDS host name, which its CA may name
# What the zone's xDS server presents with its intermediate, and a sidecar of its site pins
# (`kontinuum bootstrap --cluster edge-paris`) besides the control plane's identity.
ZONE_IDENTITY = f"spiffe://{TD}/ns/kontinuum-system/sa/zone-edge-paris"

FLEET = """apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: eu
  namespace: fleet
  labels: {topology.kubernetes.io/region: eu-west-1, kontinuum.io/network: backbone}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: edge-paris
  namespace: fleet
  labels: {topology.kubernetes.io/region: eu-central-1, kontinuum.io/network: backbone}
  annotations:
    kontinuum.io/source: zone
    kontinuum.io/stale-after: 10m
"""


def hello_route(value: str) -> str:
    """A fleet-wide HTTPRoute of demo on Service hello that marks its replies."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: hello, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  parentRefs: [{{group: "", kind: Service, name: hello, port: 80}}]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: X-Route, value: {value}}}]}}
    backendRefs: [{{name: hello, port: 80}}]
"""


def intermediate(ca: Path, out: Path, site: str, *dns_names: str) -> Path:
    """`kontinuum ca intermediate`: the zone CA of `site`, issued by the fleet CA `ca`
    (limited to naming `dns_names`, when given)."""
    names = [arg for name in dns_names for arg in ("--dns-name", name)]
    kontinuum("ca", "intermediate", "--ca-dir", str(ca), "--site", site, "--out", str(out), *names)
    return out


def server_certificate(port: int, files: Path, server_name: str = "127.0.0.1") -> x509.Certificate:
    """The certificate a TLS server on 127.0.0.1:`port` presents to a client holding
    `files` (cert.pem, key.pem, ca.pem), checked by OpenSSL for `server_name`."""
    context = ssl.create_default_context(cafile=str(files / "ca.pem"))
    context.load_cert_chain(files / "cert.pem", files / "key.pem")
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def xds_tls(bootstrap: dict[str, Any]) -> Any:
    """The TLS context of a bootstrap's static cluster of the xDS server."""
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "kontinuum-xds"]
    return xds["transport_socket"]


def reply_of(port: int, host: str) -> tuple[str | None, str | None]:
    """Which backend answered through the sidecar's outbound `port`, and its X-Route."""
    reply = request(port, host, timeout=2)
    return reply.backend, reply.headers.get("x-route")


async def test_a_zone_serves_its_proxies_from_the_global_and_through_a_cut(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    backends = {n: Backend(n) for n in ("paris-1", "paris-2", "eu-1", "eu-2")}
    for backend in backends.values():
        backend.start()
    ca = tmp_path / "ca"
    await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
    # The zone serves with its own intermediate, not the fleet's key.
    zone_ca = await asyncio.to_thread(intermediate, ca, tmp_path / "zone-ca", "edge-paris")
    fleet = tmp_path / "fleet"
    (fleet / "clusters" / "eu").mkdir(parents=True)
    (fleet / "clusters.yaml").write_text(FLEET)
    (fleet / "routes.yaml").write_text(hello_route("v1"))
    (fleet / "clusters" / "eu" / "web.yaml").write_text(
        service("demo", "web") + "---\n" + endpoint_slice("demo", "web", backends["eu-1"].port)
    )
    site = tmp_path / "edge-paris"
    site.mkdir()
    (site / "hello.yaml").write_text(service("demo", "hello"))
    (site / "hello-endpoints.yaml").write_text(
        endpoint_slice("demo", "hello", backends["paris-1"].port)
    )
    federation = f"127.0.0.1:{free_port()}"
    global_ = Process(
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"127.0.0.1:{free_port()}",
            "--federation-address", federation, "--state-dir", str(tmp_path / "global-state"),
        ],
        tmp_path / "global.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    credentials = await asyncio.to_thread(
        issue, ca, tmp_path / "zone-credentials", "edge-paris", "kontinuum-system",
        "zone-edge-paris",
    )  # fmt: skip
    zone_xds = free_port()
    zone = Process(
        [
            "zone", "--site", "edge-paris", "--global", federation,
            "--credentials", str(credentials), "--config", str(site),
            "--xds-address", f"127.0.0.1:{zone_xds}", "--ca-dir", str(zone_ca),
            "--state-dir", str(tmp_path / "zone-state"),
        ],
        tmp_path / "zone.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    logs = (global_.log, zone.log)
    sidecar = await asyncio.to_thread(
        issue, ca, tmp_path / "frontend", "edge-paris", "demo", "frontend"
    )

    def start_sidecar(name: str) -> int:
        outbound = free_port()
        envoys(
            view="edge-paris",
            xds_port=0,
            mode="delta",
            node_id=name,
            config=envoy_bootstrap(
                node_id=name,
                cluster="edge-paris",
                xds_address=f"127.0.0.1:{zone_xds}",
                admin_port=0,
                reconnect_backoff=("0.1s", "1s"),
                metadata=proxy_metadata(namespace="demo", role="sidecar", outbound_port=outbound),
                tls=XdsClientTls(
                    ca_file=str(sidecar / "ca.pem"),
                    server_identity=str(control_plane_identity(TD)),
                    certificate_file=str(sidecar / "cert.pem"),
                    key_file=str(sidecar / "key.pem"),
                    zone_identity=ZONE_IDENTITY,  # the zone serves with its intermediate
                ),
            ),
        )
        return outbound

    try:
        global_.start()
        zone.start()
        first = start_sidecar("frontend-1")

        # Through the zone: the site's own service, eu's service the global sent, and the
        # global's HTTPRoute on hello.
        await until(
            lambda: reply_of(first, HELLO) == ("paris-1", "v1"), "hello via the route", 60, logs
        )
        await until(lambda: reply_of(first, WEB)[0] == "eu-1", "web of eu via the zone", 30, logs)
        sent = await global_.metric("kontinuum_federation_zone_resources_sent_total", {
            "zone": "edge-paris"
        })  # fmt: skip
        assert sent == 5  # 2 ClusterProfiles, the route, eu's web and state; not its own hello
        assert await global_.metric(
            "kontinuum_federation_zone_answers_total", {"zone": "edge-paris", "answer": "nack"}
        ) == 0  # fmt: skip
        assert await zone.metric("kontinuum_zone_objects_sent_total") == 3

        # The link is cut: the global is gone.
        global_.kill()

        async def cut() -> bool:
            return await zone.metric("kontinuum_zone_fleet_subscribed") == 0

        await until(cut, "the zone sees the cut", 30, logs)
        failed = [
            reply for _ in range(50) if (reply := reply_of(first, HELLO)) != ("paris-1", "v1")
        ]
        assert failed == [], "local requests failed during the cut"
        # A local endpoint change still reaches the site's proxies.
        (site / "hello-endpoints.yaml").write_text(
            endpoint_slice("demo", "hello", backends["paris-2"].port)
        )
        await until(
            lambda: reply_of(first, HELLO) == ("paris-2", "v1"), "paris-2 during the cut", 30, logs
        )
        # A new proxy of the site connects and is served, eu's service as last received.
        second = start_sidecar("frontend-2")
        await until(
            lambda: reply_of(second, HELLO) == ("paris-2", "v1"), "a new sidecar served", 60, logs
        )
        assert reply_of(second, WEB)[0] == "eu-1"
        # The zone itself restarts while cut off: it serves its proxies from the copy of
        # the global it kept, eu's service included.
        zone.kill()
        zone.start()

        async def zone_ready() -> bool:
            return await zone.metric("kontinuum_zone_fleet_resources") == 5

        await until(zone_ready, "the restarted zone serving its kept copy", 60, logs)
        third = start_sidecar("frontend-3")
        await until(
            lambda: reply_of(third, WEB)[0] == "eu-1", "eu's web from the kept copy", 60, logs
        )
        await until(
            lambda: reply_of(first, HELLO) == ("paris-2", "v1"), "the first sidecar back", 30, logs
        )
        # Meanwhile, the global's files change: eu's endpoint, and the route.
        (fleet / "clusters" / "eu" / "web.yaml").write_text(
            service("demo", "web") + "---\n" + endpoint_slice("demo", "web", backends["eu-2"].port)
        )
        (fleet / "routes.yaml").write_text(hello_route("v2"))

        # The global is back: each side sends only what changed while cut off.
        global_.start()
        await until(lambda: reply_of(first, HELLO) == ("paris-2", "v2"), "route v2", 90, logs)
        await until(lambda: reply_of(second, WEB)[0] == "eu-2", "eu-2 at the zone", 30, logs)
        # To the zone: eu's web and the route, nothing else.
        assert await global_.metric("kontinuum_federation_zone_resources_sent_total", {
            "zone": "edge-paris"
        }) == 2  # fmt: skip
        assert await zone.metric("kontinuum_zone_fleet_resources_received_total") == 2

        # To the global: the one EndpointSlice changed during the cut (the restarted zone
        # counts from 0).
        async def published_again() -> bool:
            return (
                await zone.metric("kontinuum_zone_connected") == 1
                and await zone.metric("kontinuum_zone_pending_objects") == 0
            )

        await until(published_again, "the zone's site published again", 30, logs)
        assert await zone.metric("kontinuum_zone_objects_sent_total") == 1
    finally:
        zone.stop()
        global_.stop()
        for backend in backends.values():
            backend.stop()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--ca-dir", "ca"], "are for serving xDS: give --xds-address"),
        (["--prometheus-sd-file", "envoys.json"], "are for serving xDS: give --xds-address"),
        (["--xds-address", "127.0.0.1:18000"], "the xDS server serves TLS: give the fleet CA"),
        (
            ["--xds-address", "127.0.0.1:18000", "--plaintext-xds", "--ca-dir", "ca"],
            "a plaintext server signs whatever identity",
        ),
    ],
)
def test_a_zone_s_xds_options_are_checked_before_it_runs(
    tmp_path: Path, extra: list[str], says: str
) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "site").mkdir()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (credentials / name).write_text("")
    done = subprocess.run(
        [
            *KONTINUUM, "zone", "--site", "edge-paris", "--global", "127.0.0.1:1",
            "--credentials", str(credentials), "--config", str(tmp_path / "site"),
            *(str(tmp_path / a) if a == "ca" else a for a in extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")},
    )  # fmt: skip
    assert done.returncode == 2
    assert says in " ".join(done.stderr.split())


def test_a_zone_refuses_the_intermediate_of_another_site(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    kontinuum("ca", "init", "--ca-dir", str(ca))
    other = intermediate(ca, tmp_path / "other-ca", "other")
    credentials = issue(
        ca, tmp_path / "credentials", "edge-paris", "kontinuum-system", "zone-edge-paris"
    )
    (tmp_path / "site").mkdir()
    done = subprocess.run(
        [
            *KONTINUUM, "zone", "--site", "edge-paris", "--global", "127.0.0.1:1",
            "--credentials", str(credentials), "--config", str(tmp_path / "site"),
            "--xds-address", "127.0.0.1:18000", "--ca-dir", str(other),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")},
    )  # fmt: skip
    assert done.returncode == 2
    assert "the zone CA of site other, not of edge-paris" in " ".join(done.stderr.split())


async def test_a_proxyless_grpc_client_of_the_zone_fails_over_to_a_site_the_global_sent(
    tmp_path: Path,
) -> None:
    """gRPC's own xDS client bootstrapped to the zone (plaintext here) calls its site's
    `echo`, then, once the site's endpoints are gone, `eu`'s, which the global sent."""
    async with grpc_backends(("eu", "edge-paris")) as ports:
        ca = tmp_path / "ca"
        await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
        fleet = tmp_path / "fleet"
        (fleet / "clusters" / "eu").mkdir(parents=True)
        (fleet / "clusters.yaml").write_text(FLEET)
        (fleet / "clusters" / "eu" / "echo.yaml").write_text(
            grpc_service(ports["eu"]) + "---\n" + grpc_slice(ports["eu"])
        )
        site = tmp_path / "edge-paris"
        site.mkdir()
        (site / "echo.yaml").write_text(grpc_service(ports["edge-paris"]))
        (site / "echo-endpoints.yaml").write_text(grpc_slice(ports["edge-paris"]))
        async with plaintext_zone(tmp_path, ca, fleet, site) as zone_xds:
            bootstrap = grpc_client.write_bootstrap(
                tmp_path / "bootstrap.json",
                zone_xds,
                node_id="grpc-client-1",
                cluster="edge-paris",
                namespace="demo",
            )
            target = "xds:///echo.demo.svc.clusterset.local:50051"
            async with proxyless_client(tmp_path, bootstrap, target) as client:
                await client.until(lambda line: line == "ok edge-paris", "its own site")
                assert await client.take(5) == ["ok edge-paris"] * 5, client.describe()
                (site / "echo-endpoints.yaml").unlink()
                await client.until(lambda line: line == "ok eu", "eu, sent by the global")
                assert await client.take(5) == ["ok eu"] * 5, client.describe()


@contextlib.asynccontextmanager
async def plaintext_zone(tmp_path: Path, ca: Path, fleet: Path, site: Path) -> AsyncIterator[int]:
    """A global serving `fleet` and the zone of edge-paris reading `site`, serving xDS in
    plaintext (local proxies); the zone's xDS port, once it has the global's fleet."""
    federation = f"127.0.0.1:{free_port()}"
    global_ = Process(
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"127.0.0.1:{free_port()}", "--federation-address", federation,
            "--state-dir", str(tmp_path / "global-state"),
        ],
        tmp_path / "global.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    credentials = await asyncio.to_thread(
        issue, ca, tmp_path / "zone-credentials", "edge-paris", "kontinuum-system",
        "zone-edge-paris",
    )  # fmt: skip
    zone_xds = free_port()
    zone = Process(
        [
            "zone", "--site", "edge-paris", "--global", federation,
            "--credentials", str(credentials), "--config", str(site),
            "--xds-address", f"127.0.0.1:{zone_xds}", "--plaintext-xds",
            "--state-dir", str(tmp_path / "zone-state"),
        ],
        tmp_path / "zone.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    try:
        global_.start()
        zone.start()

        async def ready() -> bool:
            return await zone.metric("kontinuum_zone_fleet_subscribed") == 1

        await until(ready, "the zone subscribed", 60, (global_.log, zone.log))
        yield zone_xds
    finally:
        zone.stop()
        global_.stop()


def gateway(port: int) -> str:
    """An ingress Gateway of edge-paris and its HTTPRoute: / to its cluster's hello, /eu
    to the cluster set's web (exported by eu only)."""
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
  - {{name: web, port: {port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: front, namespace: demo}}
spec:
  parentRefs: [{{name: front}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /eu}}}}]
    backendRefs: [{{group: multicluster.x-k8s.io, kind: ServiceImport, name: web, port: 80}}]
  - backendRefs: [{{name: hello, port: 80}}]
"""


async def test_an_ingress_gateway_of_the_zone_is_programmed_from_a_gateway_of_the_global(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    backends = {n: Backend(n) for n in ("paris-1", "eu-1")}
    for backend in backends.values():
        backend.start()
    try:
        ca = tmp_path / "ca"
        await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
        fleet = tmp_path / "fleet"
        (fleet / "clusters" / "eu").mkdir(parents=True)
        (fleet / "clusters.yaml").write_text(FLEET)
        listener = free_port()
        (fleet / "gateways.yaml").write_text(gateway(listener))
        (fleet / "clusters" / "eu" / "web.yaml").write_text(
            service("demo", "web") + "---\n" + endpoint_slice("demo", "web", backends["eu-1"].port)
        )
        site = tmp_path / "edge-paris"
        site.mkdir()
        (site / "hello.yaml").write_text(
            service("demo", "hello")
            + "---\n"
            + endpoint_slice("demo", "hello", backends["paris-1"].port)
        )
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
            logs = (tmp_path / "global.log", tmp_path / "zone.log")
            await until(
                lambda: request(listener, "example.com", timeout=2).backend == "paris-1",
                "the site's hello through the zone's gateway",
                60,
                logs,
            )
            await until(
                lambda: request(listener, "example.com", "/eu", timeout=2).backend == "eu-1",
                "eu's web through the zone's gateway",
                30,
                logs,
            )
    finally:
        for backend in backends.values():
            backend.stop()


def grpc_service(port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: demo}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: {port}, protocol: TCP, appProtocol: grpc}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: echo, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}}
"""


def grpc_slice(port: int) -> str:
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: demo
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP, appProtocol: grpc}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


async def test_a_zone_s_intermediate_issues_its_site_s_certificates_and_mtls_passes(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    """The zone serves with its intermediate (`kontinuum ca intermediate`), limited to its
    xDS host name (`--dns-name`): its xDS server's and its sidecars' certificates come from
    it, with the chain, and Envoys that trust the fleet's root alone accept them under its
    name constraint: a sidecar of the site calls another over mTLS."""
    hello = Backend("hello")
    hello.echo = ("x-forwarded-client-cert",)
    hello.start()
    ca = tmp_path / "ca"
    await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
    zone_ca = await asyncio.to_thread(
        intermediate, ca, tmp_path / "zone-ca", "edge-paris", ZONE_HOST
    )
    fleet = tmp_path / "fleet"
    (fleet / "clusters" / "eu").mkdir(parents=True)
    (fleet / "clusters.yaml").write_text(FLEET)
    site = tmp_path / "edge-paris"
    site.mkdir()
    hello_inbound = free_port()
    (site / "hello.yaml").write_text(
        workload_yaml(Workload("hello", (hello_inbound,), mutual_tls=True))
    )
    federation = f"127.0.0.1:{free_port()}"
    global_ = Process(
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"127.0.0.1:{free_port()}", "--federation-address", federation,
            "--state-dir", str(tmp_path / "global-state"),
        ],
        tmp_path / "global.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    credentials = await asyncio.to_thread(
        issue, ca, tmp_path / "zone-credentials", "edge-paris", "kontinuum-system",
        "zone-edge-paris",
    )  # fmt: skip
    zone_xds = free_port()
    zone = Process(
        [
            "zone", "--site", "edge-paris", "--global", federation,
            "--credentials", str(credentials), "--config", str(site),
            "--xds-address", f"127.0.0.1:{zone_xds}", "--ca-dir", str(zone_ca),
            "--xds-server-name", ZONE_HOST, "--state-dir", str(tmp_path / "zone-state"),
        ],
        tmp_path / "zone.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    logs = (global_.log, zone.log)

    def start_sidecar(
        name: str, account: str, cluster: str = "edge-paris", **declared: Any
    ) -> Envoy:
        # Its xDS client certificate too is the zone's (`kontinuum ca issue --ca-dir
        # zone-ca/`), the fleet's for another site; it trusts the fleet's root alone. Its
        # bootstrap pins what `kontinuum bootstrap --cluster CLUSTER` pins: the control
        # plane's identity or that of CLUSTER's zone.
        issuer = zone_ca if cluster == "edge-paris" else ca
        files = issue(issuer, tmp_path / name, cluster, "demo", account)
        bootstrap = json.loads(
            kontinuum(
                "bootstrap", "--node-id", name, "--cluster", cluster, "--namespace", "demo",
                "--xds-address", f"127.0.0.1:{zone_xds}", "--admin-port", "0",
                "--stats-address", "none", "--xds-ca", str(files / "ca.pem"),
                "--xds-cert", str(files / "cert.pem"), "--xds-key", str(files / "key.pem"),
            )
        )  # fmt: skip
        pinned = envoy_bootstrap(
            node_id=name,
            cluster=cluster,
            xds_address=f"127.0.0.1:{zone_xds}",
            admin_port=0,
            reconnect_backoff=("0.1s", "1s"),
            metadata=proxy_metadata(namespace="demo", role="sidecar", **declared),
            tls=XdsClientTls(
                ca_file=str(files / "ca.pem"),
                server_identity=str(control_plane_identity(TD)),
                certificate_file=str(files / "cert.pem"),
                key_file=str(files / "key.pem"),
                zone_identity=f"spiffe://{TD}/ns/kontinuum-system/sa/zone-{cluster}",
            ),
        )
        assert xds_tls(pinned) == xds_tls(bootstrap)  # the command's pin, exactly
        return envoys(view=cluster, xds_port=0, mode="delta", node_id=name, config=pinned)

    try:
        global_.start()
        zone.start()
        start_sidecar(
            "hello-1", "hello", service="hello", inbound_port=hello.port,
            inbound_address=f"127.0.0.1:{hello_inbound}",
        )  # fmt: skip
        outbound = free_port()
        frontend = start_sidecar("frontend-1", "frontend", outbound_port=outbound)

        def through_mtls() -> bool:
            reply = request(outbound, HELLO, timeout=2)
            return reply.backend == "hello" and "URI=" in reply.body

        await until(through_mtls, "frontend to hello over mTLS at the zone", 60, logs)
        body = request(outbound, HELLO, timeout=2).body
        assert f"URI=spiffe://{TD}/ns/demo/sa/frontend" in body, body  # the caller, proven
        # Each Envoy trusts the fleet's root alone (the zone holds no root key: what it
        # issues, it issues with its intermediate, and sends the intermediate with it).
        await asyncio.to_thread(frontend.wait_admin)
        certs = envoy_certificates(await asyncio.to_thread(frontend.admin, "/certs"))
        trusted = {uri for c in certs if c["kind"] == "ca_cert" for uri in entry_uris(c)}
        assert trusted == {f"spiffe://{TD}"}
        assert sorted(p.name for p in zone_ca.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        # The zone's xDS server certificate: the zone's own identity (its intermediate may
        # not issue the control plane's), issued by the zone's intermediate, for its host
        # name only (the listening address left out).
        served = await asyncio.to_thread(
            server_certificate, zone_xds, tmp_path / "frontend-1", ZONE_HOST
        )
        (zone_intermediate,) = x509.load_pem_x509_certificates((zone_ca / "tls.crt").read_bytes())
        served.verify_directly_issued_by(zone_intermediate)
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [ZONE_IDENTITY]
        assert names.get_values_for_type(x509.DNSName) == [ZONE_HOST]
        assert names.get_values_for_type(x509.IPAddress) == []

        # A sidecar of another site (eu), with the fleet's certificate of its cluster,
        # bootstrapped to this zone's address (a path a compromised zone could be on): it
        # pins the control plane's identity or eu's zone's, and refuses this zone's xDS
        # server in the TLS handshake itself; it never reaches the zone's admission (which
        # would refuse another site too), so it gets no config at all.
        stranger = await asyncio.to_thread(start_sidecar, "eu-frontend-1", "frontend", "eu")
        await asyncio.to_thread(stranger.wait_admin)
        await asyncio.to_thread(
            stranger.wait_for,
            lambda: (
                "verify_cert_failed" in stranger.log_tail() and "SAN_matcher" in stranger.log_tail()
            ),
            30,
            "the eu sidecar to refuse the zone's xDS server certificate",
        )
        assert await asyncio.to_thread(stranger.stat, "control_plane.connected_state") == 0
        clusters = await asyncio.to_thread(stranger.clusters)
        assert {c["name"] for c in clusters.get("cluster_statuses", [])} == {"kontinuum-xds"}
        refused = await zone.metric("kontinuum_xds_streams_refused_total", {"reason": "denied"})
        assert refused == 0, "the zone's admission saw the eu sidecar: TLS let it through"
    finally:
        zone.stop()
        global_.stop()
        hello.stop()
