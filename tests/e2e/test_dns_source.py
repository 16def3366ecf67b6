"""The DNS source against a real DNS server: BIND 9's named on a loopback port.

The test zone `edge.test` has 1-second TTLs; records change through DNS UPDATE messages,
as an operator's tooling would change them. Failures are the server's own: a name
delegated to a nameserver without address answers SERVFAIL; a paused (SIGSTOPped)
server lets lookups time out. Without named the tests fail, never skip: CI installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from kontinuum.control.mcs import build_plane
from kontinuum.control.model import (
    ClusterSite,
    DnsAccess,
    DnsService,
    Fleet,
    SiteSnapshot,
)
from kontinuum.discovery.dns import DnsSource
from kontinuum.discovery.source import Health, SourceUpdate
from tests.support.dns_server import INSTALL_HINT, DnsServer, dig, find_named

pytestmark = pytest.mark.e2e

ZONE = "edge.test"
RECORDS = """
_http._tcp.hello  SRV 0 10 8080 a.hello
_http._tcp.hello  SRV 0 10 8080 b.hello
_grpc._tcp.hello  SRV 0 10 9090 a.hello
a.hello           A    127.0.0.11
a.hello           AAAA 2001:db8::11
b.hello           A    127.0.0.12
_http._tcp.web    SRV 0 0 80 web-1.shop
web-1.shop        A    127.0.0.21
"""
SERVICES = (
    DnsService("demo", "hello", "http"),
    DnsService("demo", "hello", "grpc"),
    DnsService("shop", "web", "http"),
)
TTL = 1.0  # the zone's TTLs, positive and negative
WAIT = 3 * TTL + 2  # longest any change may take to show: a TTL, a lookup round, slack


@pytest.fixture
def server() -> Iterator[DnsServer]:
    if find_named() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with DnsServer(ZONE, RECORDS, ttl=int(TTL)) as started:
        yield started


def endpoints(snapshot: SiteSnapshot, name: str, port: str) -> set[str]:
    """`address:port` of the endpoints of service `name` on its port `port`."""
    return {
        f"{e.addresses[0]}:{p.port}"
        for e in snapshot.endpoints
        if e.service == name
        for p in e.ports
        if p.name == port
    }


class Follow:
    """A running DnsSource, its snapshots read one by one with bounded waits."""

    def __init__(self, source: DnsSource) -> None:
        self.source = source
        self.updates: asyncio.Queue[tuple[float, SourceUpdate]] = asyncio.Queue()
        self.started = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self.source.updates():
            self.updates.put_nowait((time.monotonic(), update))

    async def next(self, timeout: float = WAIT) -> SiteSnapshot:
        _, update = await asyncio.wait_for(self.updates.get(), timeout)
        assert isinstance(update, SiteSnapshot)
        return update

    async def until(
        self, check: Callable[[SiteSnapshot], bool], what: str, timeout: float = WAIT
    ) -> tuple[SiteSnapshot, float]:
        """The first snapshot for which `check` holds, and how long after the call it came."""
        begun = time.monotonic()
        deadline = begun + timeout
        seen: list[SiteSnapshot] = []
        while True:
            try:
                at, update = await asyncio.wait_for(
                    self.updates.get(), max(deadline - time.monotonic(), 0.0)
                )
            except TimeoutError:
                raise AssertionError(
                    f"no snapshot where {what} within {timeout}s; saw {seen}; "
                    f"status {self.source.status()}"
                ) from None
            assert isinstance(update, SiteSnapshot)
            if check(update):
                return update, at - begun
            seen.append(update)

    async def nothing_for(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await self.next(seconds)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def follow(server: DnsServer) -> AsyncIterator[Follow]:
    source = DnsSource(
        "edge",
        DnsAccess(ZONE, server.server, SERVICES),
        min_refresh=0.2,
        max_refresh=5.0,
        timeout=0.5,
    )
    assert source.status().health is Health.STARTING
    follow = Follow(source)
    yield follow
    await follow.close()


async def test_the_first_view_comes_from_srv_and_address_records(follow: Follow) -> None:
    first = await follow.next()
    assert first.cluster == "edge"
    assert not first.stale
    assert [(s.namespace, s.name) for s in first.services] == [("demo", "hello"), ("shop", "web")]
    hello = first.service("demo", "hello")
    assert hello is not None
    assert [(p.name, p.port, p.protocol) for p in hello.ports] == [
        ("http", 8080, "TCP"),
        ("grpc", 9090, "TCP"),
    ]
    assert endpoints(first, "hello", "http") == {
        "127.0.0.11:8080",
        "2001:db8::11:8080",
        "127.0.0.12:8080",
    }
    assert endpoints(first, "hello", "grpc") == {"127.0.0.11:9090", "2001:db8::11:9090"}
    assert endpoints(first, "web", "http") == {"127.0.0.21:80"}
    assert {e.address_type for e in first.endpoints if ":" in e.addresses[0]} == {"IPv6"}
    assert all(e.ready for e in first.endpoints)
    assert [(e.namespace, e.name) for e in first.exports] == [("demo", "hello"), ("shop", "web")]
    assert follow.source.status().health is Health.HEALTHY
    assert follow.source.name == "dns:edge"

    # Every name is looked up again each TTL; unchanged answers yield nothing.
    await follow.nothing_for(2.5 * TTL)


async def test_dig_shows_what_the_source_reads(server: DnsServer, follow: Follow) -> None:
    await follow.next()
    done = dig(server, f"_http._tcp.hello.{ZONE}", "SRV")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"0 10 8080 a.hello.{ZONE}.",
        f"0 10 8080 b.hello.{ZONE}.",
    ]


async def test_records_added_and_removed_by_update_show_after_the_ttl(
    server: DnsServer, follow: Follow
) -> None:
    await follow.next()
    server.update(add=["_http._tcp.hello 1 SRV 0 10 8081 c.hello", "c.hello 1 A 127.0.0.13"])
    added, took = await follow.until(
        lambda s: "127.0.0.13:8081" in endpoints(s, "hello", "http"), "c.hello serves"
    )
    assert took <= TTL + 1.0, f"the new target showed after {took:.2f}s"
    # Two SRV records say 8080, one 8081: the Service keeps the port most records agree on.
    hello = added.service("demo", "hello")
    assert hello is not None
    assert [(p.name, p.port) for p in hello.ports] == [("http", 8080), ("grpc", 9090)]
    assert "disagree on the port" in follow.source.status().detail
    assert follow.source.status().health is Health.HEALTHY

    server.update(delete=["a.hello A"])  # a.hello keeps its AAAA record
    removed, took = await follow.until(
        lambda s: "127.0.0.11:8080" not in endpoints(s, "hello", "http"), "a.hello's A is gone"
    )
    assert took <= TTL + 1.0, f"the removed address went after {took:.2f}s"
    assert endpoints(removed, "hello", "http") == {
        "2001:db8::11:8080",
        "127.0.0.12:8080",
        "127.0.0.13:8081",
    }
    assert endpoints(removed, "hello", "grpc") == {"2001:db8::11:9090"}


async def test_a_service_whose_srv_name_is_gone_loses_its_endpoints(
    server: DnsServer, follow: Follow
) -> None:
    await follow.next()
    server.update(delete=["_http._tcp.web"])
    assert server.rcode("_http._tcp.web", "SRV") == "NXDOMAIN"
    gone, _ = await follow.until(lambda s: s.service("shop", "web") is None, "web is gone")
    assert gone.endpoints_of("shop", "web") == ()
    assert [(e.namespace, e.name) for e in gone.exports] == [("demo", "hello")]
    assert not gone.stale
    assert follow.source.status().health is Health.HEALTHY

    # NOERROR without SRV records means gone too: hello keeps only its http port.
    server.update(delete=["_grpc._tcp.hello"], add=['_grpc._tcp.hello 1 TXT "moved"'])
    assert server.rcode("_grpc._tcp.hello", "SRV") == "NOERROR"
    left, _ = await follow.until(
        lambda s: endpoints(s, "hello", "grpc") == set(), "hello's grpc port is gone"
    )
    hello = left.service("demo", "hello")
    assert hello is not None
    assert [p.name for p in hello.ports] == ["http"]
    assert len(endpoints(left, "hello", "http")) == 3


async def test_servfail_keeps_the_last_answer_stale_until_answers_come_back(
    server: DnsServer, follow: Follow
) -> None:
    first = await follow.next()
    # hello.edge.test and everything below it now belongs to a nameserver without
    # address: the server answers SERVFAIL for hello's SRV names and targets.
    server.delegate_away("hello")
    assert server.rcode("_http._tcp.hello", "SRV") == "SERVFAIL"
    stale, took = await follow.until(lambda s: s.stale, "the view is stale")
    assert took <= TTL + 1.0
    assert stale.services == first.services
    assert stale.endpoints == first.endpoints
    status = follow.source.status()
    assert status.health is Health.DEGRADED
    assert f"_http._tcp.hello.{ZONE} SRV: SERVFAIL from 127.0.0.1 port" in status.detail

    # While it fails, a change elsewhere still shows (web is answered, and still stale).
    server.update(add=["web-1.shop 1 A 127.0.0.22"])
    changed, _ = await follow.until(
        lambda s: "127.0.0.22:80" in endpoints(s, "web", "http"), "web-1 has a second address"
    )
    assert changed.stale
    assert endpoints(changed, "hello", "http") == endpoints(first, "hello", "http")

    server.undelegate("hello")
    fresh, took = await follow.until(lambda s: not s.stale, "the view is fresh again")
    assert took <= 2 * TTL + 1.0  # failed names are retried after min_refresh, doubling
    assert fresh.services == first.services
    assert follow.source.status().health is Health.HEALTHY
    assert follow.source.status().detail == ""


async def test_a_timeout_keeps_the_last_answer_stale_until_answers_come_back(
    server: DnsServer, follow: Follow
) -> None:
    first = await follow.next()
    server.pause()
    try:
        stale, took = await follow.until(lambda s: s.stale, "the view is stale")
        assert took <= TTL + 0.5 + 1.0  # the TTL, then the lookup's timeout
        assert stale.services == first.services
        assert stale.endpoints == first.endpoints
        status = follow.source.status()
        assert status.health is Health.DEGRADED
        assert "no answer within 0.5 s" in status.detail
    finally:
        server.resume()
    fresh, _ = await follow.until(lambda s: not s.stale, "the view is fresh again")
    assert fresh == first
    assert follow.source.status().health is Health.HEALTHY


async def test_the_site_is_an_exported_cluster_set_service(follow: Follow) -> None:
    snapshot = await follow.next()
    access = DnsAccess(ZONE, "", SERVICES)
    fleet = Fleet(sites=(ClusterSite("edge", region="eu", access=access),), snapshots=(snapshot,))
    plane = build_plane(fleet)
    hello = next(s for s in plane.services if s.name == "hello")
    assert hello.scope == ""  # cluster-set: reachable from every cluster
    assert hello.host == "hello.demo.svc.clusterset.local"
    http = next(p for p in hello.ports if p.name == "http")
    assert http.port == 8080
    assert {(e.address, e.port) for e in http.endpoints} == {
        ("127.0.0.11", 8080),
        ("2001:db8::11", 8080),
        ("127.0.0.12", 8080),
    }
    assert {e.locality.cluster for e in http.endpoints} == {"edge"}
    assert {e.locality.region for e in http.endpoints} == {"eu"}
    assert [(s.cluster, s.name) for s in plane.exports] == [("edge", "hello"), ("edge", "web")]
    for status in plane.exports:
        conditions = {c.type: c.status for c in status.conditions}
        assert conditions == {"Valid": "True", "Conflict": "False", "Ready": "True"}
