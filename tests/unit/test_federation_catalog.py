"""What the global sends zones: the catalog's resources, their versions, and what a change
costs; and the zone's copy of them (ACK/NACK, stale while cut off, kept across a restart)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import (
    Endpoint,
    EndpointPort,
    FleetConfig,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.control.objects import Document
from kontinuum.federation.catalog import FleetCatalog
from kontinuum.federation.fleet_copy import FleetCopy
from kontinuum.federation.objects import MAX_MESSAGE_BYTES, ZONE_RESOURCE_TYPE_URL
from kontinuum.federation.publisher import Publisher

PROFILES: list[object] = [
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet", **annotations},
    }
    for name, annotations in (
        ("eu", {}),
        ("edge", {"annotations": {"kontinuum.io/source": "zone"}}),
    )
]


def site(name: str, services: int, port: int = 8080, exported: bool = True) -> SiteSnapshot:
    names = [f"svc-{i}" for i in range(services)]
    return SiteSnapshot(
        name,
        services=tuple(Service(name, "demo", s, (ServicePort(80, "http"),)) for s in names),
        endpoints=tuple(
            Endpoint(name, "demo", s, ("10.0.0.1",), (EndpointPort(port, "http"),)) for s in names
        ),
        exports=tuple(ServiceExport(name, "demo", s) for s in names) if exported else (),
    )


def test_a_zone_is_sent_the_fleet_and_every_other_site_s_exported_services() -> None:
    catalog = FleetCatalog()
    assert catalog.update(PROFILES, [site("eu", 2), site("edge", 1), site("us", 1, exported=False)])
    names = sorted(catalog.for_zone("edge"))
    assert names == [
        "fleet/ClusterProfile/fleet/edge",
        "fleet/ClusterProfile/fleet/eu",
        "site/eu",
        "site/eu/demo/svc-0",
        "site/eu/demo/svc-1",
        "site/us",
    ]
    assert "site/edge/demo/svc-0" in catalog.for_zone("eu")


def test_a_change_encodes_what_it_changes_and_versions_are_the_content() -> None:
    catalog = FleetCatalog()
    eu = site("eu", 100)
    catalog.update(PROFILES, [eu, site("edge", 50)])
    before = dict(catalog.for_zone("edge"))
    encoded = catalog.encoded
    # The same objects again: nothing is looked at, nothing changes.
    assert not catalog.update(PROFILES, [eu, catalog._snapshots["edge"]])
    assert catalog.encoded == encoded
    # One endpoint of eu changes: one resource is encoded again, one version differs.
    moved = replace(
        eu,
        endpoints=(replace(eu.endpoints[0], addresses=("10.0.0.2",)), *eu.endpoints[1:]),
    )
    assert catalog.update(PROFILES, [moved, catalog._snapshots["edge"]])
    assert catalog.encoded == encoded + 1
    after = catalog.for_zone("edge")
    assert [n for n in after if after[n].version != before[n].version] == ["site/eu/demo/svc-0"]
    # eu goes stale (its source lost it): one resource says so, no service is encoded again.
    assert catalog.update(PROFILES, [replace(moved, stale=True), catalog._snapshots["edge"]]) == {
        "site/eu"
    }
    assert catalog.encoded == encoded + 1
    # Another catalog, from equal content, has equal versions (a restarted global).
    catalog.update(PROFILES, [moved, catalog._snapshots["edge"]])
    after = catalog.for_zone("edge")
    again = FleetCatalog()
    again.update([json.loads(json.dumps(p)) for p in PROFILES], [moved, site("edge", 50)])
    assert {n: r.version for n, r in again.for_zone("edge").items()} == {
        n: r.version for n, r in after.items()
    }


def sync(publisher: Publisher, copy: FleetCopy) -> int:
    """Send the copy everything that differs, answering each response; the objects sent."""
    sent = 0
    while (response := publisher.response()) is not None:
        sent += len(response.resources)
        answer = copy.take(response)
        publisher.answer(answer)
    return sent


async def next_updates(updates: AsyncIterator[object], count: int) -> list[object]:
    return [await asyncio.wait_for(anext(updates), 5) for _ in range(count)]


async def test_the_zone_s_copy_resyncs_with_only_what_changed_and_outlasts_a_restart(
    tmp_path: Path,
) -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 3)])
    copy = FleetCopy("edge", tmp_path)
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    publisher.publish_mapping(catalog.for_zone("edge"))
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    assert sync(publisher, copy) == 6
    updates = copy.updates()
    config, eu = await next_updates(updates, 2)
    assert isinstance(config, FleetConfig)
    # At the zone, no site is reached but through the global.
    assert [(s.name, s.access) for s in config.sites] == [("edge", None), ("eu", None)]
    assert isinstance(eu, SiteSnapshot)
    assert not eu.stale
    assert len(eu.services) == 3

    # Cut off: the other sites stay as they were, marked stale.
    copy.unsubscribed()
    (stale,) = await next_updates(updates, 1)
    assert isinstance(stale, SiteSnapshot)
    assert stale.stale
    assert stale.services == eu.services

    # Restarted, the zone starts from what it kept; a reconnect sends only what changed.
    restarted = FleetCopy("edge", tmp_path)
    restarted.load()
    restarted.wake()
    kept_updates = restarted.updates()
    kept = await next_updates(kept_updates, 2)
    assert kept[0] == config
    assert isinstance(kept[1], SiteSnapshot)
    assert kept[1].stale
    catalog.update(PROFILES, [site("eu", 4)])
    again = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    again.publish_mapping(catalog.for_zone("edge"))
    again.connect(dict(restarted.subscription().initial_resource_versions))
    assert sync(again, restarted) == 1
    (fresh,) = await next_updates(kept_updates, 1)
    assert isinstance(fresh, SiteSnapshot)
    assert not fresh.stale
    assert len(fresh.services) == 4
    # The global loses eu: one resource, and the zone serves eu's services stale.
    catalog.update(PROFILES, [replace(site("eu", 4), stale=True)])
    again.publish_mapping(catalog.for_zone("edge"))
    assert sync(again, restarted) == 1
    (lost,) = await next_updates(kept_updates, 1)
    assert isinstance(lost, SiteSnapshot)
    assert lost.stale
    assert lost.services == fresh.services


def test_a_resource_that_is_not_what_its_version_says_is_nacked_by_name() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 1), site("edge", 1)])
    resources = catalog.for_zone("eu")
    response = discovery_pb2.DeltaDiscoveryResponse(type_url=ZONE_RESOURCE_TYPE_URL, nonce="1")
    good = resources["fleet/ClusterProfile/fleet/eu"]
    added = response.resources.add(name=good.name, version="0" * 64)
    added.resource.Pack(good.message)
    own = catalog.for_zone("other")["site/eu/demo/svc-0"]
    added = response.resources.add(name=own.name, version=own.version)
    added.resource.Pack(own.message)
    copy = FleetCopy("eu")
    answer = copy.take(response)
    assert answer.response_nonce == "1"
    assert answer.error_detail.message == (
        "2 resource(s) refused: 'fleet/ClusterProfile/fleet/eu': its version is not the "
        "SHA-256 of its content; 'site/eu/demo/svc-0': a service of this zone's own site"
    )
    assert copy.resources == {}
    assert json.loads(good.message.object.json)["metadata"]["name"] == "eu"


def test_a_stream_told_what_changed_sends_what_a_full_comparison_would() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 20), site("us", 5)])
    tracked = Publisher(type_url=ZONE_RESOURCE_TYPE_URL, tracking=True)
    full = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    for publisher in (tracked, full):
        publisher.connect({})
    steps = [
        [site("eu", 20, port=9090), site("us", 5)],  # every eu service changes
        [site("eu", 18, port=9090), site("us", 5)],  # two are gone
        [site("eu", 18, port=9090)],  # a site leaves
        [site("eu", 25, port=9090), site("us", 1)],
    ]
    for snapshots in [None, *steps]:
        changed = catalog.update(PROFILES, snapshots) if snapshots is not None else set()
        tracked.touched(changed)
        sent = []
        for publisher in (tracked, full):
            publisher.publish_mapping(catalog.for_zone("edge"))
            names: list[tuple[list[str], list[str]]] = []
            while (response := publisher.response(budget=2_000)) is not None:
                names.append(
                    ([r.name for r in response.resources], list(response.removed_resources))
                )
                publisher.answer(discovery_pb2.DeltaDiscoveryRequest(response_nonce=response.nonce))
            sent.append(names)
        assert sent[0] == sent[1]
        assert sent[0]


def test_a_kept_copy_that_does_not_decode_is_ignored_not_a_crash(tmp_path: Path) -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 1)])
    copy = FleetCopy("edge", tmp_path)
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    publisher.publish_mapping(catalog.for_zone("edge"))
    publisher.connect({})
    sync(publisher, copy)
    copy.save()
    kept = tmp_path / "global.json"
    raw = json.loads(kept.read_bytes())
    name = next(iter(raw["resources"]))
    # base64 of bytes that are no protobuf message (a truncated varint)
    raw["resources"][name]["message"] = "/w=="
    kept.write_text(json.dumps(raw))
    restarted = FleetCopy("edge", tmp_path)
    restarted.load()  # that resource alone is dropped (the global sends it again)
    assert restarted.resources.keys() == raw["resources"].keys() - {name}
    assert restarted.stats.kept_altered == 1
    kept.write_text("[" * 100_000 + "]" * 100_000)
    again = FleetCopy("edge", tmp_path)
    again.load()
    assert again.resources == {}


def test_a_copy_holding_more_than_a_message_can_name_resubscribes_and_resyncs() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 60_000)])
    copy = FleetCopy("edge")
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    publisher.publish_mapping(catalog.for_zone("edge"))
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    sync(publisher, copy)
    held = {name: version for name, (version, _) in copy.resources.items()}
    # The global loses most of eu's services while the zone is away.
    catalog.update(PROFILES, [site("eu", 10)])
    request = copy.subscription()
    assert request.ByteSize() <= MAX_MESSAGE_BYTES
    declared = dict(request.initial_resource_versions)
    assert 0 < len(declared) < len(held)
    again = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    again.publish_mapping(catalog.for_zone("edge"))
    again.connect(declared)
    sync(again, copy)
    assert {name: version for name, (version, _) in copy.resources.items()} == {
        name: resource.version for name, resource in catalog.for_zone("edge").items()
    }


def _secret(namespace: str, name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": f"chain of {name}", "tls.key": f"key of {name}"},
    }


def _https_gateway(name: str, site: str, *refs: dict[str, str]) -> dict[str, object]:
    listeners = [
        {"name": f"l{i}", "port": 443 + i, "protocol": "HTTPS", "tls": {"certificateRefs": [ref]}}
        for i, ref in enumerate(refs)
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kontinuum.io/cluster": site}},
        "spec": {"gatewayClassName": "kontinuum", "listeners": listeners},
    }


SECRET_GRANT: dict[str, object] = {
    "apiVersion": "gateway.networking.k8s.io/v1beta1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "gateways-of-demo", "namespace": "certs"},
    "spec": {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "demo"}],
        "to": [{"group": "", "kind": "Secret", "name": "shared"}],
    },
}


def _update(catalog: FleetCatalog, bodies: list[object], eu_services: int = 1) -> set[str]:
    """The catalog updated as the global does: with the Gateways and grants parsed from the
    same bodies."""
    config, _ = parse_fleet_config([Document("fleet.yaml", b, i) for i, b in enumerate(bodies)])
    snapshots = [site("eu", eu_services)]
    return catalog.update(bodies, snapshots, config.routing.gateways, config.grants)


SECRETS = [
    _secret("demo", "edge-cert"),
    _secret("demo", "eu-cert"),
    _secret("demo", "unused"),
    _secret("certs", "shared"),
    _secret("certs", "ungranted"),
]


def _fleet_secrets(resources: Mapping[str, object]) -> list[str]:
    return sorted(n for n in resources if n.startswith("fleet/Secret/"))


def test_a_zone_is_sent_only_the_secrets_its_site_s_gateways_name(tmp_path: Path) -> None:
    edge = _https_gateway(
        "front",
        "edge",
        {"name": "edge-cert"},
        {"name": "shared", "namespace": "certs"},
        {"name": "ungranted", "namespace": "certs"},
    )
    eu = _https_gateway("eu-front", "eu", {"name": "eu-cert"})
    catalog = FleetCatalog()
    _update(catalog, [*PROFILES, *SECRETS, SECRET_GRANT, edge, eu])
    assert _fleet_secrets(catalog.for_zone("edge")) == [
        "fleet/Secret/certs/shared",
        "fleet/Secret/demo/edge-cert",
    ]
    assert _fleet_secrets(catalog.for_zone("eu")) == ["fleet/Secret/demo/eu-cert"]
    assert _fleet_secrets(catalog.for_zone("us")) == []  # a site without Gateways
    # Every other fleet-wide object goes to every zone, as before.
    assert "fleet/Gateway/demo/eu-front" in catalog.for_zone("edge")
    assert "fleet/ReferenceGrant/certs/gateways-of-demo" in catalog.for_zone("eu")

    copy = FleetCopy("edge", tmp_path)
    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL, tracking=True)
    publisher.publish_mapping(catalog.for_zone("edge"))
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    sync(publisher, copy)
    copy.save()

    def kept() -> list[str]:
        return _fleet_secrets(json.loads((tmp_path / "global.json").read_text())["resources"])

    assert kept() == ["fleet/Secret/certs/shared", "fleet/Secret/demo/edge-cert"]

    # The grant goes and the Gateway names another Secret instead of edge-cert: the three
    # Secrets are named as changed, and the zone is sent the new one (with the Gateway) and
    # told to drop the others (with the grant).
    renamed = _https_gateway(
        "front",
        "edge",
        {"name": "unused"},
        {"name": "shared", "namespace": "certs"},
        {"name": "ungranted", "namespace": "certs"},
    )
    changed = _update(catalog, [*PROFILES, *SECRETS, renamed, eu])
    assert {n for n in changed if n.startswith("fleet/Secret/")} == {
        "fleet/Secret/certs/shared",
        "fleet/Secret/demo/edge-cert",
        "fleet/Secret/demo/unused",
    }
    publisher.touched(changed)
    publisher.publish_mapping(catalog.for_zone("edge"))
    response = publisher.response()
    assert response is not None
    assert [r.name for r in response.resources] == [
        "fleet/Gateway/demo/front",
        "fleet/Secret/demo/unused",
    ]
    assert sorted(response.removed_resources) == [
        "fleet/ReferenceGrant/certs/gateways-of-demo",
        "fleet/Secret/certs/shared",
        "fleet/Secret/demo/edge-cert",
    ]
    publisher.answer(copy.take(response))
    copy.save()
    assert kept() == ["fleet/Secret/demo/unused"]
    assert _fleet_secrets(catalog.for_zone("eu")) == ["fleet/Secret/demo/eu-cert"]

    # A change elsewhere (a service of eu) leaves which zone gets which Secret as it was.
    changed = _update(catalog, [*PROFILES, *SECRETS, renamed, eu], eu_services=2)
    assert changed == {"site/eu/demo/svc-1"}


def test_a_named_secret_is_sent_when_it_appears_and_again_when_renewed() -> None:
    edge = _https_gateway("front", "edge", {"name": "edge-cert"})
    catalog = FleetCatalog()
    _update(catalog, [*PROFILES, edge])  # named, not there yet
    assert _fleet_secrets(catalog.for_zone("edge")) == []
    created = _secret("demo", "edge-cert")
    assert "fleet/Secret/demo/edge-cert" in _update(catalog, [*PROFILES, edge, created])
    first = catalog.for_zone("edge")["fleet/Secret/demo/edge-cert"]
    renewed = {**created, "stringData": {"tls.crt": "renewed", "tls.key": "renewed"}}
    assert "fleet/Secret/demo/edge-cert" in _update(catalog, [*PROFILES, edge, renewed])
    assert catalog.for_zone("edge")["fleet/Secret/demo/edge-cert"].version != first.version
    assert _fleet_secrets(catalog.for_zone("eu")) == []  # never another zone's


def test_a_zone_holding_secrets_it_is_no_longer_sent_drops_them_at_its_next_subscription(
    tmp_path: Path,
) -> None:
    """A zone's copy kept from a global that sent every Secret to every zone."""
    eu = _https_gateway("eu-front", "eu", {"name": "eu-cert"})
    catalog = FleetCatalog()
    _update(catalog, [*PROFILES, *SECRETS, eu])
    copy = FleetCopy("edge", tmp_path)
    before = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
    # What the zone was sent before: every fleet-wide object, every Secret among them.
    before.publish_mapping({**catalog.for_zone("edge"), **catalog.fleet})
    before.connect(dict(copy.subscription().initial_resource_versions))
    sync(before, copy)
    assert len(_fleet_secrets(copy.resources)) == len(SECRETS)
    copy.unsubscribed()

    publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL, tracking=True)
    publisher.publish_mapping(catalog.for_zone("edge"))
    publisher.connect(dict(copy.subscription().initial_resource_versions))
    assert sync(publisher, copy) == 0  # nothing to send: only removals
    assert _fleet_secrets(copy.resources) == []
    copy.save()
    kept = json.loads((tmp_path / "global.json").read_text())["resources"]
    assert _fleet_secrets(kept) == []


def test_a_subscription_moved_to_another_global_replica_is_counted() -> None:
    catalog = FleetCatalog()
    catalog.update(PROFILES, [site("eu", 1)])
    copy = FleetCopy("edge")
    for replica in range(1, 3):  # a first global replica, then another, without a gap
        publisher = Publisher(type_url=ZONE_RESOURCE_TYPE_URL)
        publisher.publish_mapping(catalog.for_zone("edge"))
        first = copy.subscription()
        publisher.connect(dict(first.initial_resource_versions))
        sync(publisher, copy)
        assert copy.stats.subscribed
        assert copy.stats.subscriptions == replica
