"""The zone's copy of what the global sends it (GlobalToZone), as a discovery `Source`.

The zone subscribes as an xDS Delta client: a wildcard subscription whose
`initial_resource_versions` name every resource it holds (so the global sends only what
differs), then an ACK or a NACK per response nonce. A resource whose version is not the
hash of its content, or whose content does not decode, is NACKed by name; the others apply.
A change the global splits into several responses (all but the last partial) applies whole
when its last part arrives (`kontinuum.discovery.split_change`): the zone's proxies never
see half of it (a route without the service it sends to), and the copy kept on disk holds
whole changes only. A stream cut between the parts drops them; the next subscription names
the versions of whole changes, and the global sends the change whole again. A stream's
first view is such a change too: nothing reaches the mesh before it is whole.

As a source, the copy yields the fleet's config (its fleet-wide objects parsed as the fleet
files are, each site's access left out: at a zone, every other site comes through the
global) and a snapshot per other site, assembled from its services. Its first update comes
once a first stream's view is whole, or at once from the last copy kept under the state
directory (`global.json`, written whole to a temporary file and renamed), so that a zone
restarted while cut off from the global still serves its proxies. Each resource is kept
with its version and checked against it when loaded: one whose content does not hash to it
(the file altered or truncated in a way that still parses) is dropped and not named to the
global, which sends it again. While no stream is open, the other sites' snapshots are
served marked stale, as they last were (their endpoints stay: the zone has no newer word
of them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from kontinuum.control.fleet_bodies import FleetBodies
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import FleetConfig, SiteAccess, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.replace_file import replace_file
from kontinuum.discovery.snapshot_codec import decode_snapshot
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate
from kontinuum.discovery.split_change import SplitChange, undeclared
from kontinuum.federation.catalog import FLEET_PREFIX, SITE_PREFIX
from kontinuum.federation.objects import (
    PARTIAL,
    ZONE_RESOURCE_TYPE_URL,
    declarable,
    nack,
    version_of,
)
from kontinuum.federation.v1.federation_pb2 import ZoneResource
from kontinuum.xds.limits import cut, shown

log = logging.getLogger("kontinuum.federation.fleet_copy")

_Entry = tuple[str, ZoneResource, SiteSnapshot | None]  # version, message, its service

FORMAT: Final = 1
STATE_FILE: Final = "global.json"


@dataclass(slots=True)
class CopyStats:
    """What the zone's GlobalToZone streams brought (counters)."""

    subscribed: bool = False
    subscriptions: int = 0
    resources_received: int = 0  # each new or changed resource once
    removals_received: int = 0
    refused: int = 0
    last_sync: float | None = None
    # Resources of the kept copy dropped at start: content not of their recorded version.
    kept_altered: int = 0


