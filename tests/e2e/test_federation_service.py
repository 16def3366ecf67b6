"""The global's federation service over real gRPC and mutual TLS on 127.0.0.1, with
certificates of a real fleet CA: who is admitted, what the first request says, ACK and
NACK by nonce, a stream taken over by a newer one, and the message bound."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.discovery.source import Health
from kontinuum.discovery.zone import ZoneSource
from kontinuum.discovery.zone_store import ReceivedObject, ZoneObjects
from kontinuum.federation.objects import (
    GLOBAL_TO_ZONE,
    MAX_MESSAGE_BYTES,
    SERVICE,
    SITE_METADATA,
    TYPE_URL,
    ZONE_RESOURCE_TYPE_URL,
    ZONE_TO_GLOBAL,
    content_version,
    site_object,
)
from kontinuum.federation.publisher import Publisher
from kontinuum.federation.service import FederationService, start_server
from kontinuum.federation.zone import Zone, ZoneSettings
from kontinuum.security import CertificateAuthority, SpiffeId
from kontinuum.security.xds_auth import FleetAuthenticator, ServerCertificate, server_identity
from tests.support.net import eventually, free_port
from tests.support.zone_ca import minted, zone_authority

pytestmark = pytest.mark.e2e

TD = "cluster.local"
HOUR = timedelta(hours=1)
EOF_ = grpc.aio.EOF  # type: ignore[attr-defined]


@dataclass
class Global:
    ca: CertificateAuthority
    address: str
    service: FederationService
    zone: ZoneSource
    zones: dict[str, ZoneSource]
    channels: list[grpc.aio.Channel]

    ca_dir: Path

    def credentials(self, account: str, cluster: str | None) -> grpc.ChannelCredentials:
        issued = self.ca.issue_workload(SpiffeId(TD, "kontinuum-system", account), cluster, HOUR)
        return grpc.ssl_channel_credentials(
            self.ca.trust_bundle_pem, issued.private_key_pem, issued.certificate_chain_pem
        )

    def forged(self, account: str, cluster: str | None) -> grpc.ChannelCredentials:
        """A certificate the fleet's key signs by hand, past the CA's checks (as any
        SPIFFE issuer signing with it would, cert-manager's say)."""
        chain, key = minted(self.ca_dir, SpiffeId(TD, "kontinuum-system", account), cluster)
        return grpc.ssl_channel_credentials(self.ca.trust_bundle_pem, key, chain)

    def open(self, credentials: grpc.ChannelCredentials, site: str = "edge-paris") -> Any:
        channel = grpc.aio.secure_channel(
            self.address, credentials, options=[("grpc.max_send_message_length", -1)]
        )
        self.channels.append(channel)
        method: Any = channel.stream_stream(
            f"/{SERVICE}/{ZONE_TO_GLOBAL}",
            request_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        )
        return method(metadata=((SITE_METADATA, site),) if site else ())


@pytest.fixture
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Global]:
    ca = CertificateAuthority.generate(TD)
    ca_dir = tmp_path_factory.mktemp("fleet-ca") / "ca"
    ca.save(ca_dir)
    zone = ZoneSource("edge-paris", debounce=0.01)
    zones = {"edge-paris": zone}
    service = FederationService(FleetAuthenticator(ca), zones.get)
    address = f"127.0.0.1:{free_port()}"
    certificate = ServerCertificate(ca, ["127.0.0.1"])
    server = await start_server(
        service, address, certificate.credentials(require_client_certificate=True)
    )

    async def follow() -> None:  # the source runs, as under the aggregator
        async for _ in zone.updates():
            pass

    follower = asyncio.create_task(follow())
    served = Global(ca, address, service, zone, zones, [], ca_dir)
    try:
        yield served
    finally:
        for channel in served.channels:
            await channel.close()
        follower.cancel()
        await server.stop(0)


def service_object(name: str, port: Any = 80) -> Any:
    return site_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"ports": [{"name": "http", "port": port}]},
        }
    )


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with asyncio.timeout(10):
            await call.read()
    return raised.value


