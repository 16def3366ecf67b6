"""Kubernetes' own limits on the fleet's objects: what its API server would refuse is an
error naming file, object, field and limit, through the loader `serve` uses and through
`kontinuum validate`, and that object (only that object) is left out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kontinuum.control.fleet import parse_cluster_objects
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import FleetConfig, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.source import Health
from kontinuum.discovery.static import StaticSource, load_fleet
from tests.support.fleet_objects import (
    CLUSTER_OBJECTS,
    FLEET_OBJECTS,
    PROFILE,
    SERVICE,
    SLICE,
    fresh,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
KONTINUUM = [sys.executable, "-m", "kontinuum"]
FILE = "clusters/eu/web.yaml"
PER_SLICE = "(Kubernetes' limit for one EndpointSlice: spread them over more slices)"


def dump(*bodies: object) -> str:
    """YAML of `bodies` (libyaml's emitter: a 20,000-endpoint slice in a blink)."""
    return yaml.dump_all(bodies, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def addresses(count: int, start: int = 0) -> list[str]:
    """`count` distinct loopback addresses."""
    return [
        f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(start, start + count)
    ]


def endpoint_slice(name: str, endpoints: int, service: str = "web") -> dict[str, Any]:
    """An EndpointSlice of `service` with `endpoints` endpoints of one address each."""
    body = fresh(SLICE)
    body["metadata"] = {"name": name, "labels": {"kubernetes.io/service-name": service}}
    body["endpoints"] = [{"addresses": [a]} for a in addresses(endpoints, start=1)]
    return body


def with_name(body: dict[str, Any], name: str) -> dict[str, Any]:
    body = fresh(body)
    body["metadata"]["name"] = name
    return body


def with_meta(body: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    body = fresh(body)
    body["metadata"][key] = value
    return body


def cluster(*bodies: object) -> tuple[SiteSnapshot, list[str]]:
    docs = [Document(FILE, body, i) for i, body in enumerate(bodies, start=1)]
    snapshot, errors = parse_cluster_objects("eu", docs)
    return snapshot, [str(e) for e in errors]


def fleet_wide(*bodies: object) -> tuple[FleetConfig, list[str]]:
    docs = [Document("fleet.yaml", body, i) for i, body in enumerate(bodies, start=1)]
    config, errors = parse_fleet_config(docs)
    return config, [str(e) for e in errors]


# --- the EndpointSlice's lists ----------------------------------------------------------------


def test_a_slice_of_20000_endpoints_is_refused_and_the_rest_of_the_fleet_loads(
    tmp_path: Path,
) -> None:
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    service = with_meta(with_name(SERVICE, "big"), "namespace", "demo")
    big = with_meta(endpoint_slice("big-1", 20_000, "big"), "namespace", "demo")
    small = with_meta(endpoint_slice("big-2", 2, "big"), "namespace", "demo")
    path = fleet_dir / "clusters" / "eu-central" / "big.yaml"
    path.write_text(dump(service, big, small))

    fleet, errors = load_fleet(fleet_dir)

    assert [str(e) for e in errors] == [
        "clusters/eu-central/big.yaml: EndpointSlice demo/big-1: endpoints: must hold at most "
        f"1000 endpoints, got 20000 {PER_SLICE}"
    ]
    eu = fleet.snapshot("eu-central")
    assert eu is not None
    assert [e.addresses for e in eu.endpoints_of("demo", "big")] == [("127.0.0.1",), ("127.0.0.2",)]
    assert len(eu.endpoints_of("demo", "hello")) == 2  # the example's own, untouched
    assert [s.cluster for s in fleet] == ["edge-paris", "eu-central", "us-east"]


async def test_serve_keeps_serving_what_is_valid_and_reports_the_slice(tmp_path: Path) -> None:
    """The static source `serve` runs: its first read yields what is valid, and its status
    says which object was refused and why."""
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    big = with_meta(endpoint_slice("hello-big", 1001, "hello"), "namespace", "demo")
    (fleet_dir / "clusters" / "us-east" / "big.yaml").write_text(dump(big))

    source = StaticSource(fleet_dir, watch=False)
    updates = [update async for update in source.updates()]

    us = next(u for u in updates if isinstance(u, SiteSnapshot) and u.cluster == "us-east")
    assert [e.addresses for e in us.endpoints_of("demo", "hello")] == [
        ("127.0.0.21",),
        ("127.0.0.22",),
    ]
    status = source.status()
    assert status.health is Health.DEGRADED
    assert [str(e) for e in status.errors] == [
        "clusters/us-east/big.yaml: EndpointSlice demo/hello-big: endpoints: must hold at most "
        f"1000 endpoints, got 1001 {PER_SLICE}"
    ]


def test_the_slice_limits_are_the_api_servers() -> None:
    """At each limit an EndpointSlice loads: 1,000 endpoints, 100 addresses each, and past
    the 100 ports the API reference still names (the server has allowed 20,000 since 1.21)."""
    many_ports = fresh(SERVICE)
    many_ports["spec"]["ports"] += [{"name": f"p{i}", "port": 1000 + i} for i in range(150)]
    wide = endpoint_slice("web-2", 1)
    wide["ports"] = [{"name": f"p{i}", "port": 1000 + i} for i in range(150)]
    full = endpoint_slice("web-1", 1000)
    full["endpoints"][0]["addresses"] = addresses(100, start=5000)
    snapshot, errors = cluster(many_ports, full, wide)
    assert errors == []
    assert len(snapshot.endpoints) == 1001
    assert len(snapshot.endpoints[0].addresses) == 100


def test_too_many_ports_and_addresses_are_refused_unread() -> None:
    ports = endpoint_slice("web-1", 1)
    ports["ports"] = [{"name": "http", "port": 0}] * 20_001  # each one wrong, none read
    wide = endpoint_slice("web-2", 1)
    wide["endpoints"][0]["addresses"] = ["not an address"] * 101
    snapshot, errors = cluster(SERVICE, ports, wide)
    assert errors == [
        f"{FILE}: EndpointSlice default/web-1: ports: must hold at most 20000 ports, got 20001 "
        f"{PER_SLICE}",
        f"{FILE}: EndpointSlice default/web-2: endpoints[0].addresses: must hold at most 100 "
        "addresses, got 101",
    ]
    assert snapshot.endpoints == ()
    assert [s.name for s in snapshot.services] == ["web"]


# --- names, labels, annotations --------------------------------------------------------------

KEY_FORMAT = (
    "must be a name of letters, digits, '-', '_' and '.', starting and ending with a letter "
    "or digit, after an optional DNS subdomain and '/' (such as example.com/my-name)"
)
A63, A64 = "a" * 63, "a" * 64

CASES = [
    pytest.param(
        with_name(SERVICE, A64),
        f"Service default/{A64}: metadata.name: must be a DNS label of at most 63 characters, "
        "got 64 characters",
        id="service-name",
    ),
    pytest.param(
        with_name(SLICE, "a" * 254),
        f"EndpointSlice default/{'a' * 253}... (254 characters): metadata.name: must be a DNS "
        "subdomain of at most 253 characters, got 254 characters",
        id="slice-name",
    ),
    pytest.param(
        with_meta(SLICE, "namespace", A64),
        f"EndpointSlice {A64}/web-anchor: metadata.namespace: must be a DNS label of at most 63 "
        "characters, got 64 characters",
        id="namespace",
    ),
    pytest.param(
        with_name(SERVICE, "we\nb"),
        "Service default/we\\nb: metadata.name: must be a DNS label starting with a letter "
        "(a-z, 0-9 and '-', at most 63 characters), got 'we\\nb'",
        id="name-on-two-lines",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {A64: "x"}),
        f"Service default/web: metadata.labels[{A64}]: the name after any 'prefix/' must be at "
        "most 63 characters, got 64",
        id="label-key-name-length",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"a" * 254 + "/x": "x"}),
        f"Service default/web: metadata.labels[{'a' * 254}/x]: the prefix before '/' must be at "
        "most 253 characters, got 254",
        id="label-key-prefix-length",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"Example.com/x": "x"}),
        "Service default/web: metadata.labels[Example.com/x]: the prefix before '/' must be a "
        "DNS subdomain (DNS labels joined by '.'), got 'Example.com'",
        id="label-key-prefix-format",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"a/b/c": "x"}),
        "Service default/web: metadata.labels[a/b/c]: must hold at most one '/' (prefix/name), "
        "got 'a/b/c'",
        id="label-key-slashes",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"/x": "x"}),
        "Service default/web: metadata.labels[/x]: the prefix before '/' must not be empty, "
        "got '/x'",
        id="label-key-empty-prefix",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"my label": "x"}),
        f"Service default/web: metadata.labels[my label]: {KEY_FORMAT}, got 'my label'",
        id="label-key-format",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {1: "x"}),
        "Service default/web: metadata.labels[1]: the key must be a string (quote it)",
        id="label-key-type",
    ),
    pytest.param(
        with_meta(SERVICE, "labels", {"app": A64}),
        "Service default/web: metadata.labels[app]: must be a label value of at most 63 "
        "characters, got 64 characters",
        id="label-value-length",
    ),
    pytest.param(
        with_meta(SERVICE, "annotations", {"example.com/a b": "x"}),
        f"Service default/web: metadata.annotations[example.com/a b]: {KEY_FORMAT}, got "
        "'example.com/a b'",
        id="annotation-key",
    ),
    pytest.param(
        with_meta(SERVICE, "annotations", {"note": ["a", "list"]}),
        "Service default/web: metadata.annotations[note]: must be a string, got list",
        id="annotation-value-type",
    ),
    pytest.param(
        with_meta(SERVICE, "annotations", {"a": "x" * (256 * 1024 - 1), "b": ""}),
        "Service default/web: metadata.annotations: keys and values must total at most 262144 "
        "bytes (256 KiB), got 262145",
        id="annotations-size",
    ),
    pytest.param(
        with_meta(SERVICE, "annotations", {"a": "é" * (128 * 1024)}),
        "Service default/web: metadata.annotations: keys and values must total at most 262144 "
        "bytes (256 KiB), got 262145",
        id="annotations-size-in-bytes",
    ),
    pytest.param(
        with_meta(SERVICE, "annotations", "owner=me"),
        "Service default/web: metadata.annotations: must be a mapping, got string",
        id="annotations-type",
    ),
    pytest.param(
        {**fresh(SERVICE), "spec": {"ports": [{"port": 80, "appProtocol": "h2 c"}]}},
        f"Service default/web: spec.ports[0].appProtocol: {KEY_FORMAT}, got 'h2 c'",
        id="service-app-protocol",
    ),
    pytest.param(
        {**fresh(SLICE), "ports": [{"name": "http", "port": 8080, "appProtocol": "-x"}]},
        f"EndpointSlice default/web-anchor: ports[0].appProtocol: {KEY_FORMAT}, got '-x'",
        id="slice-app-protocol",
    ),
]