class FleetCopy:
    """What the global sent, kept whole and turned into source updates (see the module
    doc). `state_dir`: where the last copy is kept; None: nowhere."""

    def __init__(self, site: str, state_dir: Path | None = None) -> None:
        self.site = site
        self.resources: dict[str, tuple[str, ZoneResource]] = {}
        # How the global reaches this zone's own site (its ClusterProfile: `stale-after`).
        self.own_access: SiteAccess | None = None
        # each other site's services, decoded once: site -> name -> the service's snapshot
        self._services: dict[str, dict[str, SiteSnapshot]] = {}
        self._stale: dict[str, bool] = {}  # the sites the global holds stale (`site/<site>`)
        self.stats = CopyStats()
        self._path = state_dir / STATE_FILE if state_dir is not None else None
        self._complete = False  # the current stream's view is whole
        self._answered = False  # the current stream sent a response (it counts as one)
        # What the current stream was told is held, and what it sent before its view was
        # whole: what is held besides is gone at the global (`declarable`); None: all.
        self._declared: set[str] | None = None
        self._received: set[str] = set()
        self._whole = False  # some view was whole (a stream's, or the kept copy)
        self._woken = asyncio.Event()
        self._dirty_fleet = True
        self._dirty_sites: set[str] = set()
        self._unsaved = False
        self._status = SourceStatus(Health.STARTING, "waiting for the global")
        # The change the global is sending in parts, held until whole: name -> its
        # version, message and decoded service, or None for a removal.
        self._change: SplitChange[_Entry] = SplitChange()

    @property
    def name(self) -> str:
        return "global"

    def status(self) -> SourceStatus:
        return self._status

    # -- the copy kept on disk -------------------------------------------------------

    def load(self) -> None:
        """Start from the copy kept under the state directory, if any (blocking). A
        resource whose content does not hash to its recorded version (the file altered or
        truncated in a way that still parses) is dropped, and so not named to the global,
        which sends it again; those are logged on one line and counted."""
        if self._path is None:
            return
        try:
            raw = json.loads(self._path.read_bytes())
            if raw.get("format") != FORMAT or raw.get("site") != self.site:
                raise ValueError(f"not of format {FORMAT} for site {self.site}")
            entries = raw["resources"].items()
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            log.warning("ignoring the kept copy of the global %s: %s", self._path, cut(error))
            return
        altered: list[str] = []
        for name, entry in entries:
            kept = _kept_resource(str(name), entry)
            if kept is None:
                altered.append(str(name))
                continue
            version, message, service = kept
            self.resources[str(name)] = (version, message)
            if service is not None and _is_state(name):
                self._stale[_site_of(name)] = service.stale
            elif service is not None:
                self._services.setdefault(_site_of(name), {})[name] = service
        if altered:
            self.stats.kept_altered += len(altered)
            log.warning(
                "dropping %d resource(s) of the kept copy of the global %s whose content does "
                "not match their version (altered or truncated on disk): the global sends them "
                "again: %s",
                len(altered),
                self._path,
                cut(", ".join(sorted(altered))),
            )
        self._whole = True
        self._dirty_sites = self._sites()
        log.info("serving the kept copy of the global: %d resource(s)", len(self.resources))

    def save(self) -> None:
        """Write the copy whole, to a temporary file renamed into place (blocking)."""
        if self._path is None:
            return
        entries = {
            name: {"version": version, "message": base64.b64encode(m.SerializeToString()).decode()}
            for name, (version, m) in self.resources.items()
        }
        content = json.dumps({"format": FORMAT, "site": self.site, "resources": entries})
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            replace_file(self._path, content.encode())
        except OSError as error:
            log.warning("cannot keep the copy of the global in %s: %s", self._path, error)

    # -- what the stream calls -------------------------------------------------------

    def subscription(self) -> discovery_pb2.DeltaDiscoveryRequest:
        """A stream begins: its first request, naming what is held (whole changes only)."""
        self._complete = self._answered = False
        self._forget_change()
        declared = declarable({n: v for n, (v, _) in self.resources.items()})
        self._declared, self._received = set(declared), set()
        return discovery_pb2.DeltaDiscoveryRequest(
            type_url=ZONE_RESOURCE_TYPE_URL,
            resource_names_subscribe=["*"],
            initial_resource_versions=declared,
        )

    def unsubscribed(self) -> None:
        """The stream ended (or never began)."""
        was, self.stats.subscribed = self.stats.subscribed, False
        self._complete = False
        self._forget_change()
        if was:
            self._dirty_sites.update(self._sites())  # served stale now
            self._woken.set()

    def take(
        self, response: discovery_pb2.DeltaDiscoveryResponse
    ) -> discovery_pb2.DeltaDiscoveryRequest:
        """Apply one response; its ACK, or its NACK naming what was refused."""
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=ZONE_RESOURCE_TYPE_URL, response_nonce=response.nonce
        )
        if response.type_url != ZONE_RESOURCE_TYPE_URL:
            nack(request, f"type {shown(response.type_url)} is not ours")
            return request
        if not self._answered:  # a stream's first response (on another replica, perhaps,
            # the copy still subscribed since the last stream)
            self._answered = self.stats.subscribed = True
            self.stats.subscriptions += 1
        for name in response.removed_resources:
            if name in self.resources or name in self._change:
                self._change.remove(name)
        refused: list[str] = []
        for resource in response.resources:
            if not self._complete:
                self._received.add(resource.name)
            message = ZoneResource()
            problem, service = "", None
            if not resource.resource.Unpack(message):
                problem = f"holds a {shown(resource.resource.type_url)}"
            elif version_of(message) != resource.version:
                problem = "its version is not the SHA-256 of its content"
            elif not resource.name.startswith((FLEET_PREFIX, SITE_PREFIX)):
                problem = "not a fleet/ or site/ resource"
            elif resource.name.startswith(SITE_PREFIX) and _site_of(resource.name) == self.site:
                problem = "a service of this zone's own site"
            else:
                problem, service = _content(resource.name, message)
            if problem:
                refused.append(f"{shown(resource.name)}: {problem}")
                continue
            self._change.set(resource.name, (resource.version, message, service))
        self.stats.refused += len(refused)
        if response.system_version_info != PARTIAL:
            self._apply_change()
        if refused:
            detail = cut(f"{len(refused)} resource(s) refused: " + "; ".join(refused))
            log.warning("%s", detail)
            nack(request, detail)
        return request

    def _apply_change(self) -> None:
        """The change is whole (its last part arrived): apply it at once."""
        for name, entry in self._change.take():
            if entry is None:
                if self.resources.pop(name, None) is not None:
                    self._services.get(_site_of(name), {}).pop(name, None)
                    if _is_state(name):
                        self._stale.pop(_site_of(name), None)
                    self._touch(name)
                    self.stats.removals_received += 1
                continue
            version, message, service = entry
            self.resources[name] = (version, message)
            if service is not None and _is_state(name):
                self._stale[_site_of(name)] = service.stale
            elif service is not None:
                self._services.setdefault(_site_of(name), {})[name] = service
            self._touch(name)
            self.stats.resources_received += 1
        self.stats.last_sync = time.time()
        if not self._complete:
            self._drop_undeclared()
            self._dirty_sites.update(self._sites())  # no longer stale
        self._complete = self._whole = True
        self._unsaved = True
        self._woken.set()

    def _forget_change(self) -> None:
        """The stream ended: the parts of a change it had sent do not apply."""
        if dropped := self._change.discard():
            log.info("dropped %d resource(s) of a change of the global cut off midway", dropped)

    def _drop_undeclared(self) -> None:
        """Drop what is held that the stream was neither told of nor sent."""
        declared, received = self._declared, self._received
        self._declared, self._received = None, set()
        if declared is None:
            return
        for name in undeclared(self.resources, declared, received):
            del self.resources[name]
            self._services.get(_site_of(name), {}).pop(name, None)
            if _is_state(name):
                self._stale.pop(_site_of(name), None)
            self._touch(name)
            self.stats.removals_received += 1

    def _touch(self, name: str) -> None:
        if name.startswith(SITE_PREFIX):
            self._dirty_sites.add(_site_of(name))
        else:
            self._dirty_fleet = True

    def _sites(self) -> set[str]:
        return {site for site, services in self._services.items() if services} | set(self._stale)

    # -- the Source ------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        while True:
            await self._woken.wait()
            self._woken.clear()
            if not self._whole or (self.stats.subscribed and not self._complete):
                continue  # a stream's first view is not whole yet
            stale = not self.stats.subscribed
            self._status = (
                SourceStatus(Health.DEGRADED, "cut off from the global: serving its last copy")
                if stale
                else SourceStatus(Health.HEALTHY, last_sync=self.stats.last_sync)
            )
            if self._dirty_fleet:
                self._dirty_fleet = False
                yield self._config()
            sites, self._dirty_sites = self._dirty_sites, set()
            for site in sorted(sites):
                yield self._snapshot(site, stale)
            if self._unsaved:  # once the mesh has what changed: kept off its path
                self._unsaved = False
                await asyncio.to_thread(self.save)

    def wake(self) -> None:
        self._woken.set()

    def _config(self) -> FleetConfig:
        bodies: list[object] = []
        for name in sorted(self.resources):
            if not name.startswith(FLEET_PREFIX):
                continue
            try:
                bodies.append(json.loads(self.resources[name][1].object.json))
            except ValueError:
                log.warning("%s: not JSON; left out", name)
        documents = [Document(f"global:{i}", body, 1) for i, body in enumerate(bodies)]
        config, errors = parse_fleet_config(documents)
        for error in errors:
            log.debug("a fleet-wide object of the global: %s", error)
        own = next((site for site in config.sites if site.name == self.site), None)
        self.own_access = own.access if own is not None else None
        sites = tuple(replace(site, access=None) for site in config.sites)
        return replace(config, sites=sites, bodies=FleetBodies.of(bodies))

    def _snapshot(self, site: str, stale: bool) -> SiteSnapshot:
        services = self._services.get(site, {})
        parts = [services[name] for name in sorted(services)]
        return SiteSnapshot(
            site,
            services=tuple(s for p in parts for s in p.services),
            endpoints=tuple(e for p in parts for e in p.endpoints),
            exports=tuple(e for p in parts for e in p.exports),
            stale=stale or self._stale.get(site, False),
        )


