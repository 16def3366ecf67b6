"""Composition root: the only module that wires sources, translation and the xDS server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kontinuum.xds import SnapshotCache, XdsServer
from kontinuum.xds.files import ResourceFileError, load_snapshot, view_files

log = logging.getLogger("kontinuum")


@dataclass
class ResourceDirectory:
    """Keeps a cache in step with a directory of view files (`<view>.yaml`).

    A file that fails to parse or is inconsistent is reported and skipped: its view keeps
    the last good snapshot. A deleted file removes its view.
    """

    directory: Path
    cache: SnapshotCache
    errors: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def reload(self) -> bool:
        """Apply what changed on disk; True if any view changed."""
        changed = False
        files = view_files(self.directory)
        for view in set(self._seen) - set(files):
            del self._seen[view]
            self.errors.pop(view, None)
            self.cache.remove_view(view)
            log.info("view %r removed (its file is gone)", view)
            changed = True
        for view, path in files.items():
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._seen.get(view) == stamp:
                continue
            self._seen[view] = stamp
            try:
                snapshot = load_snapshot(path)
            except ResourceFileError as error:
                self.errors[view] = str(error)
                log.error("%s (view %r keeps its last good configuration)", error, view)
                continue
            self.errors.pop(view, None)
            if self.cache.set_snapshot(view, snapshot):
                log.info("view %r updated from %s", view, path)
                changed = True
        return changed


async def serve_resources(directory: Path, xds_address: str, poll_interval: float = 0.5) -> None:
    """Serve the Envoy resources of a directory over ADS until cancelled."""
    cache = SnapshotCache()
    resources = ResourceDirectory(directory, cache)
    resources.reload()
    server = XdsServer(cache)
    await server.start(xds_address)
    try:
        while True:
            await asyncio.sleep(poll_interval)
            resources.reload()
    finally:
        await server.stop(1.0)
