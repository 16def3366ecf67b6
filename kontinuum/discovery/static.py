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
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

import watchfiles
import yaml

from kontinuum.control.assembly import Assembly
from kontinuum.control.fleet import ClusterObject, read_cluster_documents
from kontinuum.control.fleet_bodies import FleetBodies, FleetBodiesBuilder
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import ConfigError, Fleet, FleetConfig, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.control.wording import plural
from kontinuum.discovery.last_good import LastGoodFiles
from kontinuum.discovery.listing import YAML_SUFFIXES, listed, mark, relist, yaml_files
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

CLUSTERS_DIR = "clusters"
log = logging.getLogger("kontinuum.discovery.static")


# libyaml's C loader when PyYAML was built with it (about 10x faster), else pure Python.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FileKey = tuple[int, int, int]  # (mtime_ns, size, inode): a file written anew has another
# Bigger fleet files are refused unread: splitting them is cheap, parsing them is not.
MAX_FILE_BYTES = 5 * 1024 * 1024
# A file ending mid-line younger than this is taken as still being written.
SETTLE_SECONDS = 2.0


def _content(path: str, name: str, errors: list[ConfigError]) -> bytes | None:
    """The bytes of a fleet file, or None (and why) when it cannot or may not be read."""
    try:
        with open(path, "rb") as file:
            # read(n) sets n bytes aside first: ask for what the file holds, not for the cap
            size = os.fstat(file.fileno()).st_size
            content = file.read(min(size, MAX_FILE_BYTES) + 1)
            if len(content) > size:  # it grew while being read
                content += file.read(MAX_FILE_BYTES + 1 - len(content))
    except IsADirectoryError:
        errors.append(ConfigError(file=name, message="is a directory, not a file"))
        return None
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            message = f"is a symbolic link to {target}, which does not exist"
        else:
            message = "was removed while being read"
        errors.append(ConfigError(file=name, message=message))
        return None
    except OSError as exc:
        errors.append(ConfigError(file=name, message=f"cannot read: {exc.strerror or exc}"))
        return None
    if len(content) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // (1024 * 1024)
        errors.append(
            ConfigError(
                file=name,
                message=f"is larger than the {limit} MiB a fleet file may hold: split it",
            )
        )
        return None
    return content


def _parse(content: bytes, name: str, errors: list[ConfigError]) -> list[Document]:
    """The documents of one file's content, all or (when it does not parse) none."""
    try:
        bodies = list(yaml.load_all(content.decode("utf-8"), Loader=_LOADER))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad dates raise ValueError
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(ConfigError(file=name, message=f"{where}invalid YAML: {problem}"))
        return []
    return [Document(name, body, index) for index, body in enumerate(bodies, start=1)]


def read_documents(path: str, name: str, errors: list[ConfigError]) -> list[Document]:
    """The documents of one YAML file (`name` in errors), all or, when it cannot be read
    or parsed, none (and why, in `errors`)."""
    content = _content(path, name, errors)
    return [] if content is None else _parse(content, name, errors)


@dataclass(frozen=True, slots=True)
class _File:
    """One version of a file: its documents and, in a cluster directory, its objects;
    `errors` are those found in it on its own (reading, parsing, each object)."""

    name: str
    key: FileKey | None
    content: bytes | None
    docs: tuple[Document, ...]
    errors: tuple[ConfigError, ...]
    objects: tuple[ClusterObject, ...] = ()

    @property
    def empty(self) -> bool:
        return all(doc.body is None for doc in self.docs)


def _unfinished(content: bytes | None, key: FileKey | None) -> bool:
    """Whether a file that does not end with a line break was written too recently to be
    taken as complete (an editor may save it so; a writer cut short leaves it so)."""
    if not content or content.endswith(b"\n") or key is None:
        return False
    return 0 <= time.time_ns() - key[0] < SETTLE_SECONDS * 1e9  # not if dated in the future


def file_key(path: str) -> FileKey | None:
    """The key of the file at `path` as it is now, or None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Part(Generic[T]):
    """What a set of files was last read into: the fleet-wide config or a cluster's snapshot."""

    files: tuple[_File, ...]  # as read
    in_force: tuple[_File, ...]  # as applied: a file with errors replaced by its last good
    value: T
    errors: tuple[ConfigError, ...]
    held: tuple[str, ...]  # the files whose last good version is applied


