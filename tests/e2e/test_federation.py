"""Federation, first slice: a zone control plane publishes its site to the global.

Real processes throughout: `kontinuum serve --federation-address` (the global) with the
fleet CA, `kontinuum zone --site edge-paris` publishing the site's files over mutual TLS
with a certificate `kontinuum ca issue` wrote, HTTP backends, and an Envoy sidecar of
eu-central at the global reaching `hello.demo.svc.clusterset.local` through the endpoints
the zone published. What each process counts is read from its `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, proxy_metadata
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import control_plane_identity
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.support.kube import (
    KubeCluster,
    endpoint_slice,
    service,
    service_export,
    write_kubeconfig,
)
from tests.support.net import free_port
from tests.support.security import metrics_text, sample
from tests.support.zone_ca import minted

pytestmark = pytest.mark.e2e

KONTINUUM = [sys.executable, "-m", "kontinuum"]
TD = "cluster.local"
HELLO = "hello.demo.svc.clusterset.local"
ZONE = "zone:edge-paris"

FLEET = """apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: eu-central
  namespace: fleet
  labels: {topology.kubernetes.io/region: eu-central-1, kontinuum.io/network: backbone}
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

HELLO_SERVICE = """apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: hello, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}
"""


def hello_slice(port: int) -> str:
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hello-1
  namespace: demo
  labels: {{kubernetes.io/service-name: hello}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


def kontinuum(*args: str) -> str:
    done = subprocess.run(
        [*KONTINUUM, *args], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KONTINUUM_")}


def issue(ca: Path, out: Path, cluster: str, namespace: str, account: str) -> Path:
    kontinuum(
        "ca", "issue", "--ca-dir", str(ca), "--cluster", cluster, "--namespace", namespace,
        "--service-account", account, "--out", str(out),
    )  # fmt: skip
    return out


@dataclass
class Process:
    """A `kontinuum` process, its log, and its admin address."""

    args: list[str]
    log: Path
    admin: str
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.popen = subprocess.Popen(
                [*KONTINUUM, *self.args, "--admin-address", self.admin],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(),
            )

    def kill(self) -> None:
        """SIGKILL: the stream is cut, nothing is said to the global."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        try:
            return sample(await metrics_text(self.admin), name, labels)
        except OSError:
            return None


async def until(
    check: Callable[[], object], what: str, seconds: float = 30.0, logs: tuple[Path, ...] = ()
) -> None:
    """Poll an async or plain check every 0.1 s until it holds (bounded in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"never: {what}\n{tails}")


def answered_by(port: int, expected: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            reply = request(port, HELLO, timeout=2)
        except OSError:
            return False
        return reply.status == 200 and reply.body.strip() == f"backend {expected}"

    return check


@dataclass
class Federation:
    root: Path
    zone_files: Path
    global_: Process
    zone: Process
    xds_port: int
    federation: str
    ca: Path
    backends: dict[str, Backend]
    zone_credentials: Path = Path()

    @property
    def logs(self) -> tuple[Path, ...]:
        return (self.global_.log, self.zone.log)

    def zone_process(self, credentials: Path, site: str = "edge-paris", *discovery: str) -> Process:
        return Process(
            [
                "zone", "--site", site, "--global", self.federation,
                "--credentials", str(credentials),
                *(discovery or ("--config", str(self.zone_files))),
            ],
            self.root / f"zone-{credentials.name}.log",
            f"127.0.0.1:{free_port()}",
        )  # fmt: skip


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    backends = {name: Backend(name) for name in ("paris-1", "paris-2")}
    for backend in backends.values():
        backend.start()
    ca = tmp_path / "ca"
    await asyncio.to_thread(kontinuum, "ca", "init", "--ca-dir", str(ca))
    fleet = tmp_path / "fleet"
    (fleet / "clusters" / "eu-central").mkdir(parents=True)
    (fleet / "clusters.yaml").write_text(FLEET)
    zone_files = tmp_path / "edge-paris"
    zone_files.mkdir()
    (zone_files / "hello.yaml").write_text(HELLO_SERVICE)
    (zone_files / "hello-endpoints.yaml").write_text(hello_slice(backends["paris-1"].port))
    xds_port = free_port()
    federation_address = f"127.0.0.1:{free_port()}"
    global_ = Process(
        [
            "serve", "--config", str(fleet), "--ca-dir", str(ca),
            "--xds-address", f"127.0.0.1:{xds_port}",
            "--federation-address", federation_address,
            "--state-dir", str(tmp_path / "state"),
        ],
        tmp_path / "global.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    credentials = await asyncio.to_thread(
        issue, ca, tmp_path / "zone-edge-paris", "edge-paris", "kontinuum-system",
        "zone-edge-paris",
    )  # fmt: skip
    found = Federation(tmp_path, zone_files, global_, Process([], Path(), ""), xds_port,
                       federation_address, ca, backends)  # fmt: skip
    found.zone_credentials = credentials
    found.zone = found.zone_process(credentials)
    started: list[Process] = [global_, found.zone]
    try:
        global_.start()
        yield found
    finally:
        for process in started:
            process.stop()
        for backend in backends.values():
            backend.stop()


async def connect_the_zone(found: Federation) -> None:
    """Start edge-paris's zone and wait until the global has it connected."""
    found.zone.start()
    await until(
        lambda: found.global_.metric("kontinuum_federation_zone_connected", {"zone": "edge-paris"}),
        "the real zone connected",
        60,
        found.logs,
    )


async def impostor_of(found: Federation) -> Process:
    """A zone process claiming edge-paris with the certificate of zone-other."""
    other = await asyncio.to_thread(
        issue, found.ca, found.root / "zone-other", "other", "kontinuum-system", "zone-other"
    )
    return found.zone_process(other)


async def until_refused(found: Federation, impostor: Process) -> None:
    await until(
        lambda: found.global_.metric("kontinuum_federation_refused_total", {"reason": "identity"}),
        "the impostor refused",
        30,
        (*found.logs, impostor.log),
    )


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def sidecar_bootstrap(found: Federation, credentials: Path, outbound: int) -> dict[str, object]:
    return envoy_bootstrap(
        node_id="frontend-1",
        cluster="eu-central",
        xds_address=f"127.0.0.1:{found.xds_port}",
        admin_port=0,
        reconnect_backoff=("0.1s", "1s"),
        metadata=proxy_metadata(namespace="demo", role="sidecar", outbound_port=outbound),
        tls=XdsClientTls(
            ca_file=str(credentials / "ca.pem"),
            server_identity=str(control_plane_identity(TD)),
            certificate_file=str(credentials / "cert.pem"),
            key_file=str(credentials / "key.pem"),
        ),
    )


async def test_a_zone_publishes_its_site_and_the_global_keeps_it_through_a_cut(
    federation: Federation, envoys: StartEnvoy
) -> None:
    found = federation
    global_, logs = found.global_, found.logs
    found.zone.start()
    sidecar = await asyncio.to_thread(
        issue, found.ca, found.root / "frontend", "eu-central", "demo", "frontend"
    )
    outbound = free_port()
    envoys(
        view="eu-central",
        xds_port=0,
        mode="delta",
        node_id="frontend-1",
        config=sidecar_bootstrap(found, sidecar, outbound),
    )

    # Published: the sidecar of eu-central reaches the backend at edge-paris.
    await until(answered_by(outbound, "paris-1"), "hello answered by paris-1", 60, logs)
    labels = {"zone": "edge-paris"}
    assert await global_.metric("kontinuum_federation_zone_connected", labels) == 1
    assert await global_.metric("kontinuum_federation_zone_objects", labels) == 3
    assert await found.zone.metric("kontinuum_zone_objects_sent_total") == 3

    # An endpoint change in the zone's files reaches the Envoy, and only that object is sent.
    (found.zone_files / "hello-endpoints.yaml").write_text(
        hello_slice(found.backends["paris-2"].port)
    )
    await until(answered_by(outbound, "paris-2"), "hello answered by paris-2", 30, logs)
    assert await found.zone.metric("kontinuum_zone_objects_sent_total") == 4

    # The zone is killed: its endpoints stay, marked stale, and traffic still flows.
    found.zone.kill()

    async def disconnected() -> bool:
        return await global_.metric("kontinuum_federation_zone_connected", labels) == 0

    await until(disconnected, "the global sees the zone disconnected", 30, logs)
    await until(
        lambda: global_.metric("kontinuum_source_stale", {"source": ZONE}),
        "the zone's view marked stale",
        10,
        logs,
    )
    for _ in range(5):
        assert answered_by(outbound, "paris-2")(), "traffic stopped with the zone cut off"

    # Restarted, the zone resyncs: the global holds every object at its version, so not one
    # object is sent again.
    found.zone.start()

    async def resynced() -> bool:
        return (
            await global_.metric("kontinuum_federation_zone_connected", labels) == 1
            and await global_.metric("kontinuum_source_stale", {"source": ZONE}) == 0
            # the zone has read the global's answer too
            and await found.zone.metric("kontinuum_zone_answers_total", {"answer": "ack"}) == 1
        )

    await until(resynced, "the zone connected again and in sync", 30, logs)
    assert await found.zone.metric("kontinuum_zone_answers_total", {"answer": "ack"}) == 1
    assert await found.zone.metric("kontinuum_zone_objects_sent_total") == 0
    assert await found.zone.metric("kontinuum_zone_responses_sent_total") == 1
    assert await global_.metric("kontinuum_federation_zone_connections_total", labels) == 2
    assert answered_by(outbound, "paris-2")()

    # An object the global refuses is NACKed, named; the rest of the site still applies.
    (found.zone_files / "broken.yaml").write_text(
        HELLO_SERVICE.replace("name: hello", "name: broken").replace("port: 80", "port: eighty")
    )
    await until(
        lambda: found.zone.metric("kontinuum_zone_answers_total", {"answer": "nack"}),
        "the broken Service NACKed",
        30,
        logs,
    )
    assert "Service/demo/broken" in global_.log.read_text()
    assert await global_.metric("kontinuum_federation_zone_objects", labels) == 4
    assert answered_by(outbound, "paris-2")()


async def test_a_zone_claiming_another_site_is_refused_and_counted(
    federation: Federation,
) -> None:
    found = federation
    global_, logs = found.global_, found.logs
    await connect_the_zone(found)
    impostor = await impostor_of(found)
    with running(impostor):
        await until_refused(found, impostor)
        await until(
            lambda: "PERMISSION_DENIED" in impostor.log.read_text(),
            "the impostor told why",
            10,
            (impostor.log,),
        )
    assert "zone-other" in impostor.log.read_text()
    # The real zone's stream was never taken over.
    assert await global_.metric("kontinuum_federation_zone_connections_total", {
        "zone": "edge-paris"
    }) == 1  # fmt: skip
    # A site declared with no `source: zone` is refused as undeclared, even to its own zone.
    eu = await asyncio.to_thread(
        issue, found.ca, found.root / "zone-eu-central", "eu-central", "kontinuum-system",
        "zone-eu-central",
    )  # fmt: skip
    with running(found.zone_process(eu, site="eu-central")):
        await until(
            lambda: global_.metric("kontinuum_federation_refused_total", {"reason": "undeclared"}),
            "eu-central refused as undeclared",
            30,
            logs,
        )


async def test_a_zone_s_intermediate_cannot_mint_another_zone_s_identity(
    federation: Federation,
) -> None:
    """The zone of site `other` holds its intermediate CA (`kontinuum ca intermediate`) and
    signs with its key, by hand, the identity of edge-paris's zone: the handshake accepts
    it (it chains to the fleet's root), the global refuses it, counted as reason issuer."""
    found = federation
    await connect_the_zone(found)
    other_ca = found.root / "zone-ca-other"
    await asyncio.to_thread(
        kontinuum, "ca", "intermediate", "--ca-dir", str(found.ca), "--site", "other",
        "--out", str(other_ca),
    )  # fmt: skip
    chain, key = minted(other_ca, SpiffeId(TD, "kontinuum-system", "zone-edge-paris"), "edge-paris")
    forged = found.root / "forged"
    forged.mkdir()
    (forged / "cert.pem").write_bytes(chain)
    (forged / "key.pem").write_bytes(key)
    (forged / "key.pem").chmod(0o600)
    (forged / "ca.pem").write_bytes((found.ca / "ca.crt").read_bytes())
    impostor = found.zone_process(forged)
    with running(impostor):
        await until(
            lambda: found.global_.metric(
                "kontinuum_federation_refused_total", {"reason": "issuer"}
            ),
            "the forged zone refused",
            30,
            (*found.logs, impostor.log),
        )
        await until(
            lambda: "issued by the zone CA of site 'other'" in impostor.log.read_text(),
            "the impostor told why",
            10,
            (impostor.log,),
        )
    assert "PERMISSION_DENIED" in impostor.log.read_text()
    assert await found.global_.metric("kontinuum_federation_zone_connections_total", {
        "zone": "edge-paris"
    }) == 1  # fmt: skip


async def test_a_zone_publishes_its_site_from_its_kubernetes_api(federation: Federation) -> None:
    found = federation
    global_ = found.global_
    async with KubeCluster("edge-paris") as cluster:
        cluster.put(
            service("web"), endpoint_slice("web-1", "web", ["10.3.0.1"]), service_export("web")
        )
        kubeconfig = write_kubeconfig(found.root / "kubeconfig", [cluster])
        zone = found.zone_process(
            found.zone_credentials,
            "edge-paris",
            "--context", "edge-paris", "--kubeconfig", str(kubeconfig),
        )  # fmt: skip
        endpoints = {"source": ZONE}
        with running(zone):
            logs = (global_.log, zone.log)
            await until(
                lambda: global_.metric("kontinuum_source_endpoints", endpoints),
                "the cluster's endpoint at the global",
                60,
                logs,
            )
            assert await global_.metric("kontinuum_federation_zone_objects", {
                "zone": "edge-paris"
            }) == 3  # fmt: skip

            cluster.put(endpoint_slice("web-1", "web", ["10.3.0.1", "10.3.0.2"]))

            async def two() -> bool:
                return await global_.metric("kontinuum_source_endpoints", endpoints) == 2

            await until(two, "the cluster's new endpoint at the global", 30, logs)
            assert await zone.metric("kontinuum_zone_objects_sent_total") == 4


async def test_a_zone_whose_kubernetes_api_is_unreachable_tells_the_global_its_site_is_stale(
    federation: Federation,
) -> None:
    found = federation
    global_ = found.global_
    async with KubeCluster("edge-paris") as cluster:
        cluster.put(
            service("web"), endpoint_slice("web-1", "web", ["10.3.0.1"]), service_export("web")
        )
        kubeconfig = write_kubeconfig(found.root / "kubeconfig", [cluster])
        zone = found.zone_process(
            found.zone_credentials,
            "edge-paris",
            "--context", "edge-paris", "--kubeconfig", str(kubeconfig),
        )  # fmt: skip
        source = {"source": ZONE}
        connected = {"zone": "edge-paris"}
        with running(zone):
            logs = (global_.log, zone.log)
            await until(
                lambda: global_.metric("kontinuum_source_endpoints", source),
                "the cluster's endpoint at the global",
                60,
                logs,
            )
            assert await global_.metric("kontinuum_source_stale", source) == 0

            # The zone's Kubernetes API goes away; the zone stays connected to the global
            # and tells it: the site is stale there, its last endpoints still served.
            await cluster.stop()

            async def stale() -> bool:
                return await global_.metric("kontinuum_source_stale", source) == 1

            await until(stale, "the site marked stale at the global", 60, logs)
            assert await global_.metric("kontinuum_federation_zone_connected", connected) == 1
            assert await global_.metric("kontinuum_source_endpoints", source) == 1
            assert await global_.metric("kontinuum_federation_zone_objects", connected) == 3

            # The API is back: the site is in sync again at the global, and follows it.
            await cluster.start()

            async def fresh() -> bool:
                return await global_.metric("kontinuum_source_stale", source) == 0

            await until(fresh, "the site in sync again at the global", 90, logs)
            cluster.put(endpoint_slice("web-1", "web", ["10.3.0.1", "10.3.0.2"]))

            async def two() -> bool:
                return await global_.metric("kontinuum_source_endpoints", source) == 2

            await until(two, "the cluster's new endpoint at the global", 30, logs)
            assert await global_.metric("kontinuum_federation_zone_connections_total", {
                "zone": "edge-paris"
            }) == 1  # fmt: skip
