"""The static source: a fleet declared as a directory of standard Kubernetes YAML.

    PATH/*.yaml                     fleet-wide objects: one ClusterProfile per cluster
    PATH/clusters/<cluster>/*.yaml  that cluster's Services, EndpointSlices, ServiceExports

Files may hold several documents (`---`) and `kubectl get -o yaml` Lists; `.yml` is read too.
Every error names the file relative to PATH. A file that is not valid YAML is left out whole;
otherwise each object is checked on its own (see `kontinuum.control.fleet`). A cluster
directory without a ClusterProfile of the same name is an error and is not loaded; a
ClusterProfile without a directory is a site with nothing in it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import watchfiles
import yaml

from kontinuum.control.fleet import ClusterObject, assemble_cluster, read_cluster_documents
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import ConfigError, Fleet, FleetConfig, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

CLUSTERS_DIR = "clusters"
log = logging.getLogger("kontinuum.discovery.static")


# libyaml's C loader when PyYAML was built with it (about 10x faster), else pure Python.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUFFIXES = (".yaml", ".yml")
FileKey = tuple[int, int, int]  # (mtime_ns, size, inode): a file written anew has another


def _yaml_files(directory: Path) -> list[str]:
    # scandir knows a plain file's type from the listing: one stat per file, in _file_key.
    # Plain strings: a Path per file, hashed and compared, cost more than the stat.
    with os.scandir(directory) as entries:
        return sorted(e.path for e in entries if e.name.endswith(_SUFFIXES) and e.is_file())


def _read(path: Path, root: Path, errors: list[ConfigError]) -> list[Document]:
    """The documents of one file, all or (when it cannot be read or parsed) none."""
    name = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
        bodies = list(yaml.load_all(text, Loader=_LOADER))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad dates raise ValueError
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(ConfigError(file=name, message=f"{where}invalid YAML: {problem}"))
        return []
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(file=name, message=f"cannot read: {exc}"))
        return []
    return [Document(name, body, index) for index, body in enumerate(bodies, start=1)]


@dataclass(frozen=True, slots=True)
class _File:
    """One file as last read: its documents and, in a cluster directory, its objects."""

    key: FileKey | None
    docs: tuple[Document, ...]
    errors: tuple[ConfigError, ...]
    objects: tuple[ClusterObject, ...] = ()


def _file_key(path: str) -> FileKey | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class FleetReader:
    """Reads a fleet directory; each later read parses only the files that changed.

    A file is parsed again when its (mtime, size, inode) differs; the objects of every other
    file are the very objects of the last read, and a cluster none of whose files changed
    keeps its very snapshot (and the fleet-wide part its config), so what consumes them
    sees at once, by identity, that they did not change.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._files: dict[str, _File] = {}
        self._configs: tuple[tuple[_File, ...], FleetConfig, list[ConfigError]] | None = None
        self._clusters: dict[str, tuple[tuple[_File, ...], SiteSnapshot, list[ConfigError]]] = {}
        self.parsed = 0  # files parsed so far

    def read(self) -> tuple[Fleet, list[ConfigError]]:
        """The fleet as the directory holds it now, and every error."""
        root = self.root
        if not root.is_dir():
            return Fleet(), [ConfigError(file=str(root), message="not a directory")]
        seen: set[str] = set()
        fleet_files = tuple(self._file(p, seen) for p in _yaml_files(root))
        errors: list[ConfigError] = []
        if self._configs is None or not _same(self._configs[0], fleet_files):
            docs = [doc for f in fleet_files for doc in f.docs]
            config, config_errors = parse_fleet_config(docs)
            read_errors = [e for f in fleet_files for e in f.errors]
            self._configs = (fleet_files, config, [*read_errors, *config_errors])
        _, config, config_errors = self._configs
        errors.extend(config_errors)
        known = {site.name for site in config.sites}
        snapshots: dict[str, SiteSnapshot] = {name: SiteSnapshot(name) for name in known}
        clusters = root / CLUSTERS_DIR
        directories: list[Path] = []
        if clusters.is_dir():
            directories = sorted(p for p in clusters.iterdir() if p.is_dir())
        present: set[str] = set()
        for directory in directories:
            relative = directory.relative_to(root).as_posix()
            if directory.name not in known:
                errors.append(
                    ConfigError(
                        file=relative,
                        message=f"no ClusterProfile named {directory.name!r} in the fleet-wide "
                        "*.yaml files: this cluster's objects are not loaded",
                    )
                )
                continue
            present.add(directory.name)
            name = directory.name
            files = tuple(self._file(p, seen, name) for p in _yaml_files(directory))
            last = self._clusters.get(directory.name)
            if last is None or not _same(last[0], files):
                objects = [o for f in files for o in f.objects]
                snapshot, cluster_errors = assemble_cluster(directory.name, objects)
                read_errors = [e for f in files for e in f.errors]
                last = (files, snapshot, [*read_errors, *cluster_errors])
                self._clusters[directory.name] = last
            snapshots[directory.name] = last[1]
            errors.extend(last[2])
        for path in self._files.keys() - seen:
            del self._files[path]
        for name in self._clusters.keys() - present:
            del self._clusters[name]
        fleet = Fleet(
            sites=config.sites,
            snapshots=tuple(snapshots[name] for name in sorted(snapshots)),
            grants=config.grants,
            routing=config.routing,
        )
        return fleet, errors

    def _file(self, path: str, seen: set[str], cluster: str | None = None) -> _File:
        seen.add(path)
        key = _file_key(path)
        last = self._files.get(path)
        if last is not None and key is not None and last.key == key:
            return last
        errors: list[ConfigError] = []
        docs = _read(Path(path), self.root, errors)
        self.parsed += 1
        objects = tuple(read_cluster_documents(cluster, docs)) if cluster is not None else ()
        file = _File(key, tuple(docs), tuple(errors), objects)
        self._files[path] = file
        return file


