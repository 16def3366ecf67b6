"""Several replicas of a zone, and of the global, as real processes.

- Two `kontinuum zone` replicas of edge-paris (`--replica-id`) publish to one global: both
  stay connected (no stream of one ends the other's), the first one's view is served, and
  when it is killed the other takes over without the site ever being marked stale, the
  sidecar at the global still reaching the site.
- Two replicas' GlobalToZone subscriptions (in-process global) both stay open, each sent
  every change.
- One zone dials two `kontinuum serve` replicas (`--global A,B`): both hold the zone's
  site; killing the one the zone takes the fleet from leaves the zone's copy of the fleet
  whole, and changes keep flowing both ways through the other.
- One global reached at two addresses (named twice, or a dual-stack name, dialed at its
  addresses of both families) publishes on one link: the zone's streams never replace
  each other there.
- A zone connects at most 16 replica ids, its streams of both kinds counted together; a
  replaced subscription leaves its successor's lag marker.
- A standby holding old versions past the site's byte bound is ended at once.
- Few ZoneToGlobal streams of a replica wait for their first response (a newer one ends
  at once the oldest beyond them, and any told of an older view), and one that sends
  none within its deadline is ended.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.discovery.zone import ZoneSource
from kontinuum.federation.objects import (
    GLOBAL_TO_ZONE,
    REPLICA_METADATA,
    SERVICE,
    SITE_METADATA,
    TYPE_URL,
    ZONE_RESOURCE_TYPE_URL,
    ZONE_TO_GLOBAL,
)
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.service import (
    MAX_REPLICAS,
    MAX_WAITING,
    REFUSED_SILENT,
    FederationService,
    start_server,
)
from kontinuum.federation.zone import Zone, ZoneSettings
from kontinuum.security.xds_auth import FleetAuthenticator, ServerCertificate
from tests.e2e.conftest import StartEnvoy
from tests.e2e.test_federation import (
    HELLO_SERVICE,
    ZONE,
    Federation,
    Process,
    answered_by,
    federation,
    hello_slice,
    issue,
    running,
    sidecar_bootstrap,
    until,
)
from tests.e2e.test_federation_service import (
    HOUR,
    Global,
    profile,
    served,
    service_object,
    write_credentials,
)
from tests.support.net import eventually, free_port

pytestmark = pytest.mark.e2e
__all__ = ["federation", "served"]  # the fixtures, used by name

SITE = {"zone": "edge-paris"}

OTHER_SERVICE = HELLO_SERVICE.replace("name: hello", "name: other")

NEW_PROFILE = """---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: us-east
  namespace: fleet
  labels: {topology.kubernetes.io/region: us-east-1}
"""


def zone_replica(found: Federation, replica: str, files: Path, *extra: str) -> Process:
    return Process(
        [
            "zone", "--site", "edge-paris", "--global", found.federation,
            "--credentials", str(found.zone_credentials), "--config", str(files),
            "--replica-id", replica, *extra,
        ],
        found.root / f"zone-{replica}.log",
        f"127.0.0.1:{free_port()}",
    )  # fmt: skip


def serving_replica(found: Federation, replica: str, files: Path) -> Process:
    """A zone replica that serves the site's proxies too (so it subscribes to the fleet)."""
    return zone_replica(
        found, replica, files,
        "--xds-address", f"127.0.0.1:{free_port()}", "--plaintext-xds",
        "--state-dir", str(found.root / f"state-{replica}"),
    )  # fmt: skip


