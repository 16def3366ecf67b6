"""The Kubernetes source: one cluster's Services, EndpointSlices and ServiceExports, read from
its API server.

A ClusterProfile annotated `kontinuum.io/source: kubernetes` (`kontinuum.control.site_access`)
names how to reach the cluster: a kubeconfig file and context, or the service account of the
pod kontinuum runs in. `KubernetesSource` lists and watches the three kinds in all
namespaces (`kontinuum.discovery.kube_watch`, one thread each on the official client) and
reads the objects exactly as the fleet files are read (`kontinuum.discovery.kube_view`), so
a cluster means the same whether it is described by files or by its API.

What it yields (the `Source` contract of `kontinuum.discovery.source`):

- the cluster's first snapshot once all three kinds were listed, so it is complete;
- a new snapshot whenever the view changes, debounced: a burst of events (a rolling
  deployment, a relist) becomes one snapshot once it pauses for `debounce` seconds (at the
  latest ten times that after its first event), and a change undone within the burst
  (a watch that drops and comes straight back) yields nothing;
- when the API server cannot be reached or answers with errors: the last view in sync,
  marked stale, once; after `stale_after` seconds out of sync, the same without its
  endpoints; when the server answers again, the kinds are listed anew and a fresh
  snapshot follows;
- never an invalid object: each is left out on its own and reported in `status()`.

`updates()` is meant to be consumed by one task; cancelling it stops the watcher threads.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from kontinuum.control.model import ConfigError, KubernetesAccess, SiteAccess, SiteSnapshot
from kontinuum.discovery.kube_view import ClusterView, Debouncer, KindsView, WatchEvent
from kontinuum.discovery.kube_watch import Backoff, Watches, new_api_client
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

log = logging.getLogger("kontinuum.discovery.kubernetes")

DEBOUNCE_LIMIT: Final = 10  # a burst is cut after this many `debounce` periods


def _where(access: KubernetesAccess) -> str:
    if access.in_cluster:
        return "the pod's service account"
    config = access.kubeconfig or "the default kubeconfig"
    return f"{config}, context {access.context}" if access.context else config


class ApiSource(abc.ABC):
    """What every source that follows a Kubernetes API does: connect, list and watch the
    kinds of its view (`new_view`), debounce, and yield the view's `result()` whenever it
    changes. `backoff` bounds the delay between retries of a failing request (it doubles,
    with jitter, from the first to the second)."""

    def __init__(
        self,
        access: KubernetesAccess,
        *,
        backoff: tuple[float, float] = (0.5, 30.0),
        debounce: float = 0.1,
    ) -> None:
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(
                f"backoff must be (initial, maximum) with 0 < initial <= maximum, got {backoff}"
            )
        if debounce < 0:
            raise ValueError(f"debounce must not be negative, got {debounce}")
        self._access = access
        self._backoff = backoff
        self._debounce = debounce
        self._view = self.new_view()
        self._status = SourceStatus(Health.STARTING, f"connecting ({_where(access)})")
        self._yielded: SourceUpdate | None = None
        self._logged: frozenset[ConfigError] = frozenset()  # invalid objects already logged
        self._watches: Watches | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The source's name (see `Source.name`)."""

    @abc.abstractmethod
    def new_view(self) -> KindsView:
        """A view of the kinds to follow, empty (called again each time `updates()` starts)."""

    def status(self) -> SourceStatus:
        return dataclasses.replace(self._status, last_sync=self._view.last_sync)

    @property
    def view(self) -> KindsView:
        """The view of the current (or last) `updates()`, for status and inspection."""
        return self._view

    @property
    def last_sync(self) -> float | None:
        """When (Unix time) the view was last known current: the API server last answered
        while every kind was in sync. None before the first sync."""
        return self._view.last_sync

    @property
    def objects(self) -> int:
        """Objects (of the kinds watched) held from the API, valid or not."""
        return self._view.objects

    def watching(self) -> bool:
        """Whether watcher threads still run (they end promptly once `updates()` stops)."""
        return self._watches is not None and self._watches.alive()

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        loop = asyncio.get_running_loop()
        view = self._view = self.new_view()
        self._yielded = None
        inbox: asyncio.Queue[WatchEvent] = asyncio.Queue()

        def post(event: WatchEvent) -> None:  # called from the watcher threads
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
                loop.call_soon_threadsafe(inbox.put_nowait, event)

        api = await self._connect(len(view.kinds) + 1)
        watches = self._watches = Watches(self.name, api, post, self._backoff, view.kinds)
        watches.start()
        debouncer = Debouncer(self._debounce, self._debounce * DEBOUNCE_LIMIT)
        try:
            while True:
                deadlines = [d for d in (debouncer.deadline, view.deadline) if d is not None]
                timeout = max(min(deadlines) - loop.time(), 0.0) if deadlines else None
                events = await self._receive(inbox, wait=timeout)
                now, wall = loop.time(), time.time()
                changed = False
                for event in events:
                    changed = view.apply(event, now, wall) or changed
                changed = view.expire(now) or changed
                if changed:
                    debouncer.touch(now)
                if debouncer.due(now):
                    debouncer.reset()
                    result = view.result()
                    self._status = view.status(now)
                    self._log_errors()
                    if result is not None and result != self._yielded:
                        self.report(result)
                        self._yielded = result
                        yield result
                self._status = view.status(loop.time())
        finally:
            watches.stop()

    @staticmethod
    async def _receive(inbox: asyncio.Queue[WatchEvent], wait: float | None) -> list[WatchEvent]:
        """The events waiting, or the next one within `wait` seconds (None: no limit)."""
        events: list[WatchEvent] = []
        while not inbox.empty():
            events.append(inbox.get_nowait())
        if events:
            return events
        try:
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation
            # that arrives as the inner await finishes (CPython gh-86296).
            async with asyncio.timeout(wait):
                events.append(await inbox.get())
        except TimeoutError:
            return events
        while not inbox.empty():
            events.append(inbox.get_nowait())
        return events

    async def _connect(self, connections: int) -> Any:
        """The API client, once the configuration loads (retried with backoff: a kubeconfig
        may appear later, a credential plugin may fail for a while)."""
        backoff = Backoff(*self._backoff)
        while True:
            try:
                return await asyncio.to_thread(new_api_client, self._access, connections)
            except Exception as exc:  # the loaders raise many kinds; every one is retried
                delay = backoff.next()
                detail = f"cannot load the client configuration ({_where(self._access)}): {exc}"
                log.log(
                    logging.ERROR if backoff.attempts == 1 else logging.DEBUG,
                    "%s: %s; retrying in %.1f s",
                    self.name,
                    detail,
                    delay,
                )
                self._status = SourceStatus(Health.STARTING, detail)
                await asyncio.sleep(delay)

    def _log_errors(self) -> None:
        """Log each invalid object once (until it is fixed; then again if it recurs)."""
        for error in self._status.errors:
            if error not in self._logged:
                log.error("%s", error)
        self._logged = frozenset(self._status.errors)

    @abc.abstractmethod
    def report(self, update: SourceUpdate) -> None:
        """Log what `update`, about to be yielded, changes in the source's health."""


