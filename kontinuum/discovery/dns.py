"""The DNS source: a site that publishes its services as SRV records, and nothing else.

Some sites run no Kubernetes API kontinuum could watch (a VM estate, an edge site behind
a firewall) but already publish their services in DNS, the way RFC 2782 describes:

    _<port>._<protocol>.<service>.<domain>  SRV  <priority> <weight> <port> <target>
    <target>                                A / AAAA  <address>

The site's ClusterProfile names the domain, the server to ask and the service ports
(`kontinuum.control.site_access`): DNS cannot be listed, so what to look up must be said.
Each service port is one SRV name; each SRV target is looked up with A and AAAA. The
answers become the same model a Kubernetes cluster's objects do (see `site_snapshot`):
a `Service` per service, an `Endpoint` per target address and SRV port, and a
`ServiceExport`, because a DNS-described site exists to be reached from the cluster set.

Each name is looked up again when its answer's TTL expires (negative answers too, by the
zone's negative TTL), clamped to [min_refresh, max_refresh] so that a TTL of 0 cannot
become a query storm and a day-long TTL does not hide a change for a day. A lookup that
fails is retried after min_refresh, doubling up to `RETRY_MAX`.

What an answer means, per name (the source contract of `kontinuum.discovery.source`):

- records: the current view;
- NXDOMAIN, or NOERROR without records of the type: the name is gone (a service port
  without SRV records, a target without addresses), so its endpoints go too;
- SERVFAIL, REFUSED, a timeout, an unreachable server: nothing is known, so the last
  answer stays in force and the snapshot is marked stale (status DEGRADED naming the
  failing names) until every name answers again.

A snapshot is yielded only when the view changes, the first one once the first round of
lookups (SRV, then the targets they name) is complete.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from kontinuum.control.model import (
    DnsAccess,
    DnsService,
    Endpoint,
    EndpointPort,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

log = logging.getLogger("kontinuum.discovery.dns")

RecordType = Literal["SRV", "A", "AAAA"]
RETRY_MAX: Final = 30.0  # a failing name is retried at least this often (a recovery shows)
MAX_IN_FLIGHT: Final = 32  # queries at once: a big site must not flood its server
_SHOWN_FAILURES: Final = 3  # failing names spelled out in the status detail


@dataclass(frozen=True, slots=True, order=True)
class SrvRecord:
    """One SRV record; `target` is lower case without the final dot."""

    priority: int
    weight: int
    port: int
    target: str


def srv_name(service: DnsService, domain: str) -> str:
    """Where a service port is published: `_<port>._<protocol>.<name>.<domain>`."""
    return f"_{service.port}._{service.protocol.lower()}.{service.name}.{domain}".lower()


def refresh_delay(ttl: float, min_refresh: float, max_refresh: float) -> float:
    """When to look a name up again: its TTL, clamped to [min_refresh, max_refresh]."""
    return min(max(ttl, min_refresh), max_refresh)


def retry_delay(failures: int, min_refresh: float, max_refresh: float) -> float:
    """When to retry a name whose last `failures` lookups failed: min_refresh, doubling
    with each failure, at most `RETRY_MAX` (or max_refresh when that is lower)."""
    cap = min(max_refresh, RETRY_MAX)
    return min(min_refresh * 2.0 ** max(failures - 1, 0), max(cap, min_refresh))


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def srv_records(rrset: Iterable[object]) -> tuple[SrvRecord, ...]:
    """An SRV answer's records, sorted; a target of "." (the service is decidedly not
    available here, RFC 2782) is left out."""
    return tuple(
        sorted(
            SrvRecord(rd.priority, rd.weight, rd.port, _text(rd.target))
            for rd in rrset
            if isinstance(rd, SRV) and rd.target != dns.name.root
        )
    )


def addresses(rrset: Iterable[object]) -> tuple[str, ...]:
    """An A or AAAA answer's addresses, sorted (servers rotate them: order means nothing)."""
    return tuple(sorted({str(rd.address) for rd in rrset if isinstance(rd, A | AAAA)}))


def _port_number(name: str, records: Sequence[SrvRecord], notes: list[str]) -> int:
    """The Service port: the SRV port most records agree on (ties: the lowest number)."""
    counts = Counter(r.port for r in records)
    port = min(counts, key=lambda p: (-counts[p], p))
    if len(counts) > 1:
        seen = ", ".join(f"{p} ({counts[p]}x)" for p in sorted(counts))
        notes.append(
            f"{name}: SRV records disagree on the port ({seen}): the Service port is {port}"
        )
    return port


