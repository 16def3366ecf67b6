"""The DNS source's pure parts: SRV and address answers into the model, refresh timing."""

from __future__ import annotations

import itertools

import dns.rrset
import pytest

from kontinuum.control.model import (
    DnsAccess,
    DnsService,
    Endpoint,
    EndpointPort,
    Service,
    ServiceExport,
    ServicePort,
)
from kontinuum.discovery.dns import (
    RETRY_MAX,
    DnsSource,
    SrvRecord,
    addresses,
    refresh_delay,
    retry_delay,
    site_snapshot,
    srv_name,
    srv_records,
)
from kontinuum.discovery.source import Health

DOMAIN = "edge.test"
HTTP = DnsService("demo", "hello", "http")
GRPC = DnsService("demo", "hello", "grpc")
DNS_UDP = DnsService("infra", "resolver", "dns", "UDP")
HTTP_NAME = "_http._tcp.hello.edge.test"
GRPC_NAME = "_grpc._tcp.hello.edge.test"


def srv(*records: str) -> tuple[SrvRecord, ...]:
    """`"priority weight port target"` lines as records."""
    found = []
    for line in records:
        priority, weight, port, target = line.split()
        found.append(SrvRecord(int(priority), int(weight), int(port), target))
    return tuple(found)


def test_the_srv_name_of_a_service_port() -> None:
    assert srv_name(HTTP, DOMAIN) == HTTP_NAME
    assert srv_name(DNS_UDP, "Edge.Example.NET") == "_dns._udp.resolver.edge.example.net"


def test_an_srv_answer_becomes_sorted_records_without_the_no_service_target() -> None:
    rrset = dns.rrset.from_text(
        HTTP_NAME + ".",
        1,
        "IN",
        "SRV",
        "10 5 8080 B.Hello.edge.test.",
        "0 5 8081 a.hello.edge.test.",
        "0 0 0 .",  # RFC 2782: "decidedly not available"
    )
    assert srv_records(rrset) == srv("0 5 8081 a.hello.edge.test", "10 5 8080 b.hello.edge.test")


def test_address_answers_become_sorted_addresses() -> None:
    a = dns.rrset.from_text("a.hello.edge.test.", 1, "IN", "A", "10.0.0.2", "10.0.0.1")
    aaaa = dns.rrset.from_text("a.hello.edge.test.", 1, "IN", "AAAA", "2001:db8::1")
    assert addresses(a) == ("10.0.0.1", "10.0.0.2")
    assert addresses(aaaa) == ("2001:db8::1",)
    assert addresses([]) == ()


def test_services_endpoints_and_exports_from_the_answers() -> None:
    snapshot, notes = site_snapshot(
        "edge",
        DOMAIN,
        (HTTP, GRPC, DNS_UDP),
        {
            HTTP_NAME: srv("0 0 8080 a.hello.edge.test", "0 0 8080 b.hello.edge.test"),
            GRPC_NAME: srv("0 0 9090 a.hello.edge.test"),
            "_dns._udp.resolver.edge.test": srv("0 0 53 ns.edge.test"),
        },
        {
            "a.hello.edge.test": ("10.0.0.1", "2001:db8::1"),
            "b.hello.edge.test": ("10.0.0.2",),
            "ns.edge.test": ("10.0.0.53",),
        },
    )
    assert notes == ()
    assert not snapshot.stale
    assert snapshot.services == (
        Service("edge", "demo", "hello", (ServicePort(8080, "http"), ServicePort(9090, "grpc"))),
        Service("edge", "infra", "resolver", (ServicePort(53, "dns", "UDP"),)),
    )
    assert snapshot.exports == (
        ServiceExport("edge", "demo", "hello"),
        ServiceExport("edge", "infra", "resolver"),
    )
    http, grpc = EndpointPort(8080, "http"), EndpointPort(9090, "grpc")
    assert snapshot.endpoints == (
        Endpoint("edge", "demo", "hello", ("10.0.0.1",), (grpc,)),
        Endpoint("edge", "demo", "hello", ("2001:db8::1",), (grpc,), address_type="IPv6"),
        Endpoint("edge", "demo", "hello", ("10.0.0.1",), (http,)),
        Endpoint("edge", "demo", "hello", ("10.0.0.2",), (http,)),
        Endpoint("edge", "demo", "hello", ("2001:db8::1",), (http,), address_type="IPv6"),
        Endpoint("edge", "infra", "resolver", ("10.0.0.53",), (EndpointPort(53, "dns", "UDP"),)),
    )


