"""The global's store of what it holds of a zone (`kontinuum.discovery.zone_store`)."""

from __future__ import annotations

import stat
from pathlib import Path

from kontinuum.discovery.zone_store import ReceivedObject, ZoneObjects


def service(name: str, version: str) -> ReceivedObject:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}
    return ReceivedObject(f"Service/demo/{name}", version, "Service", body)


def test_objects_are_stored_one_file_each_and_removed(tmp_path: Path) -> None:
    store = ZoneObjects(tmp_path, "edge-paris")
    assert store.load() == []
    store.save({"Service/demo/a": service("a", "1"), "Service/demo/b": service("b", "1")})
    store.save({"Service/demo/a": service("a", "2"), "Service/demo/b": None})
    assert ZoneObjects(tmp_path, "edge-paris").load() == [service("a", "2")]
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    (path,) = store.directory.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unreadable_file_is_ignored_the_rest_loads(tmp_path: Path) -> None:
    store = ZoneObjects(tmp_path, "edge-paris")
    store.save({"Service/demo/a": service("a", "1"), "Service/demo/b": service("b", "1")})
    store.path("Service/demo/b").write_text("{not json")
    (store.directory / "elsewhere.json").write_text(store.path("Service/demo/a").read_text())
    assert store.load() == [service("a", "1")]
