"""Telemetry end to end, with a real Prometheus (Debian's) scraping a real fleet.

`kontinuum serve` runs a fleet of three clusters: eu-central and us-east in files, edge
read from its Kubernetes API (kmock's emulator). A real Envoy sidecar in each cluster
sends real traffic to `hello`, spread over all three by a LocalityPolicy, so requests and
bytes cross sites. Prometheus is configured by `kontinuum prometheus-config` and finds the
Envoys through the file `serve --prometheus-sd-file` keeps; its rules are the generated
ones, with every alert's `for:` at 0 so that this runs in seconds.

Then: every query of every dashboard panel returns data, a proxy that cannot bind its
listener (a forced NACK) fires KontinuumProxyNacking, and edge's API going away fires
KontinuumSourceStale. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate
from dashboards.panels import expressions
from dashboards.rules import rules
from kontinuum.app import FleetOptions, serve_fleet
from kontinuum.bootstrap import proxy_metadata
from kontinuum.discovery.aggregate import Debounce
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.envoy import Envoy
from tests.e2e.routing_fleet import Workload, workload_yaml
from tests.support.fleet import cluster_profile
from tests.support.kube import (
    KubeCluster,
    endpoint_slice,
    service,
    service_export,
    write_kubeconfig,
)
from tests.support.net import eventually, free_port
from tests.support.prometheus import INSTALL_HINT, Prometheus, find_prometheus

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"
CLUSTERS = ("eu-central", "us-east", "edge")
KONTINUUM = [sys.executable, "-m", "kontinuum"]

SPREAD = """apiVersion: policy.kontinuum.io/v1alpha1
kind: LocalityPolicy
metadata: {name: hello-spread, namespace: demo}
spec:
  targetRefs: [{group: "", kind: Service, name: hello}]
  weights:
  - {cluster: eu-central, weight: 40}
  - {cluster: us-east, weight: 30}
  - {cluster: edge, weight: 30}
"""


@pytest.fixture
def prometheus_binary() -> str:
    found = find_prometheus()
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def write_fleet(root: Path, ports: dict[str, int], kubeconfig: Path) -> None:
    """eu-central and us-east in files; edge reached through its API (kmock)."""
    edge = cluster_profile("edge", "eu-central-1", network="backbone").replace(
        "  labels:\n",
        "  annotations:\n"
        "    kontinuum.io/source: kubernetes\n"
        f"    kontinuum.io/kubeconfig: {kubeconfig}\n"
        "    kontinuum.io/context: edge\n"
        "  labels:\n",
    )
    profiles = [
        cluster_profile("eu-central", "eu-central-1"),
        cluster_profile("us-east", "us-east-1"),
        edge,
    ]
    root.mkdir(parents=True)
    (root / "clusters.yaml").write_text("---\n".join(profiles))
    (root / "routing.yaml").write_text(SPREAD)
    for cluster in ("eu-central", "us-east"):
        directory = root / "clusters" / cluster
        directory.mkdir(parents=True)
        (directory / "hello.yaml").write_text(workload_yaml(Workload("hello", (ports[cluster],))))


def edge_objects(port: int, *more: int) -> list[dict[str, Any]]:
    hello = service("hello", namespace="demo", port=80)
    hello["spec"]["ports"][0]["name"] = "http"
    slices = []
    for index, backend in enumerate((port, *more), start=1):
        found = endpoint_slice(f"hello-{index}", "hello", ["127.0.0.1"], "demo", backend)
        found["ports"][0]["name"] = "http"
        slices.append(found)
    return [hello, *slices, service_export("hello", namespace="demo")]


@contextlib.contextmanager
def traffic(outbounds: list[int]) -> Iterator[list[int]]:
    """Requests to hello through each sidecar in turn, until the block ends (at most
    5 minutes); yields the count of replies so far (one list cell)."""
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            for port in outbounds:
                request(port, HELLO, "/", None, 2.0)
                done[0] += 1
            stop.wait(0.01)

    thread = threading.Thread(target=loop, name="traffic", daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(10)


@contextlib.asynccontextmanager
async def serving(
    root: Path, sd_file: Path, xds: int, admin: int
) -> AsyncIterator[asyncio.Task[None]]:
    options = FleetOptions(
        path=root, poll_interval=0.1, debounce=Debounce(after=0.05, max=0.5), status=None
    )
    task = asyncio.create_task(
        serve_fleet(options, f"127.0.0.1:{xds}", f"127.0.0.1:{admin}", prometheus_sd=sd_file)
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def prometheus_config(tmp_path: Path, sd_file: Path, admin: int) -> Path:
    """What `kontinuum prometheus-config` prints, with the fast rules, scraping every 1 s."""
    fast = tmp_path / "fast.rules.yaml"
    fast.write_text(yaml.safe_dump(rules(hold=0), sort_keys=False))
    printed = subprocess.run(
        [*KONTINUUM, "prometheus-config", "--sd-file", str(sd_file),
         "--admin-address", f"127.0.0.1:{admin}", "--rules", str(fast),
         "--scrape-interval", "1s"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    path = tmp_path / "prometheus.yml"
    path.write_text(printed)
    config = yaml.safe_load(printed)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["kontinuum-envoy"]["file_sd_configs"][0]["files"] == [str(sd_file)]
    assert jobs["kontinuum-envoy"]["metrics_path"] == "/stats/prometheus"
    return path


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, query) of every panel, with every variable All."""
    found = []
    for name, build in generate.DASHBOARDS.items():
        for title, expr in expressions(build()):
            for variable in ("$cluster", "$workspace", "$service"):
                expr = expr.replace(variable, ".*")
            found.append((name, title, expr.replace("$__rate_interval", "30s")))
    return found


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return await eventually(lambda: check(), timeout, 0.5, what=what)


