"""`clusterset.local` DNS over the network, asked by real clients: `dig` (BIND's, UDP and TCP)
and dnspython (`dns.query`, `dns.resolver`), from the example fleet and from `kontinuum serve`.

The server runs in a thread with its own event loop (as `kontinuum serve` runs it), so the
clients here can block.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from kontinuum.control.mcs import build_plane
from kontinuum.control.plane import Locality, PlaneEndpoint, PlanePort, PlaneService, ServicePlane
from kontinuum.discovery.static import load_fleet
from tests.support.clusterset_dns import ClusterSetDns
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet"
KONTINUUM = [sys.executable, "-m", "kontinuum"]
LOOPBACK = "127.0.0.1"
HELLO = "hello.demo.svc.clusterset.local"


@pytest.fixture(scope="session")
def dig() -> str:
    path = shutil.which("dig")
    if path is None:
        pytest.fail(
            "dig is needed (Debian package dnsutils): `make system-deps` installs it as root "
            "(apt-get install dnsutils)",
            pytrace=False,
        )
    return path


def example_plane() -> ServicePlane:
    fleet, errors = load_fleet(EXAMPLE)
    assert errors == []
    return build_plane(fleet)


@pytest.fixture
def example_dns() -> Iterator[int]:
    """The example fleet's names, served on a free port of 127.0.0.1."""
    plane = example_plane()
    with ClusterSetDns(lambda: plane) as served:
        yield served.port


@dataclass
class Dug:
    """What dig printed: the status, the header flags and each section's records."""

    status: str
    flags: set[str]
    sections: dict[str, list[str]] = field(default_factory=dict)

    def records(self, section: str = "ANSWER") -> list[str]:
        """Records as `name type data` (no TTL, no class), sorted."""
        found = []
        for line in self.sections.get(section, []):
            name, ttl, _, rdtype, data = line.split(None, 4)
            assert ttl == "5", line
            found.append(f"{name} {rdtype} {data}")
        return sorted(found)


