"""`PlaneBuilder` against `build_plane`: whatever a source does to a cluster's snapshot
between two updates (objects carried over or built again, inserted anywhere, removed,
replaced, moved, even repeated), the incremental plane, its index and the keys it reports
as changed equal what a build from scratch says."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from kontinuum.control.mcs import build_plane
from kontinuum.control.model import (
    ClusterSite,
    Endpoint,
    EndpointPort,
    Fleet,
    Service,
    ServiceExport,
    ServicePort,
    SiteSnapshot,
)
from kontinuum.control.plane import PlaneService, ServicePlane
from kontinuum.control.plane_builder import PlaneBuilder

SITES = (ClusterSite("east", "us-east"), ClusterSite("west", "us-west"))
KEYS = tuple((ns, name) for ns in ("a", "b") for name in ("p", "q", "r"))
KINDS = ("services", "endpoints", "exports")


def make(kind: str, cluster: str, key: tuple[str, str], variant: int) -> object:
    """A new object of `kind` for `key`; `variant` sets what tells equal ones apart."""
    namespace, name = key
    if kind == "services":
        port = ServicePort(80 + variant % 2, "http", target_port=8080)
        return Service(
            cluster, namespace, name, (port,), "Headless" if variant == 3 else "ClusterIP"
        )
    if kind == "endpoints":
        ports = (EndpointPort(8080, "http"),)
        return Endpoint(cluster, namespace, name, (f"10.0.{variant}.1",), ports, ready=variant != 2)
    created = datetime(2026, 1, 1 + variant % 3, tzinfo=UTC)
    return ServiceExport(cluster, namespace, name, created if variant else None)


@dataclass
class Edit:
    cluster: int
    kind: int
    op: str
    at: int
    key: int
    variant: int


edits = st.builds(
    Edit,
    cluster=st.integers(0, 1),
    kind=st.integers(0, 2),
    op=st.sampled_from(("insert", "insert", "remove", "replace", "move", "repeat", "rebuild")),
    at=st.integers(0, 99),  # where, in hundredths of the list
    key=st.integers(0, len(KEYS) - 1),
    variant=st.integers(0, 3),
)


def apply_edit(state: list[dict[str, list[object]]], edit: Edit) -> None:
    site = SITES[edit.cluster].name
    kind = KINDS[edit.kind]
    objects = state[edit.cluster][kind]
    new = make(kind, site, KEYS[edit.key], edit.variant)
    if edit.op == "insert" or not objects:
        objects.insert(edit.at * (len(objects) + 1) // 100, new)
        return
    at = edit.at * len(objects) // 100
    if edit.op == "remove":
        del objects[at]
    elif edit.op == "replace":
        objects[at] = new
    elif edit.op == "move":
        objects.insert(edit.variant % len(objects), objects.pop(at))
    elif edit.op == "repeat":  # the very same object a second time
        objects.insert(edit.variant % len(objects), objects[at])
    else:  # a source that builds every object of the cluster again, equal
        state[edit.cluster][kind] = [_copy(o) for o in objects]


def _copy(obj: object) -> object:
    """An equal object that is not the same."""
    copied = dataclasses.replace(obj)  # type: ignore[type-var]
    assert copied == obj
    assert copied is not obj
    return copied


def fleet_of(state: list[dict[str, list[object]]]) -> Fleet:
    return Fleet(
        sites=SITES,
        snapshots=tuple(
            SiteSnapshot(
                site.name,
                services=tuple(objects["services"]),  # type: ignore[arg-type]
                endpoints=tuple(objects["endpoints"]),  # type: ignore[arg-type]
                exports=tuple(objects["exports"]),  # type: ignore[arg-type]
            )
            for site, objects in zip(SITES, state, strict=True)
        ),
    )


def assert_same_plane(got: ServicePlane, want: ServicePlane) -> None:
    """`want` is a first plane (built whole); the index is checked against its services."""
    assert got == want
    by_key: dict[tuple[str, str], tuple[PlaneService, ...]] = {}
    by_workspace: dict[str, set[tuple[str, str]]] = {}
    for service in want.services:
        key = (service.namespace, service.name)
        by_key[key] = (*by_key.get(key, ()), service)
        by_workspace.setdefault(service.workspace, set()).add(key)
    assert got.index is not None
    assert dict(got.index.by_key) == by_key
    assert dict(got.index.by_workspace) == by_workspace


@settings(max_examples=400, deadline=None, database=None)
@given(
    first=st.lists(edits, max_size=30),
    steps=st.lists(st.lists(edits, min_size=1, max_size=4), min_size=1, max_size=8),
)
def test_the_incremental_plane_equals_one_built_from_scratch(
    first: list[Edit], steps: list[list[Edit]]
) -> None:
    state: list[dict[str, list[object]]] = [{kind: [] for kind in KINDS} for _ in SITES]
    for edit in first:
        apply_edit(state, edit)
    builder = PlaneBuilder()
    builder.update(fleet_of(state))
    assert_same_plane(builder.plane, build_plane(fleet_of(state)))
    for step in steps:
        before = builder.plane
        for edit in step:
            apply_edit(state, edit)
        fleet = fleet_of(state)
        change = builder.update(fleet)
        want = build_plane(fleet)
        assert_same_plane(builder.plane, want)
        differing = {k for k in KEYS if before.named(*k) != want.named(*k)}
        assert differing <= change.keys
        # and the plane services of a key not reported are the very objects they were
        for key in set(KEYS) - change.keys:
            assert builder.plane.named(*key) is before.named(*key)


def test_a_service_inserted_behind_an_equal_copy_does_not_take_the_first_place() -> None:
    """A source hands over an equal copy of a cluster's Service in front of the one it had,
    then inserts another Service of that name between the two: the first Service still
    decides the ports, as a build from scratch says (the copy is not the object indexed)."""
    on_80 = Service("west", "a", "q", (ServicePort(80, "http", target_port=8080),))
    copy_on_80 = _copy(on_80)
    on_81 = Service("west", "a", "q", (ServicePort(81, "http", target_port=8080),))
    builder = PlaneBuilder()
    for services in ((on_80,), (copy_on_80, on_80), (copy_on_80, on_81, on_80)):
        fleet = Fleet(sites=SITES, snapshots=(SiteSnapshot("west", services=services),))
        builder.update(fleet)
        assert_same_plane(builder.plane, build_plane(fleet))
    (service,) = builder.plane.named("a", "q")
    assert [port.port for port in service.ports] == [80]


def test_an_export_inserted_between_two_of_the_same_object_does_not_become_the_last() -> None:
    """A source repeats one ServiceExport object, then inserts another between the two:
    the last export (the repeated one, the oldest in the fleet) still decides precedence,
    so the cluster-set service keeps west's type."""
    east = SiteSnapshot(
        "east",
        services=(Service("east", "a", "q", (ServicePort(80, "http"),), "ClusterIP"),),
        exports=(ServiceExport("east", "a", "q", datetime(2026, 1, 2, tzinfo=UTC)),),
    )
    oldest = ServiceExport("west", "a", "q", datetime(2026, 1, 1, tzinfo=UTC))
    newest = ServiceExport("west", "a", "q", datetime(2026, 1, 3, tzinfo=UTC))
    west_service = Service("west", "a", "q", (ServicePort(80, "http"),), "Headless")
    builder = PlaneBuilder()
    for exports in ((oldest,), (oldest, oldest), (oldest, newest, oldest)):
        west = SiteSnapshot("west", services=(west_service,), exports=exports)
        fleet = Fleet(sites=SITES, snapshots=(east, west))
        builder.update(fleet)
        assert_same_plane(builder.plane, build_plane(fleet))
    clusterset = next(s for s in builder.plane.named("a", "q") if s.scope == "")
    assert clusterset.type == "Headless"
