"""State-of-the-World ADS (`StreamAggregatedResources`)."""

from __future__ import annotations

from typing import Any

from kontinuum.xds import types, wire
from kontinuum.xds.resource import Resource
from kontinuum.xds.snapshot import Snapshot, combined_version
from kontinuum.xds.state import InFlight, TypeState
from kontinuum.xds.stream import Stream


class SotwStream(Stream):
    """SotW: every response for a type carries the client's whole subscription.

    LDS and CDS responses carry every resource the client subscribed to (all of them for
    a wildcard subscription); EDS and RDS responses carry every subscribed resource that
    exists. A request whose nonce is not the latest one sent for its type is stale and
    ignored, as the protocol prescribes.
    """

    protocol = "sotw"
    nonce_tag = wire.RESPONSE_NONCE

    def handle(self, request: Any) -> TypeState | None:
        """Apply a DiscoveryRequest. The request is consumed: its ACK fields are cleared."""
        state = self.state_of(request)
        if state is None:
            return None
        nonce = request.response_nonce
        held_version = request.version_info
        if nonce and state.last_nonce:
            if nonce != state.last_nonce:
                return None  # stale: a newer response is on its way to the client
            self.settle(
                state, nonce, request.error_detail if request.HasField("error_detail") else None
            )
        else:
            # A first request (or one sent as if first): the client expects the full state.
            state.last_sotw_body = b""
            state.dirty = None
            state.subscription_key = b""
        # Nearly every request is an ACK repeating the same names. What is left of it once
        # the ACK fields are cleared, serialized in C, identifies the subscription for far
        # less than turning every name into a Python string.
        request.ClearField("version_info")
        request.ClearField("response_nonce")
        request.ClearField("error_detail")
        request.ClearField("node")  # Envoy may resend its ~61 KB node on every request
        request.ClearField("resource_locators")  # not served: no part of the subscription
        key = request.SerializeToString()
        if key != state.subscription_key:
            names = request.resource_names
            self.check_names(names)
            self._subscribe(state, names, initial=not nonce)
            state.subscription_key = key
        if not nonce and held_version:
            self._resume(state, held_version)
        return state

    def _subscribe(self, state: TypeState, requested: Any, *, initial: bool) -> None:
        names = set(requested)
        wildcard = types.WILDCARD in names
        names.discard(types.WILDCARD)
        if requested:
            state.legacy_wildcard = False  # once names are sent, an empty list means none
        elif initial and state.type_url in types.WILDCARD_TYPES:
            state.legacy_wildcard = True  # an empty first request, for as long as it stays so
        wildcard = wildcard or state.legacy_wildcard
        if wildcard == state.wildcard and names == state.names:
            return
        self.hold_names(state, len(names), sum(map(len, names)))
        more = (wildcard and not state.wildcard) or not names <= state.names
        state.wildcard = wildcard
        state.names = names
        state.names_key = None if wildcard else frozenset(names)
        state.dirty = None  # the response body tells whether anything is due
        state.forget_rejections()
        if more:
            self.follow_fetch(state)

    def _resume(self, state: TypeState, held_version: str) -> None:
        """A client reconnecting with the version it holds: if that is exactly what this
        subscription has now (versions are content hashes, the same on every replica),
        record it as sent and ACKed instead of sending it again."""
        if self.snapshot is None:
            return
        body, carried, versions = self.snapshot.sotw_body(state.type_url, state.names_key)
        if combined_version(carried) != held_version:
            return
        state.last_sotw_body = body
        state.last_sotw_carried = carried
        state.sent = state.acked = versions
        state.dirty = set()

    def build_update(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        state.dirty = set()
        available = snapshot.resources(state.type_url)
        kept: tuple[Resource, ...] = ()
        if state.type_url in types.WILDCARD_TYPES:
            # Make-before-break: keep carrying what was removed until every other
            # update of this push has been sent; `build_removal` then drops it.
            kept = tuple(r for r in state.last_sotw_carried if r.name not in available)
        state.removals_pending = bool(kept)
        return self._respond(state, snapshot, kept)

    def build_removal(self, state: TypeState, snapshot: Snapshot) -> bytes | None:
        state.removals_pending = False
        return self._respond(state, snapshot, ())

    def _respond(
        self, state: TypeState, snapshot: Snapshot, kept: tuple[Resource, ...]
    ) -> bytes | None:
        body, carried, versions = snapshot.sotw_body(state.type_url, state.names_key, kept)
        if body == state.last_sotw_body:
            return None  # the client has exactly this, or rejected exactly this
        if (
            not carried
            and not state.last_sotw_carried
            and state.type_url not in types.WILDCARD_TYPES
        ):
            return None  # EDS/RDS names that do not exist (yet): nothing to send until they do
        flight = InFlight(nonce=self.next_nonce(), versions=versions)
        state.sent = versions
        state.last_sotw_body = body
        state.last_sotw_carried = carried
        return body + self.start_response(state, flight)

    def acknowledge(self, state: TypeState, flight: InFlight) -> None:
        state.acked = flight.versions
