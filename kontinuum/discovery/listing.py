"""The sorted listing of a directory's YAML files, and keeping it up to date for the
paths an inotify batch named, without listing the directory again."""

from __future__ import annotations

import os
import stat
from bisect import bisect_left
from collections.abc import Collection
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")


def yaml_files(directory: str | Path) -> list[str]:
    # scandir knows a plain file's type from the listing: one stat per file, in file_key.
    # Plain strings: a Path per file, hashed and compared, cost more than the stat. A link
    # that leads nowhere is listed too, so that it is an error rather than a silence.
    with os.scandir(directory) as entries:
        return sorted(
            e.path
            for e in entries
            if e.name.endswith(YAML_SUFFIXES) and (e.is_file() or e.is_symlink())
        )


def relist(paths: list[str], named: Collection[str]) -> list[str]:
    """Bring a directory's sorted listing up to date for the paths named in it (as
    `yaml_files` lists them); those that are gone."""
    gone: list[str] = []
    for path in named:
        i = bisect_left(paths, path)
        there = i < len(paths) and paths[i] == path
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = 0
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            if not there:
                paths.insert(i, path)
        elif there:
            del paths[i]
            gone.append(path)
    return gone


def listed(paths: list[str], path: str) -> bool:
    i = bisect_left(paths, path)
    return i < len(paths) and paths[i] == path


def mark(paths: list[str], path: str, member: bool) -> None:
    """Add `path` to, or remove it from, a sorted list."""
    i = bisect_left(paths, path)
    there = i < len(paths) and paths[i] == path
    if member and not there:
        paths.insert(i, path)
    elif there and not member:
        del paths[i]
