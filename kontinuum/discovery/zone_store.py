"""What the global holds of each zone's objects, kept on disk so that a zone reconnecting
to a restarted global sends only what changed (its `initial_resource_versions` are then
what was held before the restart).

    STATE_DIR/zones/<site>/<hash of the resource name>.json

One file per object, written when the object changes and deleted when it is removed: a
change costs its objects, not the site. Each holds the object's JSON exactly as the zone
sent it, with its version (the content hash of the wire, `content_version`), and is written
to a temporary file (0600, in a 0700 directory) and renamed into place, without fsync: a
file lost in a crash only makes the zone send that object again. For the same reason a file
that cannot be read, is corrupt, or is of another format is ignored with one warning, and
so is an object whose content does not hash to its version (a file altered or truncated in
a way that still parses): it is not claimed as held, so the zone sends it again; those are
counted (`altered`). Blocking: the source calls it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kontinuum.discovery.replace_file import replace_file

log = logging.getLogger("kontinuum.discovery.zone_store")

FORMAT: Final = 2
# Format 1 held the body only; its JSON is then the canonical encoding a zone sends.
_BODY_ONLY_FORMAT: Final = 1


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """An object's JSON as a zone encodes it: keys sorted, no spaces, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ReceivedObject:
    """One object as a zone published it: resource name, version (content hash), kind,
    the object as `kubectl get -o json` prints it, and the size of its JSON in bytes."""

    name: str
    version: str
    kind: str
    body: Mapping[str, Any]
    size: int = field(default=0, compare=False)  # derived: not part of what it is
    # The JSON as the zone sent it, which the version hashes; b"": `canonical_json(body)`.
    json: bytes = field(default=b"", compare=False, repr=False)

    @property
    def sent_json(self) -> bytes:
        return self.json or canonical_json(self.body)


ContentVersion = Callable[[ReceivedObject], str]
"""The version an object's content hashes to, as on the wire ("" when it cannot be one)."""


class ZoneObjects:
    """The stored objects of one zone's site (see the module doc); `content_version`
    checks each object loaded against its recorded version."""

    def __init__(self, state_dir: Path, site: str, content_version: ContentVersion) -> None:
        self.directory = state_dir / "zones" / site
        self._content_version = content_version
        self._failing = False  # the last write failed (logged once)
        self.altered = 0  # objects dropped at the last load: content not of their version

    def path(self, name: str) -> Path:
        return self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"

    def load(self) -> list[ReceivedObject]:
        """Every stored object that can be trusted (see the module doc)."""
        self.altered = 0
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        found: list[ReceivedObject] = []
        ignored, altered = 0, []
        for path in paths:
            try:
                obj = self._read(path)
            except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
                ignored += 1
                continue
            if self._content_version(obj) != obj.version:
                altered.append(obj.name)
                continue
            found.append(obj)
        if ignored:
            log.warning(
                "ignoring %d stored object(s) of %s that cannot be read: the zone sends them again",
                ignored,
                self.directory,
            )
        if altered:
            self.altered = len(altered)
            log.warning(
                "dropping %d stored object(s) of %s whose content does not match their "
                "version (altered or truncated on disk): the zone sends them again: %s",
                len(altered),
                self.directory,
                ", ".join(sorted(altered)[:5]) + (", ..." if len(altered) > 5 else ""),
            )
        return found

    def _read(self, path: Path) -> ReceivedObject:
        content = path.read_bytes()
        raw = json.loads(content)
        if raw.get("format") == FORMAT:
            try:
                sent = base64.b64decode(raw["json"], validate=True)
            except binascii.Error as error:
                raise ValueError(f"not base64: {error}") from None
            body = json.loads(sent)
        elif raw.get("format") == _BODY_ONLY_FORMAT:
            body = raw.get("body")
            sent = canonical_json(body) if isinstance(body, dict) else b""
        else:
            raise ValueError(f"not of format {FORMAT}")
        if not isinstance(body, dict):
            raise ValueError("its object is not a JSON object")
        obj = ReceivedObject(
            str(raw["name"]), str(raw["version"]), str(raw["kind"]), body, len(sent), sent
        )
        if self.path(obj.name) != path:
            raise ValueError("not where its name says")
        return obj

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
            "json": base64.b64encode(obj.sent_json).decode(),
        }
        encoded = json.dumps(content, separators=(",", ":")).encode()
        replace_file(self.path(obj.name), encoded)
