"""Zero trust end to end, through kontinuum itself: real Envoys get their configuration and
their workload certificates (SDS) over authenticated xDS, and real traffic crosses
clusters over mTLS, is authorized by workspace, and survives certificate rotation.

    eu (network a)    frontend (demo), web (shop)  ──mTLS──> us: hello's sidecar -> hello
    us (network a)    hello's sidecar (inbound, RBAC)
    ap (network b)    world's sidecar, behind ap's east-west gateway (SNI passthrough)

All on loopback: the networks differ only in what kontinuum tells the sidecars, so eu
reaches ap's endpoints through ap's gateway, which the gateway's stats prove.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from dashboards import fleet
from dashboards.panels import expressions
from kontinuum.app import XdsSecurity, running_fleet, serving
from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, proxy_metadata
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import control_plane_identity
from tests.e2e.backends import Backend
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.routing_fleet import Workload, workload_yaml
from tests.support.fleet import cluster_profile, fast, rewrite
from tests.support.net import free_port
from tests.support.prometheus import Prometheus
from tests.support.security import Credentials, entry_uris, envoy_certificates, write_credentials

pytestmark = pytest.mark.e2e

TD = "cluster.local"
HELLO = "hello.demo.svc.clusterset.local"
WORLD = "world.demo.svc.clusterset.local"
GATEWAY_PORT = 15443


# Narrowed to one identity of shop: every sidecar of shop sees hello, only web gets in.
GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: shop-may-call-hello
  namespace: demo
  annotations: {kontinuum.io/service-accounts: web}
spec:
  from: [{group: "", kind: Namespace, namespace: shop}]
  to: [{group: "", kind: Service, name: hello}]
"""


def _east_west(port: int) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: east-west-ap
  namespace: kontinuum-system
  labels: {{kontinuum.io/cluster: ap}}
