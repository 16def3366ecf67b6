"""What a change of the fleet-wide objects costs the global's catalog: only the objects the
source says changed are looked at, from the fleet files through the catalog to a zone's
stream."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import yaml
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.control.fleet_bodies import FleetBodies, FleetBodiesBuilder
from kontinuum.control.model import FleetConfig, SiteSnapshot
from kontinuum.discovery.config_cluster import CONFIG_KINDS, ConfigView
from kontinuum.discovery.kube_view import Changed, Listed, WatchedKind
from kontinuum.discovery.static import FleetReader, StaticSource
from kontinuum.federation.catalog import FleetCatalog
from kontinuum.federation.objects import ZONE_RESOURCE_TYPE_URL
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.service import FleetFeed


def profile(name: str) -> str:
    return f"""apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata: {{name: {name}, namespace: fleet}}
"""


def route(name: str, port: int) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: demo}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {name}, port: 80}}]
  rules:
  - backendRefs: [{{name: {name}, port: {port}}}]
"""


def write(path: Path, text: str) -> None:
    """Write a file whole, as an operator should (another inode: the reader sees it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def fleet_dir(root: Path, routes: int) -> Path:
    write(root / "profiles.yaml", profile("eu") + "---\n" + profile("edge"))
    for index in range(routes):
        write(root / f"route-{index}.yaml", route(f"r{index}", 8080))
    return root


def versions(catalog: FleetCatalog) -> dict[str, str]:
    return {name: r.version for name, r in catalog.fleet.items()}


def test_a_changed_fleet_file_changes_exactly_its_objects(tmp_path: Path) -> None:
    reader = FleetReader(fleet_dir(tmp_path, 5))
    fleet, errors = reader.read()
    assert not errors
    catalog = FleetCatalog()
    first = catalog.update([fleet.bodies], [SiteSnapshot("eu")])
    assert {n for n in first if n.startswith("fleet/")} == {
        "fleet/ClusterProfile/fleet/eu",
        "fleet/ClusterProfile/fleet/edge",
        *(f"fleet/HTTPRoute/demo/r{i}" for i in range(5)),
    }
    before = dict(catalog.fleet)

    changed_file = tmp_path / "route-3.yaml"
    write(changed_file, route("r3", 9090))
    fleet, _ = reader.read({str(changed_file)})
    assert catalog.update([fleet.bodies], [SiteSnapshot("eu")]) == {"fleet/HTTPRoute/demo/r3"}
    assert b"9090" in catalog.fleet["fleet/HTTPRoute/demo/r3"].message.object.json
    for name, resource in before.items():
        if name != "fleet/HTTPRoute/demo/r3":
            assert catalog.fleet[name] is resource  # the same version, not encoded again

    gone = tmp_path / "route-1.yaml"
    gone.unlink()
    fleet, _ = reader.read({str(gone)})
    assert catalog.update([fleet.bodies], [SiteSnapshot("eu")]) == {"fleet/HTTPRoute/demo/r1"}
    assert "fleet/HTTPRoute/demo/r1" not in catalog.for_zone("edge")

    # An endpoint change leaves the fleet-wide files alone: the very same bodies.
    fleet, _ = reader.read(set())
    encoded = catalog.encoded
    assert catalog.update([fleet.bodies], [SiteSnapshot("eu")]) == set()
    assert catalog.encoded == encoded


def test_the_first_declaration_counts_and_its_removal_lets_the_next_in(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", route("shared", 1111))
    write(tmp_path / "b.yaml", route("shared", 2222))
    reader = FleetReader(tmp_path)
    catalog = FleetCatalog()
    fleet, _ = reader.read()
    catalog.update([fleet.bodies], [])
    name = "fleet/HTTPRoute/demo/shared"
    assert b"1111" in catalog.fleet[name].message.object.json
    (tmp_path / "a.yaml").unlink()
    fleet, _ = reader.read({str(tmp_path / "a.yaml")})
    assert catalog.update([fleet.bodies], []) == {name}
    assert b"2222" in catalog.fleet[name].message.object.json


class CountedBody(dict[str, Any]):
    """A body that counts how often it is read by key (JSON encoding reads it as a dict)."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountedBody.reads += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        CountedBody.reads += 1
        return super().__getitem__(key)


def counted_route(index: int, port: int) -> CountedBody:
    return CountedBody(
        apiVersion="gateway.networking.k8s.io/v1",
        kind="HTTPRoute",
        metadata={"name": f"r{index}", "namespace": "demo"},
        spec={"rules": [{"backendRefs": [{"name": f"r{index}", "port": port}]}]},
    )


