"""The zone's side of a federation stream, as bookkeeping: what to send, and what the
global said of it. Pure: no I/O, no gRPC; `kontinuum.federation.zone` drives it.

On the stream the zone plays the xDS server's part (docs/federation.md). The global's
first request names what it already holds (`initial_resource_versions`); from then on the
publisher knows what the global has been sent, and each response carries only what
differs from it: the objects that are new or changed (by version, the content hash), and
the names of those gone. So a zone that reconnects with nothing changed sends no object
at all, only an empty first response, which tells the global its view is complete.

A response holds at most `MAX_RESPONSE_BYTES` of objects (and at least one): a larger
change goes out in several, all but the last marked `system_version_info: partial`, so
that the global knows the first of a stream is not the whole site yet.

Each response has a nonce of its own; the global answers each with an ACK (the nonce) or
a NACK (the nonce and an `error_detail`: the objects it refused, and why). A NACK is
recorded and reported, never answered with the same objects again (no resend loop): a
refused object is sent again when it changes, or when a reconnect shows the global holds
another version of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from kontinuum.federation.objects import MAX_RESPONSE_BYTES, PARTIAL, TYPE_URL


class Published(Protocol):
    """A resource a publisher sends: its name, version (content hash), message and size."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def message(self) -> Message: ...
    @property
    def size(self) -> int: ...


@dataclass(slots=True)
class PublisherStats:
    """What the zone sent and heard, since it started (counters)."""

    responses: int = 0
    objects_sent: int = 0  # objects in responses (each new or changed object once)
    removals_sent: int = 0
    bytes_sent: int = 0  # serialized responses
    acks: int = 0
    nacks: int = 0
    last_nack: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the global said of a response."""

    nonce: str
    error: str = ""  # the NACK's error_detail; "" for an ACK

    @property
    def accepted(self) -> bool:
        return not self.error


@dataclass(slots=True)
class Publisher:
    """The objects a zone publishes, and what the global was sent of them on the current
    stream (see the module doc). The global uses one per zone stream too, to send the zone
    what it needs of the fleet (`type_url`: ZoneResources)."""

    objects: Mapping[str, Published] = field(default_factory=dict)
    type_url: str = TYPE_URL
    # The owner says which names change (`touched`): after a stream's first response, only
    # those are compared with what was sent, so a change costs what it touches.
    tracking: bool = False
    stats: PublisherStats = field(default_factory=PublisherStats)
    # What the global holds, as far as it was sent (name -> version); None: no stream.
    _sent: dict[str, str] | None = None
    _owe_first: bool = False  # the first response of a stream is sent even when empty
    _nonce: int = 0
    _unanswered: set[str] = field(default_factory=set)
    _candidates: set[str] | None = None  # the names that may differ; None: any

    def publish(self, objects: Iterable[Published]) -> None:
        """The site's objects as they are now (all of them)."""
        self.objects = {obj.name: obj for obj in objects}

    def publish_mapping(self, objects: Mapping[str, Published]) -> None:
        """The objects as they are now, by name (held, not copied)."""
        self.objects = objects

    @property
    def connected(self) -> bool:
        return self._sent is not None

    def connect(self, initial_versions: Mapping[str, str]) -> None:
        """A stream begins; the global holds `initial_versions` (name -> version)."""
        self._sent = dict(initial_versions)
        self._owe_first = True
        self._unanswered = set()
        self._candidates = None

    def touched(self, names: Iterable[str]) -> None:
        """These names may have changed (with `tracking`)."""
        if self._candidates is not None:
            self._candidates.update(names)

    def disconnect(self) -> None:
        self._sent = None
        self._owe_first = False
        self._unanswered = set()

    @property
    def unanswered(self) -> int:
        """Responses sent on this stream that the global has not ACKed or NACKed yet."""
        return len(self._unanswered)

    def pending(self) -> int:
        """Objects (and removals) the global has not been sent yet; 0 when disconnected."""
        if self._sent is None:
            return 0
        changed = sum(1 for o in self.objects.values() if self._sent.get(o.name) != o.version)
        return changed + sum(1 for name in self._sent if name not in self.objects)

    def response(
        self, budget: int = MAX_RESPONSE_BYTES
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """The next response: what differs from what the global was sent (at most `budget`
        bytes of it, at least one object or removal), or None when nothing does (or there
        is no stream). What it holds counts as sent from now on."""
        sent = self._sent
        if sent is None:
            return None
        objects, candidates = self.objects, self._candidates
        if candidates is None:
            changed = sorted(
                (o for o in objects.values() if sent.get(o.name) != o.version),
                key=lambda o: o.name,
            )
            removed = sorted(name for name in sent if name not in objects)
        else:
            changed = sorted(
                (
                    objects[n]
                    for n in candidates
                    if n in objects and sent.get(n) != objects[n].version
                ),
                key=lambda o: o.name,
            )
            removed = sorted(n for n in candidates if n in sent and n not in objects)
        if not (changed or removed or self._owe_first):
            return None
        self._owe_first = False
        self._nonce += 1
        nonce = str(self._nonce)
        response = discovery_pb2.DeltaDiscoveryResponse(type_url=self.type_url, nonce=nonce)
        size = 0
        taken_removals = 0
        for name in removed:
            if size >= budget and taken_removals:
                break
            response.removed_resources.append(name)
            del sent[name]
            size += len(name)
            taken_removals += 1
        taken = 0
        for obj in changed:
            if size + obj.size > budget and (taken or taken_removals):
                break
            resource = response.resources.add(name=obj.name, version=obj.version)
            resource.resource.Pack(obj.message)
            sent[obj.name] = obj.version
            size += obj.size
            taken += 1
        if taken < len(changed) or taken_removals < len(removed):
            response.system_version_info = PARTIAL
        if self.tracking:  # what is left of this change, and what changes from now on
            self._candidates = {o.name for o in changed[taken:]} | set(removed[taken_removals:])
        self._unanswered.add(nonce)
        self.stats.responses += 1
        self.stats.objects_sent += taken
        self.stats.removals_sent += taken_removals
        self.stats.bytes_sent += response.ByteSize()
        return response

    def answer(self, request: discovery_pb2.DeltaDiscoveryRequest) -> Answer | None:
        """Take a request of the global after its first: the ACK or NACK of a response
        (None for one naming no response of this stream: ignored, as xDS ignores stale
        nonces)."""
        nonce = request.response_nonce
        if nonce not in self._unanswered:
            return None
        self._unanswered.discard(nonce)
        if request.HasField("error_detail"):
            self.stats.nacks += 1
            self.stats.last_nack = request.error_detail.message
            return Answer(nonce, request.error_detail.message or "refused")
        self.stats.acks += 1
        return Answer(nonce)
