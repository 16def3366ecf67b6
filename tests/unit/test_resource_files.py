"""Envoy resources from YAML view files, and a directory kept in step with a cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from kontinuum.app import ResourceDirectory
from kontinuum.bootstrap import envoy_bootstrap
from kontinuum.resource_files import ResourceFileError, load_snapshot
from kontinuum.xds import SnapshotCache, types

EXAMPLE = Path(__file__).parents[2] / "examples" / "resources" / "demo.yaml"


def test_example_view_loads_with_nested_typed_configs() -> None:
    snapshot = load_snapshot(EXAMPLE)

    assert set(snapshot.resources(types.CLUSTER)) == {"backend"}
    assert set(snapshot.resources(types.ENDPOINT)) == {"backend"}
    listener = snapshot.resources(types.LISTENER)["http"].message
    assert (
        listener.filter_chains[0].filters[0].typed_config.type_url.endswith("HttpConnectionManager")
    )
    assert set(snapshot.resources(types.ROUTE)) == {"local"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {name: x}", "@type"),
        ('- {"@type": type.googleapis.com/no.such.Type, name: x}', "no.such.Type"),
        (
            '- {"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: x, typo: 1}',
            "typo",
        ),
        (
            '- {"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: x, type: EDS}',
            "no ClusterLoadAssignment",
        ),
        ("resources: {a: 1}", "expected a list"),
        ("- [unclosed", "demo.yaml"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    with pytest.raises(ResourceFileError, match=message.replace(".", r"\.")):
        load_snapshot(path)


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_bad_edit_keeps_the_last_good_view_and_reports_it(tmp_path: Path) -> None:
    view_file = tmp_path / "demo.yaml"
    shutil.copy(EXAMPLE, view_file)
    cache = SnapshotCache()
    directory = ResourceDirectory(tmp_path, cache)
    assert directory.reload()
    good = cache.snapshot("demo")
    assert good is not None

    view_file.write_text(EXAMPLE.read_text().replace("cluster_name: backend", "cluster_name: gone"))
    _touch_later(view_file)
    assert not directory.reload()

    assert cache.snapshot("demo") is good
    assert "no ClusterLoadAssignment" in directory.errors["demo"]

    view_file.write_text(EXAMPLE.read_text().replace("port_value: 8081", "port_value: 8082"))
    _touch_later(view_file)
    assert directory.reload()
    assert "demo" not in directory.errors
    current = cache.snapshot("demo")
    assert current is not None
    cla = current.resources(types.ENDPOINT)["backend"].message
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 8082


def test_deleted_file_removes_its_view_once_it_stays_deleted(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "demo.yaml")
    cache = SnapshotCache()
    directory = ResourceDirectory(tmp_path, cache)
    directory.reload()
    (tmp_path / "demo.yaml").unlink()

    assert not directory.reload()  # maybe an editor rewriting it: keep serving
    assert cache.snapshot("demo") is not None
    assert directory.reload()
    assert cache.snapshot("demo") is None


def test_a_file_rewritten_between_reloads_keeps_its_view(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "demo.yaml")
    cache = SnapshotCache()
    directory = ResourceDirectory(tmp_path, cache)
    directory.reload()
    (tmp_path / "demo.yaml").unlink()
    directory.reload()
    shutil.copy(EXAMPLE, tmp_path / "demo.yaml")

    directory.reload()
    directory.reload()
    assert cache.snapshot("demo") is not None


def test_an_empty_file_is_refused_but_an_explicit_empty_list_is_a_view(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("")
    with pytest.raises(ResourceFileError, match="no resources"):
        load_snapshot(path)
    path.write_text("resources: []\n")
    assert not list(load_snapshot(path).type_urls)


def test_example_bootstrap_is_what_kontinuum_generates() -> None:
    path = EXAMPLE.parent / "envoy-bootstrap.yaml"
    expected = envoy_bootstrap(
        node_id="sidecar-1", cluster="demo", xds_address="127.0.0.1:18000", admin_port=9901
    )
    assert yaml.safe_load(path.read_text()) == expected