@pytest.mark.parametrize(("bad", "message"), CASES)
def test_each_limit_names_file_object_field_and_limit(bad: dict[str, Any], message: str) -> None:
    texts = [bad] if bad["kind"] == "Service" else [SERVICE, bad]
    snapshot, errors = cluster(*texts)
    assert errors == [f"{FILE}: {message}"]
    if bad["kind"] == "Service":
        assert snapshot.services == ()
    else:
        assert snapshot.endpoints == ()
        assert [s.name for s in snapshot.services] == ["web"]


def test_at_the_limits_names_labels_and_annotations_load() -> None:
    service = with_name(SERVICE, "s" + A63[1:])
    service["metadata"]["namespace"] = A63
    service["metadata"]["labels"] = {
        "a" * 253 + "/" + A63: A63,
        "empty": "",
        "null": None,  # as kubectl reads it: the empty value
        "Example.com": "Mixed_Case.value",
    }
    service["metadata"]["annotations"] = {"A/B": "x" * (256 * 1024 - 4), "c": ""}
    slice_ = with_name(endpoint_slice("x", 1, service="s" + A63[1:]), "a." * 126 + "a")
    slice_["metadata"]["namespace"] = A63
    slice_["ports"] = [{"name": "http", "port": 8080, "appProtocol": "kubernetes.io/h2c"}]
    snapshot, errors = cluster(service, slice_)
    assert errors == []
    assert len(snapshot.endpoints) == 1