async def test_two_replicas_of_a_zone_publish_one_view_and_the_standby_takes_over_unstale(
    federation: Federation, envoys: StartEnvoy
) -> None:
    found = federation
    global_ = found.global_
    # Each replica reads its own copy of the site: a's sends hello to paris-1, b's to paris-2.
    b_files = found.root / "edge-paris-b"
    b_files.mkdir()
    (b_files / "hello.yaml").write_text(HELLO_SERVICE)
    (b_files / "hello-endpoints.yaml").write_text(hello_slice(found.backends["paris-2"].port))
    # Each serves the site's proxies too: each subscribes to the fleet on its own.
    a, b = (
        serving_replica(found, r, f) for r, f in (("zone-a", found.zone_files), ("zone-b", b_files))
    )
    logs = (global_.log, a.log, b.log)
    sidecar = await asyncio.to_thread(
        issue, found.ca, found.root / "frontend", "eu-central", "demo", "frontend"
    )
    outbound = free_port()

    try:
        a.start()

        async def held() -> bool:
            return await global_.metric("kontinuum_federation_zone_objects", SITE) == 3

        await until(held, "replica a's view held", 60, logs)
        b.start()
        envoys(
            view="eu-central",
            xds_port=0,
            mode="delta",
            node_id="frontend-1",
            config=sidecar_bootstrap(found, sidecar, outbound),
        )
        await until(answered_by(outbound, "paris-1"), "hello answered by paris-1", 60, logs)

        async def both_connected() -> bool:
            return (
                await global_.metric(
                    "kontinuum_federation_zone_replicas", {**SITE, "role": "standby"}
                )
                == 1
                and await b.metric("kontinuum_zone_answers_total", {"answer": "ack"}) == 1
            )

        await until(both_connected, "replica b connected as a standby", 60, logs)

        # A change at each replica is published by each: neither replica's stream ends.
        (found.zone_files / "other.yaml").write_text(OTHER_SERVICE)
        (b_files / "other.yaml").write_text(OTHER_SERVICE)

        async def both_answered() -> bool:
            acks = [
                await r.metric("kontinuum_zone_answers_total", {"answer": "ack"}) for r in (a, b)
            ]
            return acks == [2, 2]

        await until(both_answered, "each replica's change answered", 30, logs)
        # No stream of either replica ended: one of each kind per replica, in all.
        assert await global_.metric("kontinuum_federation_zone_connections_total", SITE) == 2
        assert await global_.metric("kontinuum_federation_zone_subscriptions_total", SITE) == 2
        assert await global_.metric("kontinuum_federation_zone_subscribed", SITE) == 2
        for replica in (a, b):
            assert await replica.metric("kontinuum_zone_fleet_subscribed") == 1
        assert await global_.metric("kontinuum_federation_zone_objects", SITE) == 5
        for replica in (a, b):
            assert await replica.metric("kontinuum_zone_connected") == 1
        info = {**SITE, "replica": "zone-a"}
        assert await global_.metric("kontinuum_federation_zone_active_replica_info", info) == 1
        # The active replica's view is the site's: the standby's endpoints are not served.
        for _ in range(5):
            assert answered_by(outbound, "paris-1")()

        # The active replica dies: the standby's view becomes the site's, never stale.
        a.kill()
        await until(answered_by(outbound, "paris-2"), "hello answered by paris-2", 30, logs)
        assert await global_.metric("kontinuum_federation_zone_promotions_total", SITE) == 1
        info = {**SITE, "replica": "zone-b"}
        assert await global_.metric("kontinuum_federation_zone_active_replica_info", info) == 1
        assert await global_.metric("kontinuum_federation_zone_connected", SITE) == 1
        assert await global_.metric("kontinuum_source_stale", {"source": ZONE}) == 0
        assert "its zone is disconnected" not in global_.log.read_text()
        assert await global_.metric("kontinuum_federation_zone_objects", SITE) == 5
        for _ in range(5):
            assert answered_by(outbound, "paris-2")()
        assert await global_.metric("kontinuum_federation_zone_connections_total", SITE) == 2
        assert await global_.metric("kontinuum_federation_zone_subscriptions_total", SITE) == 2
    finally:
        a.stop()
        b.stop()


