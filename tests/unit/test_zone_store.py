"""The global's store of what it holds of a zone (`kontinuum.discovery.zone_store`)."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from kontinuum.discovery.zone import ZoneSource
from kontinuum.discovery.zone_store import ReceivedObject, ZoneObjects
from kontinuum.federation.objects import content_version, site_object


def service(name: str, port: int = 80) -> ReceivedObject:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }
    return site_object(body).received()


def store_of(path: Path) -> ZoneObjects:
    return ZoneObjects(path, "edge-paris", content_version)


def test_objects_are_stored_one_file_each_and_removed(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    assert store.load() == []
    store.save({"Service/demo/a": service("a"), "Service/demo/b": service("b")})
    store.save({"Service/demo/a": service("a", 81), "Service/demo/b": None})
    assert store_of(tmp_path).load() == [service("a", 81)]
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    (path,) = store.directory.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unreadable_file_is_ignored_the_rest_loads(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    store.save({"Service/demo/a": service("a"), "Service/demo/b": service("b")})
    store.path("Service/demo/b").write_text("{not json")
    (store.directory / "elsewhere.json").write_text(store.path("Service/demo/a").read_text())
    assert store.load() == [service("a")]


def rewrite(path: Path, change: Any) -> None:
    """Alter a stored object's JSON in a way that still parses, its version unchanged."""
    stored = json.loads(path.read_text())
    body = json.loads(base64.b64decode(stored["json"]))
    change(body)
    stored["json"] = base64.b64encode(json.dumps(body).encode()).decode()
    path.write_text(json.dumps(stored))


def test_an_object_whose_content_does_not_match_its_version_is_dropped_and_counted(
    tmp_path: Path, caplog: Any
) -> None:
    store = store_of(tmp_path)
    kept = {name: service(name.rsplit("/", 1)[1]) for name in ("Service/demo/a", "Service/demo/b")}
    store.save(kept)
    rewrite(store.path("Service/demo/b"), lambda body: body["spec"]["ports"][0].update(port=81))

    zone = ZoneSource("edge-paris")
    zone.keep(store_of(tmp_path))
    # Not claimed as held: a reconnecting zone is told it is missing, and sends it again.
    assert zone.held() == {"Service/demo/a": kept["Service/demo/a"].version}
    assert zone.stats.kept_altered == 1
    dropped = [r.getMessage() for r in caplog.records if "does not match" in r.getMessage()]
    assert len(dropped) == 1
    assert "dropping 1 stored object(s)" in dropped[0]
    assert dropped[0].endswith("the zone sends them again: Service/demo/b")


def test_an_object_stored_as_sent_keeps_its_own_bytes(tmp_path: Path) -> None:
    # A zone whose JSON is not encoded as kontinuum's zones encode it: its version is the
    # hash of what it sent, which the store keeps exactly.
    sent = (
        b'{ "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "demo", "name": "a"} }'
    )
    unversioned = ReceivedObject("Service/demo/a", "", "Service", json.loads(sent), len(sent), sent)
    obj = replace(unversioned, version=content_version(unversioned))
    assert obj.version != content_version(replace(obj, json=b""))  # not the canonical bytes'
    store = store_of(tmp_path)
    store.save({obj.name: obj})
    (loaded,) = store_of(tmp_path).load()
    assert (loaded.version, loaded.json) == (obj.version, sent)


def test_a_file_of_the_body_only_format_loads_when_its_body_matches(tmp_path: Path) -> None:
    store = store_of(tmp_path)
    store.directory.mkdir(parents=True)
    good, bad = service("a"), service("b")
    for obj, body in ((good, good.body), (bad, {**bad.body, "spec": {}})):
        content = {"format": 1, "name": obj.name, "version": obj.version, "kind": "Service"}
        store.path(obj.name).write_text(json.dumps({**content, "body": body}))
    assert store.load() == [good]
    assert store.altered == 1
