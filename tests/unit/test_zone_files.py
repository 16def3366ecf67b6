"""What `kontinuum zone --config DIR` publishes of a site's files (`SiteFiles`)."""

from __future__ import annotations

import os
from pathlib import Path

from kontinuum.federation.zone import SiteFiles

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  ports: [{{name: http, port: {port}}}]
"""


def write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_the_objects_of_every_file_and_what_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        SERVICE.format(name="a", port=80)
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\n"
    )
    (tmp_path / "b.yml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- "
        + SERVICE.format(name="b", port=80).replace("\n", "\n  ")
    )
    (tmp_path / "c.yaml").write_text(SERVICE.format(name="a", port=81))  # a again
    (tmp_path / "d.yaml").write_text("kind: [")
    (tmp_path / "notes.txt").write_text("not YAML: not read")
    objects, problems = SiteFiles(tmp_path).read()
    assert sorted(o.name for o in objects) == ["Service/demo/a", "Service/demo/b"]
    assert [o.body["spec"]["ports"][0]["port"] for o in objects if o.name.endswith("/a")] == [80]
    assert problems[0] == (
        "a.yaml: document 2: kind 'Secret' is not published (only Service, EndpointSlice, "
        "ServiceExport)"
    )
    assert problems[1] == "c.yaml: Service/demo/a is declared twice; the first counts"
    assert problems[2].startswith("d.yaml: line ")
    assert "invalid YAML" in problems[2]


def test_only_a_changed_file_is_read_again(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(SERVICE.format(name=name, port=80))
    files = SiteFiles(tmp_path)
    first, _ = files.read()
    write(tmp_path / "b.yaml", SERVICE.format(name="b", port=81))
    second, _ = files.read()
    (a1, b1), (a2, b2) = sorted(first, key=lambda o: o.name), sorted(second, key=lambda o: o.name)
    assert a2 is a1  # not read again: the same object, the same version
    assert b2.version != b1.version
    (tmp_path / "a.yaml").unlink()
    assert [o.name for o in files.read()[0]] == ["Service/demo/b"]


def test_a_file_caught_halfway_or_broken_keeps_its_last_good_objects(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(tmp_path / f"{name}.yaml", SERVICE.format(name=name, port=80))
    files = SiteFiles(tmp_path)
    first, _ = files.read()
    # Truncated by a writer that has not written yet: a's Service stays.
    (tmp_path / "a.yaml").write_text("")
    objects, problems = files.read()
    assert sorted(o.name for o in objects) == ["Service/demo/a", "Service/demo/b"]
    assert problems == [
        "a.yaml: suddenly empty (a write caught halfway?)",
        "a.yaml: its last good version (1 objects) stays",
    ]
    # Broken YAML: the last good version still stays, and b's change applies meanwhile.
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: [")
    write(tmp_path / "b.yaml", SERVICE.format(name="b", port=81))
    objects, problems = files.read()
    by_name = {o.name: o for o in objects}
    assert by_name["Service/demo/a"] is next(o for o in first if o.name.endswith("/a"))
    assert by_name["Service/demo/b"].body["spec"]["ports"][0]["port"] == 81
    assert "invalid YAML" in problems[0]
    # Repaired, it applies; deleted, its objects go.
    write(tmp_path / "a.yaml", SERVICE.format(name="a", port=82))
    objects, problems = files.read()
    assert problems == []
    assert {o.name: o.body["spec"]["ports"][0]["port"] for o in objects}["Service/demo/a"] == 82
    (tmp_path / "a.yaml").unlink()
    assert [o.name for o in files.read()[0]] == ["Service/demo/b"]


def test_a_directory_that_cannot_be_listed_keeps_what_was_read(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write(site / "a.yaml", SERVICE.format(name="a", port=80))
    files = SiteFiles(site)
    files.read()
    site.rename(tmp_path / "elsewhere")  # a ConfigMap volume being swapped, say
    objects, problems = files.read()
    assert [o.name for o in objects] == ["Service/demo/a"]
    assert problems[0].endswith("kept as it was")