spec:
  gatewayClassName: kontinuum-east-west
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: mesh, port: {port}, protocol: TLS, tls: {{mode: Passthrough}}}}
"""


@dataclass
class Mesh:
    """A served fleet and the means to start proxies of it."""

    root: Path
    ca: CertificateAuthority
    xds_port: int
    admin: str
    hello_inbound: int
    world_inbound: int
    start: Callable[..., Envoy]
    credentials: Callable[[str, str, str, str], Credentials]


@pytest.fixture
def workloads(backends: Callable[[str], Backend]) -> tuple[Backend, Backend]:
    hello, world = backends("hello"), backends("world")
    hello.echo = world.echo = ("x-forwarded-client-cert",)
    return hello, world


@contextlib.asynccontextmanager
async def _mesh(
    tmp_path: Path, envoys: StartEnvoy, validity: timedelta, gateway_port: int
) -> AsyncIterator[Mesh]:
    root = tmp_path / "fleet"
    hello_inbound, world_inbound = free_port(), free_port()
    for cluster in ("eu", "us", "ap"):
        (root / "clusters" / cluster).mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        "---\n".join(
            [
                cluster_profile("eu", "eu-central-1", network="a"),
                cluster_profile("us", "us-east-1", network="a"),
                cluster_profile("ap", "ap-east-1", network="b"),
            ]
        )
    )
    (root / "gateways.yaml").write_text(_east_west(gateway_port))
    (root / "clusters" / "us" / "hello.yaml").write_text(
        workload_yaml(Workload("hello", (hello_inbound,), mutual_tls=True))
    )
    (root / "clusters" / "ap" / "world.yaml").write_text(
        workload_yaml(Workload("world", (world_inbound,), mutual_tls=True))
    )
    ca = CertificateAuthority.generate(TD)
    xds_port, admin = free_port(), f"127.0.0.1:{free_port()}"

    def credentials(name: str, cluster: str, namespace: str, account: str) -> Credentials:
        issued = ca.issue_workload(SpiffeId(TD, namespace, account), cluster, timedelta(hours=1))
        return write_credentials(tmp_path / "credentials" / name, issued, ca)

    def start(
        name: str,
        cluster: str,
        namespace: str,
        stats_port: int | None = None,
        account: str | None = None,
        **declared: object,
    ) -> Envoy:
        """A proxy of the fleet, of service account `account` (default: its name's first
        word); with `stats_port`, serving /stats/prometheus there."""
        role = str(declared.get("role", "sidecar"))
        account = account or name.split("-")[0]
        files = credentials(name, cluster, namespace, account)
        tls = XdsClientTls(
            ca_file=str(files.ca),
            server_identity=str(control_plane_identity(TD)),
            certificate_file=str(files.certificate),
            key_file=str(files.key),
        )
        config = envoy_bootstrap(
            node_id=name,
            cluster=cluster,
            xds_address=f"127.0.0.1:{xds_port}",
            admin_port=0 if stats_port is None else free_port(),
            stats_address=None if stats_port is None else f"127.0.0.1:{stats_port}",
            reconnect_backoff=("0.1s", "1s"),
            metadata=proxy_metadata(namespace=namespace, **declared),  # type: ignore[arg-type]
            tls=tls,
        )
        view = f"{role}/{cluster}/{namespace}"
        return envoys(view=view, xds_port=xds_port, mode="delta", node_id=name, config=config)

    security = XdsSecurity(ca, workload_validity=validity)
    async with (
        running_fleet(fast(path=root, security=security)) as fleet,
        serving(fleet, f"127.0.0.1:{xds_port}", admin),
    ):
        yield Mesh(root, ca, xds_port, admin, hello_inbound, world_inbound, start, credentials)


def _get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError as error:
        return 0, str(error)
    finally:
        connection.close()


def _tls_get(port: int, files: Credentials | None, trust: bytes) -> tuple[int, str]:
    """GET / from a sidecar's inbound listener, as a workload holding `files` (None: no
    certificate) and trusting `trust`; the body ends with the serial number of the
    certificate the listener presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # SVIDs name a SPIFFE ID, not a host
    context.load_verify_locations(cadata=trust.decode())
    if files is not None:
        context.load_cert_chain(files.certificate, files.key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        assert connection.sock is not None
        served = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        return response.status, f"{response.read().decode()}\nserial {served.serial_number}"
    except (OSError, ssl.SSLError) as error:
        return 0, f"{type(error).__name__}: {error}"
    finally:
        connection.close()


async def _until(call: Callable[[], tuple[int, str]], status: int, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(call)
        if last[0] == status:
            return last[1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"still {last} after {timeout} s, not {status}")


def _scraping(tmp_path: Path, stats_port: int) -> Path:
    """A Prometheus configuration scraping one Envoy's stats listener every 0.5 s."""
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "scrape_configs": [
            {
                "job_name": "kontinuum-envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{stats_port}"]}],
            }
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _panel_values(
    prometheus: Prometheus, title: str, meanwhile: Callable[[], object]
) -> set[tuple[str, str]]:
    """The (cluster, workspace) of each non-zero series of a Fleet overview panel (every
    variable All), calling `meanwhile` (the traffic it counts) between queries."""
    (expr,) = [e for t, e in expressions(fleet.dashboard()) if t == title]
    for variable in ("$cluster", "$workspace", "$service"):
        expr = expr.replace(variable, ".*")
    expr = expr.replace("$__rate_interval", "1m")
    deadline = time.monotonic() + 20
    found: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and not found:
        await asyncio.to_thread(meanwhile)
        await asyncio.sleep(0.5)
        samples = await asyncio.to_thread(prometheus.query, expr)
        found = {
            (s["metric"]["kontinuum_cluster"], s["metric"]["kontinuum_workspace"])
            for s in samples
            if float(s["value"][1]) > 0
        }
    return found


def _host_connections(envoy: Envoy, cluster: str, port: int) -> int:
    """Connections `envoy` opened to the host on `port` of `cluster` (per-host counters,
    which exist whatever stats the proxy creates)."""
    for status in envoy.clusters().get("cluster_statuses", []):
        if status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            if int(host["address"]["socket_address"]["port_value"]) == port:
                return sum(int(s.get("value", 0)) for s in host["stats"] if s["name"] == "cx_total")
    return 0