@pytest.mark.parametrize(
    ("account", "cluster", "site", "reason", "says"),
    [
        ("zone-other", "other", "edge-paris", "identity", "proves ns/kontinuum-system/sa/zone-e"),
        ("zone-edge-paris", "other", "edge-paris", "identity", "is for cluster 'other'"),
        ("zone-edge-paris", None, "edge-paris", "identity", "its certificate names no cluster"),
        ("zone-edge-paris", "edge-paris", "", "identity", "name the site in the"),
        ("zone-eu", "eu", "eu", "undeclared", "kontinuum.io/source: zone"),
    ],
)  # fmt: skip
async def test_a_zone_is_admitted_only_for_its_own_declared_site(
    served: Global, account: str, cluster: str | None, site: str, reason: str, says: str
) -> None:
    # Signed by the fleet's key by hand: its CA issues a zone's identity of its site only.
    error = await refusal(served.open(served.forged(account, cluster), site))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert says in (error.details() or "")
    assert served.service.refused[reason] == 1
    assert served.zone.stats.connections == 0


async def test_a_zone_ca_s_certificate_publishes_its_own_site_only(served: Global) -> None:
    """A zone's intermediate key signs, by hand, the identity of another zone: the handshake
    accepts it (it chains to the root), the global refuses it for that site."""
    _, other = zone_authority(served.ca, "other")
    chain, key = minted(other, SpiffeId(TD, "kontinuum-system", "zone-edge-paris"), "edge-paris")
    error = await refusal(
        served.open(grpc.ssl_channel_credentials(served.ca.trust_bundle_pem, key, chain))
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "issued by the zone CA of site 'other'" in (error.details() or "")
    assert served.service.refused["issuer"] == 1
    assert served.zone.stats.connections == 0
    # Its own site's zone identity, which the zone's key signs (its CA issues that for its
    # xDS server only), is admitted.
    _, zone_dir = zone_authority(served.ca, "edge-paris")
    chain, key = minted(zone_dir, SpiffeId(TD, "kontinuum-system", "zone-edge-paris"), "edge-paris")
    call = served.open(grpc.ssl_channel_credentials(served.ca.trust_bundle_pem, key, chain))
    async with asyncio.timeout(10):
        first = await call.read()
    assert list(first.resource_names_subscribe) == ["*"]


async def test_a_zone_s_xds_server_certificate_publishes_nothing(served: Global) -> None:
    """The zone's intermediate issues its zone's identity for its xDS server, with no
    cluster: presented to the global as a client certificate, it is refused."""
    zone, _ = zone_authority(served.ca, "edge-paris")
    issued = zone.issue_server(server_identity(zone), ["127.0.0.1"], HOUR)
    error = await refusal(
        served.open(
            grpc.ssl_channel_credentials(
                served.ca.trust_bundle_pem, issued.private_key_pem, issued.certificate_chain_pem
            )
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "its certificate names no cluster" in (error.details() or "")
    assert served.service.refused["identity"] == 1
    assert served.zone.stats.connections == 0


async def test_the_global_says_what_it_holds_and_answers_each_response_by_nonce(
    served: Global,
) -> None:
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    publisher = Publisher()
    publisher.publish([service_object("a"), service_object("b")])

    call = served.open(credentials)
    first = await call.read()
    assert (list(first.resource_names_subscribe), dict(first.initial_resource_versions)) == (
        ["*"],
        {},
    )
    publisher.connect(dict(first.initial_resource_versions))
    response = publisher.response()
    await call.write(response)
    answer = publisher.answer(await call.read())
    assert answer is not None
    assert answer.accepted
    assert served.zone.objects == 2

    publisher.publish([service_object("a", port="eighty"), service_object("b", port=81)])
    await call.write(publisher.response())
    answer = publisher.answer(await call.read())
    assert answer is not None
    assert answer.error == (
        "1 object(s) refused: Service/demo/a: Service demo/a: spec.ports[0].port: must be "
        "an integer, got string"
    )
    held = served.zone.held()
    assert held["Service/demo/a"] == service_object("a").version  # the last good one
    assert held["Service/demo/b"] == service_object("b", port=81).version

    # A restarted zone: the new stream is told what is held, and takes over at its first
    # response.
    again = served.open(credentials)
    assert dict((await again.read()).initial_resource_versions) == held
    await again.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="1"))
    assert (await again.read()).response_nonce == "1"
    await call.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="9"))
    error = await refusal(call)
    assert error.code() is grpc.StatusCode.ABORTED
    assert served.zone.stats.connections == 2
    assert served.zone.stats.connected
    again.cancel()


