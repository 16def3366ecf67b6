"""`clusterset.local` DNS (`kontinuum.dns`): every record kind and rcode, from hand-built planes."""

from __future__ import annotations

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kontinuum.control.plane import (
    Locality,
    PlaneEndpoint,
    PlanePort,
    PlaneService,
    ServicePlane,
)
from kontinuum.dns import ClusterSetResponder, ZoneOptions, answer, build_zone, respond
from kontinuum.dns.answer import MAX_QUERY, MAX_UDP_PAYLOAD
from kontinuum.dns.zone import endpoint_hostname

EU = Locality("eu", "eu-central-1", "eu-central-1a")
US = Locality("us", "us-east-1", "us-east-1a")
SOA_TEXT = "ns.dns.clusterset.local. hostmaster.clusterset.local. 7 7200 1800 86400 5"


def endpoint(address: str, port: int, where: Locality = EU, ready: bool = True) -> PlaneEndpoint:
    return PlaneEndpoint(address, port, where, ready=ready)


WEB = PlaneService(
    namespace="shop",
    name="web",
    workspace="shop",
    ports=(
        PlanePort(80, "http", endpoints=(endpoint("10.0.0.1", 8080),)),
        PlanePort(443, "https", endpoints=(endpoint("10.0.0.1", 8443),)),
        PlanePort(53, "dns", protocol="UDP", endpoints=(endpoint("10.0.0.1", 5353),)),
        PlanePort(9000, "", endpoints=(endpoint("10.0.0.1", 9000),)),  # unnamed: no SRV
    ),
)
DB = PlaneService(
    namespace="shop",
    name="db",
    workspace="shop",
    type="Headless",
    ports=(
        PlanePort(
            5432,
            "pg",
            endpoints=(
                endpoint("10.0.0.7", 5432),
                endpoint("10.0.0.8", 5432, ready=False),
                endpoint("10.1.0.7", 6432, US),
                endpoint("2001:db8::7", 5432, US),
            ),
        ),
    ),
)
DRAINED = PlaneService(
    namespace="shop",
    name="drained",
    workspace="shop",
    type="Headless",
    ports=(PlanePort(80, "http", endpoints=(endpoint("10.0.0.9", 80, ready=False),)),),
)
LOCAL = PlaneService("shop", "admin", "shop", (PlanePort(80, "http"),), scope="eu")
LEDGER = PlaneService("bank", "ledger", "bank", (PlanePort(80, "http"),))  # another workspace
PLANE = ServicePlane(services=(WEB, DB, DRAINED, LOCAL, LEDGER))
ZONE = build_zone(PLANE, ZoneOptions(), serial=7)


def ask(
    name: str,
    rdtype: str = "A",
    zone_options: ZoneOptions | None = None,
    plane: ServicePlane = PLANE,
) -> dns.message.Message:
    zone = (
        ZONE
        if zone_options is None and plane is PLANE
        else build_zone(plane, zone_options or ZoneOptions(), serial=7)
    )
    return answer(dns.message.make_query(name, rdtype), zone)


def records(response: dns.message.Message, section: str = "answer") -> list[str]:
    rrsets: list[dns.rrset.RRset] = getattr(response, section)
    return sorted(
        f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
        for rrset in rrsets
        for rdata in rrset
    )


def assert_negative(response: dns.message.Message, rcode: dns.rcode.Rcode) -> None:
    assert response.rcode() == rcode
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert records(response, "authority") == [f"clusterset.local. 5 SOA {SOA_TEXT}"]


# --- records ---------------------------------------------------------------------------------