@dataclass(slots=True)
class _Cluster:
    """A cluster directory as last read: its files, as read and as applied, and what they
    assemble into, kept up to date file by file."""

    assembly: Assembly
    paths: list[str] = field(default_factory=list)  # its YAML files, sorted
    files: dict[str, _File] = field(default_factory=dict)  # as read
    in_force: dict[str, _File] = field(default_factory=dict)  # as applied
    wrong: list[str] = field(default_factory=list)  # the files with errors, sorted
    held: list[str] = field(default_factory=list)  # those whose last good version applies
    errors: tuple[ConfigError, ...] = ()
    held_names: tuple[str, ...] = ()


class FleetReader:
    """Reads a fleet directory; each later read parses only the files that changed.

    A file is parsed again when its (mtime, size, inode) differs; the objects of every other
    file are the very objects of the last read, and a cluster none of whose files changed
    keeps its very snapshot (and the fleet-wide part its config), so what consumes them
    sees at once, by identity, that they did not change. After an inotify batch only the
    files it named are looked at, and a cluster's snapshot is assembled again only for the
    objects of those files (`Assembly`): a change costs what it touches, not the fleet's size.

    A file with an error keeps its last good version in force, whole (its other objects
    too), while every other file's changes apply; a file without one is read for what is
    valid in it. So does a file that is suddenly empty (being written, as `kubectl get -o
    yaml > file` does): deleting a file is how its objects are removed. With `state_dir`,
    the last good versions are stored (`LastGoodFiles`) and also serve after a restart.
    """

    def __init__(
        self, root: str | Path, state_dir: Path | None = None, watching: bool = False
    ) -> None:
        self.root = Path(root)
        self._watching = watching  # read again on changes: a file may be caught mid-write
        self._files: dict[str, _File] = {}  # by path
        self._good: dict[str, _File] = {}  # the last version of each file without errors
        self._stored = LastGoodFiles(state_dir, self.root) if state_dir is not None else None
        self._config: _Part[FleetConfig] | None = None
        # The fleet-wide bodies by file, each file set again only when it changed.
        self._bodies = FleetBodiesBuilder()
        self._declared: dict[str, _File] = {}  # by path: the file whose bodies are set
        self._clusters: dict[str, _Cluster] = {}
        self.parsed = 0  # files parsed so far
        self.held: tuple[str, ...] = ()  # the files whose last good version is in force
        self.settling = False  # a file seems to be being written: read again soon
        self._absolute_root = os.path.abspath(self.root)
        self._changed: frozenset[str] | None = None  # during `read`: what inotify named
        self._root_paths: list[str] | None = None  # the fleet-wide files, sorted
        self._directories: list[Path] = []  # the cluster directories, sorted
        self._unkeyed: set[str] = set()  # files without a key: looked at on every read

    def read(self, changed: Collection[str] | None = None) -> tuple[Fleet, list[ConfigError]]:
        """The fleet as the directory holds it now (a file with errors as it last was
        without), and every error. `changed`: the paths an inotify batch named, so that
        the other files known need no stat and the directories no listing; None (or a path
        that is not a fleet file, such as a ConfigMap's `..data` link) looks at every file."""
        root = self.root
        if not root.is_dir():
            return Fleet(), [ConfigError(file=str(root), message="not a directory")]
        self._changed = self._fleet_files(changed) if self._root_paths is not None else None
        named: dict[str, list[str]] | None = None
        if self._changed is not None:
            named = {}
            for path in self._changed | self._unkeyed:
                named.setdefault(os.path.dirname(path), []).append(path)
        forgotten: list[str] = []
        if self._root_paths is None or named is None:
            paths = yaml_files(root)
            forgotten.extend(set(self._root_paths or ()).difference(paths))
            self._root_paths = paths
        else:
            forgotten.extend(relist(self._root_paths, named.get(str(root), ())))
        files = tuple(self._file(p) for p in self._root_paths)
        if self._config is None or not _same(self._config.files, files):
            self._config = self._fleet_config(files, self._root_paths)
        config = self._config.value
        errors = list(self._config.errors)
        held = list(self._config.held)
        known = {site.name for site in config.sites}
        snapshots: dict[str, SiteSnapshot] = {name: SiteSnapshot(name) for name in known}
        if named is None:
            clusters = root / CLUSTERS_DIR
            self._directories = (
                sorted(p for p in clusters.iterdir() if p.is_dir()) if clusters.is_dir() else []
            )
        present: set[str] = set()
        for directory in self._directories:
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
            part = self._cluster(directory, named, forgotten)
            snapshots[directory.name] = part.assembly.snapshot
            errors.extend(part.errors)
            held.extend(part.held_names)
        for name in self._clusters.keys() - present:
            forgotten.extend(self._clusters.pop(name).paths)
        names = [self._forget(path) for path in forgotten]
        if self._stored is not None:
            if named is None:
                self._stored.keep_only({f.name for f in self._good.values()})
            else:
                self._stored.forget(names)
        self.held = tuple(held)
        self.settling = any(self._files[p].content is not None for p in self._unkeyed)
        fleet = Fleet(
            sites=config.sites,
            snapshots=tuple(snapshots[name] for name in sorted(snapshots)),
            grants=config.grants,
            routing=config.routing,
            bodies=config.bodies,
        )
        return fleet, errors

    def _forget(self, path: str) -> str:
        """Drop a file that is gone; its name."""
        self._files.pop(path, None)
        self._good.pop(path, None)
        self._unkeyed.discard(path)
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _fleet_config(self, files: tuple[_File, ...], paths: list[str]) -> _Part[FleetConfig]:
        """The config of the fleet-wide files, each file with errors as it last was without
        (parsed together: some errors are found only across files)."""
        config, parse_errors = parse_fleet_config(d for f in files for d in f.docs)
        errors = list(dict.fromkeys([*(e for f in files for e in f.errors), *parse_errors]))
        wrong = {e.file for e in errors}
        in_force: list[_File] = []
        held: list[str] = []
        for file, path in zip(files, paths, strict=True):
            good = self._last_good(path, file, None) if file.name in wrong else None
            if good is not None:
                held.append(file.name)
            elif file.name not in wrong:
                self._keep(path, file)
            in_force.append(good or file)
        if held:
            config, _ = parse_fleet_config(d for f in in_force for d in f.docs)
        config = replace(config, bodies=self._declare(dict(zip(paths, in_force, strict=True))))
        return _Part(files, tuple(in_force), config, tuple(errors), tuple(held))

    def _declare(self, in_force: dict[str, _File]) -> FleetBodies:
        """The bodies of the fleet-wide files in force (by path), set again only for the
        files that changed: what changed is all the federation catalog looks at."""
        for path in self._declared.keys() - in_force.keys():
            self._bodies.remove(path)
        for path, file in in_force.items():
            if self._declared.get(path) is not file:
                self._bodies.set(path, tuple(d.body for d in file.docs))
        self._declared = in_force
        return self._bodies.publish()

    def _cluster(
        self, directory: Path, named: dict[str, list[str]] | None, forgotten: list[str]
    ) -> _Cluster:
        """A cluster's snapshot, each file with errors as it last was without, assembled
        again for the files that changed (with `named`, only those it names can have)."""
        cluster = directory.name
        part = self._clusters.get(cluster)
        candidates: Collection[str]
        if part is None or named is None:
            if part is None:
                part = self._clusters[cluster] = _Cluster(Assembly(cluster))
            paths = yaml_files(str(directory))
            gone = set(part.paths).difference(paths)
            candidates = [*paths, *gone]
            part.paths = paths
        else:
            candidates = named.get(str(directory), ())
            if not candidates:
                return part
            gone = set(relist(part.paths, candidates))
            candidates = [p for p in candidates if p in gone or listed(part.paths, p)]
        forgotten.extend(gone)
        changes: dict[str, tuple[ClusterObject, ...]] = {}
        changed = bool(gone)
        for path in candidates:
            if path in gone:
                part.files.pop(path, None)
                if part.in_force.pop(path, None) is not None:
                    changes[path] = ()
                mark(part.wrong, path, False)
                mark(part.held, path, False)
                continue
            file = self._file(path, cluster)
            if file is part.files.get(path):
                continue
            changed = True
            part.files[path] = file
            good = self._last_good(path, file, cluster) if file.errors else None
            if not file.errors:
                self._keep(path, file)
            in_force = good or file
            mark(part.wrong, path, bool(file.errors))
            mark(part.held, path, in_force is not file)
            if in_force is not part.in_force.get(path):
                part.in_force[path] = in_force
                changes[path] = in_force.objects
        if not changed:
            return part
        part.assembly.change(changes)
        own = [e for path in part.wrong for e in part.files[path].errors]
        part.errors = tuple(dict.fromkeys([*own, *part.assembly.errors()]))
        part.held_names = tuple(part.files[path].name for path in part.held)
        return part

    def _keep(self, path: str, file: _File) -> None:
        if self._good.get(path) is file:
            return
        self._good[path] = file
        if self._stored is not None and file.content is not None:
            self._stored.keep(file.name, file.content)

    def _last_good(self, path: str, file: _File, cluster: str | None) -> _File | None:
        """The last version of `path` without errors: in memory, else stored."""
        good = self._good.get(path)
        if good is not None or self._stored is None:
            return good
        content = self._stored.load(file.name)
        if content is None or content == file.content:
            return None
        errors: list[ConfigError] = []
        docs = _parse(content, file.name, errors)
        objects = tuple(read_cluster_documents(cluster, docs)) if cluster is not None else ()
        if errors or any(o.errors for o in objects):
            return None
        good = _File(file.name, None, content, tuple(docs), (), objects)
        self._good[path] = good
        return good

    def _fleet_files(self, changed: Collection[str] | None) -> frozenset[str] | None:
        """The YAML files of `changed`, as this reader names paths; None when it named a
        directory (a new cluster, one removed, a ConfigMap's `..data` link swapped): look at
        every file. Other files (an editor's temporary file, renamed over a fleet file) are
        not read."""
        if changed is None:
            return None
        root = str(self.root)
        clusters = os.path.join(root, CLUSTERS_DIR)
        directories = {root, clusters, *(str(d) for d in self._directories)}
        found = set()
        for path in changed:
            relative = os.path.relpath(os.path.abspath(path), self._absolute_root)
            own = os.path.join(root, relative)
            if os.path.dirname(own) == clusters:  # a cluster directory came or went
                return None
            if not path.endswith(YAML_SUFFIXES):
                if own in directories or os.path.isdir(path):
                    return None
                continue
            if relative.startswith(os.pardir):  # named another way (a link resolved)
                return None
            found.add(own)
        return frozenset(found)

    def _file(self, path: str, cluster: str | None = None) -> _File:
        last = self._files.get(path)
        if (
            last is not None
            and last.key is not None
            and self._changed is not None
            and path not in self._changed
        ):
            return last  # inotify named the files that changed: not this one
        key = file_key(path)
        if last is not None and key is not None and last.key == key:
            return last
        name = os.path.relpath(path, self.root).replace(os.sep, "/")
        errors: list[ConfigError] = []
        content = _content(path, name, errors)
        docs = _parse(content, name, errors) if content is not None else []
        self.parsed += 1
        objects = tuple(read_cluster_documents(cluster, docs)) if cluster is not None else ()
        errors.extend(e for o in objects for e in o.errors)
        if self._watching and _unfinished(content, key):
            # Ends mid-line and was just written: most likely its writer is not done. Read
            # again (key None) until it ends with a line break or has been left alone a while.
            message = (
                "ends in the middle of a line (being written?): it applies once complete; "
                "write fleet files whole, to a temporary file renamed into place"
            )
            errors = [ConfigError(file=name, message=message)]  # what else is wrong follows
            key = None
        file = _File(name, key, content, tuple(docs), tuple(errors), objects)
        if file.empty and not errors:
            good = self._last_good(path, file, cluster)
            if good is not None and not good.empty:
                # What `kubectl get -o yaml > file` leaves for a moment: not a deletion.
                message = (
                    "has no objects (being written?): its last good version stays in force; "
                    "delete the file to remove its objects"
                )
                file = replace(file, errors=(ConfigError(file=name, message=message),))
        self._files[path] = file
        if key is None:
            self._unkeyed.add(path)
        else:
            self._unkeyed.discard(path)
        return file


