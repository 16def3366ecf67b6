"""Incremental ADS (`DeltaAggregatedResources`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from kontinuum.xds import types, wire
from kontinuum.xds.snapshot import Snapshot
from kontinuum.xds.state import InFlight, TypeState
from kontinuum.xds.stream import Stream


def _own(versions: Mapping[str, str]) -> dict[str, str]:
    """A Delta stream's sent/acked maps are its own dicts (SotW shares read-only ones)."""
    return cast(dict[str, str], versions)


class DeltaStream(Stream):
    """Delta: responses carry only what changed, per resource, and what was removed.

    A client that reconnects presents `initial_resource_versions` and is sent only the
    resources whose versions differ. A name the client subscribes to that does not
    exist is answered in `removed_resources`, so it does not wait for it.
    """

    protocol = "delta"
    nonce_tag = wire.DELTA_NONCE

    def handle(self, request: Any) -> TypeState | None:
        type_url = request.type_url
        first = type_url not in self.types
        state = self.state_of(request)
        if state is None:
            return None
        if request.response_nonce:
            # A stale nonce settles nothing, but the subscription changes still apply.
            self.settle(
                state,
                request.response_nonce,
                request.error_detail if request.HasField("error_detail") else None,
            )
        subscribe = request.resource_names_subscribe
        unsubscribe = request.resource_names_unsubscribe
        if not first and not subscribe and not unsubscribe:
            return state  # a plain ACK or NACK, by far the most common request
        initial_versions = request.initial_resource_versions
        self.check_names(subscribe)
        self.check_names(unsubscribe)
        self.check_names(initial_versions)
        added = {n for n in subscribe if n not in state.names and n != types.WILDCARD}
        dropped = {n for n in unsubscribe if n in state.names or n in added}
        characters = state.name_characters + sum(map(len, added)) - sum(map(len, dropped))
        if first:  # the client's versions are held as long as the stream
            characters += sum(len(n) + len(v) for n, v in initial_versions.items())
        self.hold_names(state, len(state.names) + len(added) - len(dropped), characters)
        if first:
            state.sent = dict(initial_versions)
            state.acked = dict(initial_versions)
            if not subscribe and type_url in types.WILDCARD_TYPES:
                state.wildcard = True  # legacy wildcard
            state.dirty = None
        more = False
        for name in subscribe:
            if name == types.WILDCARD:
                more = more or not state.wildcard
                state.wildcard = True
                state.dirty = None
            elif name not in state.names:
                more = True
                state.names.add(name)
                state.announce_missing.add(name)
                if state.dirty is not None:
                    state.dirty.add(name)
        if more:
            self.follow_fetch(state)
        for name in unsubscribe:
            if name == types.WILDCARD:
                state.wildcard = False
                # What only the wildcard covered is forgotten: a later `*` resends it.
                for held in (_own(state.sent), _own(state.acked)):
                    for forgotten in [n for n in held if n not in state.names]:
                        del held[forgotten]
                continue
            state.names.discard(name)
            state.announce_missing.discard(name)
            if not state.wildcard:
                _own(state.sent).pop(name, None)
                _own(state.acked).pop(name, None)
        if unsubscribe:
            state.forget_rejections()
        return state

    def build_update(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        available = snapshot.resources(state.type_url)
        candidates = (
            state.dirty if state.dirty is not None else available.keys() | state.sent.keys()
        )
        state.dirty = set()
        sent = _own(state.sent)
        updated: list[str] = []
        for name in candidates:
            resource = available.get(name)
            if resource is None:
                if name in sent:
                    state.pending_removed.add(name)
            elif sent.get(name) != resource.version and state.subscribed(name):
                updated.append(name)
        missing = sorted(n for n in state.announce_missing if n not in available and n not in sent)
        state.announce_missing.clear()
        state.removals_pending = bool(state.pending_removed)
        if not updated and not missing and (state.responses or not state.wildcard or sent):
            return None  # (a client with nothing is answered even when there is nothing)
        updated.sort()
        versions = {n: available[n].version for n in updated}
        sent.update(versions)
        body = snapshot.delta_body(
            state.type_url, tuple(updated), tuple(missing), shared=not missing
        )
        return self._send(state, body, versions, frozenset(missing))

    def build_removal(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        state.removals_pending = False
        available = snapshot.resources(state.type_url)
        removed = sorted(n for n in state.pending_removed if n in state.sent and n not in available)
        state.pending_removed.clear()
        if not removed:
            return None
        sent = _own(state.sent)
        for name in removed:
            del sent[name]
        body = snapshot.delta_body(state.type_url, (), tuple(removed))
        return self._send(state, body, {}, frozenset(removed))

    def acknowledge(self, state: TypeState, flight: InFlight) -> None:
        acked = _own(state.acked)
        # A name unsubscribed while the response was in flight is forgotten, not ACKed.
        acked.update((n, v) for n, v in flight.versions.items() if state.subscribed(n))
        for name in flight.removed:
            acked.pop(name, None)

    def _send(
        self, state: TypeState, body: bytes, versions: dict[str, str], removed: frozenset[str]
    ) -> bytes:
        flight = InFlight(nonce=self.next_nonce(), versions=versions, removed=removed)
        return body + self.start_response(state, flight)