def test_the_schema_version() -> None:
    response = ask("dns-version.clusterset.local", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert records(response) == ['dns-version.clusterset.local. 5 TXT "1.0.0"']


def test_a_service_with_a_clusterset_ip_answers_the_sidecar_address() -> None:
    assert records(ask("web.shop.svc.clusterset.local")) == [
        "web.shop.svc.clusterset.local. 5 A 127.0.0.1"
    ]
    # No IPv6 address configured: the name exists, the type does not.
    assert_negative(ask("web.shop.svc.clusterset.local", "AAAA"), dns.rcode.NOERROR)


def test_the_service_address_and_ttl_are_configurable() -> None:
    options = ZoneOptions.of(["::1", "169.254.20.10"], ttl=30)
    assert options == ZoneOptions(ipv4="169.254.20.10", ipv6="::1", ttl=30)
    assert records(ask("web.shop.svc.clusterset.local", "AAAA", options)) == [
        "web.shop.svc.clusterset.local. 30 AAAA ::1"
    ]
    assert records(ask("web.shop.svc.clusterset.local", "A", options)) == [
        "web.shop.svc.clusterset.local. 30 A 169.254.20.10"
    ]
    ipv6_only = ZoneOptions.of(["fd00::53"])
    assert_negative(ask("web.shop.svc.clusterset.local", "A", ipv6_only), dns.rcode.NOERROR)


@pytest.mark.parametrize(
    ("addresses", "problem"),
    [
        (["10.0.0.1", "10.0.0.2"], "one IPv4 service address at most"),
        (["::1", "::2"], "one IPv6 service address at most"),
        (["sidecar.local"], "is not an IP address"),
    ],
)
def test_service_addresses_are_checked(addresses: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ZoneOptions.of(addresses)
    with pytest.raises(ValueError, match="is not an IPv4 address"):
        ZoneOptions(ipv4="::1")


def test_srv_records_of_each_named_port() -> None:
    response = ask("_http._tcp.web.shop.svc.clusterset.local", "SRV")
    assert records(response) == [
        "_http._tcp.web.shop.svc.clusterset.local. 5 SRV 0 100 80 web.shop.svc.clusterset.local."
    ]
    # The target's address rides along in the additional section.
    assert records(response, "additional") == ["web.shop.svc.clusterset.local. 5 A 127.0.0.1"]
    assert records(ask("_dns._udp.web.shop.svc.clusterset.local", "SRV")) == [
        "_dns._udp.web.shop.svc.clusterset.local. 5 SRV 0 100 53 web.shop.svc.clusterset.local."
    ]
    # A named port under the wrong protocol, and an unnamed port, have no name.
    assert_negative(ask("_dns._tcp.web.shop.svc.clusterset.local", "SRV"), dns.rcode.NXDOMAIN)
    assert_negative(ask("_9000._tcp.web.shop.svc.clusterset.local", "SRV"), dns.rcode.NXDOMAIN)
    # The SRV name has no address of its own.
    assert_negative(ask("_http._tcp.web.shop.svc.clusterset.local", "A"), dns.rcode.NOERROR)


def test_srv_of_the_service_name_lists_every_named_port() -> None:
    response = ask("web.shop.svc.clusterset.local", "SRV")
    assert records(response) == [
        "web.shop.svc.clusterset.local. 5 SRV 0 33 443 web.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 SRV 0 33 53 web.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 SRV 0 33 80 web.shop.svc.clusterset.local.",
    ]
    assert records(response, "additional") == ["web.shop.svc.clusterset.local. 5 A 127.0.0.1"]


def test_a_headless_service_answers_its_ready_endpoints() -> None:
    assert records(ask("db.shop.svc.clusterset.local")) == [
        "db.shop.svc.clusterset.local. 5 A 10.0.0.7",
        "db.shop.svc.clusterset.local. 5 A 10.1.0.7",
    ]
    assert records(ask("db.shop.svc.clusterset.local", "AAAA")) == [
        "db.shop.svc.clusterset.local. 5 AAAA 2001:db8::7"
    ]


def test_each_ready_endpoint_of_a_headless_service_has_a_name_in_its_cluster() -> None:
    assert records(ask("10-0-0-7.eu.db.shop.svc.clusterset.local")) == [
        "10-0-0-7.eu.db.shop.svc.clusterset.local. 5 A 10.0.0.7"
    ]
    ipv6 = "2001-0db8-0000-0000-0000-0000-0000-0007.us.db.shop.svc.clusterset.local"
    assert records(ask(ipv6, "AAAA")) == [f"{ipv6}. 5 AAAA 2001:db8::7"]
    assert_negative(ask(ipv6, "A"), dns.rcode.NOERROR)
    # Not ready: no name. Another cluster: not this name.
    assert_negative(ask("10-0-0-8.eu.db.shop.svc.clusterset.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask("10-0-0-7.us.db.shop.svc.clusterset.local"), dns.rcode.NXDOMAIN)
    # No record names one cluster's share of a service (the specification's 2.4.4): the
    # name above the endpoints' names exists, empty.
    assert_negative(ask("eu.db.shop.svc.clusterset.local"), dns.rcode.NOERROR)


def test_srv_of_a_headless_service_targets_each_ready_endpoint() -> None:
    response = ask("_pg._tcp.db.shop.svc.clusterset.local", "SRV")
    name = "_pg._tcp.db.shop.svc.clusterset.local. 5 SRV 0 33"
    ipv6 = "2001-0db8-0000-0000-0000-0000-0000-0007.us.db.shop.svc.clusterset.local."
    # On each endpoint's own port: clients connect to the endpoint itself.
    assert records(response) == [
        f"{name} 5432 10-0-0-7.eu.db.shop.svc.clusterset.local.",
        f"{name} 5432 {ipv6}",
        f"{name} 6432 10-1-0-7.us.db.shop.svc.clusterset.local.",
    ]
    assert records(response, "additional") == [
        "10-0-0-7.eu.db.shop.svc.clusterset.local. 5 A 10.0.0.7",
        "10-1-0-7.us.db.shop.svc.clusterset.local. 5 A 10.1.0.7",
        f"{ipv6} 5 AAAA 2001:db8::7",
    ]
    assert len(ask("db.shop.svc.clusterset.local", "SRV").answer[0]) == 3


def test_a_headless_service_without_ready_endpoints_does_not_exist() -> None:
    assert_negative(ask("drained.shop.svc.clusterset.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask("_http._tcp.drained.shop.svc.clusterset.local", "SRV"), dns.rcode.NXDOMAIN)


def test_an_unexported_service_has_no_clusterset_name() -> None:
    assert_negative(ask("admin.shop.svc.clusterset.local"), dns.rcode.NXDOMAIN)


def test_every_workspace_is_answered() -> None:
    """DNS knows no caller: names are not secret (reaching a service still needs a grant)."""
    assert records(ask("ledger.bank.svc.clusterset.local")) == [
        "ledger.bank.svc.clusterset.local. 5 A 127.0.0.1"
    ]


def test_names_between_the_apex_and_a_service_exist_without_records() -> None:
    for name in ("svc", "shop.svc", "_tcp.web.shop.svc"):
        name = f"{name}.clusterset.local"
        assert_negative(ask(name), dns.rcode.NOERROR)
    assert_negative(ask("nowhere.svc.clusterset.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask("web.nowhere.svc.clusterset.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask("web.shop.clusterset.local"), dns.rcode.NXDOMAIN)


def test_the_apex() -> None:
    assert records(ask("clusterset.local", "SOA")) == [f"clusterset.local. 5 SOA {SOA_TEXT}"]
    assert_negative(ask("clusterset.local", "NS"), dns.rcode.NOERROR)
    assert_negative(ask("clusterset.local", "A"), dns.rcode.NOERROR)


def test_names_compare_case_insensitively_and_keep_the_case_asked() -> None:
    response = ask("WeB.Shop.SVC.ClusterSet.Local")
    assert response.answer[0].name.to_text() == "WeB.Shop.SVC.ClusterSet.Local."
    assert records(response) == ["WeB.Shop.SVC.ClusterSet.Local. 5 A 127.0.0.1"]


def test_any_answers_every_type_of_the_name() -> None:
    assert records(ask("web.shop.svc.clusterset.local", "ANY")) == [
        "web.shop.svc.clusterset.local. 5 A 127.0.0.1",
        "web.shop.svc.clusterset.local. 5 SRV 0 33 443 web.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 SRV 0 33 53 web.shop.svc.clusterset.local.",
        "web.shop.svc.clusterset.local. 5 SRV 0 33 80 web.shop.svc.clusterset.local.",
    ]


def test_endpoint_hostnames() -> None:
    assert endpoint_hostname("10.0.0.1") == "10-0-0-1"
    assert endpoint_hostname("::1") == "0000-0000-0000-0000-0000-0000-0000-0001"
    assert endpoint_hostname("db-0.example") is None


# --- rcodes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["example.com", "web.shop.svc.cluster.local", "local", "clusterset.local.example"]
)
def test_names_outside_the_zone_are_refused(name: str) -> None:
    response = ask(name)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert response.answer == response.authority == []


def test_another_class_is_refused() -> None:
    query = dns.message.make_query("web.shop.svc.clusterset.local", "A", rdclass="CH")
    assert answer(query, ZONE).rcode() == dns.rcode.REFUSED


def test_zone_transfers_are_refused() -> None:
    assert ask("clusterset.local", "AXFR").rcode() == dns.rcode.REFUSED
    assert ask("clusterset.local", "IXFR").rcode() == dns.rcode.REFUSED


def test_other_opcodes_are_not_implemented() -> None:
    query = dns.message.make_query("clusterset.local", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    assert answer(query, ZONE).rcode() == dns.rcode.NOTIMP


def test_an_edns_version_above_0_is_badvers() -> None:
    query = dns.message.make_query("web.shop.svc.clusterset.local", "A", use_edns=1)
    response = answer(query, ZONE)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


def test_a_query_without_exactly_one_question_is_formerr() -> None:
    query = dns.message.make_query("web.shop.svc.clusterset.local", "A")
    query.question.append(dns.rrset.RRset(dns.name.from_text("clusterset.local"), 1, 6))
    assert answer(query, ZONE).rcode() == dns.rcode.FORMERR
    query.question.clear()
    assert answer(query, ZONE).rcode() == dns.rcode.FORMERR


# --- the wire --------------------------------------------------------------------------------


def test_unparsable_input_gets_formerr_when_it_has_a_header() -> None:
    wire = dns.message.make_query("web.shop.svc.clusterset.local", "A").to_wire()
    reply = respond(wire[:-3], ZONE, tcp=False)  # the question cut short
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == int.from_bytes(wire[:2], "big")
    assert response.rcode() == dns.rcode.FORMERR
    assert response.flags & dns.flags.QR
    assert respond(wire[:11], ZONE, tcp=False) is None  # not even a header
    assert respond(wire + b"junk", ZONE, tcp=True) is not None  # trailing junk: FORMERR


def test_responses_are_never_answered() -> None:
    query = dns.message.make_query("web.shop.svc.clusterset.local", "A")
    response = answer(query, ZONE).to_wire()
    assert respond(response, ZONE, tcp=False) is None
    assert respond(response[:-3], ZONE, tcp=False) is None  # unparsable too


def test_edns_is_answered_with_our_payload() -> None:
    query = dns.message.make_query("web.shop.svc.clusterset.local", "A", use_edns=0, payload=4096)
    reply = respond(query.to_wire(), ZONE, tcp=False)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.edns == 0
    assert response.payload == MAX_UDP_PAYLOAD


def _padded(size: int) -> bytes:
    """A query for web's address of exactly `size` bytes, EDNS padding making up the rest."""
    bare = dns.message.make_query("web.shop.svc.clusterset.local", "A", use_edns=0).to_wire()
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(size - len(bare) - 4))
    query = dns.message.make_query(
        "web.shop.svc.clusterset.local", "A", use_edns=0, options=[padding]
    )
    wire = query.to_wire(max_size=65535)
    assert len(wire) == size
    return wire


def test_a_message_longer_than_a_query_is_dropped_unread() -> None:
    # Over UDP: 512 bytes, or with EDNS the 1232 this server announces.
    answered = respond(_padded(MAX_UDP_PAYLOAD), ZONE, tcp=False)
    assert answered is not None
    assert dns.message.from_wire(answered).answer
    assert respond(_padded(MAX_UDP_PAYLOAD + 1), ZONE, tcp=False) is None
    plain = dns.message.make_query("web.shop.svc.clusterset.local", "A").to_wire()
    assert respond(plain + bytes(512 - len(plain)), ZONE, tcp=False) is not None  # FORMERR
    assert respond(plain + bytes(513 - len(plain)), ZONE, tcp=False) is None
    # Over TCP: 4096 bytes.
    assert respond(_padded(MAX_QUERY), ZONE, tcp=True) is not None
    assert respond(_padded(MAX_QUERY + 1), ZONE, tcp=True) is None


def test_more_than_one_question_or_records_besides_are_formerr_unread() -> None:
    """Judged from the header: the response copies nothing, not even the question."""
    many = dns.message.make_query("web.shop.svc.clusterset.local", "A")
    many.question.append(dns.rrset.RRset(dns.name.from_text("db.shop.svc.clusterset.local"), 1, 1))
    with_answer = dns.message.make_query("web.shop.svc.clusterset.local", "A")
    with_answer.answer.append(
        dns.rrset.from_text("web.shop.svc.clusterset.local.", 5, "IN", "A", "10.0.0.1")
    )
    with_additional = dns.message.make_query("web.shop.svc.clusterset.local", "A", use_edns=0)
    for address in ("10.0.0.1", "10.0.0.2"):
        with_additional.additional.append(
            dns.rrset.from_text(f"{address}.example.", 5, "IN", "A", address)
        )
    for query in (many, with_answer, with_additional):
        reply = respond(query.to_wire(), ZONE, tcp=False)
        assert reply is not None
        response = dns.message.from_wire(reply)
        assert (response.id, response.rcode()) == (query.id, dns.rcode.FORMERR)
        assert response.question == []


def _big_plane(count: int) -> ServicePlane:
    many = tuple(endpoint(f"10.2.{i // 250}.{i % 250 + 1}", 80) for i in range(count))
    ports = (PlanePort(80, "http", endpoints=many),)
    big = PlaneService("shop", "big", "shop", ports, type="Headless")
    return ServicePlane(services=(big,))


@pytest.mark.parametrize(
    ("use_edns", "payload", "limit"), [(False, 0, 512), (0, 4096, MAX_UDP_PAYLOAD), (0, 800, 800)]
)
def test_what_does_not_fit_a_udp_response_is_truncated(
    use_edns: int | bool, payload: int, limit: int
) -> None:
    zone = build_zone(_big_plane(200), ZoneOptions())
    query = dns.message.make_query(
        "big.shop.svc.clusterset.local", "A", use_edns=use_edns, payload=payload or None
    )
    reply = respond(query.to_wire(), zone, tcp=False)
    assert reply is not None
    assert len(reply) <= limit
    response = dns.message.from_wire(reply)
    assert response.flags & dns.flags.TC
    assert response.answer == []
    # Over TCP the whole answer comes.
    full = respond(query.to_wire(), zone, tcp=True)
    assert full is not None
    response = dns.message.from_wire(full)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 200


def test_an_answer_that_fits_loses_its_additional_section_without_tc() -> None:
    zone = build_zone(_big_plane(6), ZoneOptions())
    query = dns.message.make_query("_http._tcp.big.shop.svc.clusterset.local", "SRV")
    reply = respond(query.to_wire(), zone, tcp=False)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 6
    assert response.additional == []
    full = respond(query.to_wire(), zone, tcp=True)
    assert full is not None
    assert len(dns.message.from_wire(full).additional) == 6


@given(st.binary(max_size=600))
def test_any_bytes_get_an_answer_or_none_never_an_exception(wire: bytes) -> None:
    reply = respond(wire, ZONE, tcp=False)
    if reply is not None:
        assert len(reply) <= 512
        assert reply[:2] == wire[:2]
        assert reply[2] & 0x80  # QR


_LABELS = st.lists(st.text(alphabet="abz09-_.", min_size=1, max_size=20), min_size=1, max_size=5)


@given(_LABELS, st.sampled_from(["A", "AAAA", "SRV", "TXT", "ANY"]))
def test_any_name_in_the_zone_is_answered(labels: list[str], rdtype: str) -> None:
    name = dns.name.Name(labels).concatenate(dns.name.from_text("svc.clusterset.local"))
    response = answer(dns.message.make_query(name, rdtype), ZONE)
    assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    assert response.flags & dns.flags.AA
    assert response.answer or response.authority


# --- the responder ---------------------------------------------------------------------------


def test_the_responder_follows_the_current_plane_and_moves_the_serial_on_change() -> None:
    current = [ServicePlane(services=(WEB,))]
    now = [1000.0]
    responder = ClusterSetResponder(lambda: current[0], ZoneOptions(), clock=lambda: now[0])
    query = dns.message.make_query("ledger.bank.svc.clusterset.local", "A").to_wire()

    def ask_now() -> dns.message.Message:
        reply = responder.respond(query, tcp=False)
        assert reply is not None
        return dns.message.from_wire(reply)

    assert ask_now().rcode() == dns.rcode.NXDOMAIN
    first = responder.zone()
    assert first.serial == 1000
    assert responder.zone() is first  # same plane: not rebuilt

    current[0] = ServicePlane(services=(WEB,))  # a new plane, the same records
    now[0] = 2000.0
    assert responder.zone().serial == 1000

    current[0] = ServicePlane(services=(WEB, LEDGER))
    assert ask_now().rcode() == dns.rcode.NOERROR
    assert responder.zone().serial == 2000

    current[0] = ServicePlane(services=(WEB,))
    assert ask_now().rcode() == dns.rcode.NXDOMAIN
    assert responder.zone().serial == 2001  # the clock did not move: one past the last