async def test_prometheus_scrapes_the_fleet_every_panel_has_data_and_alerts_fire(
    tmp_path: Path, envoys: StartEnvoy, prometheus_binary: str
) -> None:
    backends = {name: Backend(name).start() for name in (*CLUSTERS, "edge-2")}
    held = socket.socket()  # the port the NACKing proxy will not be able to bind
    try:
        held.bind(("127.0.0.1", 0))
        held.listen()
        async with KubeCluster("edge", bookmark_interval=0.5) as edge:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [edge])
            edge.put(*edge_objects(backends["edge"].port))
            root = tmp_path / "fleet"
            write_fleet(root, {c: b.port for c, b in backends.items()}, kubeconfig)
            sd_file = tmp_path / "sd" / "envoys.json"
            xds, admin = free_port(), free_port()
            async with serving(root, sd_file, xds, admin) as served:
                await until(lambda: sd_file.parent.exists() or served.done(), "serving", 20)
                outbounds = []
                sidecars: list[Envoy] = []
                for cluster in CLUSTERS:
                    outbound = free_port()
                    sidecars.append(
                        envoys(
                            view=cluster,
                            xds_port=xds,
                            mode="delta",
                            node_id=f"frontend-{cluster}",
                            metadata=proxy_metadata(
                                namespace="demo", role="sidecar", outbound_port=outbound
                            ),
                            stats_port=free_port(),
                        )
                    )
                    outbounds.append(outbound)
                for sidecar in sidecars:
                    await asyncio.to_thread(sidecar.wait_live, 20)
                config = prometheus_config(tmp_path, sd_file, admin)
                with Prometheus(config, tmp_path / "prometheus") as prometheus, traffic(outbounds):
                    await check_scraping(prometheus, edge, backends)
                    await check_every_panel(prometheus)
                    await check_forced_nack(prometheus, envoys, xds, held.getsockname()[1])
                    await check_source_outage(prometheus, edge)
    finally:
        held.close()
        for backend in backends.values():
            backend.stop()


async def check_scraping(
    prometheus: Prometheus, edge: KubeCluster, backends: dict[str, Backend]
) -> None:
    def up() -> dict[str, int]:
        jobs: dict[str, int] = {}
        for target in prometheus.targets():
            if target["health"] == "up":
                job = target["labels"]["job"]
                jobs[job] = jobs.get(job, 0) + 1
        return jobs

    await until(lambda: up() == {"kontinuum": 1, "kontinuum-envoy": 3}, "every target up")
    clusters = await until(
        lambda: (
            {
                s["metric"]["kontinuum_cluster"]
                for s in prometheus.query('up{job="kontinuum-envoy"} == 1')
            }
            == set(CLUSTERS)
        ),
        "a target per cluster, labelled",
    )
    assert clusters
    # A change after the proxies connected: a push that they ACK (the convergence panels).
    edge.put(*edge_objects(backends["edge"].port, backends["edge-2"].port))
    await until(
        lambda: prometheus.query("sum(kontinuum_proxy_convergence_seconds_count) > 0"),
        "a push the proxies ACKed",
    )
    # Traffic crosses sites, as the sidecars count it per destination cluster.
    pairs = await until(
        lambda: (
            {
                (s["metric"]["kontinuum_cluster"], s["metric"]["kontinuum_destination_cluster"])
                for s in prometheus.query("kontinuum:requests:rate1m > 0")
            }
            >= {("eu-central", "us-east"), ("us-east", "edge"), ("edge", "eu-central")}
        ),
        "requests between the clusters",
    )
    assert pairs


async def check_every_panel(prometheus: Prometheus) -> None:
    queries = panel_queries()
    assert len(queries) >= 20

    def empty() -> list[str]:
        return [
            f"{name} / {title}: {expr}"
            for name, title, expr in queries
            if not prometheus.query(expr)
        ]

    missing: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        missing = await asyncio.to_thread(empty)
        if not missing:
            break
        await asyncio.sleep(1)
    assert not missing, "panels without data:\n" + "\n".join(missing)
    print(f"{len(queries)} panel queries, each with data")
    crossing = prometheus.query(
        "sum by (kontinuum_workspace) "
        '(kontinuum:cross_site_bytes:rate1m{kontinuum_workspace="demo"})'
    )
    assert float(crossing[0]["value"][1]) > 0  # bytes do cross sites, and are attributed


async def check_forced_nack(
    prometheus: Prometheus, envoys: StartEnvoy, xds: int, taken: int
) -> None:
    assert prometheus.firing("KontinuumProxyNacking") == []
    nacking = envoys(
        view="us-east",
        xds_port=xds,
        mode="delta",
        node_id="frontend-us-east-2",
        metadata=proxy_metadata(namespace="demo", role="sidecar", outbound_port=taken),
    )
    await asyncio.to_thread(nacking.wait_live, 20)  # LIVE, on its last (empty) listeners
    await until(lambda: prometheus.firing("KontinuumProxyNacking"), "the NACK alert", 30)
    (nacked,) = prometheus.query('kontinuum_xds_proxies_sync{state="NACKED"}')
    assert nacked["value"][1] == "1"
    assert prometheus.query('sum(increase(kontinuum_xds_nacks_total{type="LDS"}[1m])) > 0')


async def check_source_outage(prometheus: Prometheus, edge: KubeCluster) -> None:
    assert prometheus.firing("KontinuumSourceStale") == []
    await edge.stop()
    firing = await until(lambda: prometheus.firing("KontinuumSourceStale"), "the stale alert", 30)
    assert [a["source"] for a in firing] == ["kubernetes:edge"]
    print("alerts:", sorted(a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]))
