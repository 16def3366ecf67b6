"""What the global sends zones (GlobalToZone), as resources kept up to date with the fleet.

- Every fleet-wide object the global read (its fleet files and config cluster: the
  ClusterProfiles, routes, Gateways, GatewayClasses, ReferenceGrants, policies), named
  `fleet/<kind>/<namespace>/<name>`, as a `KubeObject` (its JSON), to every zone.
- Of the fleet-wide Secrets (any object of kind Secret), a zone is sent only those the
  HTTPS listeners of its own site's Gateways may name as certificates
  (`kontinuum.control.gateway_certificates.secrets_by_site`: a ref in the Gateway's
  namespace or granted by a ReferenceGrant, whether or not the Secret can serve). A
  Gateway runs at the one site its label `kontinuum.io/cluster` names. When a Gateway stops
  naming a Secret, or its grant goes, the Secret's name is among the changed ones and the
  zone's stream sends its removal; when a Gateway starts naming one, the Secret is sent.
- Each exported service of each site, named `site/<site>/<namespace>/<name>`: its Service,
  endpoints and ServiceExport, as the snapshot JSON of a site holding that one service
  (`kontinuum.discovery.snapshot_codec`). And each site's state, named `site/<site>`: the
  snapshot JSON of the site without services, saying whether the global holds it stale, so
  that a site going stale and back costs one resource, not its every service. A zone is
  sent every site's but its own.

Each resource's version is the hex SHA-256 of its `ZoneResource` serialized
deterministically. A change costs what it changes: a site whose snapshot is the same
object as before is not looked at; in one that changed, a service whose parts compare
equal to those last encoded keeps its resource (and bytes). The fleet-wide objects come
as each source's `FleetBodies` (`kontinuum.control.fleet_bodies`): only the keys that
changed since the versions of the last update are looked at, and one whose body is the
very object of the last update keeps its resource. Which site needs which Secret is found
again only when the Gateways or grants differ from the last update's, in one pass over
their certificate refs and grants (not once per zone), and only the Secrets that entered
or left a site's set are named as changed.
"""

from __future__ import annotations

import json
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from kontinuum.control.fleet_bodies import FleetBodies, Key, body_key
from kontinuum.control.gateway_certificates import secrets_by_site
from kontinuum.control.model import Endpoint, Grant, Service, ServiceExport, SiteSnapshot
from kontinuum.control.routing import Gateway
from kontinuum.discovery.snapshot_codec import encode_snapshot
from kontinuum.federation.objects import version_of
from kontinuum.federation.v1.federation_pb2 import KubeObject, SiteService, ZoneResource

FLEET_PREFIX: Final = "fleet/"
SITE_PREFIX: Final = "site/"
SECRET_KIND: Final = "Secret"  # sent to the zones whose Gateways name it only
_SECRETS: Final = f"{FLEET_PREFIX}{SECRET_KIND}/"

_Parts = tuple[tuple[Service, ...], tuple[Endpoint, ...], tuple[ServiceExport, ...]]


@dataclass(frozen=True, slots=True)
class CatalogResource:
    """One resource a zone may be sent: its name, version, message and size in bytes."""

    name: str
    version: str
    message: ZoneResource
    size: int


def _resource(name: str, message: ZoneResource) -> CatalogResource:
    return CatalogResource(name, version_of(message), message, message.ByteSize())


def _json_default(value: object) -> str:
    """YAML gives timestamps as datetimes: JSON has them as RFC 3339 strings."""
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def fleet_object(body: object) -> CatalogResource | None:
    """A fleet-wide object's body as a resource; None for one without kind or name (the
    global reports those itself)."""
    key = body_key(body)
    if key is None or not isinstance(body, Mapping):
        return None
    kind, namespace, name = key
    try:
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError, RecursionError):
        return None
    message = ZoneResource(
        object=KubeObject(
            api_version=body["apiVersion"],
            kind=kind,
            namespace=namespace,
            name=name,
            json=encoded.encode(),
        )
    )
    return _resource(f"{FLEET_PREFIX}{kind}/{namespace}/{name}", message)


def site_service_name(site: str, namespace: str, name: str) -> str:
    return f"{SITE_PREFIX}{site}/{namespace}/{name}"