class KeptObjects(ZoneObjects):
    """A store that holds `objects` (nothing is written)."""

    def __init__(self, objects: list[ReceivedObject]) -> None:
        super().__init__(Path("/nonexistent"), "edge-paris", content_version)
        self._objects = objects

    def load(self) -> list[ReceivedObject]:
        return self._objects

    def save(self, changes: Any) -> None:
        pass


async def test_a_zone_holding_more_than_a_message_can_name_reconnects_and_resyncs(
    served: Global,
) -> None:
    # 50,000 objects: their names and versions are more than one message holds.
    kept = [service_object(f"svc-{i}") for i in range(50_000)]
    served.zone.keep(KeptObjects([ReceivedObject(o.name, o.version, o.kind, o.body) for o in kept]))
    call = served.open(served.credentials("zone-edge-paris", "edge-paris"))
    first = await call.read()
    declared = dict(first.initial_resource_versions)
    assert 0 < len(declared) < len(kept)
    assert first.ByteSize() <= MAX_MESSAGE_BYTES
    # The zone now has a few of the undeclared ones only (and all the declared): what it
    # was not told of and does not send is what the global no longer holds.
    publisher = Publisher()
    undeclared = [o for o in kept if o.name not in declared]
    publisher.publish([o for o in kept if o.name in declared] + undeclared[:3])
    publisher.connect(declared)
    response = publisher.response()
    assert response is not None
    assert len(response.resources) == 3
    await call.write(response)
    answer = publisher.answer(await call.read())
    assert answer is not None
    assert answer.accepted
    assert served.zone.held() == {o.name: o.version for o in publisher.objects.values()}
    call.cancel()


async def test_a_message_over_the_bound_is_refused(served: Global) -> None:
    call = served.open(served.credentials("zone-edge-paris", "edge-paris"))
    await call.read()
    huge = discovery_pb2.DeltaDiscoveryResponse(
        type_url=TYPE_URL, nonce="1", system_version_info="x" * MAX_MESSAGE_BYTES
    )
    await call.write(huge)
    error = await refusal(call)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.zone.objects == 0


async def test_a_response_of_another_type_is_nacked_whole(served: Global) -> None:
    call = served.open(served.credentials("zone-edge-paris", "edge-paris"))
    await call.read()
    response = Publisher()
    response.publish([service_object("a")])
    response.connect({})
    wrong = response.response()
    assert wrong is not None
    wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    await call.write(wrong)
    answer = await call.read()
    assert answer.response_nonce == wrong.nonce
    assert answer.error_detail.message == (
        "type 'type.googleapis.com/envoy.config.cluster.v3.Cluster' is not " + TYPE_URL
    )
    assert served.zone.objects == 0
    assert served.zone.status().health is Health.STARTING  # its first response is still due


async def test_a_stream_outliving_its_certificate_is_ended(served: Global) -> None:
    lifetime = timedelta(seconds=1.5)
    issued = served.ca.issue_workload(
        SpiffeId(TD, "kontinuum-system", "zone-edge-paris"), "edge-paris", lifetime
    )
    call = served.open(
        grpc.ssl_channel_credentials(
            served.ca.trust_bundle_pem, issued.private_key_pem, issued.certificate_chain_pem
        )
    )
    await call.read()
    await asyncio.sleep(lifetime.total_seconds() + 0.5)
    await call.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="1"))
    error = await refusal(call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "certificate expired" in (error.details() or "")
    assert served.zone.objects == 0
    assert not served.zone.stats.connected


async def test_a_site_no_longer_declared_as_a_zone_ends_its_stream(served: Global) -> None:
    call = served.open(served.credentials("zone-edge-paris", "edge-paris"))
    await call.read()
    await call.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="1"))
    assert (await call.read()).response_nonce == "1"
    del served.zones["edge-paris"]  # its ClusterProfile changed: its source stopped
    await call.write(discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_URL, nonce="2"))
    error = await refusal(call)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "site edge-paris is no longer declared as a zone"