def site_snapshot(
    cluster: str,
    domain: str,
    services: Sequence[DnsService],
    srv: Mapping[str, Sequence[SrvRecord]],
    found: Mapping[str, Sequence[str]],
    *,
    stale: bool = False,
) -> tuple[SiteSnapshot, tuple[str, ...]]:
    """The site as the DNS answers describe it, and notes for the status. Pure.

    `srv` holds the records of each SRV name (`srv_name`), `found` the addresses (A and
    AAAA) of each target; a name missing from either has none. A service port without SRV
    records is not a port of its Service, and a Service left without ports is not in the
    snapshot at all (nor its export). Every SRV record makes one endpoint per address of
    its target, serving the port on the record's port, ready. SRV priority and weight are
    not used: the model has no per-endpoint weight, and failover between localities is
    kontinuum's own (locality priorities), so every target of a name takes traffic.
    """
    notes: list[str] = []
    ports: dict[tuple[str, str], list[ServicePort]] = {}
    endpoints: set[Endpoint] = set()
    for service in services:
        name = srv_name(service, domain)
        records = srv.get(name, ())
        if not records:
            continue
        key = (service.namespace, service.name)
        ports.setdefault(key, []).append(
            ServicePort(_port_number(name, records, notes), service.port, service.protocol)
        )
        for record in records:
            targets = found.get(record.target, ())
            if not targets:
                notes.append(f"{name}: SRV target {record.target} has no A or AAAA records")
            port = EndpointPort(record.port, service.port, service.protocol)
            for address in targets:
                version = ipaddress.ip_address(address).version
                endpoints.add(
                    Endpoint(
                        cluster,
                        service.namespace,
                        service.name,
                        (address,),
                        (port,),
                        address_type="IPv4" if version == 4 else "IPv6",
                    )
                )
    keys = sorted(ports)
    snapshot = SiteSnapshot(
        cluster,
        services=tuple(Service(cluster, ns, name, tuple(ports[ns, name])) for ns, name in keys),
        endpoints=tuple(sorted(endpoints, key=_endpoint_order)),
        exports=tuple(ServiceExport(cluster, ns, name) for ns, name in keys),
        stale=stale,
    )
    return snapshot, tuple(dict.fromkeys(notes))


def _endpoint_order(endpoint: Endpoint) -> tuple[str, str, str, int, str]:
    port = endpoint.ports[0]
    return (endpoint.namespace, endpoint.service, port.name, port.port, endpoint.addresses[0])


@dataclass(slots=True)
class _Lookup:
    """One name and type, looked up again when its answer expires."""

    name: str
    rdtype: RecordType
    due: float = 0.0
    answered: bool = False  # has had an answer (records, NXDOMAIN or none of the type)
    srv: tuple[SrvRecord, ...] = ()
    addresses: tuple[str, ...] = ()
    failure: str = ""  # why the last lookup failed; "" when it answered
    failures: int = 0  # lookups failed in a row

    def __str__(self) -> str:
        return f"{self.name} {self.rdtype}"


