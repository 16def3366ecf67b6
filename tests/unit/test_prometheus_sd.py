"""The file Prometheus discovers the Envoys from, and the configuration that reads it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dashboards.rules import ENVOY_JOB, JOB
from kontinuum.bootstrap import proxy_metadata
from kontinuum.mesh import Mesh
from kontinuum.telemetry.prometheus_sd import (
    ServiceDiscoveryFile,
    accepting,
    peer_host,
    scrape_config,
)
from kontinuum.xds import Peer, SnapshotCache
from kontinuum.xds.stream import Connection
from tests.support.fleet import load_into


@dataclass
class Stream:
    connection: Connection


@dataclass
class Server:
    """What the discovery file reads of an XdsServer: its streams."""

    connected: list[Stream] = field(default_factory=list)

    def streams(self) -> tuple[Stream, ...]:
        return tuple(self.connected)


@dataclass
class Probe:
    """A stand-in for the TCP probe: the addresses that accept, and what was asked."""

    accepting: set[str] = field(default_factory=set)
    asked: list[list[str]] = field(default_factory=list)

    async def __call__(self, addresses: Sequence[str]) -> set[str]:
        self.asked.append(list(addresses))
        return self.accepting & set(addresses)


def stream(mesh: Mesh, node_id: str, peer: str, stats_port: int | None = 15090) -> Stream:
    metadata = proxy_metadata(namespace="demo", role="sidecar", outbound_port=15001)
    if stats_port is not None:
        metadata["kontinuum.io/stats-port"] = str(stats_port)
    node = base_pb2.Node(id=node_id, cluster="eu-central")
    node.metadata.CopyFrom(struct_pb2.Struct())
    node.metadata.update(metadata)
    view = mesh.resolve_view(node, Peer(peer))
    return Stream(Connection(node=node, view=view, peer=Peer(peer)))


def mesh() -> Mesh:
    found = Mesh(SnapshotCache())
    load_into(found, Path(__file__).parents[2] / "examples" / "fleet")
    return found


def read(path: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(path.read_text())
    return loaded


def meta(node: str) -> dict[str, str]:
    return {
        "__meta_kontinuum_cluster": "eu-central",
        "__meta_kontinuum_node": node,
        "__meta_kontinuum_role": "sidecar",
        "__meta_kontinuum_workspace": "demo",
    }


def test_peer_hosts_as_grpcio_writes_them() -> None:
    assert peer_host("ipv4:10.0.0.1:5000") == "10.0.0.1"
    assert peer_host("ipv6:%5B::1%5D:5000") == "::1"  # grpcio URL-quotes the brackets
    assert peer_host("ipv6:%5Bfd00::2%5D:40000") == "fd00::2"
    assert peer_host("ipv6:[::1]:5000") == "::1"
    assert peer_host("unix:/tmp/x") == ""
    assert peer_host("unix-abstract:x") == ""


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_the_peer_of_a_real_grpc_stream_over_ipv6() -> None:
    peers: list[str] = []

    class Health(health_pb2_grpc.HealthServicer):
        async def Check(  # noqa: N802 (gRPC's name)
            self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            peers.append(context.peer())
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port("[::1]:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(None)
    (peer,) = peers
    assert peer.startswith("ipv6:%5B::1%5D:"), peer
    assert peer_host(peer) == "::1"


async def test_connected_proxies_are_targets_who_they_are_in_meta_labels(tmp_path: Path) -> None:
    served = mesh()
    server = Server(
        [
            stream(served, "frontend-1", "ipv4:10.0.0.7:40000"),
            stream(served, "frontend-2", "ipv6:%5Bfd00::2%5D:40000", stats_port=15091),
            stream(served, "no-stats", "ipv4:10.0.0.8:40000", stats_port=None),
        ]
    )
    path = tmp_path / "sd" / "envoys.json"
    sd = ServiceDiscoveryFile(path, server, served, probe=Probe())
    assert await sd.refresh() is True
    # No target labels: Envoy's own series carry kontinuum_cluster, ... (a target label
    # of the same name would rename them exported_*). __meta_* stay on the targets page.
    assert read(path) == [
        {"targets": ["10.0.0.7:15090"], "labels": meta("frontend-1")},
        {"targets": ["[fd00::2]:15091"], "labels": meta("frontend-2")},
    ]
    assert await sd.refresh() is False  # unchanged: not written again
    assert [p.name for p in path.parent.iterdir()] == ["envoys.json"]  # no temporary left


async def test_an_address_is_one_target_the_proxy_last_connected_there(tmp_path: Path) -> None:
    served = mesh()
    old = stream(served, "web-1-old", "ipv4:10.0.0.7:40000")
    server = Server([old])
    path = tmp_path / "envoys.json"
    sd = ServiceDiscoveryFile(path, server, served, probe=Probe({"10.0.0.7:15090"}))
    await sd.refresh()
    # The pod restarted with the same IP, under a new node id; its old stream lingers.
    server.connected.append(stream(served, "web-1-new", "ipv4:10.0.0.7:40001"))
    await sd.refresh()
    assert read(path) == [{"targets": ["10.0.0.7:15090"], "labels": meta("web-1-new")}]
    server.connected.remove(old)
    await sd.refresh()
    assert read(path) == [{"targets": ["10.0.0.7:15090"], "labels": meta("web-1-new")}]


async def test_a_disconnected_proxy_stays_listed_while_its_stats_port_accepts(
    tmp_path: Path,
) -> None:
    served = mesh()
    now = [0.0]
    server = Server(
        [
            stream(served, "alive", "ipv4:10.0.0.7:40000"),
            stream(served, "stopped", "ipv4:10.0.0.8:40000"),
        ]
    )
    probe = Probe({"10.0.0.7:15090"})
    path = tmp_path / "envoys.json"
    sd = ServiceDiscoveryFile(path, server, served, retain=3600, probe=probe, clock=lambda: now[0])
    await sd.refresh()
    assert probe.asked == []  # connected proxies are not probed
    server.connected.clear()
    now[0] = 10.0
    assert await sd.refresh() is True
    assert probe.asked == [["10.0.0.7:15090", "10.0.0.8:15090"]]
    # The one that stopped is gone at once: never scraped as down. The one whose control
    # plane is away stays, so that Prometheus sees it report so.
    assert [g["targets"] for g in read(path)] == [["10.0.0.7:15090"]]
    now[0] = 3599.0
    assert await sd.refresh() is False
    now[0] = 3601.0  # the upper bound: even an answering proxy is dropped
    assert await sd.refresh() is True
    assert read(path) == []
    assert len(probe.asked) == 2  # nothing left to ask about: not asked again


async def test_the_probe_is_a_tcp_connection() -> None:
    listening = socket.socket()
    closed = socket.socket()
    try:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses connections
        open_address = f"127.0.0.1:{listening.getsockname()[1]}"
        closed_address = f"127.0.0.1:{closed.getsockname()[1]}"
        found = await asyncio.wait_for(accepting([open_address, closed_address], 1.0), 5)
        assert found == {open_address}
    finally:
        listening.close()
        closed.close()


def test_the_scrape_configuration_reads_the_file() -> None:
    config = scrape_config(
        admin_address="127.0.0.1:18001",
        sd_file=Path("/var/lib/kontinuum/envoys.json"),
        rule_files=[Path("/etc/prometheus/kontinuum.rules.yaml")],
        scrape_interval="10s",
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {JOB, ENVOY_JOB}  # the jobs the alerts select
    assert jobs["kontinuum"]["static_configs"] == [{"targets": ["127.0.0.1:18001"]}]
    assert jobs["kontinuum-envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["kontinuum-envoy"]["file_sd_configs"][0]["files"] == [
        "/var/lib/kontinuum/envoys.json"
    ]
    assert config["rule_files"] == ["/etc/prometheus/kontinuum.rules.yaml"]
    assert config["global"] == {"scrape_interval": "10s", "evaluation_interval": "10s"}