class KubernetesSource(ApiSource):
    """One cluster reached through its Kubernetes API, as a `Source` (see the module doc).

    `stale_after` is how long a cluster out of sync keeps its endpoints; `backoff` and
    `debounce` are `ApiSource`'s.
    """

    def __init__(
        self,
        cluster: str,
        access: KubernetesAccess,
        *,
        stale_after: float = 300.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        debounce: float = 0.1,
    ) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after}")
        self._cluster = cluster
        self._stale_after = stale_after
        super().__init__(access, backoff=backoff, debounce=debounce)

    @property
    def name(self) -> str:
        return f"kubernetes:{self._cluster}"

    @property
    def cluster(self) -> str:
        return self._cluster

    def new_view(self) -> ClusterView:
        return ClusterView(self._cluster, self._stale_after)

    @property
    def stale_after(self) -> float:
        return self._stale_after

    def retune(self, access: SiteAccess) -> None:
        """Take a new `stale_after` (the access's); the view and its staleness stay."""
        if isinstance(access, KubernetesAccess) and access.stale_after > 0:
            self._stale_after = access.stale_after
            if isinstance(self._view, ClusterView):
                self._view.stale_after = access.stale_after

    @property
    def endpoints(self) -> int:
        """Endpoints in the snapshot last yielded."""
        yielded = self._yielded
        return len(yielded.endpoints) if isinstance(yielded, SiteSnapshot) else 0

    def report(self, update: SourceUpdate) -> None:
        assert isinstance(update, SiteSnapshot)
        snapshot = update
        previous = self._yielded if isinstance(self._yielded, SiteSnapshot) else None
        if snapshot.stale and (
            previous is None
            or not previous.stale
            or len(previous.endpoints) != len(snapshot.endpoints)
        ):
            log.warning("%s: %s", self.name, self._status.detail)
        elif not snapshot.stale and previous is not None and previous.stale:
            log.info("%s: in sync again", self.name)
        log.debug(
            "%s: %d service(s), %d endpoint(s), %d export(s)%s",
            self.name,
            len(snapshot.services),
            len(snapshot.endpoints),
            len(snapshot.exports),
            " (stale)" if snapshot.stale else "",
        )
