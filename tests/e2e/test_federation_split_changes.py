"""A change split across several responses applies whole, in both directions of federation,
over real gRPC and mutual TLS on 127.0.0.1 (the global's `FederationService`, and a zone's
side driven by the test): a link cut between the parts applies none of them, and the next
stream brings the change whole."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import (
    Endpoint,
    EndpointPort,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.control.objects import Document
from kontinuum.discovery.zone_store import ZoneObjects
from kontinuum.federation.fleet_copy import STATE_FILE, FleetCopy
from kontinuum.federation.objects import (
    MAX_RESPONSE_BYTES,
    PARTIAL,
    content_version,
    site_object,
)
from kontinuum.federation.publisher import Publisher
from tests.e2e.test_federation_service import (  # noqa: F401 (the fixture)
    Global,
    profile,
    served,
    service_object,
    subscribe,
)
from tests.support.net import eventually

pytestmark = pytest.mark.e2e

ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "hello", "namespace": "demo"},
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "hello", "port": 80}],
        "rules": [{"backendRefs": [{"name": "hello", "port": 80}]}],
    },
}
# Past one response's budget: the change goes out in several responses.
BIG_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "big", "namespace": "demo"},
    "type": "Opaque",
    "data": {"blob": base64.b64encode(b"x" * MAX_RESPONSE_BYTES).decode()},
}


# The zone's own Gateway names the Secret: a zone is sent only the Secrets its Gateways name.
EDGE_GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {
        "name": "edge",
        "namespace": "demo",
        "labels": {"kontinuum.io/cluster": "edge-paris"},
    },
    "spec": {
        "gatewayClassName": "kontinuum",
        "listeners": [
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "big"}]},
            }
        ],
    },
}


def fleet_update(feed: Any, bodies: list[dict[str, Any]], snapshots: list[SiteSnapshot]) -> None:
    """The feed updated as the global does: with the Gateways and grants of the same bodies."""
    config, _ = parse_fleet_config([Document("fleet.yaml", b, i) for i, b in enumerate(bodies)])
    feed.update(bodies, snapshots, config.routing.gateways, config.grants)


def eu_with_hello() -> SiteSnapshot:
    return SiteSnapshot(
        "eu",
        services=(Service("eu", "demo", "hello", (ServicePort(80, "http"),)),),
        endpoints=(Endpoint("eu", "demo", "hello", ("10.1.0.1",), (EndpointPort(8080, "http"),)),),
        exports=(ServiceExport("eu", "demo", "hello"),),
    )


async def answer_until_whole(call: Any, copy: FleetCopy) -> int:
    """Take the global's responses until one completes a change; how many it took."""
    for count in range(1, 11):
        async with asyncio.timeout(10):
            response = await call.read()
        await call.write(copy.take(response))
        if response.system_version_info != PARTIAL:
            return count
    raise AssertionError("no response completed the change in 10")


async def test_a_change_of_the_fleet_cut_off_between_its_parts_reaches_the_zone_whole(
    served: Global,  # noqa: F811
    tmp_path: Path,
) -> None:
    feed = served.service.feed
    feed.update([profile("eu")], [SiteSnapshot("eu")])
    copy = FleetCopy("edge-paris", tmp_path)

    async def follow() -> None:  # as the zone's mesh takes what the copy yields
        async for _ in copy.updates():
            pass

    follower = asyncio.create_task(follow())
    try:
        credentials = served.credentials("zone-edge-paris", "edge-paris")
        call = subscribe(served, credentials, "edge-paris")
        await call.write(copy.subscription())
        assert await answer_until_whole(call, copy) == 1
        whole = {name: version for name, (version, _) in copy.resources.items()}

        # One change: a route to eu's hello, a large Secret, and hello itself, in parts.
        fleet_update(feed, [profile("eu"), ROUTE, EDGE_GATEWAY, BIG_SECRET], [eu_with_hello()])
        async with asyncio.timeout(10):
            first = await call.read()
        assert first.system_version_info == PARTIAL
        assert [r.name for r in first.resources] == [
            "fleet/Gateway/demo/edge",
            "fleet/HTTPRoute/demo/hello",
        ]
        await call.write(copy.take(first))
        # The link is cut before the rest: none of the change is in the copy, nor named.
        call.cancel()
        copy.unsubscribed()
        assert {n: v for n, (v, _) in copy.resources.items()} == whole
        subscription = copy.subscription()
        assert dict(subscription.initial_resource_versions) == whole

        again = subscribe(served, credentials, "edge-paris")
        await again.write(subscription)
        assert await answer_until_whole(again, copy) >= 2
        assert {
            "fleet/Gateway/demo/edge",
            "fleet/HTTPRoute/demo/hello",
            "fleet/Secret/demo/big",
            "site/eu/demo/hello",
        } <= copy.resources.keys()

        def kept() -> bool:
            path = tmp_path / STATE_FILE
            return (
                path.exists() and "site/eu/demo/hello" in json.loads(path.read_text())["resources"]
            )

        await eventually(kept)
        again.cancel()
    finally:
        follower.cancel()


def endpoints(name: str, address: str) -> Any:
    return site_object(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "demo",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        }
    )


async def test_a_change_of_a_site_cut_off_between_its_parts_reaches_the_global_whole(
    served: Global,  # noqa: F811
    tmp_path: Path,
) -> None:
    zone = served.zone
    zone.keep(ZoneObjects(tmp_path, "edge-paris", content_version))
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    publisher = Publisher()
    publisher.publish([service_object("a")])
    call = served.open(credentials)
    publisher.connect(dict((await call.read()).initial_resource_versions))
    await call.write(publisher.response())
    assert (answer := publisher.answer(await call.read())) is not None
    assert answer.accepted
    whole = zone.held()

    # A change of two objects, each its own response (a budget of one object): the link is
    # cut once the first was answered.
    publisher.publish([service_object("a"), service_object("b"), endpoints("b", "10.2.0.1")])
    first = publisher.response(budget=1)
    assert first is not None
    assert first.system_version_info == PARTIAL
    await call.write(first)
    assert publisher.answer(await call.read()) is not None
    assert zone.held() == whole  # held back until the change is whole
    call.cancel()
    await eventually(lambda: not zone.stats.connected)
    assert zone.held() == whole
    # Nor is any of it kept: once the source has taken the cut, the store holds the whole.
    await eventually(lambda: "disconnected" in zone.status().detail)
    kept = ZoneObjects(tmp_path, "edge-paris", content_version).load()
    assert {o.name: o.version for o in kept} == whole

    # The zone redials: told the whole versions only, it sends the whole change again.
    again = served.open(credentials)
    declared = dict((await again.read()).initial_resource_versions)
    assert declared == whole
    publisher.disconnect()
    publisher.connect(declared)
    for _ in range(10):
        response = publisher.response(budget=1)
        assert response is not None
        await again.write(response)
        assert publisher.answer(await again.read()) is not None
        if response.system_version_info != PARTIAL:
            break
    assert zone.held().keys() == {"Service/demo/a", "Service/demo/b", "EndpointSlice/demo/b-1"}
    again.cancel()