def write_credentials(directory: Path, ca: CertificateAuthority, lifetime: timedelta) -> None:
    issued = ca.issue_workload(
        SpiffeId(TD, "kontinuum-system", "zone-edge-paris"), "edge-paris", lifetime
    )
    directory.mkdir(exist_ok=True)
    for name, content in (
        ("cert.pem", issued.certificate_chain_pem),
        ("key.pem", issued.private_key_pem),
        ("ca.pem", ca.trust_bundle_pem),
    ):
        temporary = directory / f".{name}"
        temporary.write_bytes(content)
        os.replace(temporary, directory / name)


async def test_a_zone_reconnects_with_its_renewed_certificate(
    served: Global, tmp_path: Path
) -> None:
    credentials, site = tmp_path / "credentials", tmp_path / "site"
    site.mkdir()
    (site / "a.yaml").write_text(yaml.safe_dump(dict(service_object("a").body)))
    lifetime = timedelta(seconds=2)
    write_credentials(credentials, served.ca, lifetime)
    zone = Zone(ZoneSettings("edge-paris", served.address, credentials, site, backoff=(0.05, 0.2)))
    running = asyncio.create_task(zone.run())
    try:
        await eventually(lambda: served.zone.objects == 1, timeout=10, what="a published")
        write_credentials(credentials, served.ca, HOUR)  # renewed in place
        await asyncio.sleep(lifetime.total_seconds() + 0.5)  # the first one has expired
        (site / "b.yaml").write_text(yaml.safe_dump(dict(service_object("b").body)))
        # refused with the old certificate, sent with the new one
        await eventually(lambda: served.zone.objects == 2, timeout=10, what="b published")
        assert served.zone.stats.connections == 2
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def subscribe(served: Global, credentials: grpc.ChannelCredentials, site: str) -> Any:
    channel = grpc.aio.secure_channel(served.address, credentials)
    served.channels.append(channel)
    method: Any = channel.stream_stream(
        f"/{SERVICE}/{GLOBAL_TO_ZONE}",
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )
    return method(metadata=((SITE_METADATA, site),))


def profile(name: str, region: str = "") -> dict[str, Any]:
    labels = {"topology.kubernetes.io/region": region} if region else {}
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet", "labels": labels},
    }


async def test_a_zone_subscribes_to_the_fleet_and_is_sent_only_what_differs(
    served: Global,
) -> None:
    feed = served.service.feed
    feed.update([profile("eu"), profile("edge-paris")], [])
    # Another site's identity may not subscribe as edge-paris.
    impostor = subscribe(served, served.credentials("zone-other", "other"), "edge-paris")
    error = await refusal(impostor)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert served.service.refused["identity"] == 1

    credentials = served.credentials("zone-edge-paris", "edge-paris")
    held = feed.catalog.for_zone("edge-paris")["fleet/ClusterProfile/fleet/eu"]
    call = subscribe(served, credentials, "edge-paris")
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=ZONE_RESOURCE_TYPE_URL,
            resource_names_subscribe=["*"],
            initial_resource_versions={held.name: held.version, "fleet/Gone/x/y": "0"},
        )
    )
    first = await call.read()
    assert first.type_url == ZONE_RESOURCE_TYPE_URL
    assert [r.name for r in first.resources] == ["fleet/ClusterProfile/fleet/edge-paris"]
    assert list(first.removed_resources) == ["fleet/Gone/x/y"]
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=ZONE_RESOURCE_TYPE_URL, response_nonce=first.nonce
        )
    )
    # A change at the global goes out as what changed only.
    feed.update([profile("eu", "eu-west-1"), profile("edge-paris")], [])
    second = await call.read()
    assert [r.name for r in second.resources] == ["fleet/ClusterProfile/fleet/eu"]
    assert served.service.sent["edge-paris"].objects_sent == 2
    assert served.service.subscribed["edge-paris"] == 1

    # Until the zone answers the change, it lags: from when the change was sent.
    sent_at = served.service.behind_since["edge-paris"]
    assert served.service.lag(served.zone, sent_at + 5) == 5
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=ZONE_RESOURCE_TYPE_URL, response_nonce=second.nonce
        )
    )
    for _ in range(100):
        if "edge-paris" not in served.service.behind_since:
            break
        await asyncio.sleep(0.05)
    assert served.service.lag(served.zone, sent_at + 5) == 0


