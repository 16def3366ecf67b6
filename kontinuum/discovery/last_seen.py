"""The last view in sync of each cluster source, kept on disk so that a restart keeps it too.

While kontinuum runs, a cluster source that loses its cluster's API serves its last view,
marked stale, and drops its endpoints only after `stale_after` seconds (see
`kontinuum.discovery.kubernetes`). A restarted process has no view to serve: its new source
cannot list anything while the API is down. So the aggregator keeps each such source's last
view in sync here, with the time it was last known current, and serves it, marked stale,
when the source has not reported by the end of the first sync (DESIGN principle 9).

    STATE_DIR/sources/<hash of the source's name>.json

`LastSeenViews` is the store: each file is written whole to a temporary file (0600, in a
0700 directory) and renamed into place, so a crash never leaves half a file; one that
cannot be read, is corrupt, or is of another format is ignored with one warning.
`ViewKeeper` follows what the sources report and writes, off the event loop, whenever a
source's view in sync changes and when it goes stale (the time it was last current). The
file is written whole, but each Service, endpoint and export in it is encoded once while
the source carries it over (`SnapshotText`): an endpoint change encodes that endpoint, not
its cluster. While the view stays in sync it is current all the time, so its time is
written again every tenth of its `keep_stale_for`: a process that ends without warning
leaves a time at most that much too old, and the restored view's endpoints are dropped
that much early, never late.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kontinuum.control.model import SiteSnapshot
from kontinuum.discovery.snapshot_codec import SnapshotText, decode_snapshot

log = logging.getLogger("kontinuum.discovery.last_seen")

FORMAT: Final = 1  # the files' format; a file of another one is ignored
REFRESH_SHARE: Final = 0.1  # an in-sync view's time is written again after this share of
MIN_REFRESH: Final = 1.0  # ... its keep_stale_for, but at most once a second
IDLE_TICK: Final = 60.0  # how often the keeper looks at the time when nothing is followed


@dataclass(frozen=True, slots=True)
class SavedView:
    """A source's last view in sync: its snapshots (not stale) and when (Unix time) they
    were last known current."""

    source: str
    snapshots: tuple[SiteSnapshot, ...]
    current_at: float

    def age(self, now: float) -> float:
        return max(now - self.current_at, 0.0)


class LastSeenViews:
    """The saved views of the sources, one file each (see the module doc). Blocking: the
    aggregator calls it through `ViewKeeper`, in a thread."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.directory = state_dir / "sources"
        # Each source's clusters' snapshots as text, encoded by what changed.
        self._encoded: dict[str, dict[str, SnapshotText]] = {}  # source -> cluster
        self._failing: set[str] = set()  # sources whose last write failed (logged once)

    def path(self, source: str) -> Path:
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        return self.directory / f"{key}.json"

    def load(self, source: str) -> SavedView | None:
        """The saved view of `source`; None if there is none or it cannot be trusted."""
        path = self.path(source)
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("ignoring the saved view of %s: cannot read %s: %s", source, path, error)
            return None
        try:
            return _decode(source, content)
        # JSONDecodeError is a ValueError; a file nested deeper than any we write recurses
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as error:
            log.warning("ignoring the saved view of %s in %s: %s", source, path, error)
            return None

    def save(self, view: SavedView) -> None:
        """Write `view` whole, in place of the source's saved view."""
        path = self.path(view.source)
        temporary: str | None = None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.directory.mkdir(exist_ok=True, mode=0o700)
            descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
            with os.fdopen(descriptor, "wb") as file:  # mkstemp makes it 0600
                file.write(self._encode(view).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            if view.source not in self._failing:
                log.warning(
                    "cannot save the last view of %s in %s (%s): a restart while its cluster "
                    "is unreachable will not have it",
                    view.source,
                    path,
                    error,
                )
            self._failing.add(view.source)
            return
        self._failing.discard(view.source)

    def delete(self, source: str) -> None:
        """Forget the saved view of `source` (its cluster left the fleet)."""
        self._encoded.pop(source, None)
        with contextlib.suppress(OSError):
            self.path(source).unlink()

    def _encode(self, view: SavedView) -> str:
        # A snapshot's parts are encoded once: a changed view costs what changed in it (a
        # write that only moves the time, nothing), not its whole cluster.
        cached = self._encoded.get(view.source, {})
        encoders = {s.cluster: cached.get(s.cluster) or SnapshotText() for s in view.snapshots}
        self._encoded[view.source] = encoders
        texts = [encoders[s.cluster](s) for s in view.snapshots]
        return (
            f'{{"format":{FORMAT},"source":{json.dumps(view.source)},'
            f'"current_at":{json.dumps(view.current_at)},'
            f'"snapshots":[{",".join(texts)}]}}\n'
        )


def _decode(source: str, content: bytes) -> SavedView:
    data = json.loads(content.decode())
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
    if data.get("source") != source:
        raise ValueError(f"it is the view of {data.get('source')!r}")
    current_at = data.get("current_at")
    if isinstance(current_at, bool) or not isinstance(current_at, int | float):
        raise ValueError(f"current_at must be a number, got {current_at!r}")
    if not math.isfinite(current_at):
        raise ValueError(f"current_at must be finite, got {current_at!r}")
    snapshots = data.get("snapshots")
    if not isinstance(snapshots, list):
        raise ValueError("snapshots must be a list")
    return SavedView(source, tuple(decode_snapshot(s) for s in snapshots), float(current_at))


@dataclass(slots=True)
class _Followed:
    keep_stale_for: float
    views: dict[str, SiteSnapshot] = field(default_factory=dict)  # cluster -> last in sync
    stale: set[str] = field(default_factory=set)  # clusters whose latest view is stale
    current_at: float | None = None
    written: float | None = None  # the current_at last queued for writing

    @property
    def refresh(self) -> float:
        return max(self.keep_stale_for * REFRESH_SHARE, MIN_REFRESH)


class ViewKeeper:
    """Keeps the store in step with what the followed sources report (see the module doc).
    `run` does the writes, one at a time, in a thread; cancel it to stop."""

    def __init__(self, store: LastSeenViews, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._followed: dict[str, _Followed] = {}
        self._pending: dict[str, SavedView | None] = {}  # None: delete
        self._wake = asyncio.Event()
        self.writes = 0  # files written or deleted so far

    def follow(self, source: str, keep_stale_for: float) -> None:
        self._followed[source] = _Followed(keep_stale_for)

    def forget(self, source: str) -> None:
        """Stop following `source` and delete its saved view."""
        if self._followed.pop(source, None) is not None:
            self._pending[source] = None
            self._wake.set()

    def saw(self, source: str, snapshot: SiteSnapshot) -> None:
        """`source` reported `snapshot`: save its view if that changed it."""
        followed = self._followed.get(source)
        if followed is None:
            return
        cluster = snapshot.cluster
        if snapshot.stale:
            if cluster in followed.views and cluster not in followed.stale:
                followed.stale.add(cluster)  # it was current until now
                followed.current_at = self._clock()
                self._queue(source, followed)
            followed.stale.add(cluster)
            return
        was_stale = cluster in followed.stale
        followed.stale.discard(cluster)
        previous = followed.views.get(cluster)
        followed.views[cluster] = snapshot
        if not followed.stale:
            followed.current_at = self._clock()
        if was_stale or (previous is not snapshot and previous != snapshot):
            self._queue(source, followed)

    async def load(self, source: str) -> SavedView | None:
        return await asyncio.to_thread(self.store.load, source)

    async def run(self) -> None:
        while True:
            self._refresh()
            while self._pending:
                source = next(iter(self._pending))
                view = self._pending.pop(source)
                if view is None:
                    await asyncio.to_thread(self.store.delete, source)
                else:
                    await asyncio.to_thread(self.store.save, view)
                self.writes += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick()):
                    await self._wake.wait()

    def _queue(self, source: str, followed: _Followed) -> None:
        if not followed.views or followed.current_at is None:
            return
        snapshots = tuple(followed.views[c] for c in sorted(followed.views))
        self._pending[source] = SavedView(source, snapshots, followed.current_at)
        followed.written = followed.current_at
        self._wake.set()

    def _refresh(self) -> None:
        """Write the time of views still in sync whose saved time is a `refresh` old."""
        now = self._clock()
        for source, followed in self._followed.items():
            if followed.stale or followed.written is None:
                continue
            if now - followed.written >= followed.refresh:
                followed.current_at = now
                self._queue(source, followed)

    def _tick(self) -> float:
        return min((f.refresh for f in self._followed.values()), default=IDLE_TICK)