def site_state(snapshot: SiteSnapshot) -> CatalogResource:
    """The resource saying a site's state (whether it is stale), named `site/<site>`."""
    site = snapshot.cluster
    encoded = encode_snapshot(SiteSnapshot(site, stale=snapshot.stale))
    message = ZoneResource(service=SiteService(site=site, snapshot_json=_json(encoded)))
    return _resource(f"{SITE_PREFIX}{site}", message)


def _exported_parts(snapshot: SiteSnapshot) -> dict[tuple[str, str], _Parts]:
    """The parts of each exported service of a site, by (namespace, name)."""
    exported = {(e.namespace, e.name) for e in snapshot.exports}
    services: dict[tuple[str, str], list[Service]] = {}
    endpoints: dict[tuple[str, str], list[Endpoint]] = {}
    exports: dict[tuple[str, str], list[ServiceExport]] = {}
    for service in snapshot.services:
        if (key := (service.namespace, service.name)) in exported:
            services.setdefault(key, []).append(service)
    for endpoint in snapshot.endpoints:
        if (key := (endpoint.namespace, endpoint.service)) in exported:
            endpoints.setdefault(key, []).append(endpoint)
    for export in snapshot.exports:
        exports.setdefault((export.namespace, export.name), []).append(export)
    return {
        key: (
            tuple(services.get(key, ())),
            tuple(endpoints.get(key, ())),
            tuple(exports[key]),
        )
        for key in exports
    }