def _sidecars(
    mesh: Mesh, hello: Backend, world: Backend, stats_port: int | None = None
) -> Iterator[Envoy]:
    """hello's and world's sidecars (their inbound listeners), and ap's gateway."""
    yield mesh.start(
        "hello-sidecar", "us", "demo", stats_port, role="sidecar", service="hello",
        inbound_port=hello.port, inbound_address=f"127.0.0.1:{mesh.hello_inbound}",
        outbound_port=free_port(),
    )  # fmt: skip
    yield mesh.start(
        "world-sidecar", "ap", "demo", role="sidecar", service="world",
        inbound_port=world.port, inbound_address=f"127.0.0.1:{mesh.world_inbound}",
        outbound_port=free_port(),
    )  # fmt: skip
    # The identity of its Gateway: kontinuum-system/east-west-ap.
    yield mesh.start("gateway-ap", "ap", "kontinuum-system", account="east-west-ap", role="gateway")


async def test_sidecars_speak_mtls_across_clusters_and_through_an_east_west_gateway(
    tmp_path: Path, envoys: StartEnvoy, workloads: tuple[Backend, Backend]
) -> None:
    hello, world = workloads
    async with _mesh(tmp_path, envoys, timedelta(hours=1), free_port()) as mesh:
        hello_sidecar, *_, gateway = list(_sidecars(mesh, hello, world))
        outbound = free_port()
        frontend = mesh.start("frontend-1", "eu", "demo", role="sidecar", outbound_port=outbound)

        # eu -> us, same network: straight to hello's sidecar, over mTLS.
        body = await _until(lambda: _get(outbound, HELLO), 200)
        assert body.startswith("backend hello\n"), body
        assert f"URI=spiffe://{TD}/ns/demo/sa/frontend" in body, body  # the caller, proven
        # eu -> ap, another network: through ap's gateway, which does not open the TLS:
        # world's sidecar still sees the caller's own identity.
        body = await _until(lambda: _get(outbound, WORLD), 200)
        assert body.startswith("backend world\n"), body
        assert f"URI=spiffe://{TD}/ns/demo/sa/frontend" in body, body
        answers = [(await asyncio.to_thread(_get, outbound, WORLD))[0] for _ in range(20)]
        assert answers == [200] * 20
        await asyncio.to_thread(gateway.wait_admin)
        crossed = _host_connections(gateway, f"outbound_.80_._.{WORLD}", mesh.world_inbound)
        assert crossed >= 1, "the requests did not cross ap's gateway"

        # The certificates came over SDS, each of its proxy's own identity.
        await asyncio.to_thread(frontend.wait_admin)
        certs = envoy_certificates(await asyncio.to_thread(frontend.admin, "/certs"))
        assert any(f"spiffe://{TD}/ns/demo/sa/frontend" in entry_uris(c) for c in certs), certs

        # hello's inbound listener: no certificate, one of another CA, or an expired one is
        # refused in the handshake, each counted as what it is.
        await asyncio.to_thread(hello_sidecar.wait_admin)
        listener = f"listener.127.0.0.1_{mesh.hello_inbound}.ssl"

        def refused(files: Credentials | None, counter: str) -> str:
            before = hello_sidecar.stat(f"{listener}.{counter}") or 0
            status, why = _tls_get(mesh.hello_inbound, files, mesh.ca.trust_bundle_pem)
            assert status == 0, why
            assert hello_sidecar.stat(f"{listener}.{counter}") == before + 1, (counter, why)
            return why

        await asyncio.to_thread(refused, None, "fail_verify_no_cert")
        stranger = CertificateAuthority.generate(TD)
        foreign = write_credentials(
            tmp_path / "foreign",
            stranger.issue_workload(SpiffeId(TD, "demo", "frontend"), "eu", timedelta(hours=1)),
            stranger,
        )
        await asyncio.to_thread(refused, foreign, "fail_verify_error")
        expired = write_credentials(
            tmp_path / "expired",
            mesh.ca.issue_workload(
                SpiffeId(TD, "demo", "frontend"),
                "eu",
                timedelta(minutes=1),
                now=datetime.now(UTC) - timedelta(minutes=10),
            ),
            mesh.ca,
        )
        await asyncio.to_thread(refused, expired, "fail_verify_error")
        trust = mesh.ca.trust_bundle_pem
        # ... and a workload of demo with a certificate of the fleet gets in.
        own = mesh.credentials("probe", "eu", "demo", "probe")
        status, _ = await asyncio.to_thread(_tls_get, mesh.hello_inbound, own, trust)
        assert status == 200


