"""What travels on a federation stream: a site's Kubernetes objects as resources.

Each object is a `KubeObject` (the object as JSON, with its apiVersion, kind, namespace and
name) named `<kind>/<namespace>/<name>`, at a version that is the hex SHA-256 of the
message serialized deterministically: equal content, equal version, on every zone and
across restarts, so a reconnecting zone and the global agree on what needs sending
without comparing contents.

While the zone's own source of its site (its Kubernetes API) is out of sync, the zone also
sends the site's state, as the global sends zones each site's: a `SiteService` named
`site/<site>` holding the snapshot JSON of the site without services, stale, with the time
its source went out of sync (`stale_since`). It is removed once the source is in sync again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from kontinuum.control.model import SiteSnapshot
from kontinuum.discovery.snapshot_codec import decode_snapshot, encode_snapshot
from kontinuum.discovery.zone_store import ReceivedObject, canonical_json
from kontinuum.federation.v1.federation_pb2 import (
    DESCRIPTOR,
    KubeObject,
    SiteService,
    ZoneResource,
)

TYPE_URL: Final = f"type.googleapis.com/{KubeObject.DESCRIPTOR.full_name}"
# What the global sends a zone (GlobalToZone).
ZONE_RESOURCE_TYPE_URL: Final = f"type.googleapis.com/{ZoneResource.DESCRIPTOR.full_name}"
SERVICE: Final = DESCRIPTOR.services_by_name["Federation"].full_name
ZONE_TO_GLOBAL: Final = "ZoneToGlobal"
GLOBAL_TO_ZONE: Final = "GlobalToZone"
# The metadata a zone names its site in; its certificate must prove the site's identity.
SITE_METADATA: Final = "kontinuum-zone-site"
# The metadata a zone names its replica in: one stream per (site, replica) is kept.
REPLICA_METADATA: Final = "kontinuum-zone-replica"
# What a zone publishes to the global: the standard objects of its site.
ZONE_KINDS: Final = ("Service", "EndpointSlice", "ServiceExport")

# One message either way; gRPC refuses a larger one with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
# What a zone puts in one response at most (the objects' own bytes): a larger change goes
# out in several responses, each under the message bound.
MAX_RESPONSE_BYTES: Final = 1024 * 1024
# What a stream's first request names of what is held (`initial_resource_versions`): the
# names and versions that fit in one message, with room for the rest of the request.
MAX_DECLARED_BYTES: Final = MAX_MESSAGE_BYTES - 64 * 1024
# `system_version_info` of a response that leaves more to send: before a stream's first
# complete response, the global holds back what it received (it is not the whole site).
PARTIAL: Final = "partial"
# A NACK's `error_detail.code`: google.rpc.Code INVALID_ARGUMENT.
_INVALID_ARGUMENT: Final = 3
# One object's JSON: far above a real Service or EndpointSlice (an EndpointSlice holds at
# most 1,000 endpoints, about 300 KB), far below a message.
MAX_OBJECT_BYTES: Final = 1024 * 1024


class ObjectError(ValueError):
    """A resource that is not a site object kontinuum accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class SiteObject:
    """One object of a site, as published: its resource name, version and JSON body."""

    name: str
    version: str
    kind: str
    namespace: str
    body: Mapping[str, Any]
    message: KubeObject

    @property
    def size(self) -> int:
        return len(self.message.json)

    def received(self) -> ReceivedObject:
        """This object as a zone's source takes it."""
        return ReceivedObject(
            self.name, self.version, self.kind, self.body, self.size, self.message.json
        )


def nack(request: discovery_pb2.DeltaDiscoveryRequest, detail: str) -> None:
    """Make `request` the NACK of its response, saying `detail`."""
    request.error_detail.code = _INVALID_ARGUMENT
    request.error_detail.message = detail


