"""Telemetry end to end, with a real Prometheus (Debian's) scraping a real fleet.

`kontinuum serve` runs a fleet of three clusters: eu-central and us-east in files, edge
read from its Kubernetes API (kmock's emulator). A real Envoy sidecar in each cluster
sends real traffic to three services: `hello`, spread over all three clusters by a
LocalityPolicy, so requests and bytes cross sites; `flaky`, served in us-east only by a
backend that answers every request with a 503, so that requests crossing to us-east fail;
and `nowhere`, exported with no endpoint at all, so that Envoy answers 503 itself (no
healthy upstream). Prometheus is configured by `kontinuum prometheus-config` and finds
the Envoys through the file `serve --prometheus-sd-file` keeps; its rules are the
generated ones, with every alert's `for:` at 0 so that this runs in seconds.

Then: the targets are the proxies, who they are only in `__meta_` labels (so Envoy's own
labels are not renamed `exported_*`), each with a bounded number of series (Envoy's stats
matcher); every query of every dashboard panel returns finite values, and a non-zero one
unless the panel may legitimately be zero here (`MAY_BE_ZERO` says why); the error ratio
counts the 503s of `nowhere`, which no per-zone stat sees; a proxy that cannot bind its
listener (a forced NACK) fires KontinuumProxyNacking; the 503s crossing to us-east fire
KontinuumCrossSite5xxHigh; edge's API going away fires KontinuumSourceStale; a stopped
proxy leaves the targets at once (never scraped as down); kontinuum stopping fires
KontinuumDown and, on the proxies still running, KontinuumProxyDisconnected. Every wait
is bounded.

A second test runs the Kubernetes scrape configuration of deploy/README.md against the
labels Kubernetes pod discovery gives (Debian's Prometheus has no Kubernetes discovery:
a file of targets stands in for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import re
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
FLAKY = "flaky.demo.svc.clusterset.local"  # in us-east only; every answer a 503
NOWHERE = "nowhere.demo.svc.clusterset.local"  # exported, no endpoint anywhere
CLUSTERS = ("eu-central", "us-east", "edge")
KONTINUUM = [sys.executable, "-m", "kontinuum"]
# Series a sidecar's stats make here, at most: its Envoy's own (the stats matcher's
# inclusion list: 266 with Prometheus' five per target) and some room. Envoy's default,
# every stat, makes 2,143 here.
MAX_SERIES_PER_SIDECAR = 400

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

# (dashboard, panel, query index) -> why its values may all be 0 here. Every other query
# must give a non-zero value, the traffic of this test guarantees one.
MAY_BE_ZERO = {
    ("control-plane.json", "Sources", 1): "no source is stale before edge's API goes away",
    ("control-plane.json", "Configuration errors", 0): "the fleet is valid",
    ("control-plane.json", "Refused xDS streams", 0): "every proxy here may connect",
}
# Panels whose series only a zero-trust mesh makes: proven against a real Prometheus by the
# test named, not here.
ELSEWHERE = {
    **{
        ("control-plane.json", title, index): (
            "tests/e2e/test_federation_telemetry.py::"
            "test_the_zones_row_has_data_and_a_lost_zone_fires_its_alert"
        )
        for title, index in (
            ("Zones", 0),
            ("Zones", 1),
            ("Zones", 2),
            ("Time since zones synced", 0),
        )
    },
    ("fleet-overview.json", "Authorization denials", 0): (
        "tests/e2e/test_zero_trust.py::test_a_caller_of_an_ungranted_workspace_gets_403_"
        "until_the_grant"
    ),
}


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
    workloads = {
        "eu-central": [Workload("hello", (ports["eu-central"],)), Workload("nowhere", ())],
        "us-east": [Workload("hello", (ports["us-east"],)), Workload("flaky", (ports["flaky"],))],
    }
    for cluster, found in workloads.items():
        directory = root / "clusters" / cluster
        directory.mkdir(parents=True)
        for workload in found:
            (directory / f"{workload.name}.yaml").write_text(workload_yaml(workload))


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
    """Requests to hello, flaky and nowhere through each sidecar of `outbounds` (a port
    removed from it is left alone from the next round on) in turn, until the block ends
    (at most 5 minutes); yields the count of rounds so far (one list cell)."""
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            for port in list(outbounds):
                for host in (HELLO, HELLO, FLAKY, NOWHERE):
                    with contextlib.suppress(http.client.HTTPException):  # a sidecar stopping
                        request(port, host, "/", None, 2.0)
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


def panel_queries() -> list[tuple[str, str, int, str]]:
    """(dashboard, panel, index of the query in the panel, query) of every panel, with
    every variable All and Grafana's rate interval a minute (all of this test's pushes)."""
    found = []
    for name, build in generate.DASHBOARDS.items():
        seen: dict[str, int] = {}
        for title, expr in expressions(build()):
            index = seen[title] = seen.get(title, -1) + 1
            for variable in ("$cluster", "$workspace", "$service"):
                expr = expr.replace(variable, ".*")
            found.append((name, title, index, expr.replace("$__rate_interval", "1m")))
    return found


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return await eventually(lambda: check(), timeout, 0.5, what=what)


def values(samples: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in samples]


async def test_prometheus_scrapes_the_fleet_every_panel_has_data_and_alerts_fire(
    tmp_path: Path, envoys: StartEnvoy, prometheus_binary: str
) -> None:
    backends = {name: Backend(name).start() for name in (*CLUSTERS, "edge-2")}
    backends["flaky"] = Backend("flaky", flaky_every=1).start()  # a 503 for every request
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
                    await check_scraping(prometheus, edge, backends, sd_file)
                    await check_forced_nack(prometheus, envoys, xds, held.getsockname()[1])
                    await check_every_panel(prometheus)
                    await check_errors(prometheus)
                    await check_source_outage(prometheus, edge)
                    outbounds.pop()  # the traffic leaves edge's sidecar alone: it stops
                    await check_a_stopped_proxy_leaves(prometheus, sidecars[2], sd_file)
                    served.cancel()
                    await check_kontinuum_down(prometheus)
    finally:
        held.close()
        for backend in backends.values():
            backend.stop()


async def check_scraping(
    prometheus: Prometheus, edge: KubeCluster, backends: dict[str, Backend], sd_file: Path
) -> None:
    def up() -> dict[str, int]:
        jobs: dict[str, int] = {}
        for target in prometheus.targets():
            if target["health"] == "up":
                job = target["labels"]["job"]
                jobs[job] = jobs.get(job, 0) + 1
        return jobs

    await until(lambda: up() == {"kontinuum": 1, "kontinuum-envoy": 3}, "every target up")
    # Who a proxy is: in __meta_ labels only (the targets page), not on its series.
    groups = json.loads(await asyncio.to_thread(sd_file.read_text))
    allowed = {f"__meta_kontinuum_{k}" for k in ("node", "cluster", "workspace", "role")}
    assert all(set(g["labels"]) <= allowed for g in groups), groups
    envoy_targets = [t for t in prometheus.targets() if t["labels"]["job"] == "kontinuum-envoy"]
    assert sorted(t["discoveredLabels"]["__meta_kontinuum_node"] for t in envoy_targets) == [
        f"frontend-{cluster}" for cluster in sorted(CLUSTERS)
    ]
    assert all(set(t["labels"]) == {"instance", "job"} for t in envoy_targets), envoy_targets
    # Envoy's own labels, not renamed exported_*: a proxy per cluster.
    clusters = await until(
        lambda: (
            {
                s["metric"]["kontinuum_cluster"]
                for s in prometheus.query('envoy_server_live{job="kontinuum-envoy"} == 1')
            }
            == set(CLUSTERS)
        ),
        "Envoy's series of each cluster, labelled",
    )
    assert clusters
    for label in ("cluster", "workspace", "role"):
        assert prometheus.query(f'{{__name__=~"envoy_.+", kontinuum_{label}=~".+"}}'), label
        assert not prometheus.query(f'{{__name__=~"envoy_.+", exported_kontinuum_{label}=~".+"}}')
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
    series = {
        s["metric"]["instance"]: float(s["value"][1])
        for s in prometheus.query('count by (instance) ({job="kontinuum-envoy"})')
    }
    print("series per sidecar:", series)
    assert len(series) == 3
    assert all(0 < count <= MAX_SERIES_PER_SIDECAR for count in series.values()), series


async def check_every_panel(prometheus: Prometheus) -> None:
    every = panel_queries()
    assert len(every) >= 20
    assert set(MAY_BE_ZERO) | set(ELSEWHERE) <= {(n, t, i) for n, t, i, _ in every}
    queries = [q for q in every if q[:3] not in ELSEWHERE]

    def wrong(name: str, title: str, index: int, expr: str) -> str | None:
        found = values(prometheus.query(expr))
        if not found:
            return "no data"
        if not all(math.isfinite(v) for v in found):
            return f"not finite: {found}"
        if (name, title, index) not in MAY_BE_ZERO and not any(found):
            return "only zeros"
        return None

    def failing() -> list[str]:
        return [
            f"{name} / {title} [{index}]: {problem}: {expr}"
            for name, title, index, expr in queries
            if (problem := wrong(name, title, index, expr)) is not None
        ]

    problems: list[str] = []
    deadline = time.monotonic() + 30  # within a minute of the pushes: their rates hold
    while time.monotonic() < deadline:
        problems = await asyncio.to_thread(failing)
        if not problems:
            break
        await asyncio.sleep(1)
    assert not problems, "panels without the data they should have:\n" + "\n".join(problems)
    print(f"{len(queries)} panel queries, each with data")
    crossing = prometheus.query(
        "sum by (kontinuum_workspace) "
        '(kontinuum:cross_site_bytes:rate1m{kontinuum_workspace="demo"})'
    )
    assert float(crossing[0]["value"][1]) > 0  # bytes do cross sites, and are attributed


async def check_errors(prometheus: Prometheus) -> None:
    """The fleet's error ratio counts the 503s Envoy gives when there is no endpoint
    (seen per upstream cluster only); the cross-site alert fires for the pairs to
    us-east, where flaky fails every request, and only for those."""
    fleet = {
        title: expr for name, title, _, expr in panel_queries() if name == "fleet-overview.json"
    }
    by_service = {
        s["metric"]["kontinuum_service"]: float(s["value"][1])
        for s in prometheus.query(fleet["Error ratio"])
    }
    assert by_service["nowhere"] == pytest.approx(1.0), by_service
    assert by_service["flaky"] == pytest.approx(1.0), by_service
    assert by_service["hello"] == 0, by_service
    assert not prometheus.query('kontinuum:requests:rate1m{kontinuum_service="nowhere"}')
    firing = await until(
        lambda: (
            {
                (a["kontinuum_cluster"], a["kontinuum_destination_cluster"])
                for a in prometheus.firing("KontinuumCrossSite5xxHigh")
            }
            >= {("eu-central", "us-east"), ("edge", "us-east")}
        ),
        "the cross-site 5xx alert",
    )
    assert firing
    pairs = {
        (a["kontinuum_cluster"], a["kontinuum_destination_cluster"])
        for a in prometheus.firing("KontinuumCrossSite5xxHigh")
    }
    assert pairs == {("eu-central", "us-east"), ("edge", "us-east")}


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
    firing = await until(lambda: prometheus.firing("KontinuumProxyNacking"), "the NACK alert", 30)
    assert [(a["kontinuum_cluster"], a["kontinuum_workspace"]) for a in firing] == [
        ("us-east", "demo")
    ]
    (nacked,) = prometheus.query('sum(kontinuum_xds_proxies_sync{state="NACKED"})')
    assert nacked["value"][1] == "1"
    assert prometheus.query('sum(increase(kontinuum_xds_nacks_total{type="LDS"}[1m])) > 0')


async def check_source_outage(prometheus: Prometheus, edge: KubeCluster) -> None:
    assert prometheus.firing("KontinuumSourceStale") == []
    await edge.stop()
    firing = await until(lambda: prometheus.firing("KontinuumSourceStale"), "the stale alert", 30)
    assert [a["source"] for a in firing] == ["kubernetes:edge"]


async def check_a_stopped_proxy_leaves(
    prometheus: Prometheus, sidecar: Envoy, sd_file: Path
) -> None:
    """Its stats port refuses: out of the file at the next refresh, and out of
    Prometheus' targets at its next read of the file, not a target that is down."""
    address = f"127.0.0.1:{sidecar.stats_port}"
    assert address in await asyncio.to_thread(sd_file.read_text)
    await asyncio.to_thread(sidecar.stop)
    await until(lambda: address not in sd_file.read_text(), "the stopped proxy out of the file", 10)

    def targets() -> set[str]:
        return {
            t["labels"]["instance"]
            for t in prometheus.targets()
            if t["labels"]["job"] == "kontinuum-envoy"
        }

    await until(lambda: address not in targets(), "the stopped proxy out of the targets", 15)
    assert len(targets()) == 2