class FleetCatalog:
    """The resources zones may be sent, kept up to date by `update` (see the module doc)."""

    def __init__(self) -> None:
        self.fleet: dict[str, CatalogResource] = {}  # every fleet-wide object, Secrets too
        self.shared: dict[str, CatalogResource] = {}  # those every zone is sent: no Secret
        # site -> the Secrets its Gateways name (those the fleet holds), by resource name
        self.site_secrets: dict[str, dict[str, CatalogResource]] = {}
        self.sites: dict[str, dict[str, CatalogResource]] = {}
        self._layers: tuple[FleetBodies, ...] = ()  # each source's bodies, as last updated
        self._held: dict[Key, tuple[object, CatalogResource | None]] = {}  # body in force
        self._snapshots: dict[str, SiteSnapshot] = {}
        self._parts: dict[str, dict[tuple[str, str], _Parts]] = {}
        self._secrets: dict[str, CatalogResource] = {}  # the fleet's Secrets, by name
        self._named: dict[str, frozenset[str]] = {}  # site -> its Gateways' Secrets' names
        self._placement: tuple[tuple[Gateway, ...], tuple[Grant, ...]] = ((), ())
        self.encoded = 0  # resources encoded so far (a change costs what it changes)

    def for_zone(self, site: str) -> Mapping[str, CatalogResource]:
        """What the zone of `site` is sent: the fleet-wide objects but the Secrets its
        Gateways do not name, and every site's services but its own."""
        return ChainMap(
            self.shared,
            self.site_secrets.get(site, {}),
            *(r for s, r in self.sites.items() if s != site),
        )

    def update(
        self,
        bodies: Sequence[object],
        snapshots: Sequence[SiteSnapshot],
        gateways: Iterable[Gateway] = (),
        grants: Iterable[Grant] = (),
    ) -> set[str]:
        """Take the fleet-wide objects, the sites' snapshots, and the Gateways and grants
        in force (parsed from those objects) as they are now; the names of the resources
        that changed (new, changed or gone, or sent to other zones than before). `bodies`:
        each source's `FleetBodies`, in the sources' order (the first declaration of an
        object counts), of which only what changed since the last update is looked at; or
        plain bodies, looked at whole."""
        changed = self._update_fleet(_layers(bodies))
        changed |= self._update_secrets(tuple(gateways), tuple(grants), fleet_changed=changed)
        current = {snapshot.cluster for snapshot in snapshots}
        for site in list(self.sites):
            if site not in current:
                changed.update(self.sites.pop(site))
                self._snapshots.pop(site, None)
                self._parts.pop(site, None)
        for snapshot in snapshots:
            changed |= self._update_site(snapshot)
        return changed

    def _update_secrets(
        self, gateways: tuple[Gateway, ...], grants: tuple[Grant, ...], fleet_changed: set[str]
    ) -> set[str]:
        """Which site is sent which Secret; the names of the Secrets that entered or left a
        site's set."""
        changed: set[str] = set()
        if (gateways, grants) != self._placement:  # the same objects compare by identity
            self._placement = (gateways, grants)
            named = {
                site: frozenset(f"{_SECRETS}{namespace}/{name}" for namespace, name in keys)
                for site, keys in secrets_by_site(gateways, grants).items()
            }
            for site in named.keys() | self._named.keys():
                changed |= named.get(site, frozenset()) ^ self._named.get(site, frozenset())
            self._named = named
        if not changed and not any(n.startswith(_SECRETS) for n in fleet_changed):
            return changed  # no site's Secrets differ
        self.site_secrets = {
            site: {n: self._secrets[n] for n in names if n in self._secrets}
            for site, names in self._named.items()
        }
        return changed

    def _update_fleet(self, layers: tuple[FleetBodies, ...]) -> set[str]:
        changed: set[str] = set()
        for key in self._keys_changed(layers):
            body = next((b for layer in layers if (b := layer.get(key)) is not None), None)
            held = self._held.get(key)
            if held is not None and held[0] is body:
                continue
            name = f"{FLEET_PREFIX}{key[0]}/{key[1]}/{key[2]}"
            before = _version(self.fleet, name)
            resource = None
            if body is None:
                self._held.pop(key, None)
            else:
                resource = fleet_object(body)
                self.encoded += 1
                self._held[key] = (body, resource)
            # every zone is sent it, or (a Secret) the zones whose Gateways name it
            kept = self._secrets if key[0] == SECRET_KIND else self.shared
            for held_in in (self.fleet, kept):
                if resource is None:
                    held_in.pop(name, None)
                else:
                    held_in[name] = resource
            if _version(self.fleet, name) != before:
                changed.add(name)
        self._layers = layers
        return changed

    def _keys_changed(self, layers: tuple[FleetBodies, ...]) -> Iterable[Key]:
        """The keys that may have changed since the last update: those the sources' versions
        say changed since the last ones; every key when the sources are not the same ones."""
        if len(layers) == len(self._layers):
            found: set[Key] = set()
            for layer, last in zip(layers, self._layers, strict=True):
                keys = layer.changed_since(last)
                if keys is None:
                    break
                found |= keys
            else:
                return found
        return {*self._held, *(key for layer in layers for key in layer)}

    def _update_site(self, snapshot: SiteSnapshot) -> set[str]:
        site = snapshot.cluster
        if self._snapshots.get(site) is snapshot:
            return set()
        self._snapshots[site] = snapshot
        before = self._parts.get(site, {})
        resources = self.sites.get(site, {})
        parts = _exported_parts(snapshot)
        updated: dict[str, CatalogResource] = {}
        changed = {
            site_service_name(site, namespace, name)
            for namespace, name in before.keys() - parts.keys()
        }
        for (namespace, name), found in parts.items():
            key = site_service_name(site, namespace, name)
            if before.get((namespace, name)) == found and key in resources:
                updated[key] = resources[key]
                continue
            services, endpoints, exports = found
            encoded = encode_snapshot(SiteSnapshot(site, services, endpoints, exports))
            message = ZoneResource(
                service=SiteService(
                    site=site,
                    namespace=namespace,
                    name=name,
                    snapshot_json=json.dumps(
                        encoded, sort_keys=True, separators=(",", ":")
                    ).encode(),
                )
            )
            updated[key] = _resource(key, message)
            self.encoded += 1
            if _version(resources, key) != updated[key].version:
                changed.add(key)
        state = site_state(snapshot)
        if _version(resources, state.name) != state.version:
            changed.add(state.name)
        updated[state.name] = state
        self._parts[site] = parts
        self.sites[site] = updated
        return changed


def _version(resources: Mapping[str, CatalogResource], name: str) -> str | None:
    found = resources.get(name)
    return found.version if found is not None else None


def _layers(bodies: Sequence[object]) -> tuple[FleetBodies, ...]:
    """Each source's bodies; plain bodies as one source of their own (compared whole)."""
    if all(isinstance(b, FleetBodies) for b in bodies):
        return tuple(b for b in bodies if isinstance(b, FleetBodies))
    return (FleetBodies.of(bodies),)