async def test_a_zone_publishes_to_two_global_replicas_and_survives_losing_one(
    federation: Federation,
) -> None:
    found = federation
    first = found.global_
    second_federation = f"127.0.0.1:{free_port()}"
    args = list(first.args)
    args[args.index("--xds-address") + 1] = f"127.0.0.1:{free_port()}"
    args[args.index("--federation-address") + 1] = second_federation
    args[args.index("--state-dir") + 1] = str(found.root / "state-2")
    second = Process(args, found.root / "global-2.log", f"127.0.0.1:{free_port()}")
    zone = zone_replica(
        found, "zone-a", found.zone_files,
        "--global", second_federation,  # besides the first: repeated
        "--xds-address", f"127.0.0.1:{free_port()}", "--plaintext-xds",
        "--state-dir", str(found.root / "zone-state"),
    )  # fmt: skip
    globals_ = (first, second)
    logs = (first.log, second.log, zone.log)

    with running(second), running(zone):

        async def held_by_both() -> bool:
            held = [await g.metric("kontinuum_federation_zone_objects", SITE) for g in globals_]
            return held == [3, 3] and bool(await zone.metric("kontinuum_zone_fleet_subscribed"))

        await until(held_by_both, "the zone's site held by both globals", 60, logs)
        replicas = {"state": "connected"}
        assert await zone.metric("kontinuum_zone_global_replicas", replicas) == 2
        fleet = await zone.metric("kontinuum_zone_fleet_resources")
        assert fleet

        # The zone takes the fleet from one global: kill that one.
        subscribed = [
            await g.metric("kontinuum_federation_zone_subscribed", SITE) for g in globals_
        ]
        assert sorted(subscribed) == [0, 1], subscribed
        dead, alive = globals_ if subscribed[0] == 1 else globals_[::-1]
        received = await zone.metric("kontinuum_zone_fleet_resources_received_total")
        dead.kill()

        async def failed_over() -> bool:
            return (
                await alive.metric("kontinuum_federation_zone_subscribed", SITE) == 1
                and await zone.metric("kontinuum_zone_global_replicas", replicas) == 1
            )

        await until(failed_over, "the zone subscribed to the other global", 60, logs)
        assert await zone.metric("kontinuum_zone_fleet_resources") == fleet
        assert await zone.metric("kontinuum_source_stale", {"source": "global"}) == 0
        assert await zone.metric("kontinuum_zone_fleet_subscribed") == 1
        # The other global was told what the zone holds: nothing crossed again.
        assert await zone.metric("kontinuum_zone_fleet_resources_received_total") == received

        # A change of the fleet reaches the zone through the other global ...
        clusters = found.root / "fleet" / "clusters.yaml"
        clusters.write_text(clusters.read_text() + NEW_PROFILE)

        async def fleet_grew() -> bool:
            now = await zone.metric("kontinuum_zone_fleet_resources")
            return now is not None and now > fleet  # its ClusterProfile, and its site's state

        await until(fleet_grew, "the new ClusterProfile at the zone", 30, logs)

        # ... and a change of the site reaches the other global.
        received = await alive.metric("kontinuum_federation_zone_objects_received_total", SITE)
        assert received is not None
        (found.zone_files / "hello-endpoints.yaml").write_text(
            hello_slice(found.backends["paris-2"].port)
        )

        async def site_changed() -> bool:
            return (
                await alive.metric("kontinuum_federation_zone_objects_received_total", SITE)
                == received + 1
            )

        await until(site_changed, "the endpoint change at the other global", 30, logs)
        assert await alive.metric("kontinuum_federation_zone_connected", SITE) == 1
        assert await alive.metric("kontinuum_source_stale", {"source": ZONE}) == 0


def subscribe_as(served: Global, credentials: grpc.ChannelCredentials, replica: str) -> Any:
    channel = grpc.aio.secure_channel(served.address, credentials)
    served.channels.append(channel)
    method: Any = channel.stream_stream(
        f"/{SERVICE}/{GLOBAL_TO_ZONE}",
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )
    return method(metadata=((SITE_METADATA, "edge-paris"), (REPLICA_METADATA, replica)))


async def test_each_replica_of_a_zone_keeps_its_own_subscription(served: Global) -> None:
    feed = served.service.feed
    feed.update([profile("eu")], [])
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    subscription = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ZONE_RESOURCE_TYPE_URL, resource_names_subscribe=["*"]
    )
    calls = [subscribe_as(served, credentials, replica) for replica in ("zone-a", "zone-b")]
    for call in calls:
        await call.write(subscription)
        first = await call.read()
        assert [r.name for r in first.resources] == ["fleet/ClusterProfile/fleet/eu"]
        # The global names its instance, as an xDS management server does.
        assert first.control_plane.identifier == served.service.instance
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=ZONE_RESOURCE_TYPE_URL, response_nonce=first.nonce
            )
        )
    await eventually(lambda: served.service.subscribed["edge-paris"] == 2)
    # A change reaches both: neither subscription replaced the other.
    feed.update([profile("eu", "eu-west-1")], [])
    for call in calls:
        async with asyncio.timeout(10):
            change = await call.read()
        assert [r.name for r in change.resources] == ["fleet/ClusterProfile/fleet/eu"]
    assert served.service.subscribed["edge-paris"] == 2
    # A newer subscription of the same replica still replaces its older one.
    again = subscribe_as(served, credentials, "zone-a")
    await again.write(subscription)
    await again.read()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(10):
            await calls[0].read()
    assert ended.value.code() is grpc.StatusCode.ABORTED
    await eventually(lambda: served.service.subscribed["edge-paris"] == 2)
    for call in (again, calls[1]):
        call.cancel()