FLEET_KINDS = [pytest.param(obj, id=obj["kind"]) for obj in FLEET_OBJECTS]
CLUSTER_KINDS = [pytest.param(obj, id=obj["kind"]) for obj in CLUSTER_OBJECTS]


@pytest.mark.parametrize("good", FLEET_KINDS)
def test_every_fleet_wide_kind_has_its_labels_and_annotations_checked(
    good: dict[str, Any],
) -> None:
    valid, errors = fleet_wide(PROFILE, good)
    assert errors == []
    bad = fresh(good)
    bad["metadata"].setdefault("labels", {})["bad key!"] = "x"
    bad["metadata"].setdefault("annotations", {})["note"] = 1
    config, errors = fleet_wide(PROFILE, bad)
    meta = bad["metadata"]
    name = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
    assert errors == [
        f"fleet.yaml: {bad['kind']} {name}: metadata.labels[bad key!]: {KEY_FORMAT}, got "
        "'bad key!'",
        f"fleet.yaml: {bad['kind']} {name}: metadata.annotations[note]: must be a string, got "
        "integer",
    ]
    assert config != valid  # left out
    assert config.sites[0].name == "eu"  # the ClusterProfile next to it still loads


@pytest.mark.parametrize("good", CLUSTER_KINDS)
def test_every_cluster_kind_has_its_labels_and_annotations_checked(good: dict[str, Any]) -> None:
    bad = fresh(good)
    bad["metadata"].setdefault("labels", {})["bad key!"] = "x"
    objects = [bad if o is good else o for o in CLUSTER_OBJECTS]
    snapshot, errors = cluster(*objects)
    name = f"default/{bad['metadata']['name']}"
    label_error = (
        f"{FILE}: {bad['kind']} {name}: metadata.labels[bad key!]: {KEY_FORMAT}, got 'bad key!'"
    )
    assert errors[0] == label_error
    kept = {"Service": snapshot.services, "EndpointSlice": snapshot.endpoints}
    kept["ServiceExport"] = snapshot.exports
    assert kept.pop(bad["kind"]) == ()
    if bad["kind"] != "Service":  # (a Service's slices and export fail without it)
        assert errors == [label_error]
        assert all(len(values) == 1 for values in kept.values())  # only that one left out


