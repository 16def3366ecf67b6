"""A cluster assembled file change by file change (`Assembly`) against the whole assembly
(`assemble_cluster`) of the files as they are after each change."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kontinuum.control.assembly import Assembly
from kontinuum.control.fleet import ClusterObject, assemble_cluster, read_cluster_documents
from kontinuum.control.objects import Document

CLUSTER = "east"
FILES = tuple(f"clusters/{CLUSTER}/f{i}.yaml" for i in range(6))
NAMES = st.sampled_from(("a", "b", "c", "d"))
NAMESPACES = st.sampled_from(("default", "shop"))
PORT_NAMES = st.sampled_from(("http", "grpc", "metrics"))


def _meta(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **extra}


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(PORT_NAMES, min_size=1, max_size=3, unique=True))
    ports = [{"name": n, "port": 80 + i} for i, n in enumerate(names)]
    spec: dict[str, Any] = {"ports": ports}
    if draw(st.integers(0, 9)) == 0:
        spec["type"] = "ExternalName"  # an object with errors of its own
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(draw(NAMES), draw(NAMESPACES)),
        "spec": spec,
    }


@st.composite
def slices(draw: st.DrawFn) -> dict[str, Any]:
    service = draw(NAMES)
    names = draw(st.lists(PORT_NAMES, max_size=2, unique=True))
    address = f"10.0.0.{draw(st.integers(1, 9))}"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(
            f"{service}-{draw(st.integers(0, 2))}",
            draw(NAMESPACES),
            labels={"kubernetes.io/service-name": service},
        ),
        "addressType": draw(st.sampled_from(("IPv4", "IPv4", "IPv4", "FQDN"))),
        "ports": [{"name": n, "port": 8080} for n in names],
        "endpoints": [{"addresses": [address]}],
    }


@st.composite
def exports(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": _meta(draw(NAMES), draw(NAMESPACES)),
    }


BROKEN = st.sampled_from(
    (
        {"apiVersion": "v1", "kind": "Service"},  # no metadata
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        "not an object",
        {"apiVersion": "v1", "kind": "List", "items": [3]},
    )
)
DOCUMENTS = st.lists(st.one_of(services(), slices(), exports(), BROKEN), max_size=6)


def _bulk(count: int, generation: int) -> list[dict[str, Any]]:
    """Many distinct objects in one file: more edits than are spliced one by one."""
    docs: list[dict[str, Any]] = []
    for i in range(count):
        name = f"bulk{i}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(name, "default"),
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": _meta(name, "default", labels={"kubernetes.io/service-name": name}),
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [f"10.1.0.{generation % 250 + 1}"]}],
            }
        )
    return docs


CHANGE = st.tuples(
    st.sampled_from(FILES),
    st.one_of(
        st.none(),  # the file is removed
        DOCUMENTS,
        st.builds(_bulk, st.integers(0, 40), st.integers(0, 3)),
    ),
)
# One change batch: several files at once (a full read), usually one (an inotify batch).
BATCHES = st.lists(st.lists(CHANGE, min_size=1, max_size=3), min_size=1, max_size=12)


def _objects(file: str, docs: list[Any] | None) -> tuple[ClusterObject, ...]:
    if docs is None:
        return ()
    return tuple(
        read_cluster_documents(
            CLUSTER, [Document(file, body, i) for i, body in enumerate(docs, start=1)]
        )
    )


@settings(max_examples=300, deadline=None)
@given(BATCHES)
def test_a_cluster_changed_file_by_file_is_the_cluster_assembled_whole(
    batches: list[list[tuple[str, list[Any] | None]]],
) -> None:
    assembly = Assembly(CLUSTER)
    files: dict[str, tuple[ClusterObject, ...]] = {}
    for batch in batches:
        changes = {file: _objects(file, docs) for file, docs in batch}
        files.update(changes)
        snapshot = assembly.change(changes)
        expected, errors = assemble_cluster(
            CLUSTER, [o for file in sorted(files) for o in files[file]]
        )
        assert snapshot == expected
        assert assembly.errors() == errors


def test_an_unchanged_service_stays_the_same_object_and_a_changed_one_is_new() -> None:
    assembly = Assembly(CLUSTER)
    first = assembly.change({FILES[0]: _objects(FILES[0], _bulk(3, 0))})
    second = assembly.change({FILES[1]: _objects(FILES[1], _bulk(0, 0))})
    assert second is first  # an empty file changes nothing
    third = assembly.change({FILES[0]: _objects(FILES[0], _bulk(3, 1))})
    assert [e.addresses for e in third.endpoints] == [("10.1.0.2",)] * 3
    assert all(a is not b for a, b in zip(first.services, third.services, strict=True))