def publish_as(served: Global, credentials: grpc.ChannelCredentials, replica: str) -> Any:
    channel = grpc.aio.secure_channel(served.address, credentials)
    served.channels.append(channel)
    method: Any = channel.stream_stream(
        f"/{SERVICE}/{ZONE_TO_GLOBAL}",
        request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
    )
    return method(metadata=((SITE_METADATA, "edge-paris"), (REPLICA_METADATA, replica)))


async def test_a_zone_may_connect_sixteen_replica_ids_with_both_stream_kinds_in_all(
    served: Global,
) -> None:
    served.service.feed.update([profile("eu")], [])
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    subscription = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ZONE_RESOURCE_TYPE_URL, resource_names_subscribe=["*"]
    )
    calls = []
    for index in range(MAX_REPLICAS):  # the subscriptions of sixteen replica ids
        call = subscribe_as(served, credentials, f"zone-{index}")
        await call.write(subscription)
        async with asyncio.timeout(10):
            await call.read()
        calls.append(call)
    # A seventeenth replica id is refused, on either kind of stream.
    extra = subscribe_as(served, credentials, "zone-16")
    await extra.write(subscription)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(10):
            await extra.read()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(10):
            await publish_as(served, credentials, "zone-16").read()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.service.subscribed["edge-paris"] == MAX_REPLICAS
    # A replica id already connected opens its other kind of stream.
    async with asyncio.timeout(10):
        first = await publish_as(served, credentials, "zone-0").read()
    assert first.type_url == TYPE_URL
    # One replica gone, another id may connect.
    calls[1].cancel()
    await eventually(lambda: served.service.subscribed["edge-paris"] == MAX_REPLICAS - 1)
    again = subscribe_as(served, credentials, "zone-16")
    await again.write(subscription)
    async with asyncio.timeout(10):
        await again.read()
    for call in (*calls, again):
        call.cancel()


async def test_few_streams_of_a_replica_wait_for_their_first_response(served: Global) -> None:
    credentials = served.credentials("zone-edge-paris", "edge-paris")

    async def connected(replica: str) -> Any:
        call = publish_as(served, credentials, replica)
        async with asyncio.timeout(10):
            assert (await call.read()).type_url == TYPE_URL
        return call

    async def ended(call: Any) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with asyncio.timeout(10):
                await call.read()
        assert error.value.code() is grpc.StatusCode.ABORTED
        assert "a newer stream of this zone replica connected" in str(error.value.details())

    # A replica redialing without ever answering: each newer stream ends at once the
    # oldest beyond MAX_WAITING, though none has answered.
    calls = [await connected("zone-a") for _ in range(3 * MAX_WAITING)]
    for older in calls[:-MAX_WAITING]:
        await ended(older)
    # The newest attaches at its first response.
    newest = calls[-1]
    await newest.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="1"))
    async with asyncio.timeout(10):
        answer = await newest.read()
    assert answer.response_nonce == "1"
    assert not answer.HasField("error_detail")
    assert served.zone.replicas() == [("zone-a", True)]
    # A stream told of a view since changed could not attach: a newer one ends it at once.
    told_before = await connected("zone-b")
    object_a = service_object("a")
    change = discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="2")
    change.resources.add(name=object_a.name, version=object_a.version).resource.Pack(
        object_a.message
    )
    await newest.write(change)
    async with asyncio.timeout(10):
        assert (await newest.read()).response_nonce == "2"
    told_after = await connected("zone-b")
    await ended(told_before)
    for call in (*calls[-MAX_WAITING:], told_after):
        call.cancel()


async def test_a_stream_sending_no_first_response_within_its_deadline_is_ended(
    served: Global,
) -> None:
    service = FederationService(
        FleetAuthenticator(served.ca), served.zones.get, first_response_deadline=0.5
    )
    address = f"127.0.0.1:{free_port()}"
    certificate = ServerCertificate(served.ca, ["127.0.0.1"])
    server = await start_server(
        service, address, certificate.credentials(require_client_certificate=True)
    )
    try:
        channel = grpc.aio.secure_channel(
            address, served.credentials("zone-edge-paris", "edge-paris")
        )
        served.channels.append(channel)
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{ZONE_TO_GLOBAL}",
            request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        )
        call = method(metadata=((SITE_METADATA, "edge-paris"), (REPLICA_METADATA, "zone-a")))
        async with asyncio.timeout(10):
            assert (await call.read()).type_url == TYPE_URL
        # It never answers: the global ends it, counted.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):
                await call.read()
        assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no first response within 0.5 s" in str(ended.value.details())
        assert service.refused[REFUSED_SILENT] == 1
        assert served.zone.stats.connections == 0
    finally:
        await server.stop(0)