def resource_name(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def version_of(message: Message) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def site_object(body: Mapping[str, Any]) -> SiteObject:
    """An object body (as `kubectl get -o json` prints it) as a resource; ObjectError when
    it is not of a published kind or lacks its namespace or name."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    metadata = body.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if kind not in ZONE_KINDS:
        raise ObjectError(f"kind {kind!r} is not published (only {', '.join(ZONE_KINDS)})")
    if not isinstance(api_version, str) or not api_version:
        raise ObjectError(f"{kind}: no apiVersion")
    if not (isinstance(namespace, str) and namespace and isinstance(name, str) and name):
        raise ObjectError(f"{kind}: metadata.namespace and metadata.name are required")
    encoded = canonical_json(body)
    if len(encoded) > MAX_OBJECT_BYTES:
        raise ObjectError(
            f"{kind} {namespace}/{name}: {len(encoded)} bytes of JSON, more than the "
            f"{MAX_OBJECT_BYTES} an object may have"
        )
    message = KubeObject(
        api_version=api_version, kind=kind, namespace=namespace, name=name, json=encoded
    )
    return SiteObject(
        resource_name(kind, namespace, name), version_of(message), kind, namespace, body, message
    )


def received_object(name: str, version: str, message: KubeObject) -> SiteObject:
    """A resource as received: checked to be what its name and version say; ObjectError
    saying why not."""
    expected = resource_name(message.kind, message.namespace, message.name)
    if name != expected:
        raise ObjectError(f"named {name!r} but holds {expected!r}")
    if len(message.json) > MAX_OBJECT_BYTES:
        raise ObjectError(
            f"{len(message.json)} bytes of JSON, more than the {MAX_OBJECT_BYTES} an object "
            "may have"
        )
    if version != version_of(message):
        raise ObjectError("its version is not the SHA-256 of its content")
    try:
        body = json.loads(message.json)
    except (ValueError, RecursionError) as error:
        raise ObjectError(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ObjectError("its JSON is not an object")
    again = site_object(body)
    if again.name != name:
        raise ObjectError(f"its JSON is {again.name!r}, not {name!r}")
    if body.get("apiVersion") != message.api_version:
        raise ObjectError(f"its JSON has apiVersion {body.get('apiVersion')!r}")
    return SiteObject(name, version, message.kind, message.namespace, body, message)


def content_version(obj: ReceivedObject) -> str:
    """The version `obj`'s content hashes to: of the `KubeObject` holding its JSON as the
    zone sent it, named as its body says; "" when its body names no such object, or
    another than `obj.name`."""
    body = obj.body
    metadata = body.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    api_version, namespace, name = body.get("apiVersion"), meta.get("namespace"), meta.get("name")
    if not (isinstance(api_version, str) and isinstance(namespace, str) and isinstance(name, str)):
        return ""
    if body.get("kind") != obj.kind or resource_name(obj.kind, namespace, name) != obj.name:
        return ""
    message = KubeObject(
        api_version=api_version, kind=obj.kind, namespace=namespace, name=name, json=obj.sent_json
    )
    return version_of(message)


def declarable(held: Mapping[str, str], budget: int = MAX_DECLARED_BYTES) -> dict[str, str]:
    """What a first request names of `held` (name -> version): all of it when it fits in
    `budget` bytes, else the names that fit, in name order. What is not named is not known
    to the other side: it sends it again, and sends no removal of it, so the receiver
    drops what it holds that was neither named nor sent once the first view is whole."""
    declared: dict[str, str] = {}
    size = 0
    for name in sorted(held):
        version = held[name]
        size += len(name.encode()) + len(version.encode()) + 16  # a map entry's framing
        if size > budget:
            break
        declared[name] = version
    return declared


def zone_service_account(site: str) -> str:
    """The service account a zone's certificate names: `zone-<site>` (namespace
    kontinuum-system)."""
    return f"zone-{site}"


@dataclass(frozen=True, slots=True)
class SiteState:
    """A zone's word on its own view of its site (`site/<site>`): stale since `stale_since`
    (Unix time), as published or received."""

    name: str
    version: str
    stale_since: float
    message: SiteService

    @property
    def size(self) -> int:
        return self.message.ByteSize()


def site_state_name(site: str) -> str:
    return f"site/{site}"


def stale_site(site: str, stale_since: float) -> SiteState:
    """The state a zone sends while its source of `site` is out of sync since `stale_since`."""
    encoded = json.dumps(
        encode_snapshot(SiteSnapshot(site, stale=True)), sort_keys=True, separators=(",", ":")
    )
    message = SiteService(site=site, snapshot_json=encoded.encode())
    message.stale_since.FromNanoseconds(round(stale_since * 1e9))
    return SiteState(site_state_name(site), version_of(message), stale_since, message)


def received_site_state(site: str, name: str, version: str, message: SiteService) -> SiteState:
    """A zone's `site/<site>` resource as received; ObjectError saying why it is not the
    stale state of `site`, at the version of its content."""
    if name != site_state_name(site) or message.site != site:
        raise ObjectError(f"a zone states its own site only ({site_state_name(site)})")
    if message.namespace or message.name:
        raise ObjectError("a site's state names no service")
    if version != version_of(message):
        raise ObjectError("its version is not the SHA-256 of its content")
    try:
        snapshot = decode_snapshot(json.loads(message.snapshot_json))
    except (ValueError, RecursionError) as error:
        raise ObjectError(f"not a site's snapshot JSON: {error}") from None
    if snapshot.cluster != site or snapshot.services or snapshot.endpoints or snapshot.exports:
        raise ObjectError("a site's state holds the site without services")
    if not snapshot.stale or not message.HasField("stale_since"):
        raise ObjectError("a zone sends its site's state only while stale, with stale_since")
    return SiteState(name, version, message.stale_since.ToNanoseconds() / 1e9, message)