async def test_a_caller_of_an_ungranted_workspace_gets_403_until_the_grant(
    tmp_path: Path, envoys: StartEnvoy, workloads: tuple[Backend, Backend]
) -> None:
    hello, world = workloads
    stats_port = free_port()
    async with _mesh(tmp_path, envoys, timedelta(hours=1), free_port()) as mesh:
        (hello_sidecar, *_) = list(_sidecars(mesh, hello, world, stats_port))
        outbound = free_port()
        mesh.start("web-1", "eu", "shop", role="sidecar", outbound_port=outbound)
        shop = mesh.credentials("web", "eu", "shop", "web")
        trust = mesh.ca.trust_bundle_pem
        # shop holds a certificate of the fleet: the TLS handshake succeeds, RBAC says no.
        body = await _until(lambda: _tls_get(mesh.hello_inbound, shop, trust), 403)
        assert body.startswith("RBAC: access denied"), body
        await asyncio.to_thread(hello_sidecar.wait_admin)
        assert (hello_sidecar.stat("http.inbound.rbac.denied") or 0) >= 1
        # The Fleet overview's panel shows the denials, from a real Prometheus' scrapes.
        with Prometheus(_scraping(tmp_path, stats_port), tmp_path / "prometheus") as prometheus:
            denials = await _panel_values(
                prometheus,
                "Authorization denials",
                lambda: _tls_get(mesh.hello_inbound, shop, trust),
            )
        assert denials == {("us", "demo")}, denials
        # Its sidecar is not even told of hello.
        assert (await asyncio.to_thread(_get, outbound, HELLO))[0] == 404

        rewrite(mesh.root / "grant.yaml", GRANT)
        await _until(lambda: _tls_get(mesh.hello_inbound, shop, trust), 200)
        body = await _until(lambda: _get(outbound, HELLO), 200)
        assert f"URI=spiffe://{TD}/ns/shop/sa/web" in body, body
        # Another identity of shop is not named by the grant: still 403.
        batch = mesh.credentials("batch", "eu", "shop", "batch")
        status, body = await asyncio.to_thread(_tls_get, mesh.hello_inbound, batch, trust)
        assert status == 403, body
        assert (hello_sidecar.stat("http.inbound.rbac.allowed") or 0) >= 1


async def test_certificates_rotate_under_steady_traffic_without_a_failed_request(
    tmp_path: Path, envoys: StartEnvoy, workloads: tuple[Backend, Backend]
) -> None:
    hello, world = workloads
    # 4 s certificates, renewed every 2 s: several rotations on both ends of the traffic.
    async with _mesh(tmp_path, envoys, timedelta(seconds=4), free_port()) as mesh:
        list(_sidecars(mesh, hello, world))
        outbound = free_port()
        frontend = mesh.start("frontend-1", "eu", "demo", role="sidecar", outbound_port=outbound)
        await _until(lambda: _get(outbound, HELLO), 200)
        await asyncio.to_thread(frontend.wait_admin)

        def serials() -> set[str]:
            certs = envoy_certificates(frontend.admin("/certs"))
            return {
                entry["serial_number"]
                for entry in certs
                if f"spiffe://{TD}/ns/demo/sa/frontend" in entry_uris(entry)
            }

        probe = mesh.credentials("probe", "us", "demo", "probe")
        trust = mesh.ca.trust_bundle_pem
        seen = await asyncio.to_thread(serials)
        served: set[str] = set()
        statuses: list[int] = []
        handshakes: list[int] = []
        started = time.monotonic()
        while time.monotonic() - started < 9:  # bounded: about 9 s of traffic
            # Through the sidecars (frontend's pooled mTLS connection to hello's sidecar) ...
            statuses.append((await asyncio.to_thread(_get, outbound, HELLO))[0])
            # ... and a fresh handshake with hello's sidecar, whatever certificate it
            # holds at the moment.
            status, body = await asyncio.to_thread(_tls_get, mesh.hello_inbound, probe, trust)
            handshakes.append(status)
            served.add(body.rpartition("serial ")[2])
            seen |= await asyncio.to_thread(serials)
            await asyncio.sleep(0.05)
        assert len(statuses) >= 30
        assert statuses == [200] * len(statuses), statuses
        assert handshakes == [200] * len(handshakes), handshakes
        assert len(seen) >= 3, f"frontend's certificate rotated {len(seen) - 1} times"
        assert len(served) >= 3, f"hello's sidecar presented {len(served)} certificates"
