"""One change that arrives in several responses of a federation stream, held until whole.

A sender splits a change larger than a message bound into several responses, all but the
last marked partial. The receiver holds what the parts set and remove, by name (the last
word on a name counts), and applies the whole change at once when its last part arrives,
so that what it serves never shows half a change (a route without the service it sends
to, say). A stream that ends between the parts takes its parts with it: the next stream
is told only the versions of whole changes, and the sender sends the change whole again.
`undeclared`: what a receiver drops once a new stream's first view is whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Generic, TypeVar

T = TypeVar("T")


class SplitChange(Generic[T]):
    """The parts of the change in progress (see the module doc): name -> what it becomes,
    None for a removal."""

    def __init__(self) -> None:
        self._entries: dict[str, T | None] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def set(self, name: str, value: T) -> None:
        self._entries[name] = value

    def remove(self, name: str) -> None:
        self._entries[name] = None

    def current(self, name: str, held: Mapping[str, T]) -> T | None:
        """What `name` is once the change applies to `held`."""
        return self._entries[name] if name in self._entries else held.get(name)

    def take(self) -> Iterator[tuple[str, T | None]]:
        """The whole change, each name once (then none is held)."""
        entries, self._entries = self._entries, {}
        return iter(entries.items())

    def discard(self) -> int:
        """Drop the parts (their stream ended); how many names they held."""
        dropped = len(self._entries)
        self._entries = {}
        return dropped


def undeclared(
    held: Iterable[str], declared: AbstractSet[str], received: AbstractSet[str]
) -> list[str]:
    """The names held that a stream's first view neither declared (in
    `initial_resource_versions`) nor sent: the zone no longer has them."""
    return [name for name in held if name not in declared and name not in received]
