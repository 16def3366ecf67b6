"""The `clusterset.local` zone of a service plane, as the Multi-Cluster Services DNS
specification (KEP-1645 `specification.md`, schema 1.0.0) defines its records.

Pure: a `ServicePlane` in, every name and record out, so a query is a dictionary lookup and
the zone is rebuilt only when the plane changes. Only cluster-set services (`scope == ""`)
have names here; an unexported service is reachable in its own cluster only, under
`cluster.local`, which this zone does not serve.

- `dns-version.clusterset.local. TXT "1.0.0"`, the schema version.
- A service with a ClusterSetIP, `<svc>.<ns>.svc.clusterset.local.`: `A` / `AAAA` of the
  configured service address (kontinuum has no per-service virtual IPs: applications reach
  every service through their sidecar, so the address is one that reaches the sidecar; see
  docs/dns.md), and per named port `_<port>._<proto>.<svc>.<ns>.svc.clusterset.local. SRV 0
  <weight> <port> <svc>.<ns>.svc.clusterset.local.` (unnamed ports have none).
- A headless service: `A` / `AAAA` of every ready endpoint at the service's name and at
  `<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local.`, and per named port and ready
  endpoint an `SRV` record targeting that name on the endpoint's port (clients connect to
  the endpoint itself). The plane knows no endpoint `hostname` field, so `<hostname>` is the
  system-assigned identifier the specification allows: the address with `-` for `.` (or for
  `:` in the full IPv6 form). `<clusterid>` is the fleet cluster's name. A headless service
  without a ready endpoint has no name (NXDOMAIN, as the specification says).
- As an extension (the cluster-local specification's section 3 allows them, CoreDNS has the
  same), an `SRV` query for the service's own name lists the records of every named port.

Priorities are 0 and the weights of one name's records share 100 equally: the
specification prescribes neither. Every record has the same short TTL (5 s by default, as in
the specification's examples), and the zone's SOA minimum says negative answers are cached no
longer. The specification wants no name for one cluster's share of a service
(`<clusterid>.<svc>...`): such a name exists here only as an empty non-terminal above the
per-endpoint names of a headless service, without records.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from kontinuum.control.plane import PlaneEndpoint, PlaneService, ServicePlane

ORIGIN: Final = dns.name.from_text("clusterset.local.")
SCHEMA_VERSION: Final = "1.0.0"
DEFAULT_TTL: Final = 5
# The SOA names the server and a contact as zones do; kontinuum serves no NS records and no
# zone transfers, so neither name needs an address.
SOA_MNAME: Final = dns.name.from_text("ns.dns.clusterset.local.")
SOA_RNAME: Final = dns.name.from_text("hostmaster.clusterset.local.")
SOA_TIMERS: Final = (7200, 1800, 86400)  # refresh, retry, expire (as CoreDNS)

A: Final = dns.rdatatype.A
AAAA: Final = dns.rdatatype.AAAA
SRV: Final = dns.rdatatype.SRV
TXT: Final = dns.rdatatype.TXT
SOA: Final = dns.rdatatype.SOA

Node = Mapping[dns.rdatatype.RdataType, dns.rdataset.Rdataset]


@dataclass(frozen=True, slots=True)
class ZoneOptions:
    """What the plane does not say: the address that reaches the sidecar, and the TTL.

    `ipv4` answers `A` queries for services with a ClusterSetIP, `ipv6` answers `AAAA`
    (none: no `AAAA` records, a NODATA answer)."""

    ipv4: str | None = "127.0.0.1"
    ipv6: str | None = None
    ttl: int = DEFAULT_TTL

    def __post_init__(self) -> None:
        for value, version in ((self.ipv4, 4), (self.ipv6, 6)):
            if value is not None and _version(value) != version:
                raise ValueError(f"{value!r} is not an IPv{version} address")
        if not 0 <= self.ttl <= 2**31 - 1:
            raise ValueError(f"TTL must be between 0 and 2147483647 seconds, got {self.ttl}")

    @classmethod
    def of(cls, addresses: Iterable[str], ttl: int = DEFAULT_TTL) -> ZoneOptions:
        """Options from a list of service addresses: at most one IPv4 and one IPv6."""
        by_version: dict[int, list[str]] = defaultdict(list)
        for address in addresses:
            version = _version(address)
            if version is None:
                raise ValueError(f"{address!r} is not an IP address")
            by_version[version].append(address)
        for version, found in by_version.items():
            if len(found) > 1:
                raise ValueError(f"one IPv{version} service address at most, got {found}")
        ipv4, ipv6 = by_version.get(4, [None])[0], by_version.get(6, [None])[0]
        return cls(ipv4=ipv4, ipv6=ipv6, ttl=ttl)


def _version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Zone:
    """Every name of the zone with its records; never changed once built.

    A name with no records is an empty non-terminal (it exists: NODATA, not NXDOMAIN)."""

    nodes: Mapping[dns.name.Name, Node]
    soa: dns.rdataset.Rdataset
    serial: int
    origin: dns.name.Name = ORIGIN

    def node(self, name: dns.name.Name) -> Node | None:
        """The records of `name` (case-insensitive, as DNS names compare), or None."""
        return self.nodes.get(name)

    def with_serial(self, serial: int) -> Zone:
        """The same records under an SOA with another serial."""
        soa = _soa(serial, self.soa.ttl)
        return Zone(nodes={**self.nodes, self.origin: {SOA: soa}}, soa=soa, serial=serial % 2**32)


def service_name(service: PlaneService) -> dns.name.Name:
    """`<svc>.<ns>.svc.clusterset.local.`"""
    return dns.name.Name((service.name, service.namespace, "svc")).concatenate(ORIGIN)


def endpoint_hostname(address: str) -> str | None:
    """The system-assigned hostname of an endpoint without one: `10-0-0-1`, or the full
    IPv6 form with dashes (`2001-0db8-0000-...-0001`: never a leading or trailing dash).
    None for what is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    text = ip.exploded if ip.version == 6 else str(ip)
    return text.replace(".", "-").replace(":", "-")