async def test_a_newer_subscription_of_a_zone_ends_the_older_one(served: Global) -> None:
    feed = served.service.feed
    feed.update([profile("eu")], [])
    credentials = served.credentials("zone-edge-paris", "edge-paris")
    subscription = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ZONE_RESOURCE_TYPE_URL, resource_names_subscribe=["*"]
    )
    older = subscribe(served, credentials, "edge-paris")
    await older.write(subscription)
    assert [r.name for r in (await older.read()).resources] == ["fleet/ClusterProfile/fleet/eu"]
    # The zone redials (its link was cut, say): one subscription per zone, as one stream.
    newer = subscribe(served, credentials, "edge-paris")
    await newer.write(subscription)
    assert [r.name for r in (await newer.read()).resources] == ["fleet/ClusterProfile/fleet/eu"]
    error = await refusal(older)
    assert error.code() is grpc.StatusCode.ABORTED
    await eventually(lambda: served.service.subscribed["edge-paris"] == 1)
    newer.cancel()


@pytest.mark.parametrize(
    ("issuer", "identity", "says"),
    [
        (
            "fleet",
            SpiffeId(TD, "demo", "web"),
            "presents spiffe://cluster.local/ns/demo/sa/web, not the control plane's identity",
        ),
        (
            "zone",
            SpiffeId(TD, "kontinuum-system", "kontinuum"),
            "issued by CN=kontinuum zone CA other,OU=other,O=cluster.local, not by the fleet's CA",
        ),
        (
            "stranger",
            SpiffeId(TD, "kontinuum-system", "kontinuum"),
            "fails verification: unable to get local issuer certificate",
        ),
    ],
)
async def test_a_zone_refuses_a_global_that_is_not_the_control_plane(
    served: Global,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    issuer: str,
    identity: SpiffeId,
    says: str,
) -> None:
    """A server on the global's address with a certificate the zone's roots accept for its
    host, but without the control plane's identity (of the fleet's CA itself), or with one
    they do not accept: the zone logs and counts it, and never opens a stream to it."""
    if issuer == "zone":
        # A zone's CA does not issue the control plane's identity: its key signs it by hand.
        chain, key = minted(zone_authority(served.ca, "other")[1], identity, None,
                            hosts=("127.0.0.1",))  # fmt: skip
    else:  # the fleet's CA, or one the zone's roots do not hold (the handshake fails)
        authority = served.ca if issuer == "fleet" else CertificateAuthority.generate(TD)
        issued = authority.issue_server(identity, ["127.0.0.1"], HOUR)
        chain, key = issued.certificate_chain_pem, issued.private_key_pem
    impostor = FederationService(FleetAuthenticator(served.ca), served.zones.get)
    address = f"127.0.0.1:{free_port()}"
    server = await start_server(
        impostor,
        address,
        grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=served.ca.trust_bundle_pem,
            require_client_auth=True,
        ),
    )
    credentials, site = tmp_path / "credentials", tmp_path / "site"
    site.mkdir()
    (site / "a.yaml").write_text(yaml.safe_dump(dict(service_object("a").body)))
    write_credentials(credentials, served.ca, HOUR)
    zone = Zone(ZoneSettings("edge-paris", address, credentials, site, backoff=(0.05, 0.2)))
    running = asyncio.create_task(zone.run())
    try:
        await eventually(lambda: zone.global_check.refused >= 3, timeout=10, what="refused")
        assert says in zone.global_check.problems[address]
        assert served.zone.stats.connections == 0
        assert not zone.publisher.connected
        assert f"refused the global: the global at {address}" in caplog.text
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await server.stop(0)
    # The same zone dials the real global, which presents the control plane's identity.
    zone = Zone(ZoneSettings("edge-paris", served.address, credentials, site))
    running = asyncio.create_task(zone.run())
    try:
        await eventually(lambda: served.zone.objects == 1, timeout=10, what="a published")
        assert zone.global_check.refused == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
