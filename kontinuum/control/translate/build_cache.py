"""Envoy messages kept by what they were built from, and shared by every view that needs them.

A view's outbound side is made of pieces whose inputs are few: a service port's Cluster and
ClusterLoadAssignment depend on its endpoints and on the consumer's cluster, not on which
sidecar asks. `BuildCache.build(key, inputs, make)` returns the message built last time for
`key` when `inputs` are equal (objects the plane carried over compare by identity, so this
is cheap), and builds it anew otherwise. Each message also keeps its wire form (`wrapped`),
made once, so the same bytes go to every view that holds it.

Users (`owner`) say which keys they hold; an entry no owner holds any longer is dropped, so
the cache never outgrows what the views in use need. Outside an owner nothing is kept.
Translation with a cache gives exactly what it gives without one: the tests compare both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

W = TypeVar("W")
M = TypeVar("M")


class _Entry(Generic[W]):
    __slots__ = ("holders", "inputs", "message", "wrapped")

    def __init__(self, inputs: tuple[object, ...], message: Any) -> None:
        self.inputs = inputs
        self.message = message  # one message, or a tuple of them built together
        self.wrapped: dict[int, W] = {}  # id(message) -> its wire form
        self.holders = 0

    @property
    def messages(self) -> tuple[Any, ...]:
        return self.message if isinstance(self.message, tuple) else (self.message,)


class BuildCache(Generic[W]):
    """Built messages by key (see the module doc); `wrap` gives a message's wire form."""

    def __init__(self, wrap: Callable[[Any], W]) -> None:
        self._wrap = wrap
        self._entries: dict[Hashable, _Entry[W]] = {}
        self._by_message: dict[int, _Entry[W]] = {}  # id(message) -> its entry
        self._held: dict[Hashable, set[Hashable]] = {}  # owner -> keys it holds
        self._using: set[Hashable] | None = None  # keys the current owner builds with
        self.built = 0  # messages built so far (a miss), for benchmarks and tests

    def build(self, key: Hashable, inputs: tuple[object, ...], make: Callable[[], M]) -> M:
        """The message for `key` built from `inputs`: the one kept, if built from equal
        inputs, else `make()`."""
        if self._using is None:  # no owner to hold it: nothing to share it with
            return make()
        self._using.add(key)
        entry = self._entries.get(key)
        if entry is not None and entry.inputs == inputs:
            return entry.message  # type: ignore[no-any-return]
        message = make()
        self.built += 1
        fresh: _Entry[W] = _Entry(inputs, message)
        if entry is not None:
            fresh.holders = entry.holders
            self._unindex(entry)
        self._entries[key] = fresh
        for part in fresh.messages:
            self._by_message[id(part)] = fresh
        return message

    def _unindex(self, entry: _Entry[W]) -> None:
        for part in entry.messages:
            self._by_message.pop(id(part), None)

    def wrapped(self, message: Any) -> W:
        """The wire form of `message`: made once for a message of the cache, else now."""
        entry = self._by_message.get(id(message))
        if entry is None or not any(part is message for part in entry.messages):
            return self._wrap(message)
        wrapped = entry.wrapped.get(id(message))
        if wrapped is None:
            wrapped = entry.wrapped[id(message)] = self._wrap(message)
        return wrapped

    @contextlib.contextmanager
    def owner(self, name: Hashable, keeping: bool = False) -> Iterator[None]:
        """Everything built inside is held by `name`, which lets go of what it held before
        and did not build again; `keeping`: which keeps holding it (a part of what it
        holds was built again)."""
        if self._using is not None:
            raise RuntimeError("BuildCache owners do not nest")
        self._using = set()
        try:
            yield
        finally:
            using, self._using = self._using, None
            if keeping:
                self._hold_also(name, using)
            else:
                self._hold(name, using)

    def _hold_also(self, name: Hashable, keys: set[Hashable]) -> None:
        if not keys:
            return
        held = self._held.setdefault(name, set())
        for key in keys - held:
            entry = self._entries.get(key)
            if entry is not None:
                entry.holders += 1
            held.add(key)

    def release(self, name: Hashable) -> None:
        """`name` holds nothing any longer (its view is gone)."""
        self._hold(name, set())

    def _hold(self, name: Hashable, keys: set[Hashable]) -> None:
        before = self._held.pop(name, set())
        for key in keys - before:
            entry = self._entries.get(key)
            if entry is not None:
                entry.holders += 1
        for key in before - keys:
            entry = self._entries.get(key)
            if entry is not None:
                entry.holders -= 1
                if entry.holders <= 0:
                    del self._entries[key]
                    self._unindex(entry)
        if keys:
            self._held[name] = keys

    def __len__(self) -> int:
        return len(self._entries)