def _kept_resource(name: str, entry: object) -> _Entry | None:
    """A resource of the kept copy, checked to be what its recorded version says; None
    when it is not (or does not decode)."""
    if not isinstance(entry, dict):
        return None
    try:
        message = ZoneResource.FromString(base64.b64decode(entry["message"], validate=True))
        version = entry["version"]
        if not isinstance(version, str) or version_of(message) != version:
            return None
        problem, service = _content(name, message)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, DecodeError):
        return None  # DecodeError: a message that is no protobuf, not a ValueError
    return None if problem else (version, message, service)


def _site_of(name: str) -> str:
    return name.removeprefix(SITE_PREFIX).split("/", 1)[0]


def _is_state(name: str) -> bool:
    """`site/<site>`: a site's state, not one of its services."""
    return "/" not in name.removeprefix(SITE_PREFIX)


def _content(name: str, message: ZoneResource) -> tuple[str, SiteSnapshot | None]:
    """Why a resource's content cannot be used (or ""), and the service it holds, decoded
    (a snapshot of its site with that one service)."""
    try:
        if name.startswith(SITE_PREFIX):
            if message.WhichOneof("resource") != "service":
                return "not a service", None
            service = decode_snapshot(json.loads(message.service.snapshot_json))
            if service.cluster != _site_of(name):
                return f"a service of site {shown(service.cluster)}", None
            if _is_state(name) and (service.services or service.endpoints or service.exports):
                return "a site's state holds no services", None
            return "", service
        if message.WhichOneof("resource") != "object":
            return "not an object", None
        if not isinstance(json.loads(message.object.json), dict):
            return "its JSON is not an object", None
    except (ValueError, RecursionError) as error:
        return cut(str(error)), None
    return "", None