# --- what an error shows ---------------------------------------------------------------------


def test_an_object_lists_its_first_100_errors_then_how_many_more() -> None:
    service = fresh(SERVICE)
    service["spec"]["ports"] = [{"name": f"p{i}", "port": 0} for i in range(250)]
    _, errors = cluster(service)
    assert len(errors) == 101
    assert errors[99] == (
        f"{FILE}: Service default/web: spec.ports[99].port: must be between 1 and 65535, got 0"
    )
    assert errors[100] == (
        f"{FILE}: Service default/web: and 150 more error(s): an object's first 100 are listed"
    )


def test_a_huge_value_is_not_echoed_whole() -> None:
    huge = "a" * 1_000_000
    named = with_name(SERVICE, huge)
    labelled = fresh(SERVICE)
    labelled["metadata"]["labels"] = {huge: "x"}
    labelled["spec"]["clusterIP"] = huge
    _, errors = cluster(named, labelled)
    assert [len(line) < 1500 for line in errors] == [True, True, True]
    shown = "a" * 253 + "... (1000000 characters)"
    assert errors[0] == (
        f"{FILE}: Service default/{shown}: metadata.name: must be a DNS label of at most 63 "
        "characters, got 1000000 characters"
    )
    assert errors[1] == (
        f"{FILE}: Service default/web: metadata.labels[{'a' * 317}... (1000000 characters)]: "
        "the name after any 'prefix/' must be at most 63 characters, got 1000000"
    )
    message = "must be an IP address, '' or 'None', got "
    assert errors[2].startswith(f"{FILE}: Service default/web: spec.clusterIP: {message}'aaa")
    assert errors[2].endswith(f"a... ({len(message) + 2 + len(huge)} characters)")


# --- kontinuum validate ----------------------------------------------------------------------


def test_validate_prints_one_line_per_refused_object(tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    big = with_meta(endpoint_slice("hello-big", 20_000, "hello"), "namespace", "demo")
    long_name = with_meta(with_name(SERVICE, A64), "namespace", "demo")
    bad_label = with_meta(with_name(SERVICE, "labelled"), "namespace", "demo")
    bad_label["metadata"]["labels"] = {"team/": "a"}
    grant = fresh(FLEET_OBJECTS[1])
    grant["metadata"]["annotations"] = {"note": "x" * (256 * 1024)}
    (fleet_dir / "clusters" / "us-east" / "bad.yaml").write_text(dump(big, long_name, bad_label))
    (fleet_dir / "grants.yaml").write_text(dump(grant))

    result = subprocess.run(
        [*KONTINUUM, "validate", str(fleet_dir)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    *lines, summary = result.stderr.splitlines()
    assert lines == [
        "grants.yaml: ReferenceGrant payments/anchor: metadata.annotations: keys and values "
        "must total at most 262144 bytes (256 KiB), got 262148",
        "clusters/us-east/bad.yaml: EndpointSlice demo/hello-big: endpoints: must hold at most "
        f"1000 endpoints, got 20000 {PER_SLICE}",
        f"clusters/us-east/bad.yaml: Service demo/{A64}: metadata.name: must be a DNS label of "
        "at most 63 characters, got 64 characters",
        "clusters/us-east/bad.yaml: Service demo/labelled: metadata.labels[team/]: "
        f"{KEY_FORMAT}, got 'team/'",
    ]
    assert summary.endswith("4 errors, 0 status problems")
    assert ", 5 services," in summary  # the example's services, all still there