def _failure(exc: Exception, timeout: float) -> str:
    """A failed lookup in a few words: the servers' rcodes or errors, or the timeout."""
    if isinstance(exc, dns.resolver.LifetimeTimeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        parts = [
            f"{error} from {str(server).removeprefix('Do53:').rsplit('@', 1)[0]} port {port}"
            for server, _, port, error, _ in errors
        ]
        return "; ".join(parts) or str(exc)
    return str(exc) or type(exc).__name__


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """How long an NXDOMAIN holds: the negative TTL of the zone's SOA (RFC 2308)."""
    for response in (exc.kwargs.get("responses") or {}).values():
        try:
            return float(response.resolve_chaining().minimum_ttl)
        except dns.exception.DNSException:
            continue
    return 0.0


class DnsSource:
    """A site described in DNS as a `Source` (see the module doc).

    `timeout` bounds each lookup (every attempt and retry against the server together).
    """

    def __init__(
        self,
        cluster: str,
        access: DnsAccess,
        *,
        min_refresh: float = 1.0,
        max_refresh: float = 300.0,
        timeout: float = 2.0,
    ) -> None:
        if not 0 < min_refresh <= max_refresh:
            raise ValueError(
                f"need 0 < min_refresh <= max_refresh, got {min_refresh}, {max_refresh}"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._cluster = cluster
        self._access = access
        self._min_refresh = min_refresh
        self._max_refresh = max_refresh
        self._timeout = timeout
        self._status = SourceStatus(Health.STARTING)
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._lookups: dict[tuple[str, RecordType], _Lookup] = {}

    @property
    def name(self) -> str:
        return f"dns:{self._cluster}"

    def status(self) -> SourceStatus:
        return self._status

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        loop = asyncio.get_running_loop()
        self._lookups = {}
        for service in self._access.services:
            name = srv_name(service, self._access.domain)
            self._lookups.setdefault((name, "SRV"), _Lookup(name, "SRV"))
        last: SiteSnapshot | None = None
        while True:
            batch = [lookup for lookup in self._lookups.values() if lookup.due <= loop.time()]
            while batch:  # new SRV targets are looked up before the view is shown
                await self._look_up(batch)
                batch = self._follow_targets()
            snapshot = self._snapshot()
            if snapshot != last:
                last = snapshot
                yield snapshot
            due = min((lookup.due for lookup in self._lookups.values()), default=None)
            wait = self._max_refresh if due is None else due - loop.time()
            await asyncio.sleep(max(wait, 0.0))

    def _follow_targets(self) -> list[_Lookup]:
        """Start looking up the targets the SRV answers name, forget those they no longer
        name; returns the new lookups."""
        targets = {
            record.target
            for lookup in self._lookups.values()
            if lookup.rdtype == "SRV"
            for record in lookup.srv
        }
        for key, lookup in list(self._lookups.items()):
            if lookup.rdtype != "SRV" and lookup.name not in targets:
                del self._lookups[key]
        new = []
        for target in sorted(targets):
            for rdtype in ("A", "AAAA"):
                if (target, rdtype) not in self._lookups:
                    lookup = _Lookup(target, rdtype)
                    self._lookups[target, rdtype] = lookup
                    new.append(lookup)
        return new

    def _snapshot(self) -> SiteSnapshot:
        srv: dict[str, tuple[SrvRecord, ...]] = {}
        found: dict[str, tuple[str, ...]] = {}
        for lookup in self._lookups.values():
            if lookup.rdtype == "SRV":
                srv[lookup.name] = lookup.srv
            else:
                found[lookup.name] = found.get(lookup.name, ()) + lookup.addresses
        failing = [lookup for lookup in self._lookups.values() if lookup.failure]
        snapshot, notes = site_snapshot(
            self._cluster,
            self._access.domain,
            self._access.services,
            srv,
            found,
            stale=bool(failing),
        )
        details = list(notes)
        if failing:
            shown = [f"{lookup}: {lookup.failure}" for lookup in failing[:_SHOWN_FAILURES]]
            more = len(failing) - len(shown)
            details.insert(
                0,
                f"stale: {len(failing)} lookup(s) failing, the last answers serve: "
                + "; ".join(shown)
                + (f"; and {more} more" if more else ""),
            )
        health = Health.DEGRADED if failing else Health.HEALTHY
        self._status = SourceStatus(health, "; ".join(details))
        return snapshot

    async def _look_up(self, batch: Sequence[_Lookup]) -> None:
        try:
            resolver = await self._get_resolver()
        except (OSError, ValueError, dns.exception.DNSException) as exc:
            for lookup in batch:
                self._failed(lookup, f"no DNS server to ask: {exc}")
            return
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def one(lookup: _Lookup) -> None:
            async with limit:
                await self._query(resolver, lookup)

        await asyncio.gather(*(one(lookup) for lookup in batch))

    async def _get_resolver(self) -> dns.asyncresolver.Resolver:
        """The resolver of the access's server, or of the system (/etc/resolv.conf)."""
        if self._resolver is not None:
            return self._resolver
        if not self._access.server:
            resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
        else:
            host, _, port = self._access.server.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, int(port), type=socket.SOCK_DGRAM
            )
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(str(info[4][0]), int(port))
                for info in dict.fromkeys(infos)
            ]
        resolver.cache = None  # each name's TTL is tracked here
        self._resolver = resolver
        return resolver

    async def _query(self, resolver: dns.asyncresolver.Resolver, lookup: _Lookup) -> None:
        try:
            answer = await resolver.resolve(
                lookup.name + ".",
                lookup.rdtype,
                raise_on_no_answer=False,
                lifetime=self._timeout,
                search=False,
            )
        except dns.resolver.NXDOMAIN as exc:
            self._answered(lookup, None, _negative_ttl(exc))
        except (dns.exception.DNSException, OSError) as exc:
            self._failed(lookup, _failure(exc, self._timeout))
        else:
            self._answered(lookup, answer.rrset, answer.chaining_result.minimum_ttl)

    def _answered(self, lookup: _Lookup, rrset: dns.rrset.RRset | None, ttl: float) -> None:
        if lookup.failure:
            log.info("%s: %s answers again", self.name, lookup)
        records = list(rrset) if rrset is not None else []
        if lookup.rdtype == "SRV":
            lookup.srv = srv_records(records)
        else:
            lookup.addresses = addresses(records)
        lookup.answered = True
        lookup.failure = ""
        lookup.failures = 0
        delay = refresh_delay(ttl, self._min_refresh, self._max_refresh)
        lookup.due = asyncio.get_running_loop().time() + delay

    def _failed(self, lookup: _Lookup, failure: str) -> None:
        if not lookup.failure:
            kept = "its last answer stays in force" if lookup.answered else "nothing known yet"
            log.warning("%s: looking up %s failed (%s): %s", self.name, lookup, failure, kept)
        lookup.failure = failure
        lookup.failures += 1
        delay = retry_delay(lookup.failures, self._min_refresh, self._max_refresh)
        lookup.due = asyncio.get_running_loop().time() + delay
