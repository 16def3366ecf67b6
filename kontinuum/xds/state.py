"""Per-stream, per-type protocol state: subscriptions, what was sent, ACKed and NACKed."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from kontinuum.xds.push import Push
from kontinuum.xds.resource import Resource


class SyncStatus(enum.Enum):
    """Per-resource sync state, with the meaning `istioctl proxy-status` gives it."""

    SYNCED = "SYNCED"  # the client ACKed the version the server holds now
    STALE = "STALE"  # sent (or due to be sent) but not yet ACKed
    NACKED = "NACKED"  # the client rejected the last version sent
    NOT_SENT = "NOT_SENT"  # subscribed to, but nothing has been sent


@dataclass(frozen=True, slots=True)
class Rejection:
    """A resource version the client NACKed (in the response with this message)."""

    version: str
    message: str
    at: float = field(default_factory=time.time)


@dataclass(slots=True)
class InFlight:
    """The one response per type that is sent and not yet ACKed or NACKed."""

    nonce: str
    versions: Mapping[str, str]  # name -> version carried (SotW: the whole state carried)
    removed: frozenset[str] = frozenset()
    pushes: tuple[Push, ...] = ()  # the pushes whose changes it carries (set on sending)


@dataclass(slots=True)
class TypeState:
    """Everything a stream knows about one resource type."""

    type_url: str
    wildcard: bool = False
    legacy_wildcard: bool = False  # wildcard by an empty first request (LDS/CDS only)
    names: set[str] = field(default_factory=set)
    # Characters of `names` (Delta: and of the client's initial versions), for the bounds.
    name_characters: int = 0
    # SotW: the subscription as a hashable key, shared with the snapshot's body cache.
    names_key: frozenset[str] | None = frozenset()  # None: wildcard
    # SotW: the last request without its ACK fields, to spot unchanged subscriptions.
    subscription_key: bytes = b""
    # Names that may need sending (changed in the view or newly subscribed); None = all.
    dirty: set[str] | None = field(default_factory=set)
    # Delta: newly subscribed names the client must be told do not exist (if they do not).
    announce_missing: set[str] = field(default_factory=set)
    # Removals held back until every addition of this push is sent (make-before-break).
    removals_pending: bool = False
    pending_removed: set[str] = field(default_factory=set)  # Delta: names to remove
    last_nonce: str = ""
    in_flight: InFlight | None = None
    # What the client has been sent and what it accepted, name -> version. SotW replaces
    # these wholesale with mappings shared between streams; Delta updates its own dicts.
    sent: Mapping[str, str] = field(default_factory=dict)
    acked: Mapping[str, str] = field(default_factory=dict)
    last_sotw_body: bytes = b""
    last_sotw_carried: tuple[Resource, ...] = ()
    # name -> the version the client rejected; cleared when a later version is ACKed.
    rejected: dict[str, Rejection] = field(default_factory=dict)
    responses: int = 0

    def subscribed(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def touched_by(self, names: frozenset[str] | set[str] | None) -> bool:
        """Whether a change of these names (None: any) concerns this subscription."""
        return names is None or self.wildcard or not self.names.isdisjoint(names)

    def forget_rejections(self) -> None:
        """Drop the rejections of names no longer subscribed to."""
        if self.rejected and not self.wildcard:
            for name in [n for n in self.rejected if n not in self.names]:
                del self.rejected[name]

    def mark_dirty(self, names: frozenset[str] | set[str] | None) -> None:
        if names is None:
            self.dirty = None
        elif self.dirty is not None:
            self.dirty.update(names if self.wildcard else names & self.names)

    @property
    def has_work(self) -> bool:
        return self.dirty is None or bool(self.dirty) or bool(self.announce_missing)

    def status_of(self, name: str, current: Resource | None) -> SyncStatus:
        acked = self.acked.get(name)
        current_version = current.version if current is not None else None
        rejection = self.rejected.get(name)
        if rejection is not None and rejection.version == current_version:
            return SyncStatus.NACKED
        if acked is None and name not in self.sent:
            return SyncStatus.NOT_SENT  # never sent: not yet, or it does not exist
        if acked == current_version:
            return SyncStatus.SYNCED
        return SyncStatus.STALE
