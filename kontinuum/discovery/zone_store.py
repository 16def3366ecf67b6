"""What the global holds of each zone's objects, kept on disk so that a zone reconnecting
to a restarted global sends only what changed (its `initial_resource_versions` are then
what was held before the restart).

    STATE_DIR/zones/<site>/<hash of the resource name>.json

One file per object, written when the object changes and deleted when it is removed: a
change costs its objects, not the site. Each is written to a temporary file (0600, in a
0700 directory) and renamed into place, without fsync: a file lost in a crash only makes
the zone send that object again. A file that cannot be read, is corrupt, or is of another
format is ignored with one warning, for the same reason. Blocking: the source calls it in
a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kontinuum.discovery.replace_file import replace_file

log = logging.getLogger("kontinuum.discovery.zone_store")

FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class ReceivedObject:
    """One object as a zone published it: resource name, version (content hash), kind,
    the object as `kubectl get -o json` prints it, and the size of its JSON in bytes."""

    name: str
    version: str
    kind: str
    body: Mapping[str, Any]
    size: int = field(default=0, compare=False)  # derived: not part of what it is


class ZoneObjects:
    """The stored objects of one zone's site (see the module doc)."""

    def __init__(self, state_dir: Path, site: str) -> None:
        self.directory = state_dir / "zones" / site
        self._failing = False  # the last write failed (logged once)

    def path(self, name: str) -> Path:
        return self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"

    def load(self) -> list[ReceivedObject]:
        """Every stored object that can be trusted."""
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        found: list[ReceivedObject] = []
        ignored = 0
        for path in paths:
            try:
                content = path.read_bytes()
                raw = json.loads(content)
                if raw.get("format") != FORMAT or not isinstance(raw.get("body"), dict):
                    raise ValueError(f"not of format {FORMAT}")
                obj = ReceivedObject(
                    str(raw["name"]),
                    str(raw["version"]),
                    str(raw["kind"]),
                    raw["body"],
                    len(content),  # about its JSON's, a little more
                )
                if self.path(obj.name) != path:
                    raise ValueError("not where its name says")
            except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
                ignored += 1
                continue
            found.append(obj)
        if ignored:
            log.warning(
                "ignoring %d stored object(s) of %s that cannot be read: the zone sends them again",
                ignored,
                self.directory,
            )
        return found

    def save(self, changes: Mapping[str, ReceivedObject | None]) -> None:
        """Write the objects changed, delete those removed (None)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name, obj in changes.items():
                if obj is None:
                    with contextlib.suppress(FileNotFoundError):
                        self.path(name).unlink()
                    continue
                self._write(obj)
        except OSError as error:
            if not self._failing:
                log.warning(
                    "cannot store the objects of zone %s in %s (%s): after a restart it "
                    "sends them again",
                    self.directory.name,
                    self.directory,
                    error,
                )
            self._failing = True
            return
        self._failing = False

    def _write(self, obj: ReceivedObject) -> None:
        content = {
            "format": FORMAT,
            "name": obj.name,
            "version": obj.version,
            "kind": obj.kind,
            "body": obj.body,
        }
        encoded = json.dumps(content, separators=(",", ":")).encode()
        replace_file(self.path(obj.name), encoded)