async def test_a_standby_holding_old_versions_past_the_bound_is_ended_at_once(
    served: Global,
) -> None:
    # The site's views may hold 1.5 times the objects a zone publishes: a standby keeping
    # every old version when the active changes them all is over it.
    first = [service_object("a"), service_object("b")]
    size = sum(obj.size for obj in first)
    zone = ZoneSource("edge-paris", debounce=0.01, max_bytes=size + size // 2)
    service = FederationService(FleetAuthenticator(served.ca), {"edge-paris": zone}.get)
    address = f"127.0.0.1:{free_port()}"
    certificate = ServerCertificate(served.ca, ["127.0.0.1"])
    server = await start_server(
        service, address, certificate.credentials(require_client_certificate=True)
    )
    channel = grpc.aio.secure_channel(address, served.credentials("zone-edge-paris", "edge-paris"))
    served.channels.append(channel)
    method: Any = channel.stream_stream(
        f"/{SERVICE}/{ZONE_TO_GLOBAL}",
        request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
    )

    def replica(name: str) -> Any:
        return method(metadata=((SITE_METADATA, "edge-paris"), (REPLICA_METADATA, name)))

    async def answered(call: Any, publisher: Publisher) -> None:
        async with asyncio.timeout(10):
            response = publisher.response()
            assert response is not None
            await call.write(response)
            answer = publisher.answer(await call.read())
        assert answer is not None
        assert answer.accepted, answer.error

    try:
        active, publisher = replica("zone-a"), Publisher()
        publisher.publish(first)
        async with asyncio.timeout(10):
            publisher.connect(dict((await active.read()).initial_resource_versions))
        await answered(active, publisher)
        # A standby connects holding what the site holds, sharing it all.
        standby, standing = replica("zone-b"), Publisher()
        standing.publish(first)
        async with asyncio.timeout(10):
            standing.connect(dict((await standby.read()).initial_resource_versions))
        await answered(standby, standing)
        assert zone.replicas() == [("zone-a", True), ("zone-b", False)]
        # The active sends new versions of everything: accepted, and the standby, now
        # holding the old ones, is ended at once (it redials from the site's view).
        publisher.publish([service_object("a", port=81), service_object("b", port=82)])
        await answered(active, publisher)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):
                await standby.read()
        assert ended.value.code() is grpc.StatusCode.ABORTED
        assert "this standby replica's view, the one holding the most" in str(ended.value.details())
        assert zone.replicas() == [("zone-a", True)]
        assert zone.bytes_held <= size + size // 2
        active.cancel()
    finally:
        await server.stop(0)


async def test_a_zone_reaching_one_global_at_two_addresses_publishes_on_one_link(
    served: Global, tmp_path: Path
) -> None:
    # One global process listening on two addresses, both named in `--global`.
    certificate = ServerCertificate(served.ca, ["127.0.0.1"])
    other_address = f"127.0.0.1:{free_port()}"
    other = await start_server(
        served.service, other_address, certificate.credentials(require_client_certificate=True)
    )
    credentials, site = tmp_path / "credentials", tmp_path / "site"
    site.mkdir()
    write_credentials(credentials, served.ca, HOUR)
    (site / "a.yaml").write_text(yaml.safe_dump(dict(service_object("a").body)))
    addresses = f"{served.address},{other_address}"
    zone = Zone(ZoneSettings("edge-paris", addresses, credentials, site, backoff=(0.05, 0.2)))
    running = asyncio.create_task(zone.run())
    try:
        await eventually(lambda: served.zone.objects == 1, timeout=10, what="a published")
        # Each change is published once: no stream of the zone replaced another.
        for count, name in enumerate(("b", "c", "d"), start=2):
            (site / f"{name}.yaml").write_text(yaml.safe_dump(dict(service_object(name).body)))
            await eventually(lambda c=count: served.zone.objects == c, timeout=10, what=name)
        assert served.zone.stats.connections == 1
        # Both links reached the global; the second one to learn its instance stays idle.
        await eventually(
            lambda: (
                [link.instance for link in zone.publisher] == [served.service.instance] * 2
                and sum(link.idle for link in zone.publisher) == 1
            ),
            timeout=10,
            what="both links reached the one instance",
        )
        assert served.zone.stats.connections == 1
        assert served.zone.replicas() == [(zone.replica, True)]
        assert zone.publisher.stats.responses == 4  # the first view, then each change
        assert (zone.publisher.connected_links(), zone.publisher.disconnected_links()) == (1, 0)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await other.stop(0)


