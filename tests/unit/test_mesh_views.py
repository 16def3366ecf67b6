"""What a node may claim: the mesh refuses, with a reason, what the fleet cannot serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from kontinuum.bootstrap import METADATA_PREFIX, proxy_metadata
from kontinuum.mesh import Mesh
from kontinuum.xds import Peer, SnapshotCache
from kontinuum.xds.types import LISTENER
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
        (node(role="mystery"), "role 'mystery' is not one of sidecar, gateway, ingress"),
        (node(role="ingress"), "an ingress gateway declares the Gateway it runs"),
        (node(role="ingress", gateway="front"), "no accepted Gateway demo/front in cluster"),
        (node(outbound_port="²"), "is not a port"),
        (node(outbound_port="70000"), "is not a port"),
        (node(outbound_port=15002), "must be a string"),
        (node(service="hello"), "declared without its inbound-port"),
        (node(inbound_port="8080"), "need a service"),
        (node(service="Hello", inbound_port="8080"), "is not a DNS label"),
        (node(service="hello", inbound_port="0"), "inbound port '0' is not a port"),
        (node(service="hello", inbound_port="8080", inbound_address="here:1"), "not IP:PORT"),
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


def inbound_listener(mesh: Mesh, view: str) -> dict[str, object] | None:
    snapshot = mesh.cache.snapshot(view)
    assert snapshot is not None
    resource = snapshot.resources(LISTENER).get("inbound")
    return None if resource is None else json_format.MessageToDict(resource.message)


def test_a_sidecar_of_a_service_gets_an_inbound_listener(mesh: Mesh) -> None:
    claim = node(service="hello", inbound_port="9080", inbound_address="127.0.0.11:8080")
    view = mesh.resolve_view(claim, PEER)
    assert view == "sidecar/eu-central/demo:15001/hello@127.0.0.11:8080>9080"
    listener = inbound_listener(mesh, view)
    assert listener is not None
    assert listener["address"] == {"socketAddress": {"address": "127.0.0.11", "portValue": 8080}}
    assert "inbound|80||hello.demo.svc.cluster.local" in json.dumps(listener)


def test_the_inbound_listener_listens_on_0_0_0_0_15006_by_default(mesh: Mesh) -> None:
    view = mesh.resolve_view(node(service="hello", inbound_port="9080"), PEER)
    listener = inbound_listener(mesh, view)
    assert listener is not None
    assert listener["address"] == {"socketAddress": {"address": "0.0.0.0", "portValue": 15006}}


def test_a_service_the_fleet_lacks_gets_no_inbound_listener(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    view = mesh.resolve_view(node(service="nothing", inbound_port="9080"), PEER)
    assert inbound_listener(mesh, view) is None
    assert "no Service demo/nothing with a TCP port in cluster eu-central" in caplog.text


def test_an_east_west_gateway_gets_its_listener_and_nothing_once_undeclared(
    mesh: Mesh, fleet_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    view = mesh.resolve_view(node(role="gateway"), PEER)
    declared = mesh.cache.snapshot(view)
    assert declared is not None
    assert list(declared.resources(LISTENER)) == ["east-west"]
    (fleet_dir / "gateways.yaml").unlink()
    load_into(mesh, fleet_dir)
    assert view == "gateway/eu-central"
    snapshot = mesh.cache.snapshot(view)
    assert snapshot is not None
    assert not snapshot.resources(LISTENER)
    assert "no east-west Gateway (class kontinuum-east-west" in caplog.text


def api_listeners(mesh: Mesh, view: str) -> list[str]:
    snapshot = mesh.cache.snapshot(view)
    assert snapshot is not None
    return sorted(
        name
        for name, resource in snapshot.resources(LISTENER).items()
        if resource.message.HasField("api_listener")
    )


def test_only_proxyless_grpc_clients_get_api_listeners(mesh: Mesh) -> None:
    # Envoy refuses every api_listener received over LDS but one, and logs it: a sidecar
    # gets none; gRPC's own xDS client (as it names itself) gets one per service port.
    envoy = node()
    envoy.user_agent_name = "envoy"
    grpc_client = node()
    grpc_client.user_agent_name = "gRPC C-core linux Python"
    sidecar = mesh.resolve_view(envoy, PEER)
    proxyless = mesh.resolve_view(grpc_client, PEER)
    assert (sidecar, proxyless) == (
        "sidecar/eu-central/demo:15001",
        "sidecar/eu-central/demo:15001+grpc",
    )
    assert api_listeners(mesh, sidecar) == []
    assert "hello.demo.svc.clusterset.local:80" in api_listeners(mesh, proxyless)
    snapshot = mesh.cache.snapshot(sidecar)
    assert snapshot is not None
    assert "outbound" in snapshot.resources(LISTENER)
