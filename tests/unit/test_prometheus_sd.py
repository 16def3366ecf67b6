"""The file Prometheus discovers the Envoys from, and the configuration that reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from kontinuum.bootstrap import proxy_metadata
from kontinuum.mesh import Mesh
from kontinuum.telemetry.prometheus_sd import ServiceDiscoveryFile, peer_host, scrape_config
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


def test_peer_hosts() -> None:
    assert peer_host("ipv4:10.0.0.1:5000") == "10.0.0.1"
    assert peer_host("ipv6:[::1]:5000") == "::1"
    assert peer_host("unix:/tmp/x") == ""


def test_connected_proxies_are_targets_with_their_mesh_labels(tmp_path: Path) -> None:
    served = mesh()
    server = Server(
        [
            stream(served, "frontend-1", "ipv4:10.0.0.7:40000"),
            stream(served, "frontend-2", "ipv6:[fd00::2]:40000", stats_port=15091),
            stream(served, "no-stats", "ipv4:10.0.0.8:40000", stats_port=None),
        ]
    )
    path = tmp_path / "sd" / "envoys.json"
    sd = ServiceDiscoveryFile(path, server, served)
    assert sd.refresh() is True
    assert read(path) == [
        {
            "targets": ["10.0.0.7:15090"],
            "labels": {
                "kontinuum_cluster": "eu-central",
                "kontinuum_node": "frontend-1",
                "kontinuum_role": "sidecar",
                "kontinuum_workspace": "demo",
            },
        },
        {
            "targets": ["[fd00::2]:15091"],
            "labels": {
                "kontinuum_cluster": "eu-central",
                "kontinuum_node": "frontend-2",
                "kontinuum_role": "sidecar",
                "kontinuum_workspace": "demo",
            },
        },
    ]
    assert sd.refresh() is False  # unchanged: not written again
    assert [p.name for p in path.parent.iterdir()] == ["envoys.json"]  # no temporary left


def test_a_disconnected_proxy_stays_a_target_for_a_while(tmp_path: Path) -> None:
    served = mesh()
    now = [0.0]
    server = Server([stream(served, "frontend-1", "ipv4:10.0.0.7:40000")])
    path = tmp_path / "envoys.json"
    sd = ServiceDiscoveryFile(path, server, served, retain=60, clock=lambda: now[0])
    sd.refresh()
    server.connected.clear()
    now[0] = 59.0
    assert sd.refresh() is False
    assert len(read(path)) == 1  # so that Prometheus sees it down if it died
    now[0] = 61.0
    assert sd.refresh() is True
    assert read(path) == []


def test_the_scrape_configuration_reads_the_file() -> None:
    config = scrape_config(
        admin_address="127.0.0.1:18001",
        sd_file=Path("/var/lib/kontinuum/envoys.json"),
        rule_files=[Path("/etc/prometheus/kontinuum.rules.yaml")],
        scrape_interval="10s",
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["kontinuum"]["static_configs"] == [{"targets": ["127.0.0.1:18001"]}]
    assert jobs["kontinuum-envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["kontinuum-envoy"]["file_sd_configs"][0]["files"] == [
        "/var/lib/kontinuum/envoys.json"
    ]
    assert config["rule_files"] == ["/etc/prometheus/kontinuum.rules.yaml"]
    assert config["global"] == {"scrape_interval": "10s", "evaluation_interval": "10s"}