async def test_a_replaced_subscription_leaves_its_successors_lag_marker(served: Global) -> None:
    served.service.feed.update([profile("eu")], [])
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    subscription = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ZONE_RESOURCE_TYPE_URL, resource_names_subscribe=["*"]
    )
    older = subscribe_as(served, credentials, "zone-a")
    await older.write(subscription)
    await older.read()  # not answered: behind
    newer = subscribe_as(served, credentials, "zone-a")
    await newer.write(subscription)
    await newer.read()  # not answered either
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(10):
            await older.read()
    assert ended.value.code() is grpc.StatusCode.ABORTED
    await eventually(lambda: served.service.subscribed["edge-paris"] == 1)
    # The older stream's end leaves the newer one's response, still unanswered, counted.
    assert "edge-paris" in served.service.behind_since
    newer.cancel()
    await eventually(lambda: "edge-paris" not in served.service.behind_since)


# A zone in a mount namespace of its own (its own /etc/hosts), until both links to the
# dual-stack name learned the global's instance; it prints each link's target, instance
# and whether it is idle.
DUAL_STACK_ZONE = """
import asyncio, json, sys
from pathlib import Path
from kontinuum.federation.global_links import resolve
from kontinuum.federation.zone import Zone, ZoneSettings

async def main(address, credentials, site):
    zone = Zone(ZoneSettings("edge-paris", address, Path(credentials), Path(site),
                             backoff=(0.05, 0.2)))
    running = asyncio.create_task(zone.run())
    try:
        async with asyncio.timeout(30):
            while not (len(zone.publisher) == 2 and all(l.instance for l in zone.publisher)
                       and zone.publisher.connected_links() == 1):
                await asyncio.sleep(0.05)
        # Bounded: each change published once more, on the one link.
        (Path(site) / "b.yaml").write_text(Path(site, "a.yaml").read_text().replace(
            "name: a", "name: b"))
        async with asyncio.timeout(30):
            while zone.publisher.stats.acks < 2:
                await asyncio.sleep(0.05)
        host, port = address.rsplit(":", 1)
        targets = sorted(t.target for t in resolve([(host, int(port))])[0])
        links = [zone.publisher.link(t) for t in targets]
        print(json.dumps([(t, l.instance, l.idle) for t, l in zip(targets, links)]))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_dual_stack_name_is_dialed_at_both_addresses_and_publishes_on_one_link(
    served: Global, tmp_path: Path
) -> None:
    # One global process listening on ::1 and 127.0.0.1, the AAAA and A records of a name
    # (in a hosts file of a mount namespace of the zone's own).
    port = free_port()
    certificate = ServerCertificate(served.ca, ["global.dual.test"])
    listeners = [
        await start_server(
            served.service, address, certificate.credentials(require_client_certificate=True)
        )
        for address in (f"[::1]:{port}", f"127.0.0.1:{port}")
    ]
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 global.dual.test\n127.0.0.1 global.dual.test\n")
    credentials, site = tmp_path / "credentials", tmp_path / "site"
    site.mkdir()
    write_credentials(credentials, served.ca, HOUR)
    (site / "a.yaml").write_text(yaml.safe_dump(dict(service_object("a").body)))
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    try:
        zone = await asyncio.create_subprocess_exec(
            "unshare", "-rm", "sh", "-c", script, "sh", str(hosts),
            sys.executable, "-c", DUAL_STACK_ZONE,
            f"global.dual.test:{port}", str(credentials), str(site),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(90):
            out, err = await zone.communicate()
        assert zone.returncode == 0, err.decode()[-2000:]
    finally:
        for listener in listeners:
            await listener.stop(0)
    # Both addresses, of both families, were dialed; both reached the one instance, and
    # one link published while the other stayed idle.
    links = json.loads(out)
    assert [target for target, _, _ in links] == [
        f"ipv4:127.0.0.1:{port}",
        f"ipv6:[::1]:{port}",
    ]
    assert {instance for _, instance, _ in links} == {served.service.instance}
    assert sorted(idle for _, _, idle in links) == [False, True]
    # One stream of the zone at the global: no link's stream replaced the other's.
    assert served.zone.stats.connections == 1
    assert served.zone.objects == 2