def test_a_change_reads_only_the_objects_it_changed() -> None:
    builder = FleetBodiesBuilder()
    for index in range(500):
        builder.set(f"route-{index}.yaml", (counted_route(index, 8080),))
    catalog = FleetCatalog()
    catalog.update([builder.publish()], [])
    assert len(catalog.fleet) == 500
    encoded = catalog.encoded

    CountedBody.reads = 0
    builder.set("route-7.yaml", (counted_route(7, 9090),))
    builder.remove("route-9.yaml")
    assert catalog.update([builder.publish()], []) == {
        "fleet/HTTPRoute/demo/r7",
        "fleet/HTTPRoute/demo/r9",
    }
    # The source keyed the new body once; the catalog read it once to encode it; none of
    # the 498 others was read at all.
    assert CountedBody.reads < 20
    assert catalog.encoded == encoded + 1


def test_versions_skipped_between_two_updates_are_all_seen() -> None:
    builder = FleetBodiesBuilder()
    for index in range(3):
        builder.set(str(index), (counted_route(index, 8080),))
    catalog = FleetCatalog()
    catalog.update([builder.publish()], [])
    builder.set("0", (counted_route(0, 9090),))
    skipped = builder.publish()
    builder.remove("1")
    latest = builder.publish()
    assert latest.changed_since(skipped) == {("HTTPRoute", "demo", "r1")}
    assert catalog.update([latest], []) == {"fleet/HTTPRoute/demo/r0", "fleet/HTTPRoute/demo/r1"}
    assert builder.publish() is latest  # nothing changed: the same version
    # Versions of another source are not comparable: the catalog compares them whole.
    assert FleetBodies.of([counted_route(0, 9090)]).changed_since(latest) is None


def test_a_zone_stream_is_woken_with_the_changed_object_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        reader = FleetReader(fleet_dir(tmp_path, 50))
        feed = FleetFeed()
        fleet, _ = reader.read()
        feed.update([fleet.bodies], [])
        publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL, tracking=True)
        publisher.publish_mapping(feed.catalog.for_zone("edge"))
        publisher.connect({})
        response = publisher.response()
        assert response is not None
        assert len(response.resources) == 52
        publisher.answer(discovery_pb2.DeltaDiscoveryRequest(response_nonce=response.nonce))
        wake = asyncio.Event()
        feed.follow(wake, publisher)

        write(tmp_path / "route-20.yaml", route("r20", 9090))
        fleet, _ = reader.read({str(tmp_path / "route-20.yaml")})
        feed.update([fleet.bodies], [])
        assert wake.is_set()
        response = publisher.response()
        assert response is not None
        assert [r.name for r in response.resources] == ["fleet/HTTPRoute/demo/r20"]
        assert list(response.removed_resources) == []

    asyncio.run(scenario())


def test_an_older_version_keeps_its_own_bodies_once_newer_ones_are_published() -> None:
    builder = FleetBodiesBuilder()
    first_bodies = {str(i): counted_route(i, 8080) for i in range(4)}
    for group, body in first_bodies.items():
        builder.set(group, (body,))
    first = builder.publish()
    builder.set("0", (counted_route(0, 9090),))
    builder.remove("1")
    second = builder.publish()
    builder.set("1", (counted_route(1, 7070),))
    builder.set("9", (counted_route(9, 7070),))
    third = builder.publish()
    key = ("HTTPRoute", "demo")
    assert first.get((*key, "r0")) is first_bodies["0"]
    assert first.get((*key, "r1")) is first_bodies["1"]
    assert first.get((*key, "r9")) is None
    assert second.get((*key, "r1")) is None
    assert dict(first.items()) == {(*key, f"r{i}"): first_bodies[str(i)] for i in range(4)}
    assert sorted(k[2] for k in second) == ["r0", "r2", "r3"]
    assert sorted(k[2] for k in third) == ["r0", "r1", "r2", "r3", "r9"]
    assert third.changed_since(first) == {(*key, "r0"), (*key, "r1"), (*key, "r9")}


def test_a_change_the_config_does_not_read_still_reaches_the_zones(tmp_path: Path) -> None:
    """An annotation kontinuum does not read changes no route or site, but zones are sent
    the objects as they are: the fleet files' source yields the config for its bodies."""

    async def scenario() -> None:
        write(tmp_path / "profiles.yaml", profile("eu"))
        updates = StaticSource(tmp_path, poll_interval=0.05).updates()
        try:
            async with asyncio.timeout(30):
                first = await anext(updates)
                while not isinstance(first, FleetConfig):
                    first = await anext(updates)
                annotated = profile("eu").replace(
                    "namespace: fleet}", "namespace: fleet, annotations: {example.com/owner: a}}"
                )
                write(tmp_path / "profiles.yaml", annotated)
                update = await anext(updates)
                while not isinstance(update, FleetConfig):
                    update = await anext(updates)
        finally:
            await updates.aclose()
        assert update == first  # the same sites and routing
        catalog = FleetCatalog()
        catalog.update([first.bodies], [])
        assert catalog.update([update.bodies], []) == {"fleet/ClusterProfile/fleet/eu"}
        assert (
            b"example.com/owner"
            in catalog.fleet["fleet/ClusterProfile/fleet/eu"].message.object.json
        )

    asyncio.run(scenario())


