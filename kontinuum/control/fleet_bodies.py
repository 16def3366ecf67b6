"""The bodies of a source's fleet-wide objects by key, in versions that say what changed.

A source of fleet-wide objects (the fleet files, a config cluster) keeps a
`FleetBodiesBuilder`: its bodies by group (a file, one object of a cluster), each group
replaced when the source finds it changed. Within a source the first declaration of a key
counts, in the groups' order and then the bodies' order in a group; a `kubectl get -o yaml`
List counts as its items. A key is `(kind, namespace, name)`, the namespace empty for a
cluster-scoped object; a body without a kind, a name or an apiVersion has none and is left
out (whoever reads the objects reports it).

`publish` gives the builder's state as a `FleetBodies`: immutable, and linked to the version
published before it. Whoever holds an older version (the global's federation catalog) learns
which keys may differ between the two with `changed_since`, at the cost of the changes
published in between, not of the number of objects. Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

Key = tuple[str, str, str]  # (kind, namespace, name)
_Position = tuple[str, int]  # (group, index of the body in the group)


def body_key(body: object) -> Key | None:
    """The key of an object's body, or None when it names no object."""
    if not isinstance(body, Mapping):
        return None
    kind, api_version, metadata = body.get("kind"), body.get("apiVersion"), body.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = meta.get("namespace") or "", meta.get("name")
    if not (isinstance(kind, str) and kind and isinstance(name, str) and name):
        return None
    if not (isinstance(api_version, str) and isinstance(namespace, str)):
        return None
    return (kind, namespace, name)


def expanded(bodies: Iterable[object]) -> list[object]:
    """Bodies, a `kubectl get -o yaml` List counting as its items."""
    found: list[object] = []
    for body in bodies:
        if isinstance(body, Mapping) and str(body.get("kind", "")).endswith("List"):
            items = body.get("items")
            found.extend(items if isinstance(items, list) else [])
        else:
            found.append(body)
    return found


_ABSENT = object()  # in an undo record: the key had no body in that version


class FleetBodies:
    """One version of a source's fleet-wide objects' bodies, by key (see the module doc).

    The versions of one builder share one dict, which holds the newest version's bodies:
    publishing a version gives the one before it an undo record (its bodies of the keys
    that change) and a link to the new one, then changes the dict in place. So publishing
    and dropping a version cost its changes, never a copy of every key. A version reads
    the dict and then the undo records from itself on; the builder writes a record, and
    the link before it, ahead of changing the dict, so a reader in another thread (the
    event loop, while the source reads the next change) always finds its own bodies.
    """

    __slots__ = ("_base", "_changed", "_newer", "_undo")

    def __init__(self, by_key: Mapping[Key, object] | None = None) -> None:
        self._base: dict[Key, object] = dict(by_key or {})  # shared by the lineage
        self._changed: frozenset[Key] = frozenset()  # the keys that differ from the last
        self._undo: dict[Key, object] | None = None  # set once a newer version exists
        self._newer: FleetBodies | None = None

    @classmethod
    def of(cls, bodies: Iterable[object]) -> FleetBodies:
        """A version of `bodies` alone, in their order (no older version to compare with)."""
        builder = FleetBodiesBuilder()
        builder.set("", tuple(bodies))
        return builder.publish()

    def get(self, key: Key) -> object | None:
        found = self._base.get(key)  # read before the records: see the class doc
        version: FleetBodies | None = self
        while version is not None and (undo := version._undo) is not None:
            if key in undo:
                kept = undo[key]
                return None if kept is _ABSENT else kept
            version = version._newer
        return found

    def __iter__(self) -> Iterator[Key]:
        return iter(self._mapping())

    def items(self) -> Iterable[tuple[Key, object]]:
        return self._mapping().items()

    def _mapping(self) -> dict[Key, object]:
        """Every key's body in this version (a copy: costs every key)."""
        found = dict(self._base)  # one step under the GIL, then the records
        undos: list[dict[Key, object]] = []
        version: FleetBodies | None = self
        while version is not None and (undo := version._undo) is not None:
            undos.append(undo)
            version = version._newer
        for undo in reversed(undos):  # the oldest record of a key is this version's
            for key, kept in undo.items():
                if kept is _ABSENT:
                    found.pop(key, None)
                else:
                    found[key] = kept
        return found

    def changed_since(self, older: FleetBodies | None) -> frozenset[Key] | None:
        """The keys whose body may differ from `older`'s (added, changed or gone); None
        when `older` is not a version this one was published after (compare them whole)."""
        if older is self:
            return frozenset()
        if older is None:
            return None
        keys: set[Key] = set()
        version: FleetBodies | None = older
        while version is not self:
            version = version._newer if version is not None else None
            if version is None:
                return None
            keys |= version._changed
        return frozenset(keys)

    def _publish(self, bodies: Mapping[Key, object | None]) -> FleetBodies:
        """The version after this one (the newest), with `bodies` changed (None: gone)."""
        base = self._base
        newer = FleetBodies()
        newer._base = base
        newer._changed = frozenset(bodies)
        self._newer = newer
        self._undo = {key: base.get(key, _ABSENT) for key in bodies}
        for key, body in bodies.items():
            if body is None:
                base.pop(key, None)
            else:
                base[key] = body
        return newer


NO_BODIES: Final = FleetBodies()  # of a config read from nothing: one, so always the same


class FleetBodiesBuilder:
    """A source's fleet-wide bodies by group, changed group by group and published as
    `FleetBodies` versions (see the module doc). Replacing a group costs its bodies and the
    keys they hold; publishing, the keys that changed."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[tuple[Key | None, object], ...]] = {}
        self._given: dict[str, tuple[object, ...]] = {}  # the bodies each group was set to
        self._holders: dict[Key, list[_Position]] = {}  # sorted: the first one counts
        self._touched: set[Key] = set()
        self.version = FleetBodies()  # the last one published

    def set(self, group: str, bodies: tuple[object, ...]) -> None:
        """Replace a group's bodies (the very tuple it holds already: nothing to do)."""
        if self._given.get(group) is bodies:
            return
        self.remove(group)
        keyed = tuple((body_key(body), body) for body in expanded(bodies))
        self._groups[group] = keyed
        self._given[group] = bodies
        for index, (key, _) in enumerate(keyed):
            if key is not None:
                bisect.insort(self._holders.setdefault(key, []), (group, index))
                self._touched.add(key)

    def remove(self, group: str) -> None:
        """Drop a group and its bodies (if it is held)."""
        keyed = self._groups.pop(group, None)
        self._given.pop(group, None)
        for index, (key, _) in enumerate(keyed or ()):
            if key is None:
                continue
            holders = self._holders[key]
            del holders[bisect.bisect_left(holders, (group, index))]
            if not holders:
                del self._holders[key]
            self._touched.add(key)

    def groups(self) -> Iterable[str]:
        return self._groups.keys()

    def publish(self) -> FleetBodies:
        """The bodies as they are now: the last version itself when no key's body changed,
        else a new one, linked to it."""
        last = self.version
        bodies = {key: self._body(key) for key in self._touched}
        self._touched.clear()
        changed = {key: body for key, body in bodies.items() if body is not last.get(key)}
        if changed:
            self.version = last._publish(changed)
        return self.version

    def _body(self, key: Key) -> object | None:
        holders = self._holders.get(key)
        if not holders:
            return None
        group, index = holders[0]
        return self._groups[group][index][1]
