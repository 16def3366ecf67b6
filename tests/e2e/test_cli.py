"""The `kontinuum` command as a user runs it: `serve-resources`, `status`, `version`."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kontinuum import __version__
from kontinuum.xds import types
from tests.e2e.envoy import Envoy
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parents[2] / "examples" / "resources"
KONTINUUM = [sys.executable, "-m", "kontinuum"]


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`kontinuum serve-resources` on a copy of the examples: (address, view dir, log)."""
    views = tmp_path / "views"
    views.mkdir()
    shutil.copy(EXAMPLES / "demo.yaml", views / "demo.yaml")
    address = f"127.0.0.1:{free_port()}"
    admin = f"127.0.0.1:{free_port()}"
    (tmp_path / "admin").write_text(admin)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *KONTINUUM,
                "serve-resources",
                str(views),
                "--xds-address",
                address,
                "--admin-address",
                admin,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _serving(address), timeout=20, what="the server to serve")
        yield address, views, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _sotw_client(address: str, cluster: str) -> tuple[grpc.Channel, queue.Queue[object]]:
    """A SotW client that subscribes to all clusters and ACKs every response."""
    channel = grpc.insecure_channel(address)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    outbox: queue.Queue[object] = queue.Queue()
    outbox.put(
        discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="cli-test-proxy", cluster=cluster), type_url=types.CLUSTER
        )
    )

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (item := outbox.get()) is not None:
            yield item

    def ack_all() -> None:
        try:
            for response in stub.StreamAggregatedResources(requests()):
                outbox.put(
                    discovery_pb2.DiscoveryRequest(
                        type_url=response.type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
        except grpc.RpcError:
            pass

    threading.Thread(target=ack_all, daemon=True).start()
    return channel, outbox


def _status(address: str) -> str:
    result = subprocess.run(
        [*KONTINUUM, "status", "--xds-address", address],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    return result.stdout


def _synced(address: str) -> bool:
    return "SYNCED" in _status(address)


def test_status_shows_a_connected_proxy_synced(served: tuple[str, Path, Path]) -> None:
    address, _, _ = served
    channel, outbox = _sotw_client(address, "demo")
    try:
        output = wait_until(lambda: _status(address) if _synced(address) else "", timeout=10)
        line = next(line for line in output.splitlines() if "cli-test-proxy" in line)
        assert "demo" in line
        assert "SYNCED" in line  # CDS, the one type this client asked for
        assert "1 connected proxy" in output
    finally:
        outbox.put(None)
        channel.close()


def test_bad_edit_is_reported_and_the_view_keeps_serving(served: tuple[str, Path, Path]) -> None:
    address, views, log = served
    (views / "demo.yaml").write_text("- {name: broken}\n")
    wait_until(lambda: "needs an '@type'" in log.read_text(), timeout=10, what="the error log")
    assert "keeps its last good configuration" in log.read_text()

    channel, outbox = _sotw_client(address, "demo")
    try:
        wait_until(lambda: _synced(address), timeout=10, what="a synced proxy")
    finally:
        outbox.put(None)
        channel.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError as error:  # not listening (yet)
        return 0, str(error.reason)


def test_admin_endpoint_serves_probes_and_metrics(
    served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    address, _, _ = served
    admin = "http://" + (tmp_path / "admin").read_text()
    assert _get(admin + "/healthz") == (200, "ok\n")
    assert _get(admin + "/readyz") == (200, "ready\n")
    assert _get(admin + "/nope")[0] == 404
    channel, outbox = _sotw_client(address, "demo")
    try:
        wait_until(lambda: _synced(address), timeout=10, what="a synced proxy")
        _, metrics = _get(admin + "/metrics")
    finally:
        outbox.put(None)
        channel.close()
    assert "kontinuum_xds_connected_streams 1.0" in metrics
    assert 'kontinuum_xds_acks_total{type="CDS"} 1.0' in metrics
    assert 'kontinuum_xds_nacks_total{type="CDS"} 0.0' in metrics


def test_a_second_server_on_a_busy_address_fails_at_once_with_one_line(
    served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """A second server on the address another serves on would take part of its proxies
    (gRPC shares a port by default): it is refused, with the address and what to do."""
    address, views, _ = served
    ca_dir = tmp_path / "ca"
    created = subprocess.run(
        [*KONTINUUM, "ca", "init", "--ca-dir", str(ca_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert created.returncode == 0, created.stderr
    fleet = ["serve", "--config", str(EXAMPLES.parent / "fleet"), "--ca-dir", str(ca_dir)]
    attempts = {
        "--xds-address": [*fleet, "--xds-address", address],
        "--xds-token-address": [
            *fleet, "--xds-address", f"127.0.0.1:{free_port()}", "--xds-token-address", address
        ],
        "--federation-address": [
            *fleet, "--xds-address", f"127.0.0.1:{free_port()}", "--federation-address", address
        ],
        "serve-resources --xds-address": ["serve-resources", str(views), "--xds-address", address],
    }  # fmt: skip
    for option, arguments in attempts.items():
        result = subprocess.run(
            [*KONTINUUM, *arguments, "--admin-address", f"127.0.0.1:{free_port()}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, (option, result.stderr)
        (line,) = result.stderr.splitlines()
        assert f"{address} ({option.split()[-1]})" in line, line
        assert "in use" in line, line
    assert _serving(address)  # the first serves on, alone


def test_status_without_a_server_fails_clearly() -> None:
    result = subprocess.run(
        [*KONTINUUM, "status", "--xds-address", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot read client status" in result.stderr


@pytest.mark.parametrize("busy", ["--admin-address", "--dns-address"])
def test_serve_on_a_busy_address_says_so_in_one_line(tmp_path: Path, busy: str) -> None:
    """Another process holds the admin (TCP) or DNS (UDP and TCP) address: `serve` names
    the address and the option to change, in one line and without a traceback."""
    fleet = Path(__file__).parents[2] / "examples" / "fleet"
    kind = socket.SOCK_DGRAM if busy == "--dns-address" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        addresses = {
            "--xds-address": f"127.0.0.1:{free_port()}",
            "--admin-address": f"127.0.0.1:{free_port()}",
            busy: taken,
        }
        result = subprocess.run(
            [*KONTINUUM, "serve", "--plaintext-xds", "--config", str(fleet),
             *(word for pair in addresses.items() for word in pair)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: cannot listen on {taken} ({busy}): the address is in use (another "
        "kontinuum?): stop what listens there, or choose another address"
    ], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith(("│", "╭"))]


def test_status_with_credentials_against_a_plaintext_server_says_to_leave_them_out(
    served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    address, _, _ = served
    ca, operator = tmp_path / "ca", tmp_path / "operator"
    for args in (
        ["ca", "init", "--ca-dir", str(ca)],
        ["ca", "issue", "--ca-dir", str(ca), "--cluster", "demo", "--namespace",
         "kontinuum-system", "--service-account", "operator", "--out", str(operator)],
    ):  # fmt: skip
        subprocess.run([*KONTINUUM, *args], capture_output=True, timeout=30, check=True)
    result = subprocess.run(
        [*KONTINUUM, "status", "--xds-address", address, "--credentials", str(operator)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {address} serves xDS without TLS (a --plaintext-xds server): leave out "
        "--credentials\n"
    ), result.stderr


def test_version() -> None:
    result = subprocess.run([*KONTINUUM, "version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == __version__


@pytest.mark.parametrize("delta", [True, False])
def test_bootstrap_is_a_valid_envoy_configuration(tmp_path: Path, delta: bool) -> None:
    from kontinuum.bootstrap import find_envoy

    args = ["--node-id", "web-1", "--cluster", "eu-central", "--namespace", "demo"]
    args += ["--service", "web", "--inbound-port", "8080", "--admin-port", "15000"]
    printed = subprocess.run(
        [*KONTINUUM, "bootstrap", *args, *([] if delta else ["--sotw"])],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    document = json.loads(printed)
    assert document["node"]["metadata"]["kontinuum.io/namespace"] == "demo"
    assert document["node"]["metadata"]["kontinuum.io/inbound-port"] == "8080"
    ads = document["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    assert ads["set_node_on_first_message_only"] is True
    # Prometheus' listener on 15090, its port declared for kontinuum's service discovery
    assert document["node"]["metadata"]["kontinuum.io/stats-port"] == "15090"
    (listener,) = document["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 15090
    assert document["node"]["locality"] == {"zone": "eu-central"}
    tags = {t["tag_name"]: t for t in document["stats_config"]["stats_tags"]}
    assert tags["kontinuum_cluster"]["fixed_value"] == "eu-central"
    assert tags["kontinuum_workspace"]["fixed_value"] == "demo"
    path = tmp_path / "bootstrap.json"
    path.write_text(printed)
    envoy = find_envoy()
    assert envoy is not None
    validated = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_a_stats_listener_needs_a_fixed_admin_port() -> None:
    base = [*KONTINUUM, "bootstrap", "--node-id", "x", "--cluster", "c", "--namespace", "n"]
    refused = subprocess.run(
        [*base, "--admin-port", "0"], capture_output=True, text=True, timeout=30
    )  # fmt: skip
    assert refused.returncode == 2
    assert "fixed admin port" in refused.stderr
    without = subprocess.run(
        [*base, "--admin-port", "0", "--stats-address", "none"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    document = json.loads(without.stdout)
    assert document["static_resources"]["listeners"] == []
    assert "kontinuum.io/stats-port" not in document["node"]["metadata"]


@pytest.mark.parametrize(
    "extra", [[], ["--stats-inclusion-prefix", "http."]], ids=["default", "http"]
)
def test_a_proxy_creates_only_the_stats_it_is_told_to(
    tmp_path: Path, envoy_path: str, extra: list[str]
) -> None:
    """The bootstrap's inclusion list governs what a real Envoy creates: its listeners'
    HTTP stats only with `--stats-inclusion-prefix http.`; the mesh's always."""
    args = ["--node-id", "web-1", "--cluster", "eu-central", "--namespace", "demo"]
    args += ["--admin-port", str(free_port()), "--stats-address", f"127.0.0.1:{free_port()}"]
    args += ["--xds-address", f"127.0.0.1:{free_port()}", *extra]
    printed = subprocess.run(
        [*KONTINUUM, "bootstrap", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    envoy = Envoy(
        tmp_path / "envoy", node_id="web-1", view="eu-central", xds_port=0, mode="delta",
        binary=envoy_path, config=json.loads(printed),
    )  # fmt: skip
    envoy.start()
    try:
        envoy.wait_admin()
        stats = envoy.stats()
        assert "control_plane.connected_state" in stats
        assert "server.live" in stats
        http_stats = [name for name in stats if name.startswith("http.kontinuum_stats.")]
        assert bool(http_stats) == bool(extra), http_stats[:5]
        assert not [name for name in stats if name.startswith("cluster.kontinuum-admin.")]
    finally:
        envoy.stop()


def test_bootstrap_refuses_an_unknown_role() -> None:
    result = subprocess.run(
        [*KONTINUUM, "bootstrap", "--node-id", "x", "--cluster", "c", "--namespace", "n",
         "--role", "router"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "sidecar, gateway or ingress" in result.stderr


def test_validate_accepts_the_example_fleet() -> None:
    fleet = Path(__file__).parents[2] / "examples" / "fleet"
    result = subprocess.run(
        [*KONTINUUM, "validate", str(fleet)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "3 clusters" in result.stdout
    assert "0 errors" in result.stdout


def test_validate_reports_every_error_and_fails(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).parents[2] / "examples" / "fleet", tmp_path / "fleet")
    broken = next((tmp_path / "fleet" / "clusters" / "eu-central").glob("*.yaml"))
    broken.write_text(broken.read_text() + "\n---\napiVersion: v1\nkind: Nonsense\n")
    (tmp_path / "fleet" / "clusters" / "nowhere").mkdir()
    result = subprocess.run(
        [*KONTINUUM, "validate", str(tmp_path / "fleet")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Nonsense" in result.stderr
    assert "no ClusterProfile named 'nowhere'" in result.stderr
    assert "2 errors" in result.stderr


BROKEN_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello-canary, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - backendRefs: [{name: hello-canary, port: 80}]
"""


def test_validate_and_routes_report_route_conditions(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(Path(__file__).parents[2] / "examples" / "fleet", fleet)
    (fleet / "routes.yaml").write_text(BROKEN_ROUTE)
    result = subprocess.run(
        [*KONTINUUM, "validate", str(fleet)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert (
        "routes.yaml: HTTPRoute demo/hello-canary: Service demo/hello: "
        "ResolvedRefs=False BackendNotFound"
    ) in result.stderr
    assert "1 route, 0 errors, 1 status problem" in result.stderr

    shown = subprocess.run(
        [*KONTINUUM, "routes", str(fleet)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "HTTPRoute demo/hello-canary" in shown.stdout
    assert "Accepted=True" in shown.stdout
    assert "BackendNotFound" in shown.stdout


def test_serve_config_serves_the_example_fleet_to_a_declared_sidecar(tmp_path: Path) -> None:
    from google.protobuf import struct_pb2

    from kontinuum.bootstrap import proxy_metadata

    fleet = tmp_path / "fleet"
    shutil.copytree(Path(__file__).parents[2] / "examples" / "fleet", fleet)
    address, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*KONTINUUM, "serve", "--config", str(fleet), "--xds-address", address,
             "--admin-address", admin, "--plaintext-xds"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: _get(f"http://{admin}/readyz")[0] == 200, timeout=20, what="ready")
        channel = grpc.insecure_channel(address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = base_pb2.Node(id="frontend-1", cluster="eu-central")
        node.metadata.CopyFrom(struct_pb2.Struct())
        node.metadata.update(proxy_metadata(namespace="demo", role="sidecar"))
        outbox: queue.Queue[object] = queue.Queue()
        outbox.put(discovery_pb2.DiscoveryRequest(node=node, type_url=types.CLUSTER))
        responses = stub.StreamAggregatedResources(iter(outbox.get, None), timeout=20)
        first = next(responses)
        clusters = {cluster_name(any_value.value) for any_value in first.resources}
        outbox.put(
            discovery_pb2.DiscoveryRequest(
                type_url=types.CLUSTER, version_info=first.version_info, response_nonce=first.nonce
            )
        )
        # A new service in the files reaches the connected proxy within about a second.
        hello = fleet / "clusters" / "us-east" / "hello.yaml"
        (fleet / "clusters" / "us-east" / "greeter.yaml").write_text(
            hello.read_text().replace("hello", "greeter")
        )
        written = time.monotonic()
        update = next(responses)
        elapsed = time.monotonic() - written
        updated = {cluster_name(any_value.value) for any_value in update.resources}
        outbox.put(None)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "outbound|80||hello.demo.svc.clusterset.local" in clusters
    assert not [c for c in clusters if "billing" in c]  # another workspace, not granted
    assert "outbound|80||greeter.demo.svc.clusterset.local" in updated
    assert elapsed < 2.0, elapsed


def cluster_name(value: bytes) -> str:
    from envoy.config.cluster.v3 import cluster_pb2

    return str(cluster_pb2.Cluster.FromString(value).name)