async def check_kontinuum_down(prometheus: Prometheus) -> None:
    """The proxies still running report they lost their control plane, and the file of
    targets (as kontinuum left it) keeps them scraped."""
    await until(lambda: prometheus.firing("KontinuumDown"), "the down alert", 20)
    disconnected = await until(
        lambda: len(prometheus.firing("KontinuumProxyDisconnected")) == 2,
        "the disconnected alerts",
        20,
    )
    assert disconnected
    clusters = sorted(
        a["kontinuum_cluster"] for a in prometheus.firing("KontinuumProxyDisconnected")
    )
    assert clusters == ["eu-central", "us-east"]
    print("alerts:", sorted(a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]))


def pod(
    name: str, namespace: str, address: str, port_name: str, labels: dict[str, str], phase: str
) -> dict[str, Any]:
    """A target as Kubernetes pod discovery gives it: one per declared container port."""
    meta = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_port_name": port_name,
    }
    for key, value in labels.items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return {"targets": [address], "labels": meta}


async def test_the_kubernetes_scrape_configuration_keeps_kontinuum_and_the_envoys(
    tmp_path: Path, prometheus_binary: str
) -> None:
    readme = (Path(__file__).parents[2] / "deploy" / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(scrape_configs:\n.*?)```", readme, re.DOTALL)
    config = yaml.safe_load(block)
    app = {"app.kubernetes.io/name": "kontinuum"}
    web = {"app": "web"}
    pods = [
        pod("kontinuum-0", "kontinuum-system", "10.0.0.1:18001", "http-admin", app, "Running"),
        pod("kontinuum-0", "kontinuum-system", "10.0.0.1:18000", "grpc-xds", app, "Running"),
        pod("web-1", "shop", "10.0.1.1:15090", "http-envoy-prom", web, "Running"),
        pod("web-1", "shop", "10.0.1.1:8080", "http", web, "Running"),
        pod("web-0", "shop", "10.0.1.2:15090", "http-envoy-prom", web, "Succeeded"),
    ]
    for job in config["scrape_configs"]:
        (discovery,) = job.pop("kubernetes_sd_configs")
        names = discovery.get("namespaces", {}).get("names")
        found = [
            p for p in pods if names is None or p["labels"]["__meta_kubernetes_namespace"] in names
        ]
        path = tmp_path / f"{job['job_name']}.json"
        path.write_text(json.dumps(found))
        job["file_sd_configs"] = [{"files": [str(path)]}]
        job["scrape_interval"] = "1h"  # the targets are made up: only their labels matter
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with Prometheus(path, tmp_path / "prometheus") as prometheus:
        active = await until(
            lambda: len(prometheus.targets()) == 2 and prometheus.targets(), "two targets", 20
        )
    kept = {(t["labels"]["job"], t["labels"]["instance"]): t["labels"] for t in active}
    assert kept == {
        ("kontinuum", "10.0.0.1:18001"): {
            "job": "kontinuum",
            "instance": "10.0.0.1:18001",
            "pod": "kontinuum-0",
        },
        ("kontinuum-envoy", "10.0.1.1:15090"): {
            "job": "kontinuum-envoy",
            "instance": "10.0.1.1:15090",
            "namespace": "shop",
            "pod": "web-1",
        },
    }
