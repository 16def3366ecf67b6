"""A zone whose site is described in DNS: `kontinuum zone --dns-domain` looks the site up
in a real DNS server (BIND's named, as `kontinuum serve` does a `kontinuum.io/source: dns`
site), publishes it to a real global as Services and EndpointSlices, and an Envoy sidecar
at the global reaches the real backend the SRV records name; an SRV change moves its
traffic, and a DNS server that stops answering makes the site stale at the global."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import StartEnvoy
from tests.e2e.test_federation import (  # noqa: F401 (the fixture)
    ZONE,
    Federation,
    answered_by,
    federation,
    issue,
    running,
    sidecar_bootstrap,
    until,
)
from tests.support.dns_server import INSTALL_HINT, DnsServer, find_named
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

DOMAIN = "edge-paris.test"


@pytest.fixture
def dns_server(federation: Federation) -> Iterator[DnsServer]:  # noqa: F811
    if find_named() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    paris_1 = federation.backends["paris-1"].port
    records = f"_http._tcp.hello SRV 0 10 {paris_1} vm-1.hello\nvm-1.hello A 127.0.0.1\n"
    with DnsServer(DOMAIN, records, ttl=1) as started:
        yield started


async def test_a_zone_publishes_its_site_from_dns_and_an_srv_change_reaches_the_global(
    federation: Federation,  # noqa: F811
    dns_server: DnsServer,
    envoys: StartEnvoy,
) -> None:
    found = federation
    global_ = found.global_
    zone = found.zone_process(
        found.zone_credentials,
        "edge-paris",
        "--dns-domain", DOMAIN, "--dns-server", dns_server.server,
        "--dns-services", "demo/hello:http",
    )  # fmt: skip
    sidecar = await asyncio.to_thread(
        issue, found.ca, found.root / "frontend", "eu-central", "demo", "frontend"
    )
    outbound = free_port()
    envoys(
        view="eu-central",
        xds_port=0,
        mode="delta",
        node_id="frontend-1",
        config=sidecar_bootstrap(found, sidecar, outbound),
    )
    source = {"source": ZONE}
    with running(zone):
        logs = (global_.log, zone.log)
        # The SRV record's target serves the global's sidecar, through the zone.
        await until(answered_by(outbound, "paris-1"), "hello answered by paris-1", 60, logs)
        assert await global_.metric("kontinuum_federation_zone_objects", {
            "zone": "edge-paris"
        }) == 3  # fmt: skip
        assert await global_.metric("kontinuum_source_stale", source) == 0

        # The SRV record now names paris-2's port: the sidecar follows.
        paris_2 = found.backends["paris-2"].port
        dns_server.update(
            delete=["_http._tcp.hello SRV"],
            add=[f"_http._tcp.hello 1 SRV 0 10 {paris_2} vm-1.hello"],
        )
        await until(answered_by(outbound, "paris-2"), "hello answered by paris-2", 30, logs)

        # The DNS server stops answering: the site is stale at the global, its last
        # endpoints still serve; answering again, it is in sync.
        dns_server.pause()
        try:

            async def stale() -> bool:
                return await global_.metric("kontinuum_source_stale", source) == 1

            await until(stale, "the site marked stale at the global", 60, logs)
            assert answered_by(outbound, "paris-2")()
        finally:
            dns_server.resume()

        async def fresh() -> bool:
            return await global_.metric("kontinuum_source_stale", source) == 0

        await until(fresh, "the site in sync again at the global", 60, logs)
        assert answered_by(outbound, "paris-2")()
