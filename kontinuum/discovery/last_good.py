"""The last good version of each fleet file, kept on disk so that a restart keeps it too.

A file with an error keeps its last good version in force while the process runs; stored
under a state directory, that version also serves after a restart with the error still
there (DESIGN principle 9: what protects traffic while running holds across a restart).

    STATE_DIR/static/<hash of the fleet directory's absolute path>/<relative path>

Each copy is written whole to a temporary file and renamed, so a crash never leaves half a
copy. A file deleted from the fleet has its copy deleted: a deletion is a change, never an
error to protect against.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Collection
from pathlib import Path

from kontinuum.discovery.replace_file import TEMPORARY_PREFIX, replace_file

log = logging.getLogger("kontinuum.discovery.last_good")


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class LastGoodFiles:
    """The stored last good copies of one fleet directory's files, by relative path."""

    def __init__(self, state_dir: Path, fleet_dir: Path) -> None:
        key = _digest(str(fleet_dir.resolve()).encode())[:16]
        self.directory = state_dir / "static" / key
        self._digests: dict[str, str] = {}  # name -> digest of its stored copy
        self._usable = True
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for path in self.directory.rglob("*"):
                if path.is_file() and not path.name.startswith(TEMPORARY_PREFIX):
                    name = path.relative_to(self.directory).as_posix()
                    self._digests[name] = _digest(path.read_bytes())
        except OSError as error:
            self._usable = False
            log.warning(
                "cannot keep the last good fleet files under %s (%s): a restart serves only "
                "what is valid at that time",
                self.directory,
                error,
            )

    def load(self, name: str) -> bytes | None:
        """The stored copy of `name`, if there is one."""
        if name not in self._digests:
            return None
        try:
            content = (self.directory / name).read_bytes()
        except OSError:
            return None
        return content or None  # empty: cut short by a crash, or a file that was empty

    def keep(self, name: str, content: bytes) -> None:
        """Store `content` as the last good version of `name` (a no-op when it is already)."""
        digest = _digest(content)
        if not self._usable or self._digests.get(name) == digest:
            return
        target = self.directory / name
        # No fsync per copy: a first start stores every file, and a rename that replaces a
        # file is ordered after its data by the file systems in use (ext4's auto_da_alloc,
        # xfs, btrfs). A copy found empty is not used (`load`).
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            replace_file(target, content)
        except OSError as error:
            log.warning("cannot store the last good version of %s: %s", name, error)
            return
        self._digests[name] = digest

    def keep_only(self, names: set[str]) -> None:
        """Delete the copies of files the fleet no longer has."""
        for name in self._digests.keys() - names:
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
            del self._digests[name]

    def forget(self, names: Collection[str]) -> None:
        """Delete the copies of these files, which the fleet no longer has."""
        for name in names:
            if self._digests.pop(name, None) is not None:
                with contextlib.suppress(OSError):
                    (self.directory / name).unlink()