def test_a_config_cluster_object_changes_alone_and_a_broken_one_keeps_its_last_good() -> None:
    def watched(kind: str) -> WatchedKind:
        return next(k for k in CONFIG_KINDS if k.kind == kind)

    def route_body(path: str) -> dict[str, Any]:
        loaded = yaml.safe_load(
            route("web", 80).replace("backendRefs", "matches: []\n    backendRefs")
        )
        loaded["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": path}}]
        return dict(loaded)

    profiles = [yaml.safe_load(profile(name)) for name in ("eu", "edge")]
    view = ConfigView("kubernetes-config:hub")
    for kind in CONFIG_KINDS:
        listed = {"ClusterProfile": profiles, "HTTPRoute": [route_body("/api")]}
        view.apply(Listed(kind, listed.get(kind.kind, [])), 0.0, 1000.0)

    def bodies() -> FleetBodies:
        result = view.result()
        assert result is not None
        return result.bodies

    catalog = FleetCatalog()
    catalog.update([bodies()], [])
    name = "fleet/HTTPRoute/demo/web"
    assert set(catalog.fleet) == {
        "fleet/ClusterProfile/fleet/eu",
        "fleet/ClusterProfile/fleet/edge",
        name,
    }
    good = catalog.fleet[name]

    view.apply(Changed(watched("HTTPRoute"), "MODIFIED", route_body("api")), 1.0, 1001.0)
    assert catalog.update([bodies()], []) == set()  # invalid: its last good version stays
    assert catalog.fleet[name] is good

    view.apply(Changed(watched("HTTPRoute"), "MODIFIED", route_body("/v2")), 2.0, 1002.0)
    assert catalog.update([bodies()], []) == {name}
    assert b"/v2" in catalog.fleet[name].message.object.json

    view.apply(Changed(watched("ClusterProfile"), "DELETED", profiles[1]), 3.0, 1003.0)
    assert catalog.update([bodies()], []) == {"fleet/ClusterProfile/fleet/edge"}
    assert "fleet/ClusterProfile/fleet/edge" not in catalog.fleet


def test_a_renewed_secret_goes_to_the_zone_whose_gateway_names_it_only(tmp_path: Path) -> None:
    def secret(name: str, chain: str) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "demo"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": chain, "tls.key": f"key of {name}"},
            }
        )

    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": "front",
            "namespace": "demo",
            "labels": {"kontinuum.io/cluster": "edge"},
        },
        "spec": {
            "gatewayClassName": "kontinuum",
            "listeners": [
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "tls": {"certificateRefs": [{"name": "edge-cert"}]},
                }
            ],
        },
    }
    write(tmp_path / "profiles.yaml", profile("eu") + "---\n" + profile("edge"))
    write(tmp_path / "gateway.yaml", json.dumps(gateway))
    write(tmp_path / "edge-cert.yaml", secret("edge-cert", "first"))
    write(tmp_path / "unused.yaml", secret("unused", "first"))
    reader = FleetReader(tmp_path)
    catalog = FleetCatalog()

    def update(*changed: str) -> set[str]:
        fleet, _ = reader.read({str(tmp_path / name) for name in changed} if changed else None)
        return catalog.update([fleet.bodies], [], fleet.routing.gateways, fleet.grants)

    update()
    name = "fleet/Secret/demo/edge-cert"
    first = catalog.for_zone("edge")[name]
    assert name not in catalog.for_zone("eu")
    assert "fleet/Secret/demo/unused" not in catalog.for_zone("edge")

    write(tmp_path / "edge-cert.yaml", secret("edge-cert", "renewed"))
    assert update("edge-cert.yaml") == {name}
    assert catalog.for_zone("edge")[name].version != first.version
    assert name not in catalog.for_zone("eu")

    write(tmp_path / "unused.yaml", secret("unused", "renewed"))
    assert update("unused.yaml") == {"fleet/Secret/demo/unused"}  # named, sent to none
    assert "fleet/Secret/demo/unused" not in catalog.for_zone("edge")


def test_a_fleet_read_from_nothing_has_the_same_bodies_each_time(tmp_path: Path) -> None:
    """So the fleet files' source, polling a missing directory, yields no new config."""
    reader = FleetReader(tmp_path / "missing")
    first, errors = reader.read()
    assert errors
    again, _ = reader.read()
    assert again.bodies is first.bodies
    assert again.config == first.config