def run_dig(dig: str, port: int, name: str, rdtype: str = "A", *options: str) -> Dug:
    result = subprocess.run(
        [dig, f"@{LOOPBACK}", "-p", str(port), "+norecurse", "+time=2", "+tries=1", "+nocmd",
         "+nostats", *options, name, rdtype],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    header = re.search(r"status: (\w+),", result.stdout)
    flags = re.search(r";; flags: ([a-z ]*);", result.stdout)
    assert header, result.stdout
    assert flags, result.stdout
    dug = Dug(header[1], set(flags[1].split()))
    section: list[str] | None = None
    for line in result.stdout.splitlines():
        if match := re.match(r";; (\w+) SECTION:", line):
            section = dug.sections.setdefault(match[1], [])
        elif not line.strip() or line.startswith(";"):
            continue
        elif section is not None:
            section.append(line)
    return dug


# --- dig -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [[], ["+tcp"]], ids=["udp", "tcp"])
def test_dig_reads_the_example_fleet(dig: str, example_dns: int, transport: list[str]) -> None:
    def ask(name: str, rdtype: str = "A") -> Dug:
        return run_dig(dig, example_dns, name, rdtype, *transport)

    hello = ask(HELLO)
    assert hello.status == "NOERROR"
    assert {"qr", "aa"} <= hello.flags
    assert "ra" not in hello.flags
    assert hello.records() == [f"{HELLO}. A 127.0.0.1"]

    srv = ask(f"_http._tcp.{HELLO}", "SRV")
    assert srv.records() == [f"_http._tcp.{HELLO}. SRV 0 100 80 {HELLO}."]
    assert srv.records("ADDITIONAL") == [f"{HELLO}. A 127.0.0.1"]
    assert ask(HELLO, "SRV").records() == [f"{HELLO}. SRV 0 100 80 {HELLO}."]

    # billing is another workspace's: DNS knows no caller, every workspace is answered.
    billing = "billing.payments.svc.clusterset.local"
    assert ask(billing).records() == [f"{billing}. A 127.0.0.1"]

    version = ask("dns-version.clusterset.local", "TXT")
    assert version.records() == ['dns-version.clusterset.local. TXT "1.0.0"']

    # frontend is not exported: no cluster-set name. The negative answers carry the SOA.
    frontend = ask("frontend.demo.svc.clusterset.local")
    assert frontend.status == "NXDOMAIN"
    assert frontend.records() == []
    [soa] = frontend.records("AUTHORITY")
    assert soa.startswith("clusterset.local. SOA ns.dns.clusterset.local. hostmaster.")
    assert soa.endswith(" 7200 1800 86400 5")

    nodata = ask(HELLO, "AAAA")
    assert (nodata.status, nodata.records()) == ("NOERROR", [])
    assert nodata.records("AUTHORITY") == [soa]
    assert ask("demo.svc.clusterset.local").status == "NOERROR"  # an empty non-terminal

    outside = ask("example.com")
    assert outside.status == "REFUSED"
    assert "aa" not in outside.flags
    assert ask("hello.demo.svc.cluster.local").status == "REFUSED"


# --- dnspython -------------------------------------------------------------------------------


def test_dnspython_queries_over_udp_and_tcp(example_dns: int) -> None:
    query = dns.message.make_query(HELLO, "A", use_edns=0)
    for send in (dns.query.udp, dns.query.tcp):
        response = send(query, LOOPBACK, port=example_dns, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert [r.to_text() for r in response.answer[0]] == ["127.0.0.1"]
        assert response.edns == 0
    missing = dns.message.make_query("nope.demo.svc.clusterset.local", "SRV")
    response = dns.query.udp(missing, LOOPBACK, port=example_dns, timeout=5)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].name.to_text() == "clusterset.local."


def test_the_dnspython_resolver(example_dns: int) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [LOOPBACK]
    resolver.port = example_dns
    resolver.lifetime = 5
    assert [r.to_text() for r in resolver.resolve(HELLO, "A")] == ["127.0.0.1"]
    srv = resolver.resolve(f"_http._tcp.{HELLO}", "SRV")
    assert [(r.priority, r.weight, r.port, r.target.to_text()) for r in srv] == [
        (0, 100, 80, f"{HELLO}.")
    ]
    assert srv.rrset is not None
    assert srv.rrset.ttl == 5
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("frontend.demo.svc.clusterset.local", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve(HELLO, "AAAA")
    with pytest.raises(dns.resolver.NoNameservers):  # REFUSED: this server is no resolver
        resolver.resolve("example.com", "A")


# --- headless, big answers, the TCP bounds -----------------------------------------------------


def _headless_plane(count: int) -> ServicePlane:
    eu = Locality("eu-central", "eu-central-1")
    endpoints = tuple(
        PlaneEndpoint(f"10.9.{i // 200}.{i % 200 + 1}", 7000, eu) for i in range(count)
    )
    ports = (PlanePort(7000, "peer", endpoints=endpoints),)
    return ServicePlane(services=(PlaneService("demo", "ring", "demo", ports, type="Headless"),))


def test_a_big_headless_answer_is_truncated_over_udp_and_whole_over_tcp(dig: str) -> None:
    plane = _headless_plane(300)
    name = "ring.demo.svc.clusterset.local"
    member = f"10-9-0-7.eu-central.{name}"
    with ClusterSetDns(lambda: plane) as served:
        port = served.port
        query = dns.message.make_query(name, "A", use_edns=0, payload=1232)
        udp = dns.query.udp(query, LOOPBACK, port=port, timeout=5)
        assert udp.flags & dns.flags.TC
        assert udp.answer == []
        tcp = dns.query.tcp(query, LOOPBACK, port=port, timeout=5)
        assert not tcp.flags & dns.flags.TC
        assert len(tcp.answer[0]) == 300
        # dig retries over TCP by itself.
        assert len(run_dig(dig, port, name).records()) == 300
        assert run_dig(dig, port, member).records() == [f"{member}. A 10.9.0.7"]
        srv = run_dig(dig, port, f"_peer._tcp.{name}", "SRV", "+tcp")
        assert len(srv.records()) == 300
        assert f"_peer._tcp.{name}. SRV 0 1 7000 {member}." in srv.records()


def _recv_message(sock: socket.socket) -> dns.message.Message:
    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    length = int.from_bytes(exactly(2), "big")
    return dns.message.from_wire(exactly(length))


def test_tcp_pipelining_and_bounds() -> None:
    plane = example_plane()
    with ClusterSetDns(lambda: plane, idle_timeout=0.5) as served:
        port = served.port
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            # Two queries in one write: two answers, in order, on one connection.
            first = dns.message.make_query(HELLO, "A").to_wire(prepend_length=True)
            second = dns.message.make_query(f"_http._tcp.{HELLO}", "SRV")
            sock.sendall(first + second.to_wire(prepend_length=True))
            assert _recv_message(sock).answer[0].rdtype == dns.rdatatype.A
            assert _recv_message(sock).id == second.id
            # Garbage with a header is answered FORMERR; the connection stays usable.
            sock.sendall((14).to_bytes(2, "big") + b"\x12\x34\x01\x00" + b"\xff" * 10)
            formerr = _recv_message(sock)
            assert (formerr.id, formerr.rcode()) == (0x1234, dns.rcode.FORMERR)
            # Idle longer than the idle timeout: the server hangs up.
            started = time.monotonic()
            assert sock.recv(1) == b""
            assert time.monotonic() - started < 5
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            sock.sendall((60000).to_bytes(2, "big"))  # no query is that long
            assert sock.recv(1) == b""


def test_udp_garbage(example_dns: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(b"\xab\xcd" + b"\x00" * 3, (LOOPBACK, example_dns))  # no header: no answer
        with pytest.raises(TimeoutError):
            sock.recv(512)
        sock.sendto(b"\xab\xcd\x01\x00" + b"\xff" * 20, (LOOPBACK, example_dns))
        reply = dns.message.from_wire(sock.recv(512))
        assert (reply.id, reply.rcode()) == (0xABCD, dns.rcode.FORMERR)
    # The server still answers.
    response = dns.query.udp(dns.message.make_query(HELLO, "A"), LOOPBACK, port=example_dns)
    assert response.rcode() == dns.rcode.NOERROR


# --- kontinuum serve -------------------------------------------------------------------------

GREETER = """apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: demo}
spec:
  clusterIP: None
  ports: [{name: grpc, port: 9090, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: greeter-us1
  namespace: demo
  labels: {kubernetes.io/service-name: greeter}
addressType: IPv4
ports: [{name: grpc, port: 9090, protocol: TCP}]
endpoints:
- addresses: ["127.0.0.23"]
  conditions: {ready: true}
- addresses: ["127.0.0.24"]
  conditions: {ready: false}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: greeter, namespace: demo}
"""


def _answered(port: int, name: str, rdtype: str = "A") -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, rdtype), LOOPBACK, port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None


def test_kontinuum_serve_answers_dns_and_follows_the_files(dig: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*KONTINUUM, "serve", "--config", str(fleet), "--plaintext-xds",
             "--xds-address", f"{LOOPBACK}:{free_port()}",
             "--admin-address", f"{LOOPBACK}:{free_port()}",
             "--dns-address", f"{LOOPBACK}:{port}",
             "--dns-service-address", "127.0.0.53", "--dns-service-address", "fd00::53"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(
            lambda: _answered(port, "dns-version.clusterset.local", "TXT"),
            timeout=20,
            what=f"DNS answers from kontinuum serve (log: {log})",
        )
        assert run_dig(dig, port, HELLO).records() == [f"{HELLO}. A 127.0.0.53"]
        assert run_dig(dig, port, HELLO, "AAAA", "+tcp").records() == [f"{HELLO}. AAAA fd00::53"]
        greeter = "greeter.demo.svc.clusterset.local"
        assert run_dig(dig, port, greeter).status == "NXDOMAIN"

        (fleet / "clusters" / "us-east" / "greeter.yaml").write_text(GREETER)
        written = time.monotonic()
        wait_until(
            lambda: run_dig(dig, port, greeter).status == "NOERROR",
            timeout=10,
            what="the new headless service's name",
        )
        elapsed = time.monotonic() - written
        assert run_dig(dig, port, greeter).records() == [f"{greeter}. A 127.0.0.23"]
        member = f"127-0-0-23.us-east.{greeter}."
        assert run_dig(dig, port, f"_grpc._tcp.{greeter}", "SRV").records() == [
            f"_grpc._tcp.{greeter}. SRV 0 100 9090 {member}"
        ]
        assert run_dig(dig, port, member, "A", "+tcp").records() == [f"{member} A 127.0.0.23"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert elapsed < 3.0, elapsed
    assert "clusterset.local DNS on 127.0.0.1" in log.read_text()
