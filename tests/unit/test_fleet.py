"""The fleet's standard YAML: the example loads; every bad input is named and dropped."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from kontinuum.control.fleet import parse_cluster_objects, parse_fleet_objects
from kontinuum.control.mcs import build_plane
from kontinuum.control.model import (
    ClusterSite,
    ConfigError,
    Endpoint,
    EndpointPort,
    Fleet,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.control.objects import Document
from kontinuum.control.plane import Condition
from kontinuum.discovery.static import load_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
FILE = "clusters/eu/web.yaml"

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
"""

SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: ["127.0.0.1"]
"""

EXPORT = """
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: default
"""

PROFILE = """
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: eu
  labels:
    topology.kubernetes.io/region: eu-central-1
    topology.kubernetes.io/zone: eu-central-1a
    kontinuum.io/network: backbone
"""


def docs(*texts: str, file: str = FILE) -> list[Document]:
    bodies = yaml.safe_load_all("\n---\n".join(texts))
    return [Document(file, body, i) for i, body in enumerate(bodies, start=1)]


def cluster(*texts: str) -> tuple[SiteSnapshot, list[str]]:
    snapshot, errors = parse_cluster_objects("eu", docs(*texts))
    return snapshot, [str(e) for e in errors]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# --- the example fleet ------------------------------------------------------------------


def test_the_example_fleet_loads_without_errors() -> None:
    fleet, errors = load_fleet(EXAMPLE)
    assert errors == []
    assert fleet.sites == (
        ClusterSite("edge-paris", "eu-central-1", "eu-central-1-par-1a", "edge-paris"),
        ClusterSite("eu-central", "eu-central-1", "eu-central-1a", "backbone"),
        ClusterSite("us-east", "us-east-1", "us-east-1a", "backbone"),
    )
    services = {s.cluster: sorted(str(x.ref) for x in s.services) for s in fleet}
    assert services == {
        "edge-paris": ["demo/hello"],
        "eu-central": ["demo/frontend", "demo/hello", "payments/billing"],
        "us-east": ["demo/hello"],
    }
    exports = {s.cluster: sorted(str(x.ref) for x in s.exports) for s in fleet}
    assert exports == {
        "edge-paris": ["demo/hello"],
        "eu-central": ["demo/hello", "payments/billing"],
        "us-east": ["demo/hello"],
    }
    eu = fleet.snapshot("eu-central")
    assert eu is not None
    assert not eu.stale
    billing = eu.service("payments", "billing")
    assert billing is not None
    assert billing.workspace == "payments"
    assert billing.ports == (ServicePort(80, "http", "TCP", "http", 8080),)
    hello = eu.endpoints_of("demo", "hello")
    assert [e.addresses for e in hello] == [("127.0.0.11",), ("127.0.0.12",)]
    assert hello[0] == Endpoint(
        cluster="eu-central",
        namespace="demo",
        service="hello",
        addresses=("127.0.0.11",),
        ports=(EndpointPort(8080, "http", "TCP", "http"),),
        zone="eu-central-1a",
        node_name="eu-node-1",
    )
    addresses = {s.cluster: [a for e in s.endpoints for a in e.addresses] for s in fleet}
    assert addresses["us-east"] == ["127.0.0.21", "127.0.0.22"]
    assert addresses["edge-paris"] == ["127.0.0.31"]
    assert eu.exports[0] == ServiceExport(
        "eu-central", "demo", "hello", datetime(2026, 1, 5, 9, tzinfo=UTC)
    )


def test_a_valid_cluster_loads_with_kubernetes_defaults() -> None:
    snapshot, errors = cluster(SERVICE, SLICE, EXPORT)
    assert errors == []
    (service,) = snapshot.services
    assert service.type == "ClusterIP"
    assert service.workspace == "default"
    assert service.ports == (ServicePort(80, "http", "TCP", None, 8080),)
    (endpoint,) = snapshot.endpoints
    # conditions absent: ready and serving are read as true, terminating as false
    assert (endpoint.ready, endpoint.serving, endpoint.terminating) == (True, True, False)
    assert snapshot.exports == (ServiceExport("eu", "default", "web", None),)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ("{}", (True, True, False)),
        ("{ready: false}", (False, False, False)),
        ("{ready: false, serving: true, terminating: true}", (False, True, True)),
        ("{ready: true, serving: false}", (True, False, False)),
    ],
)
def test_endpoint_conditions(conditions: str, expected: tuple[bool, bool, bool]) -> None:
    text = SLICE + f"  conditions: {conditions}\n"
    snapshot, errors = cluster(SERVICE, text)
    assert errors == []
    (e,) = snapshot.endpoints
    assert (e.ready, e.serving, e.terminating) == expected


def test_an_absent_or_empty_namespace_is_default() -> None:
    no_namespace = edit(
        SERVICE, "metadata: {name: web, namespace: default}", "metadata:\n  name: web"
    )
    empty = edit(EXPORT, "namespace: default", "namespace: ''")
    snapshot, errors = cluster(no_namespace, empty)
    assert errors == []
    assert snapshot.services[0].namespace == "default"
    assert snapshot.exports[0].namespace == "default"


def test_a_headless_service_needs_no_port_and_ipv6_slices_load() -> None:
    headless = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {clusterIP: None}"
    v6 = edit(edit(SLICE, "IPv4", "IPv6"), '"127.0.0.1"', '"fd00::1", "::1"')
    snapshot, errors = cluster(headless, SERVICE, v6)
    assert errors == []
    assert snapshot.service("default", "db") is not None
    assert snapshot.services[0].type == "Headless"
    assert snapshot.endpoints[0].addresses == ("fd00::1", "::1")


def test_a_kubectl_list_is_read_item_by_item() -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [yaml.safe_load(SERVICE), yaml.safe_load(SLICE)],
    }
    snapshot, errors = cluster(yaml.safe_dump(listed))
    assert errors == []
    assert len(snapshot.services) == 1
    assert len(snapshot.endpoints) == 1


# --- every rule, with its exact message ---------------------------------------------------

TWO_PORTS = edit(
    SERVICE,
    "- {name: http, port: 80, targetPort: 8080}",
    "- {name: http, port: 80}\n  - {name: admin, port: 70000}",
)
LABEL = "metadata.labels[kubernetes.io/service-name]"
DNS_LABEL = "must be a DNS label (a-z, 0-9 and '-', at most 63 characters)"
SVC_NAME = "must be a DNS label starting with a letter (a-z, 0-9 and '-', at most 63 characters)"

CASES = [
    pytest.param(
        TWO_PORTS,
        "Service default/web: spec.ports[1].port: must be between 1 and 65535, got 70000",
        id="port-range",
    ),
    pytest.param(
        edit(SERVICE, "port: 80,", "port: '80',"),
        "Service default/web: spec.ports[0].port: must be an integer, got string",
        id="port-type",
    ),
    pytest.param(
        edit(SERVICE, "name: web", "name: Web"),
        f"Service default/Web: metadata.name: {SVC_NAME}, got 'Web'",
        id="service-name",
    ),
    pytest.param(
        edit(SERVICE, "name: web", "name: 1web"),
        f"Service default/1web: metadata.name: {SVC_NAME}, got '1web'",
        id="service-name-digit",
    ),
    pytest.param(
        edit(SERVICE, "namespace: default", "namespace: my_ns"),
        f"Service my_ns/web: metadata.namespace: {DNS_LABEL}, got 'my_ns'",
        id="namespace",
    ),
    pytest.param(
        edit(SERVICE, "metadata: {name: web, namespace: default}", "metadata: {namespace: x}"),
        "Service (document 1): metadata.name: required",
        id="name-missing",
    ),
    pytest.param(
        edit(SERVICE, "port: 80,", "port: 80, protocol: HTTP,"),
        "Service default/web: spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got 'HTTP'",
        id="protocol",
    ),
    pytest.param(
        edit(TWO_PORTS, "name: admin, port: 70000", "port: 81"),
        "Service default/web: spec.ports[1].name: required when a Service has more than one port",
        id="port-name-required",
    ),
    pytest.param(
        edit(TWO_PORTS, "name: admin, port: 70000", "name: http, port: 81"),
        "Service default/web: spec.ports[1].name: duplicate port name 'http' (also spec.ports[0])",
        id="port-name-duplicate",
    ),
    pytest.param(
        edit(TWO_PORTS, "name: admin, port: 70000", "name: admin, port: 80"),
        "Service default/web: spec.ports[1].port: duplicate port 80/TCP (also spec.ports[0])",
        id="port-duplicate",
    ),
    pytest.param(
        edit(SERVICE, "targetPort: 8080", "targetPort: not_a_name"),
        "Service default/web: spec.ports[0].targetPort: must be a port number or a port name "
        "(at most 15 characters: a-z, 0-9 and '-', with at least one letter), got 'not_a_name'",
        id="target-port",
    ),
    pytest.param(
        edit(SERVICE, "ports:\n  - {name: http, port: 80, targetPort: 8080}", "type: ClusterIP"),
        "Service default/web: spec.ports: required: a Service that is not headless needs a port",
        id="ports-required",
    ),
    pytest.param(
        edit(SERVICE, "spec:", "spec:\n  type: ExternalName"),
        "Service default/web: spec.type: ExternalName Services are not supported "
        "(no endpoints to route to)",
        id="external-name",
    ),
    pytest.param(
        edit(SLICE, "  labels: {kubernetes.io/service-name: web}\n", ""),
        f"EndpointSlice default/web-1: {LABEL}: required: it names the Service this "
        "EndpointSlice belongs to",
        id="slice-without-service-label",
    ),
    pytest.param(
        edit(SLICE, "service-name: web}", "service-name: api}"),
        f"EndpointSlice default/web-1: {LABEL}: no Service default/api in cluster eu",
        id="slice-of-missing-service",
    ),
    pytest.param(
        edit(SLICE, "{name: http, port: 8080}", "{name: grpc, port: 8080}"),
        "EndpointSlice default/web-1: ports[0].name: Service default/web has no port named 'grpc'",
        id="slice-port-name",
    ),
    pytest.param(
        edit(SLICE, "port: 8080", "port: 0"),
        "EndpointSlice default/web-1: ports[0].port: must be between 1 and 65535, got 0",
        id="slice-port-range",
    ),
    pytest.param(
        edit(SLICE, '"127.0.0.1"', '"127.0.0.1", "127.0.0.300"'),
        "EndpointSlice default/web-1: endpoints[0].addresses[1]: must be a valid IPv4 address, "
        "got '127.0.0.300'",
        id="ipv4-address",
    ),
    pytest.param(
        edit(SLICE, '"127.0.0.1"', '"fd00::1"'),
        "EndpointSlice default/web-1: endpoints[0].addresses[0]: must be a valid IPv4 address, "
        "got 'fd00::1'",
        id="ipv6-in-ipv4-slice",
    ),
    pytest.param(
        edit(SLICE, "addressType: IPv4", "addressType: IPv6"),
        "EndpointSlice default/web-1: endpoints[0].addresses[0]: must be a valid IPv6 address, "
        "got '127.0.0.1'",
        id="ipv4-in-ipv6-slice",
    ),
    pytest.param(
        edit(SLICE, '"127.0.0.1"', '"0.0.0.0"'),
        "EndpointSlice default/web-1: endpoints[0].addresses[0]: must be a unicast address, "
        "got '0.0.0.0'",
        id="unspecified-address",
    ),
    pytest.param(
        edit(SLICE, 'addresses: ["127.0.0.1"]', "addresses: []"),
        "EndpointSlice default/web-1: endpoints[0].addresses: must hold at least one address",
        id="no-address",
    ),
    pytest.param(
        edit(SLICE, "addressType: IPv4", "addressType: FQDN"),
        "EndpointSlice default/web-1: addressType: FQDN is not supported: use IPv4 or IPv6 "
        "addresses",
        id="fqdn",
    ),
    pytest.param(
        edit(SLICE, "addressType: IPv4", "addressType: IPv5"),
        "EndpointSlice default/web-1: addressType: must be one of IPv4, IPv6, FQDN, got 'IPv5'",
        id="address-type",
    ),
    pytest.param(
        edit(SLICE, "addressType: IPv4\n", ""),
        "EndpointSlice default/web-1: addressType: required",
        id="address-type-required",
    ),
    pytest.param(
        SLICE + "  conditions: {ready: 'yes'}\n",
        "EndpointSlice default/web-1: endpoints[0].conditions.ready: must be true or false, "
        "got string",
        id="condition-type",
    ),
    pytest.param(
        edit(EXPORT, "name: web", "name: api"),
        "ServiceExport default/api: metadata.name: no Service default/api in cluster eu to export",
        id="export-of-missing-service",
    ),
    pytest.param(
        EXPORT + "  creationTimestamp: yesterday\n",
        "ServiceExport default/web: metadata.creationTimestamp: must be an RFC 3339 time such "
        "as 2025-01-31T12:00:00Z, got 'yesterday'",
        id="export-timestamp",
    ),
    pytest.param(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}",
        "Deployment web: kind: unknown kind 'Deployment' here (expected one of EndpointSlice, "
        "Service, ServiceExport)",
        id="unknown-kind",
    ),
    pytest.param(
        edit(SLICE, "discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
        "EndpointSlice default/web-1: apiVersion: must be discovery.k8s.io/v1 for kind "
        "EndpointSlice, got 'discovery.k8s.io/v1beta1'",
        id="unknown-api-version",
    ),
    pytest.param(
        "metadata: {name: web}",
        "document 2: kind: required",
        id="kind-missing",
    ),
    pytest.param(
        "kind: ''\nmetadata: {name: web}",
        "document 2: kind: required",
        id="kind-empty",
    ),
    pytest.param(
        "kind: [Service]\nmetadata: {name: web}",
        "document 2: kind: must be a string, got list",
        id="kind-type",
    ),
    pytest.param(
        "- just\n- a list",
        "document 2: must be a Kubernetes object (a mapping), got list",
        id="not-an-object",
    ),
    pytest.param(
        PROFILE,
        "ClusterProfile eu: kind: a ClusterProfile does not belong to one cluster: put it in "
        "the fleet directory's *.yaml",
        id="profile-in-a-cluster",
    ),
    pytest.param(
        edit(
            SERVICE,
            "metadata: {name: web, namespace: default}",
            "metadata:\n  name: web\n  labels: {app: 'a b'}",
        ),
        "Service default/web: metadata.labels[app]: must be a label value (at most 63 "
        "characters: letters, digits, '-', '_' and '.', starting and ending with a letter or "
        "digit), got 'a b'",
        id="label-value",
    ),
]


@pytest.mark.parametrize(("bad", "message"), CASES)
def test_each_rule_names_file_object_and_field(bad: str, message: str) -> None:
    # The valid objects come first, so the bad one is also a duplicate-free replacement.
    _snapshot, errors = cluster(SERVICE, bad) if "kind: Service\n" not in bad else cluster(bad)
    assert errors == [f"{FILE}: {message}"]


@pytest.mark.parametrize(("bad", "message"), CASES)
def test_an_object_with_an_error_is_not_applied_at_all(bad: str, message: str) -> None:
    body = yaml.safe_load(bad)
    kind = body.get("kind") if isinstance(body, dict) else None
    texts = [bad] if kind == "Service" else [SERVICE, bad]
    snapshot, _ = parse_cluster_objects("eu", docs(*texts))
    if kind == "Service":
        assert snapshot.services == ()
    elif kind == "EndpointSlice":
        assert snapshot.endpoints == ()
    elif kind == "ServiceExport" and "no Service" in message:
        # kept, for its status to say so (MCS Valid=False, NoService), and merged nowhere
        (export,) = snapshot.exports
        plane = build_plane(Fleet((ClusterSite("eu"),), (snapshot,)))
        (status,) = [s for s in plane.exports if s.name == export.name]
        assert status.conditions[0] == Condition(
            "Valid", "False", "NoService", f"no Service default/{export.name} in cluster eu"
        )
        assert all(s.name != export.name for s in plane.services)
    elif kind == "ServiceExport":
        assert snapshot.exports == ()


def test_one_bad_field_drops_the_whole_object_and_nothing_else() -> None:
    bad_slice = edit(
        SLICE, '- addresses: ["127.0.0.1"]', '- addresses: ["127.0.0.1"]\n- addresses: ["x"]'
    )
    snapshot, errors = cluster(SERVICE, bad_slice, EXPORT)
    assert errors == [
        f"{FILE}: EndpointSlice default/web-1: endpoints[1].addresses[0]: must be a valid IPv4 "
        "address, got 'x'"
    ]
    assert snapshot.endpoints == ()  # not even the valid first endpoint
    assert [s.name for s in snapshot.services] == ["web"]
    assert [e.name for e in snapshot.exports] == ["web"]


def test_a_duplicate_object_is_reported_and_the_first_kept() -> None:
    second = edit(SERVICE, "port: 80,", "port: 81,")
    snapshot, errors = parse_cluster_objects(
        "eu", [*docs(SERVICE), *docs(second, file="clusters/eu/z.yaml")]
    )
    assert [str(e) for e in errors] == [
        f"clusters/eu/z.yaml: Service default/web: metadata.name: duplicate Service, also in {FILE}"
    ]
    assert snapshot.services[0].ports[0].port == 80


def test_errors_carry_their_parts() -> None:
    _, errors = parse_cluster_objects("eu", docs(EXPORT, TWO_PORTS))
    assert errors[0] == ConfigError(
        file=FILE,
        message="must be between 1 and 65535, got 70000",
        kind="Service",
        namespace="default",
        name="web",
        field="spec.ports[1].port",
        document=2,
    )


# --- fleet-wide objects ---------------------------------------------------------------------


def test_cluster_profiles_give_the_sites() -> None:
    sites, errors = parse_fleet_objects(docs(PROFILE, file="fleet.yaml"))
    assert errors == []
    assert sites == (ClusterSite("eu", "eu-central-1", "eu-central-1a", "backbone"),)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(
            edit(PROFILE, "name: eu", "name: EU"),
            f"ClusterProfile EU: metadata.name: {DNS_LABEL}, got 'EU'",
            id="name",
        ),
        pytest.param(
            edit(PROFILE, "region: eu-central-1", "region: 1"),
            "ClusterProfile eu: metadata.labels[topology.kubernetes.io/region]: must be a "
            "string, got integer",
            id="label-type",
        ),
        pytest.param(
            edit(PROFILE, "v1alpha1", "v1"),
            "ClusterProfile eu: apiVersion: must be multicluster.x-k8s.io/v1alpha1 for kind "
            "ClusterProfile, got 'multicluster.x-k8s.io/v1'",
            id="api-version",
        ),
        pytest.param(
            SERVICE,
            "Service default/web: kind: a Service does not belong to the whole fleet: put it in "
            "clusters/<cluster>/",
            id="service-fleet-wide",
        ),
        pytest.param(
            PROFILE + "---\n" + PROFILE,
            "ClusterProfile eu: metadata.name: duplicate ClusterProfile, also in fleet.yaml",
            id="duplicate",
        ),
    ],
)
def test_fleet_wide_rules(bad: str, message: str) -> None:
    sites, errors = parse_fleet_objects(docs(bad, file="fleet.yaml"))
    assert [str(e) for e in errors] == [f"fleet.yaml: {message}"]
    assert len(sites) == (1 if "duplicate" in message else 0)


# --- the directory ---------------------------------------------------------------------------


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "fleet")
    return tmp_path / "fleet"


def test_a_cluster_directory_without_a_cluster_profile_is_not_loaded(fleet_dir: Path) -> None:
    shutil.copytree(fleet_dir / "clusters" / "us-east", fleet_dir / "clusters" / "asia")
    fleet, errors = load_fleet(fleet_dir)
    assert [str(e) for e in errors] == [
        "clusters/asia: no ClusterProfile named 'asia' in the fleet-wide *.yaml files: this "
        "cluster's objects are not loaded"
    ]
    assert fleet.snapshot("asia") is None
    assert [s.cluster for s in fleet] == ["edge-paris", "eu-central", "us-east"]


def test_a_file_that_is_not_yaml_is_dropped_whole(fleet_dir: Path) -> None:
    (fleet_dir / "clusters" / "us-east" / "broken.yml").write_text("kind: Service\n  bad: [\n")
    fleet, errors = load_fleet(fleet_dir)
    assert len(errors) == 1
    assert str(errors[0]).startswith("clusters/us-east/broken.yml: line 2, column 6: invalid YAML")
    us = fleet.snapshot("us-east")
    assert us is not None
    assert [str(s.ref) for s in us.services] == ["demo/hello"]


def test_a_bad_object_in_a_file_leaves_the_rest_of_the_file(fleet_dir: Path) -> None:
    path = fleet_dir / "clusters" / "eu-central" / "billing.yaml"
    path.write_text(edit(path.read_text(), '"127.0.0.15"', '"127.0.0.256"'))
    fleet, errors = load_fleet(fleet_dir)
    assert [str(e) for e in errors] == [
        "clusters/eu-central/billing.yaml: EndpointSlice payments/billing-eu1: "
        "endpoints[1].addresses[0]: must be a valid IPv4 address, got '127.0.0.256'"
    ]
    eu = fleet.snapshot("eu-central")
    assert eu is not None
    assert eu.service("payments", "billing") is not None
    assert eu.endpoints_of("payments", "billing") == ()
    assert [str(e.ref) for e in eu.exports] == ["demo/hello", "payments/billing"]
    assert len(eu.endpoints_of("demo", "hello")) == 2


def test_a_profile_without_a_directory_is_an_empty_site(fleet_dir: Path) -> None:
    shutil.rmtree(fleet_dir / "clusters" / "edge-paris")
    fleet, errors = load_fleet(fleet_dir)
    assert errors == []
    assert fleet.snapshot("edge-paris") == SiteSnapshot("edge-paris")


def test_a_missing_directory_is_one_error(tmp_path: Path) -> None:
    fleet, errors = load_fleet(tmp_path / "nope")
    assert [e.message for e in errors] == ["not a directory"]
    assert fleet.sites == ()