def test_the_view_does_not_depend_on_the_order_of_records() -> None:
    records = srv("0 0 8080 a.test", "1 0 8081 b.test", "2 5 8080 c.test")
    found = {"a.test": ("10.0.0.1",), "b.test": ("10.0.0.2",), "c.test": ("10.0.0.1",)}
    views = {
        site_snapshot("edge", DOMAIN, (HTTP,), {HTTP_NAME: order}, found)
        for order in itertools.permutations(records)
    }
    assert len(views) == 1


def test_disagreeing_srv_ports_give_the_most_common_one_and_say_so() -> None:
    records = srv("0 0 8081 a.test", "0 0 8080 b.test", "0 0 8081 c.test")
    found = {"a.test": ("10.0.0.1",), "b.test": ("10.0.0.2",), "c.test": ("10.0.0.3",)}
    snapshot, notes = site_snapshot("edge", DOMAIN, (HTTP,), {HTTP_NAME: records}, found)
    assert snapshot.services[0].ports == (ServicePort(8081, "http"),)
    # each endpoint still serves on its own record's port
    assert [(e.addresses[0], e.ports[0].port) for e in snapshot.endpoints] == [
        ("10.0.0.2", 8080),
        ("10.0.0.1", 8081),
        ("10.0.0.3", 8081),
    ]
    assert notes == (
        f"{HTTP_NAME}: SRV records disagree on the port (8080 (1x), 8081 (2x)): "
        "the Service port is 8081",
    )

    tie = srv("0 0 8081 a.test", "0 0 8080 b.test")
    snapshot, _ = site_snapshot("edge", DOMAIN, (HTTP,), {HTTP_NAME: tie}, found)
    assert snapshot.services[0].ports == (ServicePort(8080, "http"),)  # ties: the lowest


def test_a_target_without_addresses_serves_nothing_and_is_noted() -> None:
    records = srv("0 0 8080 a.test", "0 0 8080 gone.test")
    snapshot, notes = site_snapshot(
        "edge", DOMAIN, (HTTP,), {HTTP_NAME: records}, {"a.test": ("10.0.0.1",)}
    )
    assert [e.addresses for e in snapshot.endpoints] == [("10.0.0.1",)]
    assert notes == (f"{HTTP_NAME}: SRV target gone.test has no A or AAAA records",)


def test_a_port_without_srv_records_is_left_out_and_a_service_without_ports_is_gone() -> None:
    found = {"a.test": ("10.0.0.1",)}
    only_http = {HTTP_NAME: srv("0 0 8080 a.test"), GRPC_NAME: ()}  # () = NXDOMAIN/no SRV
    snapshot, _ = site_snapshot("edge", DOMAIN, (HTTP, GRPC), only_http, found)
    assert snapshot.services == (Service("edge", "demo", "hello", (ServicePort(8080, "http"),)),)
    assert {p.name for e in snapshot.endpoints for p in e.ports} == {"http"}

    snapshot, notes = site_snapshot("edge", DOMAIN, (HTTP, GRPC), {}, found, stale=True)
    assert (snapshot.services, snapshot.endpoints, snapshot.exports) == ((), (), ())
    assert snapshot.stale
    assert notes == ()


def test_two_targets_with_one_address_make_one_endpoint() -> None:
    records = srv("0 0 8080 a.test", "0 0 8080 alias.test")
    found = {"a.test": ("10.0.0.1",), "alias.test": ("10.0.0.1",)}
    snapshot, _ = site_snapshot("edge", DOMAIN, (HTTP,), {HTTP_NAME: records}, found)
    assert len(snapshot.endpoints) == 1


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(0, 1.0), (0.5, 1.0), (1, 1.0), (42, 42.0), (300, 300.0), (86400, 300.0)],
)
def test_a_name_is_refreshed_as_its_ttl_expires_within_bounds(ttl: float, expected: float) -> None:
    assert refresh_delay(ttl, 1.0, 300.0) == expected


def test_a_failing_name_is_retried_sooner_than_its_ttl_and_backs_off() -> None:
    assert [retry_delay(n, 1.0, 300.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, RETRY_MAX, 30]
    assert [retry_delay(n, 0.2, 5.0) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert retry_delay(3, 60.0, 600.0) == 60.0  # never sooner than min_refresh


def test_the_source_names_its_cluster_and_starts_without_a_view() -> None:
    source = DnsSource("edge", DnsAccess(DOMAIN, "127.0.0.1:5353", (HTTP,)))
    assert source.name == "dns:edge"
    assert source.status().health is Health.STARTING


@pytest.mark.parametrize(
    "options",
    [{"min_refresh": 0.0}, {"min_refresh": 10.0, "max_refresh": 5.0}, {"timeout": 0.0}],
)
def test_refresh_bounds_and_timeout_are_checked(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        DnsSource("edge", DnsAccess(DOMAIN), **options)