class _Builder:
    """Collects records by name and type; SRV records get their weights once all are known."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.records: dict[dns.name.Name, dict[dns.rdatatype.RdataType, set[str]]] = {}
        self.srv: dict[dns.name.Name, set[tuple[int, dns.name.Name]]] = defaultdict(set)

    def add(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, text: str) -> None:
        self.records.setdefault(name, {}).setdefault(rdtype, set()).add(text)

    def address(self, name: dns.name.Name, address: str) -> None:
        self.add(name, A if _version(address) == 4 else AAAA, address)

    def nodes(self) -> dict[dns.name.Name, Node]:
        for name, targets in self.srv.items():
            weight = max(1, 100 // len(targets))
            for port, target in targets:
                self.add(name, SRV, f"0 {weight} {port} {target.to_text()}")
        nodes: dict[dns.name.Name, Node] = {}
        for name, types in self.records.items():
            nodes[name] = {
                rdtype: dns.rdataset.from_rdata_list(
                    self.ttl,
                    [dns.rdata.from_text(dns.rdataclass.IN, rdtype, t) for t in sorted(texts)],
                )
                for rdtype, texts in types.items()
            }
        for name in list(nodes):  # empty non-terminals: every name between a name and the apex
            parent = name.parent()
            while parent != ORIGIN and parent.is_subdomain(ORIGIN):
                nodes.setdefault(parent, {})
                parent = parent.parent()
        return nodes


def _port_label(name: str, protocol: str) -> tuple[str, str]:
    return (f"_{name}", f"_{protocol.lower()}")


def _clusterset_ip(builder: _Builder, service: PlaneService, options: ZoneOptions) -> None:
    name = service_name(service)
    for address in (options.ipv4, options.ipv6):
        if address is not None:
            builder.address(name, address)
    builder.records.setdefault(name, {})  # the name exists even without an address family
    for port in service.ports:
        if port.name:
            srv = dns.name.Name(_port_label(port.name, port.protocol)).concatenate(name)
            builder.srv[srv].add((port.port, name))
            builder.srv[name].add((port.port, name))


def _member_name(endpoint: PlaneEndpoint, service: dns.name.Name) -> dns.name.Name | None:
    hostname = endpoint_hostname(endpoint.address)
    if hostname is None:
        return None
    try:
        return dns.name.Name((hostname, endpoint.locality.cluster)).concatenate(service)
    except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
        return None


def _headless(builder: _Builder, service: PlaneService) -> None:
    name = service_name(service)
    for port in service.ports:
        for endpoint in port.endpoints:
            member = _member_name(endpoint, name) if endpoint.ready else None
            if member is None:
                continue
            builder.address(name, endpoint.address)
            builder.address(member, endpoint.address)
            if port.name:
                srv = dns.name.Name(_port_label(port.name, port.protocol)).concatenate(name)
                builder.srv[srv].add((endpoint.port, member))
                builder.srv[name].add((endpoint.port, member))


def _soa(serial: int, ttl: int) -> dns.rdataset.Rdataset:
    """The zone's SOA; its minimum (the negative-caching TTL, RFC 2308) is the records' TTL."""
    refresh, retry, expire = SOA_TIMERS
    text = (
        f"{SOA_MNAME.to_text()} {SOA_RNAME.to_text()} {serial % 2**32} "
        f"{refresh} {retry} {expire} {ttl}"
    )
    return dns.rdataset.from_rdata_list(ttl, [dns.rdata.from_text(dns.rdataclass.IN, SOA, text)])


def build_zone(plane: ServicePlane, options: ZoneOptions, serial: int = 1) -> Zone:
    """The `clusterset.local` zone of `plane` (see the module docstring)."""
    builder = _Builder(options.ttl)
    builder.add(dns.name.Name(("dns-version",)).concatenate(ORIGIN), TXT, f'"{SCHEMA_VERSION}"')
    for service in plane.services:
        if service.scope:
            continue
        if service.type == "Headless":
            _headless(builder, service)
        else:
            _clusterset_ip(builder, service, options)
    soa = _soa(serial, options.ttl)
    nodes = builder.nodes()
    nodes[ORIGIN] = {SOA: soa}
    return Zone(nodes=nodes, soa=soa, serial=serial % 2**32)
