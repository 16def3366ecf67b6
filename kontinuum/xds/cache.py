"""The snapshot cache: one consistent snapshot per view, fanned out to watching streams.

The server's only seam into the cache is `watch`/`cancel` plus the watcher callback, in
the spirit of go-control-plane's `CreateWatch`: the cache owns resources, versions and
fan-out; streams own nonces, subscriptions and ACK state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kontinuum.xds.push import Push
from kontinuum.xds.snapshot import Snapshot

log = logging.getLogger(__name__)


class Watcher(Protocol):
    """A stream that wants to hear about changes to its view."""

    def on_snapshot(
        self, snapshot: Snapshot, changes: Mapping[str, frozenset[str]], push: Push | None = None
    ) -> None:
        """Called synchronously with the new snapshot, per type the changed names, and the
        push the change belongs to, if it is followed (`kontinuum.xds.push`)."""

    def on_revoked(self, reason: str) -> None:
        """Called synchronously when the view is revoked: send nothing more, end (`reason`)."""


class SnapshotCache:
    """Holds the current snapshot of every view and notifies the streams watching it."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    def set_snapshot(
        self, view: str, snapshot: Snapshot, push: Push | None = None
    ) -> dict[str, frozenset[str]]:
        """Replace a view's snapshot; returns the changed names per type.

        Only watchers of this view are told, and each decides from the changed names
        whether anything it subscribed to is among them (and so takes part in `push`).
        """
        previous = self._snapshots.get(view)
        changes = snapshot.changes_from(previous)
        self._snapshots[view] = snapshot
        if changes or previous is None:  # a view's first snapshot, even empty, is news
            for watcher in tuple(self._watchers.get(view, ())):
                watcher.on_snapshot(snapshot, changes, push)
        return changes

    def views(self) -> dict[str, Snapshot]:
        """Every view's current snapshot, by view (a copy)."""
        return dict(self._snapshots)

    def set_resources(self, view: str, messages: Iterable[Any]) -> dict[str, frozenset[str]]:
        """Build a snapshot from xds-protos messages (checked for consistency) and set it."""
        return self.set_snapshot(view, Snapshot.of(messages))

    def snapshot(self, view: str) -> Snapshot | None:
        return self._snapshots.get(view)

    def remove_view(self, view: str) -> None:
        """Forget a view's snapshot; its streams are told every resource is gone."""
        if view in self._snapshots:
            self.set_snapshot(view, Snapshot(()))
            del self._snapshots[view]

    def revoke(self, view: str, reason: str) -> None:
        """Take a view away from whoever holds it: its snapshot is forgotten (nothing more
        of it is sent) and every stream watching it ends with `reason`."""
        self._snapshots.pop(view, None)
        for watcher in tuple(self._watchers.pop(view, ())):
            watcher.on_revoked(reason)

    def watch(self, view: str, watcher: Watcher) -> Snapshot | None:
        """Start telling `watcher` about changes to `view`; returns the current snapshot."""
        self._watchers.setdefault(view, set()).add(watcher)
        return self._snapshots.get(view)

    def cancel(self, view: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(view)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[view]

    def watcher_count(self, view: str | None = None) -> int:
        if view is not None:
            return len(self._watchers.get(view, ()))
        return sum(len(w) for w in self._watchers.values())
