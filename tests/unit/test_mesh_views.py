"""What a node may claim: the mesh refuses, with a reason, what the fleet cannot serve."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from kontinuum.bootstrap import METADATA_PREFIX, proxy_metadata
from kontinuum.mesh import Mesh
from kontinuum.xds import Peer, SnapshotCache
from tests.support.fleet import load_into

FLEET = Path(__file__).parents[2] / "examples" / "fleet"
PEER = Peer(address="test")


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    shutil.copytree(FLEET, tmp_path / "fleet")
    return tmp_path / "fleet"


@pytest.fixture
def mesh(fleet_dir: Path) -> Mesh:
    mesh = Mesh(SnapshotCache())
    load_into(mesh, fleet_dir)
    return mesh


def node(cluster: str = "eu-central", **metadata: object) -> base_pb2.Node:
    result = base_pb2.Node(id="n", cluster=cluster)
    declared: dict[str, object] = dict(proxy_metadata(namespace="demo", role="sidecar"))
    declared.update({METADATA_PREFIX + k.replace("_", "-"): v for k, v in metadata.items()})
    result.metadata.update(declared)
    return result


def test_a_declared_sidecar_gets_its_view(mesh: Mesh) -> None:
    assert mesh.resolve_view(node(), PEER) == "sidecar/eu-central/demo:15001"
    assert mesh.cache.snapshot("sidecar/eu-central/demo:15001") is not None


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        (node(cluster="mars"), "cluster 'mars' is not in the fleet"),
        (node(namespace=""), "no valid namespace"),
        (node(namespace="Not_A_Label"), "no valid namespace"),
        (node(role="ingress"), "not served yet"),
        (node(outbound_port="²"), "is not a port"),
        (node(outbound_port="70000"), "is not a port"),
        (node(outbound_port=15002), "must be a string"),
    ],
)
def test_claims_the_fleet_cannot_serve_are_refused(
    mesh: Mesh, claim: base_pb2.Node, reason: str
) -> None:
    with pytest.raises(PermissionError, match=reason):
        mesh.resolve_view(claim, PEER)


def test_views_of_a_cluster_that_left_the_fleet_are_dropped(mesh: Mesh, fleet_dir: Path) -> None:
    mesh.resolve_view(node(cluster="us-east"), PEER)
    clusters = fleet_dir / "clusters.yaml"
    documents = clusters.read_text().split("---")
    clusters.write_text("---".join(d for d in documents if "name: us-east" not in d))
    shutil.rmtree(fleet_dir / "clusters" / "us-east")
    load_into(mesh, fleet_dir)
    assert mesh.resolve_view(node(), PEER)  # the others go on
    with pytest.raises(PermissionError, match="us-east"):
        mesh.resolve_view(node(cluster="us-east"), PEER)
