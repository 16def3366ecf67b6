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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import yaml

from kontinuum.control.fleet import parse_cluster_objects
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import ConfigError, Fleet, FleetConfig, SiteSnapshot
from kontinuum.control.objects import Document
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

CLUSTERS_DIR = "clusters"
log = logging.getLogger("kontinuum.discovery.static")


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def _read(path: Path, root: Path, errors: list[ConfigError]) -> Iterator[Document]:
    """The documents of one file, all or (when it cannot be read or parsed) none."""
    name = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
        bodies = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad dates raise ValueError
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(ConfigError(file=name, message=f"{where}invalid YAML: {problem}"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(file=name, message=f"cannot read: {exc}"))
        return
    for index, body in enumerate(bodies, start=1):
        yield Document(name, body, index)


def load_fleet(path: str | Path) -> tuple[Fleet, list[ConfigError]]:
    """Read a fleet directory into the sites and one snapshot per site, and every error."""
    root = Path(path)
    errors: list[ConfigError] = []
    if not root.is_dir():
        return Fleet(), [ConfigError(file=str(path), message="not a directory")]
    fleet_docs = [doc for f in _yaml_files(root) for doc in _read(f, root, errors)]
    config, config_errors = parse_fleet_config(fleet_docs)
    errors.extend(config_errors)
    known = {site.name for site in config.sites}
    snapshots: dict[str, SiteSnapshot] = {name: SiteSnapshot(name) for name in known}
    clusters = root / CLUSTERS_DIR
    if clusters.is_dir():
        for directory in sorted(p for p in clusters.iterdir() if p.is_dir()):
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
            docs = [doc for f in _yaml_files(directory) for doc in _read(f, root, errors)]
            snapshot, cluster_errors = parse_cluster_objects(directory.name, docs)
            snapshots[directory.name] = snapshot
            errors.extend(cluster_errors)
    fleet = Fleet(
        sites=config.sites,
        snapshots=tuple(snapshots[name] for name in sorted(snapshots)),
        grants=config.grants,
        routing=config.routing,
    )
    return fleet, errors


def fleet_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when any file of a fleet directory changes (name, mtime, size)."""
    stamps = []
    for file in sorted(path.rglob("*.y*ml")):
        with contextlib.suppress(OSError):
            stat = file.stat()
            stamps.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


class StaticSource:
    """A fleet directory as a `Source`, polled for changes every `poll_interval` seconds.

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
        stamp = None
        while True:
            current = await asyncio.to_thread(fleet_stamp, self._path)
            if current != stamp:
                stamp = current
                fleet, errors = await asyncio.to_thread(load_fleet, self._path)
                for error in errors:
                    log.error("%s", error)
                if errors and config is not None:
                    log.error("%d error(s): the last good fleet stays in force", len(errors))
                    detail = f"{len(errors)} configuration error(s); the last good fleet serves"
                    self._status = SourceStatus(Health.DEGRADED, detail, tuple(errors))
                else:
                    detail = f"{len(errors)} configuration error(s)" if errors else ""
                    health = Health.DEGRADED if errors else Health.HEALTHY
                    self._status = SourceStatus(health, detail, tuple(errors))
                    if fleet.config != config:
                        config = fleet.config
                        yield config
                    for snapshot in fleet.snapshots:
                        if snapshots.get(snapshot.cluster) != snapshot:
                            snapshots[snapshot.cluster] = snapshot
                            yield snapshot
            if not self._watch:
                return
            await asyncio.sleep(self._poll_interval)