def _same(a: tuple[_File, ...], b: tuple[_File, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def load_fleet(path: str | Path) -> tuple[Fleet, list[ConfigError]]:
    """Read a fleet directory into the sites and one snapshot per site, and every error."""
    return FleetReader(path).read()


async def directory_changes(
    path: Path, poll_interval: float, rescan_interval: float = 10.0
) -> AsyncGenerator[None, None]:
    """Yields whenever files below `path` may have changed: on inotify events (watchfiles),
    and at least every `rescan_interval` seconds in case an event was missed; by polling
    every `poll_interval` seconds where the directory cannot be watched."""
    events: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

    async def watch() -> None:
        async for _ in watchfiles.awatch(
            path, watch_filter=None, debounce=50, step=20, ignore_permission_denied=True
        ):
            with contextlib.suppress(asyncio.QueueFull):  # one pending batch is enough
                events.put_nowait(None)

    watcher = asyncio.create_task(watch(), name=f"watch {path}")
    try:
        while not watcher.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rescan_interval):
                    await events.get()
            yield None
        problem = watcher.exception() if not watcher.cancelled() else None
        log.warning("cannot watch %s (%s): polling every %.1f s", path, problem, poll_interval)
        while True:
            await asyncio.sleep(poll_interval)
            yield None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


class StaticSource:
    """A fleet directory as a `Source`, watched for changes (inotify; where the directory
    cannot be watched, polled every `poll_interval` seconds). Only changed files are read.

    A change with any error yields nothing: the last good fleet stays in force and the
    errors are in `status()` (a typo must not take a service out of the mesh). On the first
    read there is no last good fleet, so what is valid is yielded. Only what changed is
    yielded again: the config when the fleet-wide files changed, a cluster's snapshot when
    its objects did. With `watch=False` the directory is read once.
    """

    def __init__(self, path: str | Path, poll_interval: float = 0.5, watch: bool = True) -> None:
        self._path = Path(path)
        self._poll_interval = poll_interval
        self._watch = watch
        self._status = SourceStatus(Health.STARTING)

    @property
    def name(self) -> str:
        return f"static:{self._path}"

    def status(self) -> SourceStatus:
        return self._status

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        config: FleetConfig | None = None
        snapshots: dict[str, SiteSnapshot] = {}
        reader = FleetReader(self._path)
        changes = directory_changes(self._path, self._poll_interval) if self._watch else None
        try:
            while True:
                fleet, errors = await asyncio.to_thread(reader.read)
                news = tuple(errors) != self._status.errors  # said once, not on every read
                for error in errors if news else ():
                    log.error("%s", error)
                if errors and config is not None:
                    if news:
                        log.error("%d error(s): the last good fleet stays in force", len(errors))
                    detail = f"{len(errors)} configuration error(s); the last good fleet serves"
                    self._status = SourceStatus(Health.DEGRADED, detail, tuple(errors))
                else:
                    detail = f"{len(errors)} configuration error(s)" if errors else ""
                    health = Health.DEGRADED if errors else Health.HEALTHY
                    self._status = SourceStatus(health, detail, tuple(errors))
                    if fleet.config is not config and fleet.config != config:
                        config = fleet.config
                        yield config
                    for snapshot in fleet.snapshots:
                        last = snapshots.get(snapshot.cluster)
                        if last is not snapshot and last != snapshot:
                            snapshots[snapshot.cluster] = snapshot
                            yield snapshot
                if changes is None:
                    return
                await anext(changes)
        finally:
            if changes is not None:
                await changes.aclose()
