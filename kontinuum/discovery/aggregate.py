"""The aggregator: the latest update of every source, merged into one `Fleet`, debounced.

Sources report whenever anything changes; translating and pushing on every report would
turn a flapping cluster or a rolling deployment into a push storm. So, like Istio's
`PILOT_DEBOUNCE_AFTER` / `PILOT_DEBOUNCE_MAX`, a change starts a quiet period: the fleet is
applied once no update arrived for `debounce_after` seconds, or at the latest
`debounce_max` seconds after the first change, whichever comes first. Updates in between
are coalesced: only the latest per (source, cluster) and per source config counts.

The first fleet is applied once every source has reported at least once (or ended), so
proxies are never served a half-discovered fleet at start-up. The sources given at the
start (the fleet directory, the config cluster) declare the fleet: they are waited for
however long they take. A cluster's own source (added later) is waited for `sync_timeout`
at most; past it, the fleet applies without that cluster's first view, or, with a store of
the sources' last views (`kontinuum.discovery.last_seen`), with the view it had before the
restart, marked stale, as a running source serves its view once its cluster is lost: its
endpoints are kept until `keep_stale_for` seconds after it was last known current, its
Services and exports after that too, until the source reports its own view.

Merging the sources' views into one fleet is `kontinuum.discovery.fleet_merge`'s; a part of
the fleet none of whose inputs changed is handed over as the very object it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kontinuum.control.model import ClusterSite, ConfigError, Fleet, FleetConfig, SiteSnapshot
from kontinuum.discovery.fleet_merge import FleetMerge
from kontinuum.discovery.last_seen import LastSeenViews, SavedView, ViewKeeper
from kontinuum.discovery.source import Health, Source, SourceUpdate

log = logging.getLogger("kontinuum.discovery.aggregate")


@dataclass(frozen=True, slots=True)
class SourceState:
    """How one source is doing, for status and metrics."""

    name: str
    health: Health
    detail: str
    stale: bool  # serving the last view of a cluster it lost contact with
    last_update: float | None  # wall-clock time of its last update
    clusters: int
    endpoints: int
    errors: tuple[ConfigError, ...]  # configuration errors it reports
    last_sync: float | None = None  # wall-clock time its view was last known current


@dataclass(frozen=True, slots=True)
class Change:
    """What led to the fleet being applied: when the first update of the burst arrived
    (monotonic time) and which sources reported in it."""

    started: float
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Debounce:
    after: float = 0.1  # quiet time that ends a burst
    max: float = 1.0  # longest a change may wait behind a continuing burst
    sync_timeout: float = 10.0  # longest the first fleet waits for a slow source


class Aggregator:
    """Runs the sources and applies their merged, debounced fleet (see the module doc)."""

    def __init__(
        self,
        sources: Sequence[Source],
        apply: Callable[[Fleet], object],
        debounce: Debounce = Debounce(),
        views: LastSeenViews | None = None,
    ) -> None:
        self.sources = tuple(sources)
        self._declaring = {s.name for s in sources}  # never applied without their first view
        self._apply = apply
        self._debounce = debounce
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._configs: dict[str, FleetConfig] = {}
        self._merge = FleetMerge()  # each part of the fleet kept while its inputs stand
        self._snapshots: dict[tuple[str, str], SiteSnapshot] = {}
        self._reported: set[str] = set()
        self._changed = asyncio.Event()
        self.synced = asyncio.Event()  # set once the first fleet is applied
        self.applied = 0  # fleets applied so far
        self.updates = 0  # source updates received so far
        self._last_update: dict[str, float] = {}
        self._burst: tuple[float, set[str]] | None = None  # the updates not applied yet
        # The last views of cluster sources, saved and restored across restarts.
        self.keeper = ViewKeeper(views) if views is not None else None
        self._keep_for: dict[str, float] = {}  # source -> its keep_stale_for
        self._restored: set[tuple[str, str]] = set()  # (source, cluster) from before a restart
        self._drops: dict[str, asyncio.TimerHandle] = {}  # drops a restored view's endpoints
        # What led to the fleet being applied, set just before `apply` is called.
        self.change: Change | None = None
        # Called with the fleet's sites whenever a source's config changes, so that the
        # sources of newly declared clusters start (and, before the first fleet, are waited
        # for) without waiting for a push.
        self.on_sites: Callable[[tuple[ClusterSite, ...]], None] | None = None

    def fleet(self) -> Fleet:
        """The fleet as the sources report it right now."""
        return self._merge(
            [self._configs[s.name] for s in self.sources if s.name in self._configs],
            [self._snapshots[key] for key in sorted(self._snapshots)],
        )

    def configs(self) -> list[FleetConfig]:
        """The latest fleet-wide config of each source, in the order of the sources."""
        return [self._configs[s.name] for s in self.sources if s.name in self._configs]

    def snapshot_of(self, source: str, cluster: str) -> SiteSnapshot | None:
        """What `source` last reported of `cluster` (before a restart, if its view from then
        serves), if it reported it at all."""
        return self._snapshots.get((source, cluster))

    def source_states(self) -> list[SourceState]:
        """Every followed source's state, by name."""
        states = []
        for source in sorted(self.sources, key=lambda s: s.name):
            status = source.status()
            snapshots = [v for (name, _), v in self._snapshots.items() if name == source.name]
            states.append(
                SourceState(
                    name=source.name,
                    health=status.health,
                    detail=status.detail,
                    stale=any(s.stale for s in snapshots),
                    last_update=self._last_update.get(source.name),
                    clusters=len(snapshots),
                    endpoints=sum(len(s.endpoints) for s in snapshots),
                    errors=status.errors,
                    last_sync=status.last_sync,
                )
            )
        return states

    async def run(self) -> None:
        """Run until cancelled; a source that fails is logged and its last view kept."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for source in self.sources:
                    self._start(source)
                if self.keeper is not None:
                    group.create_task(self.keeper.run(), name="last views")
                group.create_task(self._push())
        finally:
            for handle in self._drops.values():
                handle.cancel()

    def _start(self, source: Source) -> None:
        assert self._group is not None
        task = self._group.create_task(self._follow(source), name=f"source {source.name}")
        self._followers[source.name] = task

    def add(self, source: Source, keep_stale_for: float | None = None) -> None:
        """Follow one more source (a cluster joined the fleet). Before the first fleet it is
        waited for like the others; after, it joins when it reports. With `keep_stale_for`
        (how long the source keeps its endpoints once its cluster is lost) its last view is
        saved, and serves after a restart until the source reports (see the module doc).
        Call only while `run` runs."""
        if any(s.name == source.name for s in self.sources):
            raise ValueError(f"a source named {source.name!r} is already followed")
        self.sources += (source,)
        if keep_stale_for is not None:
            self._keep_for[source.name] = keep_stale_for
            if self.keeper is not None:
                self.keeper.follow(source.name, keep_stale_for)
        if self.synced.is_set():
            self._reported.add(source.name)
        self._start(source)

    def remove(self, name: str) -> None:
        """Stop following a source and forget what it reported (its cluster left)."""
        self.sources = tuple(s for s in self.sources if s.name != name)
        task = self._followers.pop(name, None)
        if task is not None:
            task.cancel()
        self._configs.pop(name, None)
        for key in [k for k in self._snapshots if k[0] == name]:
            del self._snapshots[key]
            self._restored.discard(key)
        if (drop := self._drops.pop(name, None)) is not None:
            drop.cancel()
        if self._keep_for.pop(name, None) is not None and self.keeper is not None:
            self.keeper.forget(name)
        self._changed.set()

    def _take(self, source: Source, update: SourceUpdate) -> None:
        if source.name not in self._followers:
            return  # removed while an update was on its way
        if isinstance(update, FleetConfig):
            self._configs[source.name] = update
            if self.on_sites is not None:
                try:
                    self.on_sites(self.fleet().sites)
                except Exception:  # a bad cluster must not stop discovery of the others
                    log.exception("starting the sources of the fleet's clusters failed")
        else:
            self._snapshots[source.name, update.cluster] = update
            self._replaced(source.name, update.cluster)
            if self.keeper is not None:
                self.keeper.saw(source.name, update)
        self.updates += 1
        self._last_update[source.name] = time.time()
        self._note_change(source.name)

    def _note_change(self, source: str) -> None:
        if self._burst is None:
            self._burst = (time.monotonic(), set())
        self._burst[1].add(source)
        self._changed.set()

    async def _follow(self, source: Source) -> None:
        try:
            async for update in source.updates():
                self._take(source, update)
                if source.name not in self._reported:
                    self._reported.add(source.name)
                    self._changed.set()
        except Exception:  # one source's bug must not stop the others
            log.exception("source %s failed; its last view stays in force", source.name)
        finally:
            self._reported.add(source.name)  # an ended source no longer holds back the start
            self._changed.set()

    def waiting_for(self) -> list[str]:
        """The sources whose first view the first fleet still waits for."""
        if self.synced.is_set():
            return []
        return sorted({s.name for s in self.sources} - self._reported)

    async def _wait_for_sync(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._debounce.sync_timeout
        said = False
        while missing := self.waiting_for():
            remaining = deadline - loop.time()
            if remaining <= 0:
                if not self._declaring.intersection(missing):
                    restored = await self._restore(missing)
                    if without := [name for name in missing if name not in restored]:
                        log.warning(
                            "applying the fleet without a first view from %s", ", ".join(without)
                        )
                    return
                if not said:
                    log.warning(
                        "still waiting for the first view of %s: proxies are asked to retry "
                        "until the fleet is applied",
                        ", ".join(missing),
                    )
                    said = True
                remaining = self._debounce.sync_timeout
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see _quiet
                    await self._changed.wait()

    async def _restore(self, missing: list[str]) -> set[str]:
        """Serve the saved views of the `missing` sources that have one; their names."""
        restored: set[str] = set()
        if self.keeper is None:
            return restored
        for name in missing:
            keep = self._keep_for.get(name)
            if keep is None:
                continue
            saved = await self.keeper.load(name)
            if saved is None or name not in self._followers or name in self._reported:
                continue  # none, or the source was removed or reported meanwhile
            if self._serve_saved(saved, keep):
                restored.add(name)
        return restored

    def _serve_saved(self, saved: SavedView, keep: float) -> bool:
        name, age = saved.source, saved.age(time.time())
        left = keep - age
        clusters = []
        for snapshot in saved.snapshots:
            key = (name, snapshot.cluster)
            if key in self._snapshots:
                continue
            endpoints = snapshot.endpoints if left > 0 else ()
            self._snapshots[key] = replace(snapshot, endpoints=endpoints, stale=True)
            self._restored.add(key)
            clusters.append(snapshot.cluster)
        if not clusters:
            return False
        waited = self._debounce.sync_timeout
        if left > 0:
            log.warning(
                "%s has not reported within %g s: its last view of %s from before the restart, "
                "%.0f s old, serves marked stale; its endpoints are kept for another %.0f s",
                name,
                waited,
                ", ".join(clusters),
                age,
                left,
            )
            loop = asyncio.get_running_loop()
            self._drops[name] = loop.call_later(left, self._drop_restored, name, keep)
        else:
            log.warning(
                "%s has not reported within %g s: its last view of %s from before the restart "
                "is %.0f s old, more than %g s: its Services and exports serve marked stale, "
                "without endpoints",
                name,
                waited,
                ", ".join(clusters),
                age,
                keep,
            )
        return True

    def _drop_restored(self, name: str, keep: float) -> None:
        """`keep` seconds passed since the restored view of `name` was last known current."""
        self._drops.pop(name, None)
        keys = [key for key in self._restored if key[0] == name]
        for key in keys:
            self._snapshots[key] = replace(self._snapshots[key], endpoints=())
        if keys:
            log.warning(
                "%s still has not reported: its view from before the restart is more than %g s "
                "old, so its endpoints are dropped; its Services and exports stay, marked stale",
                name,
                keep,
            )
            self._note_change(name)

    def _replaced(self, source: str, cluster: str) -> None:
        """The source reported `cluster`: its own view replaces the restored one."""
        if not self._restored:
            return
        self._restored.discard((source, cluster))
        if any(key[0] == source for key in self._restored):
            return
        if (drop := self._drops.pop(source, None)) is not None:
            drop.cancel()

    async def _quiet(self) -> None:
        """Return once updates pause for `after` seconds, or `max` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._debounce.max
        while True:
            self._changed.clear()
            timeout = min(self._debounce.after, deadline - loop.time())
            if timeout <= 0:
                return
            try:
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
                # cancellation that arrives as the wait ends (CPython gh-86296).
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                return

    async def _push(self) -> None:
        await self._wait_for_sync()
        while True:
            await self._quiet()
            burst, self._burst = self._burst, None
            started, sources = burst if burst is not None else (time.monotonic(), set())
            self.change = Change(started, tuple(sorted(sources)))
            try:
                self._apply(self.fleet())
            except Exception:  # a bug in translation must not stop discovery: keep serving
                log.exception("applying the fleet failed; the last good one stays in force")
            self.applied += 1
            self.synced.set()
            await self._changed.wait()
