"""A re-read after an inotify batch (told the paths that changed) against a reader that
looks at every file each time: the same fleet, errors (in order) and held files, whatever
sequence of writes, deletions and broken versions the fleet goes through."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kontinuum.discovery.static import FleetReader

PROFILE = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata: {{name: {name}}}
"""


def _service(name: str, ports: str = "http") -> str:
    listed = ", ".join(f"{{name: {p}, port: {80 + i}}}" for i, p in enumerate(ports.split()))
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{ports: [{listed}]}}
"""


def _slice(service: str, port: str = "http", address: str = "10.0.0.1") -> str:
    return f"""\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports: [{{name: {port}, port: 8080}}]
endpoints: [{{addresses: [{address}]}}]
"""


def _export(name: str) -> str:
    return f"""\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: shop}}
"""


CONTENTS = st.sampled_from(
    (
        _service("a") + "---\n" + _slice("a") + "---\n" + _export("a"),
        _service("a", "grpc") + "---\n" + _slice("a", address="10.0.0.2"),
        _service("b") + "---\n" + _slice("b", "metrics"),
        _slice("a", address="10.0.0.3") + "---\n" + _export("b"),
        _service("a") + "---\n" + _service("a"),  # a duplicate in one file
        "kind: [unclosed\n",  # not YAML: its last good version is held
        "",  # empty: held too, when there was a good version
        "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {type: ExternalName}\n",
    )
)
FILES = st.sampled_from(
    ("clusters/east/a.yaml", "clusters/east/b.yml", "clusters/west/a.yaml", "fleet.yaml")
)
# (file, content): None deletes it; the fleet-wide file holds one or both ClusterProfiles.
STEPS = st.lists(
    st.one_of(
        st.tuples(FILES.filter(lambda f: f != "fleet.yaml"), st.one_of(st.none(), CONTENTS)),
        st.tuples(
            st.just("fleet.yaml"),
            st.sampled_from((PROFILE.format(name="east"), PROFILE.format(name="west"))),
        ),
    ),
    min_size=1,
    max_size=10,
)


def _write(root: Path, file: str, content: str | None) -> None:
    path = root / file
    if content is None:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content)
    os.replace(temporary, path)  # a new inode: a change, whatever the clock says


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_a_reread_of_the_named_files_is_the_reread_of_every_file(
    steps: list[tuple[str, str | None]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "fleet.yaml").write_text(
            PROFILE.format(name="east") + "---\n" + PROFILE.format(name="west")
        )
        for cluster in ("east", "west"):
            (root / "clusters" / cluster).mkdir(parents=True)
        (root / "clusters" / "east" / "a.yaml").write_text(_service("a") + "---\n" + _slice("a"))
        told, looking = FleetReader(root), FleetReader(root)
        assert told.read() == looking.read()
        for file, content in steps:
            _write(root, file, content)
            named = {str(root / file), str((root / file).with_name(f".{Path(file).name}.tmp"))}
            assert told.read(named) == looking.read()
            assert told.held == looking.held
        assert told.read(set()) == looking.read()


def test_a_reread_after_an_inotify_batch_lists_no_directory(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(PROFILE.format(name="east"))
    cluster = tmp_path / "clusters" / "east"
    cluster.mkdir(parents=True)
    (cluster / "a.yaml").write_text(_service("a"))
    reader = FleetReader(tmp_path)
    reader.read()
    # A file inotify did not name is not seen, not even by a listing of its directory...
    (cluster / "b.yaml").write_text(_service("b"))
    fleet, _ = reader.read({str(cluster / "a.yaml")})
    assert [s.name for s in fleet.snapshots[0].services] == ["a"]
    # ...until it is named, or the periodic rescan looks at everything.
    fleet, _ = reader.read({str(cluster / "b.yaml")})
    assert [s.name for s in fleet.snapshots[0].services] == ["a", "b"]
    (cluster / "a.yaml").unlink()
    fleet, _ = reader.read(set())
    assert [s.name for s in fleet.snapshots[0].services] == ["a", "b"]
    fleet, _ = reader.read(None)
    assert [s.name for s in fleet.snapshots[0].services] == ["b"]


def test_a_file_deleted_as_inotify_tells_is_not_brought_back_by_a_restart(
    tmp_path: Path,
) -> None:
    fleet_dir, state = tmp_path / "fleet", tmp_path / "state"
    cluster = fleet_dir / "clusters" / "east"
    cluster.mkdir(parents=True)
    (fleet_dir / "fleet.yaml").write_text(PROFILE.format(name="east"))
    (cluster / "a.yaml").write_text(_service("a"))
    reader = FleetReader(fleet_dir, state)
    reader.read()
    (cluster / "a.yaml").unlink()
    fleet, errors = reader.read({str(cluster / "a.yaml")})
    assert (fleet.snapshots[0].services, errors) == ((), [])
    (cluster / "a.yaml").write_text("kind: [unclosed\n")  # no stored good version to serve
    fleet, errors = FleetReader(fleet_dir, state).read()
    assert fleet.snapshots[0].services == ()
    assert [e.file for e in errors] == ["clusters/east/a.yaml"]