def _same(a: tuple[_File, ...], b: tuple[_File, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def load_fleet(path: str | Path) -> tuple[Fleet, list[ConfigError]]:
    """Read a fleet directory into the sites and one snapshot per site, and every error."""
    return FleetReader(path).read()


async def directory_changes(
    path: Path, poll_interval: float, rescan_interval: Callable[[], float] = lambda: 10.0
) -> AsyncGenerator[frozenset[str] | None, None]:
    """Yields whenever files below `path` may have changed: on inotify events (watchfiles)
    the paths they named, since the last yield; at least every `rescan_interval()` seconds,
    in case an event was missed (or a file is settling), None: look at everything. Where
    the directory cannot be watched, None every `poll_interval` seconds."""
    named: set[str] = set()
    arrived = asyncio.Event()

    async def watch() -> None:
        async for batch in watchfiles.awatch(
            path, watch_filter=None, debounce=50, step=20, ignore_permission_denied=True
        ):
            named.update(changed for _, changed in batch)
            arrived.set()

    watcher = asyncio.create_task(watch(), name=f"watch {path}")
    try:
        while not watcher.done():
            try:
                async with asyncio.timeout(rescan_interval()):
                    await arrived.wait()
            except TimeoutError:
                arrived.clear()
                named.clear()
                yield None
                continue
            arrived.clear()
            batch, named = frozenset(named), set()
            yield batch
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

    An error is contained in its file: that file's last good version stays in force (see
    `FleetReader`; with `state_dir`, also across a restart) while every other file's changes
    apply, and the errors are in `status()`. Only what changed is yielded: the config when
    the fleet-wide files changed, a cluster's snapshot when its objects did. With
    `watch=False` the directory is read once.
    """

    def __init__(
        self,
        path: str | Path,
        poll_interval: float = 0.5,
        watch: bool = True,
        state_dir: Path | None = None,
    ) -> None:
        self._path = Path(path)
        self._poll_interval = poll_interval
        self._watch = watch
        self._state_dir = state_dir
        self._status = SourceStatus(Health.STARTING)

    @property
    def name(self) -> str:
        return f"static:{self._path}"

    def status(self) -> SourceStatus:
        return self._status

    async def updates(self) -> AsyncIterator[SourceUpdate]:
        config: FleetConfig | None = None
        snapshots: dict[str, SiteSnapshot] = {}
        reader = await asyncio.to_thread(FleetReader, self._path, self._state_dir, self._watch)
        changes = (
            directory_changes(self._path, self._poll_interval, lambda: _rescan_interval(reader))
            if self._watch
            else None
        )
        changed: frozenset[str] | None = None  # the first read looks at everything
        try:
            while True:
                fleet, errors = await asyncio.to_thread(reader.read, changed)
                self._report(errors, reader.held)
                # Bodies alone may change (a field the config does not read): zones need them.
                if config is None or fleet.config != config or fleet.bodies is not config.bodies:
                    config = fleet.config
                    yield config
                for snapshot in fleet.snapshots:
                    last = snapshots.get(snapshot.cluster)
                    if last is not snapshot and last != snapshot:
                        snapshots[snapshot.cluster] = snapshot
                        yield snapshot
                if changes is None:
                    return
                changed = await anext(changes)
        finally:
            if changes is not None:
                await changes.aclose()

    def _report(self, errors: list[ConfigError], held: tuple[str, ...]) -> None:
        """Log the errors when they change (not on every read) and set the status."""
        last = self._status
        if tuple(errors) != last.errors:
            for error in errors:
                log.error("%s", error)
            for name in held:
                log.warning("%s: its last good version stays in force until it is fixed", name)
            if not errors and last.errors:
                log.info("the fleet's configuration errors are fixed: every file applies")
        detail = ""
        if errors:
            detail = plural(len(errors), "configuration error")
            if held:
                detail += f"; the last good version of {plural(len(held), 'file')} serves"
        health = Health.DEGRADED if errors else Health.HEALTHY
        self._status = SourceStatus(health, detail, tuple(errors))


def _rescan_interval(reader: FleetReader) -> float:
    """Read again soon while a file is being written, else every 10 s in case an inotify
    event was missed."""
    return SETTLE_SECONDS / 4 if reader.settling else 10.0
