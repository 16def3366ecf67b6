"""The global replicas a zone dials, and what it sent each.

Global replicas share no store: each must hold every zone's view. So a zone dials every
replica it is given (`--global`, several HOST:PORT, comma-separated or repeated) and
publishes its site to each. A host that is a DNS name is dialed at every address it
resolves to (a headless Service), of both families: a dual-stack name's A and AAAA
records are one process twice, which the instance id below tells, so that the second
link is only a fallback (a broken IPv6 path, say, leaves the IPv4 one publishing). Names
are looked up again whenever a link breaks and every `RESOLVE_INTERVAL` seconds; the
global's certificate is then checked against the name (or `--server-name`), not the
address.

Each global process names its instance (a random id drawn at its start, the
`node.id` of its first ZoneToGlobal request, the `control_plane.identifier` of its
GlobalToZone responses). A link that reaches an instance another link already reaches
(the same process named twice, or at two addresses) is closed before it publishes and
stays idle while the other is up: one link per instance, so the zone's streams never
replace each other at the global.

Each link has its own `Publisher` (what that replica holds of the site) with the same
objects; their counters are the zone's, in all (`PublisherStats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from kontinuum.federation.publisher import Published, Publisher, PublisherStats

__all__ = ["GlobalTarget", "Links", "default_replica_id", "global_entries", "resolve"]

RESOLVE_INTERVAL: Final = 30.0  # seconds between lookups of the globals' names
MAX_TARGETS: Final = 32  # global replicas a zone dials at most


def default_replica_id() -> str:
    """The zone replica's id when none is given: `$POD_NAME` when set (the pod's name,
    from the downward API), else its host name (a pod's name too, unless it runs with
    `hostNetwork: true`), so that a replica restarted in its pod replaces its old streams
    at once. Several zones of a site sharing a host name (`hostNetwork`, or processes side
    by side) need an id each: `POD_NAME` or `--replica-id`."""
    return os.environ.get("POD_NAME", "").strip() or socket.gethostname()


def global_entries(text: str) -> list[tuple[str, int]]:
    """The HOST:PORT entries of `--global` (comma-separated; an IPv6 host in brackets), in
    order, each once; ValueError saying which entry is not one."""
    entries: list[tuple[str, int]] = []
    for entry in (part.strip() for part in text.split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {entry!r}")
        parsed = (host.strip("[]"), int(port))
        if parsed not in entries:
            entries.append(parsed)
    return entries


@dataclass(frozen=True, slots=True)
class GlobalTarget:
    """One global replica: the gRPC target dialed, its HOST:PORT, the name its certificate
    is checked against when that is not the host ("": the host), and how logs name it."""

    target: str
    address: str
    server_name: str
    shown: str


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _target(address: str, port: int) -> str:
    if ":" in address:
        return f"ipv6:[{address}]:{port}"
    return f"ipv4:{address}:{port}"


def resolve(
    entries: Iterable[tuple[str, int]], server_name: str = ""
) -> tuple[list[GlobalTarget], list[str]]:
    """The global replicas of `entries` (blocking: DNS), and a line per name that could
    not be looked up. An address is one target; a name, one per address it resolves to,
    of either family (links to one instance at several addresses keep one publishing)."""
    targets: dict[str, GlobalTarget] = {}
    problems = []
    for host, port in entries:
        if _is_address(host):
            target, address = _target(host, port), _address(host, port)
            targets.setdefault(target, GlobalTarget(target, address, server_name, address))
            continue
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            problems.append(f"cannot look up {host}: {error.strerror or error}")
            continue
        for address in dict.fromkeys(str(info[4][0]) for info in found):
            target, shown = _target(address, port), f"{host}:{port} ({address})"
            found_at = GlobalTarget(target, _address(address, port), server_name or host, shown)
            targets.setdefault(target, found_at)
    return list(targets.values())[:MAX_TARGETS], problems


@dataclass(slots=True)
class Link:
    """What one global replica was sent (`publisher`), the event that wakes its sender,
    the global instance it last reached ("": not known), and whether it is idle: that
    instance is reached by another link."""

    publisher: Publisher
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    instance: str = ""
    idle: bool = False


class Links:
    """The site's objects and a `Link` per global replica dialed (see the module doc)."""

    def __init__(self) -> None:
        self.objects: dict[str, Published] = {}
        self.stats = PublisherStats()
        self._links: dict[str, Link] = {}
        self._went_down = asyncio.Event()  # a link's stream ended: an idle link may go on

    def __iter__(self) -> Iterator[Link]:
        return iter(self._links.values())

    def link(self, target: str) -> Link:
        """The link to `target`, made when first asked for."""
        link = self._links.get(target)
        if link is None:
            publisher = Publisher(stats=self.stats)
            publisher.publish_mapping(self.objects)
            link = self._links[target] = Link(publisher)
        return link

    def drop(self, target: str) -> None:
        """A global replica no longer dialed."""
        self._links.pop(target, None)
        self._went_down.set()

    def down(self, link: Link) -> None:
        """The stream of `link` ended."""
        link.publisher.disconnect()
        self._went_down.set()

    def reached_elsewhere(self, link: Link, instance: str) -> bool:
        """Whether another link's stream is open to the global instance `instance`."""
        return bool(instance) and any(
            other is not link and other.instance == instance and other.publisher.connected
            for other in self._links.values()
        )

    async def until_unreached(self, link: Link) -> None:
        """Wait while the instance `link` reaches is reached by another link (at most
        `RESOLVE_INTERVAL` seconds: then it dials again to see)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESOLVE_INTERVAL):
                while self.reached_elsewhere(link, link.instance):
                    self._went_down.clear()
                    await self._went_down.wait()

    def publish(self, objects: Iterable[Published]) -> None:
        """The site's objects as they are now: each link sends what differs."""
        self.objects = {obj.name: obj for obj in objects}
        for link in self._links.values():
            link.publisher.publish_mapping(self.objects)
            link.wake.set()

    @property
    def connected(self) -> bool:
        """Whether a stream to some global replica is open."""
        return any(link.publisher.connected for link in self._links.values())

    def is_up(self, target: str) -> bool:
        """Whether the stream to `target` is open."""
        link = self._links.get(target)
        return link is not None and link.publisher.connected

    def connected_links(self) -> int:
        """The global instances a stream is open to (a link of unknown instance counts as
        one of its own)."""
        up = [link for link in self._links.values() if link.publisher.connected]
        return len({link.instance or id(link) for link in up})

    def disconnected_links(self) -> int:
        """Links whose stream is down, but for those idle beside another to their instance."""
        return sum(
            1 for link in self._links.values() if not link.publisher.connected and not link.idle
        )

    def __len__(self) -> int:
        return len(self._links)

    def pending(self) -> int:
        """Objects (and removals) not sent yet to the replica furthest behind."""
        return max((link.publisher.pending() for link in self._links.values()), default=0)
