"""A Kubernetes cluster's view reads again only the objects its watch events changed, and
is always what reading every object anew gives (`parse_cluster_objects`): a property test
over random lists, watch events and relists, with duplicates, missing Services, wrong port
names and invalid objects."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kontinuum.control.fleet import parse_cluster_objects
from kontinuum.discovery.kube_view import (
    ENDPOINT_SLICE,
    SERVICE,
    SERVICE_EXPORT,
    Changed,
    ClusterView,
    Listed,
    WatchedKind,
)

NAMES = st.sampled_from(["web", "db", "api"])
NAMESPACES = st.sampled_from(["shop", "shop-b", "a"])


@st.composite
def service(draw: st.DrawFn) -> dict[str, Any]:
    port = draw(st.sampled_from([80, 81, 0]))  # 0: an invalid Service
    return {
        "metadata": {"name": draw(NAMES), "namespace": draw(NAMESPACES)},
        "spec": {"ports": [{"name": draw(st.sampled_from(["http", "grpc"])), "port": port}]},
    }


@st.composite
def endpoint_slice(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{draw(NAMES)}-{draw(st.integers(1, 2))}",
            "namespace": draw(NAMESPACES),
            "labels": {"kubernetes.io/service-name": draw(NAMES)},
        },
        "addressType": "IPv4",
        "ports": [{"name": draw(st.sampled_from(["http", "grpc"])), "port": 8080}],
        "endpoints": [{"addresses": [f"10.0.0.{draw(st.integers(1, 3))}"]}],
    }


@st.composite
def service_export(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": draw(NAMES), "namespace": draw(NAMESPACES)},
    }


OBJECTS: dict[WatchedKind, st.SearchStrategy[dict[str, Any]]] = {
    SERVICE: service(),
    ENDPOINT_SLICE: endpoint_slice(),
    SERVICE_EXPORT: service_export(),
}
KIND = st.sampled_from([SERVICE, ENDPOINT_SLICE, SERVICE_EXPORT])


@st.composite
def event(draw: st.DrawFn) -> Listed | Changed:
    kind = draw(KIND)
    if draw(st.integers(0, 5)) == 0:  # a relist now and then
        return Listed(kind, draw(st.lists(OBJECTS[kind], max_size=6)))
    change = draw(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]))
    return Changed(kind, change, draw(OBJECTS[kind]))


@settings(max_examples=150, deadline=None)
@given(
    first=st.tuples(*(st.lists(OBJECTS[k], max_size=5) for k in (SERVICE, ENDPOINT_SLICE))),
    exports=st.lists(service_export(), max_size=3),
    events=st.lists(event(), max_size=25),
)
def test_a_view_read_object_by_object_is_the_view_read_whole(
    first: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    exports: list[dict[str, Any]],
    events: list[Listed | Changed],
) -> None:
    view = ClusterView("eu", stale_after=60.0)
    view.apply(Listed(SERVICE, first[0]), 0.0, 0.0)
    view.apply(Listed(ENDPOINT_SLICE, first[1]), 0.0, 0.0)
    view.apply(Listed(SERVICE_EXPORT, exports), 0.0, 0.0)
    for step in [None, *events]:
        if step is not None:
            view.apply(step, 0.0, 0.0)
        got = view.snapshot()
        want, errors = parse_cluster_objects("eu", view.documents())
        assert got == want
        assert list(view.status(0.0).errors) == errors
