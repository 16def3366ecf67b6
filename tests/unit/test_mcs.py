"""Multi-Cluster Services semantics (`kontinuum.control.mcs`) and ReferenceGrant grants."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.grants import parse_grants
from kontinuum.control.mcs import build_plane, visible_services
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
from kontinuum.control.objects import Document
from kontinuum.control.plane import (
    Condition,
    ExportStatus,
    Grant,
    Locality,
    PlaneEndpoint,
    PlaneService,
    ServicePlane,
)
from kontinuum.discovery.static import load_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
EU = ClusterSite("eu", "eu-central-1", "eu-central-1a", "backbone")
US = ClusterSite("us", "us-east-1", "us-east-1a", "backbone")
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
T1 = datetime(2026, 1, 6, 9, tzinfo=UTC)


def example_plane(grants: tuple[Grant, ...] = ()) -> ServicePlane:
    fleet, errors = load_fleet(EXAMPLE)
    assert errors == []
    return build_plane(fleet, grants)


def find(plane: ServicePlane, name: str, scope: str = "") -> PlaneService:
    return next(s for s in plane.services if s.name == name and s.scope == scope)


def ids(services: tuple[PlaneService, ...]) -> list[str]:
    return [f"{s.namespace}/{s.name}@{s.scope or '*'}" for s in services]


# --- the example fleet -----------------------------------------------------------------------


def test_the_example_fleet_plane() -> None:
    plane = example_plane()
    assert ids(plane.services) == [
        "demo/frontend@eu-central",
        "demo/hello@*",
        "payments/billing@*",
    ]
    hello = find(plane, "hello")
    assert hello.host == "hello.demo.svc.clusterset.local"
    assert hello.workspace == "demo"
    assert [(p.port, p.name, p.protocol, p.app_protocol) for p in hello.ports] == [
        (80, "http", "TCP", "http")
    ]
    paris = Locality("edge-paris", "eu-central-1", "eu-central-1-par-1a", "edge-paris")
    assert hello.ports[0].endpoints == (
        PlaneEndpoint("127.0.0.31", 8080, paris),
        PlaneEndpoint(
            "127.0.0.11", 8080, Locality("eu-central", "eu-central-1", "eu-central-1a", "backbone")
        ),
        PlaneEndpoint(
            "127.0.0.12", 8080, Locality("eu-central", "eu-central-1", "eu-central-1b", "backbone")
        ),
        PlaneEndpoint(
            "127.0.0.21", 8080, Locality("us-east", "us-east-1", "us-east-1a", "backbone")
        ),
        PlaneEndpoint(
            "127.0.0.22", 8080, Locality("us-east", "us-east-1", "us-east-1b", "backbone")
        ),
    )
    frontend = find(plane, "frontend", "eu-central")
    assert frontend.host == "frontend.demo.svc.cluster.local"
    assert frontend.reachable_from("eu-central")
    assert not frontend.reachable_from("us-east")
    billing = find(plane, "billing")
    assert billing.workspace == "payments"
    assert [e.address for e in billing.ports[0].endpoints] == ["127.0.0.14", "127.0.0.15"]
    ok = (
        Condition("Valid", "True", "Valid", "the Service to export exists"),
        Condition("Conflict", "False", "NoConflicts"),
        Condition("Ready", "True", "Ready", "merged into the cluster-set service"),
    )
    assert plane.exports == (
        ExportStatus("edge-paris", "demo", "hello", ok),
        ExportStatus("eu-central", "demo", "hello", ok),
        ExportStatus("us-east", "demo", "hello", ok),
        ExportStatus("eu-central", "payments", "billing", ok),
    )
    assert plane.sites == load_fleet(EXAMPLE)[0].sites


def test_the_plane_is_deterministic() -> None:
    fleet, _ = load_fleet(EXAMPLE)
    shuffled = Fleet(fleet.sites, tuple(reversed(fleet.snapshots)))
    assert build_plane(shuffled) == build_plane(fleet)


# --- hand-built fleets ---------------------------------------------------------------------------


def web(cluster: str, *ports: ServicePort, headless: bool = False) -> Service:
    return Service(
        cluster,
        "shop",
        "web",
        ports or (ServicePort(80, "http", target_port=8080),),
        "Headless" if headless else "ClusterIP",
    )


def endpoint(cluster: str, address: str, *ports: EndpointPort, **kw: object) -> Endpoint:
    return Endpoint(
        cluster,
        "shop",
        "web",
        (address,),
        ports or (EndpointPort(8080, "http"),),
        **kw,  # type: ignore[arg-type]
    )


def site(
    cluster: str,
    service: Service | None,
    *endpoints: Endpoint,
    created: datetime | None = None,
    exported: bool = True,
) -> SiteSnapshot:
    return SiteSnapshot(
        cluster,
        services=(service,) if service else (),
        endpoints=endpoints,
        exports=(ServiceExport(cluster, "shop", "web", created),) if exported else (),
    )


def conditions(plane: ServicePlane, cluster: str) -> tuple[Condition, ...]:
    return next(s.conditions for s in plane.exports if s.cluster == cluster)


def test_endpoint_readiness_zone_and_port_mapping() -> None:
    service = web("eu", ServicePort(80, "http", target_port="web"), ServicePort(9090, "metrics"))
    plane = build_plane(
        Fleet(
            (EU,),
            (
                site(
                    "eu",
                    service,
                    endpoint(
                        "eu", "10.0.0.2", EndpointPort(8080, "http"), EndpointPort(9100, "metrics")
                    ),
                    endpoint("eu", "10.0.0.1", EndpointPort(8081, "http"), terminating=True),
                    endpoint("eu", "10.0.0.3", EndpointPort(8082, "http"), ready=False, zone="b"),
                ),
            ),
        )
    )
    http, metrics = find(plane, "web").ports
    # Sorted by cluster, zone, address: zone "b" before "eu-central-1a".
    here = Locality.of(EU)
    assert http.endpoints == (
        PlaneEndpoint("10.0.0.3", 8082, Locality("eu", "eu-central-1", "b", "backbone"), False),
        PlaneEndpoint("10.0.0.1", 8081, here, ready=False),
        PlaneEndpoint("10.0.0.2", 8080, here),
    )
    assert metrics.endpoints == (PlaneEndpoint("10.0.0.2", 9100, here),)


def test_an_unnamed_port_uses_the_target_port_of_endpoints_without_ports() -> None:
    service = web("eu", ServicePort(80, target_port=8080))
    bare = Endpoint("eu", "shop", "web", ("10.0.0.1",))
    plane = build_plane(Fleet((EU,), (site("eu", service, bare),)))
    assert find(plane, "web").ports[0].endpoints == (
        PlaneEndpoint("10.0.0.1", 8080, Locality.of(EU)),
    )


def test_a_clashing_port_is_left_out_and_the_oldest_export_wins_it() -> None:
    plane = build_plane(
        Fleet(
            (EU, US),
            (
                site(
                    "eu", web("eu", ServicePort(81, "http")), endpoint("eu", "10.0.0.1"), created=T1
                ),
                site("us", web("us"), endpoint("us", "10.1.0.1"), created=T0),
            ),
        )
    )
    # Both exports are merged, but eu's http:81 clashes with us's older http:80.
    assert ids(plane.services) == ["shop/web@*"]
    merged = find(plane, "web")
    assert [(p.name, p.port) for p in merged.ports] == [("http", 80)]
    assert [e.address for e in merged.ports[0].endpoints] == ["10.1.0.1"]
    assert conditions(plane, "eu") == (
        Condition("Valid", "True", "Valid", "the Service to export exists"),
        Condition(
            "Conflict",
            "True",
            "PortConflict",
            "ports [http:81/TCP] differ from the cluster-set service's [http:80/TCP], the "
            "union of every export's ports; [http:81/TCP] clash with the ports of the export "
            "in cluster us, which wins (the oldest export): left out; this cluster's "
            "endpoints serve only the ports its Service has",
        ),
        Condition("Ready", "True", "Ready", "merged into the cluster-set service"),
    )
    assert conditions(plane, "us")[1] == Condition("Conflict", "False", "NoConflicts")


def test_the_cluster_set_service_exposes_the_union_of_the_exports_ports() -> None:
    grpc = ServicePort(9090, "grpc", app_protocol="grpc")
    plane = build_plane(
        Fleet(
            (EU, US),
            (
                site("eu", web("eu"), endpoint("eu", "10.0.0.1"), created=T0),
                site(
                    "us",
                    web("us", ServicePort(80, "http", target_port=8080), grpc),
                    endpoint(
                        "us", "10.1.0.1", EndpointPort(8080, "http"), EndpointPort(9090, "grpc")
                    ),
                    created=T1,
                ),
            ),
        )
    )
    merged = find(plane, "web")
    by_name = {p.name: [e.address for e in p.endpoints] for p in merged.ports}
    # Traffic to grpc reaches only the cluster whose Service has that port.
    assert by_name == {"http": ["10.0.0.1", "10.1.0.1"], "grpc": ["10.1.0.1"]}
    eu_conflict = conditions(plane, "eu")[1]
    assert (eu_conflict.status, eu_conflict.reason) == ("True", "PortConflict")
    assert (
        "[http:80/TCP] differ from the cluster-set service's [http:80/TCP, grpc:9090/TCP (grpc)]"
        in (eu_conflict.message)
    )
    assert "clash" not in eu_conflict.message
    assert conditions(plane, "us")[1] == Condition("Conflict", "False", "NoConflicts")
    assert all(
        c[2] == Condition("Ready", "True", "Ready", "merged into the cluster-set service")
        for c in (conditions(plane, "eu"), conditions(plane, "us"))
    )


def test_a_type_conflict_is_won_by_the_oldest_export() -> None:
    plane = build_plane(
        Fleet(
            (EU, US),
            (
                site("eu", web("eu", headless=True), endpoint("eu", "10.0.0.1"), created=T0),
                site("us", web("us"), endpoint("us", "10.1.0.1"), created=T1),
            ),
        )
    )
    assert find(plane, "web").type == "Headless"
    assert find(plane, "web", "us").type == "ClusterIP"
    conflict = conditions(plane, "us")[1]
    assert conflict.reason == "TypeConflict"
    assert conflict.message.startswith(
        "type ClusterIP differs from Headless: the export in cluster eu wins (the oldest export)"
    )


@pytest.mark.parametrize(
    ("eu_created", "us_created", "why"),
    [
        (T0, T0, "created at the same time as this one: the first cluster by name wins"),
        (None, None, "neither export has a creationTimestamp: the first cluster by name wins"),
    ],
)
def test_ties_and_missing_timestamps_go_to_the_first_cluster_by_name(
    eu_created: datetime | None, us_created: datetime | None, why: str
) -> None:
    plane = build_plane(
        Fleet(
            (EU, US),
            (
                site("us", web("us", ServicePort(81, "http")), created=us_created),
                site("eu", web("eu"), created=eu_created),
            ),
        )
    )
    assert find(plane, "web").ports[0].port == 80
    assert conditions(plane, "eu")[1].status == "False"
    assert f"cluster eu, which wins ({why})" in conditions(plane, "us")[1].message


def test_an_export_without_a_timestamp_loses_to_one_with_it() -> None:
    plane = build_plane(
        Fleet(
            (EU, US),
            (site("eu", web("eu", ServicePort(81, "http"))), site("us", web("us"), created=T1)),
        )
    )
    assert find(plane, "web").ports[0].port == 80
    assert "cluster us, which wins (the oldest export: this one has no creationTimestamp)" in (
        conditions(plane, "eu")[1].message
    )


def test_equal_exports_merge_regardless_of_target_port() -> None:
    plane = build_plane(
        Fleet(
            (EU, US),
            (
                site("eu", web("eu"), endpoint("eu", "10.0.0.1")),
                site(
                    "us",
                    web("us", ServicePort(80, "http", target_port=9000)),
                    endpoint("us", "10.1.0.1", EndpointPort(9000, "http")),
                ),
            ),
        )
    )
    assert [(e.address, e.port) for e in find(plane, "web").ports[0].endpoints] == [
        ("10.0.0.1", 8080),
        ("10.1.0.1", 9000),
    ]
    assert all(s.conditions[2].status == "True" for s in plane.exports)


def test_an_export_without_its_service_is_invalid() -> None:
    plane = build_plane(Fleet((EU,), (site("eu", None),)))
    assert plane.services == ()
    assert plane.exports == (
        ExportStatus(
            "eu",
            "shop",
            "web",
            (
                Condition("Valid", "False", "NoService", "no Service shop/web in cluster eu"),
                Condition("Ready", "False", "Invalid", "the export is not valid"),
            ),
        ),
    )


def test_an_unexported_service_is_invisible_from_another_cluster() -> None:
    plane = build_plane(
        Fleet((EU, US), (site("eu", web("eu"), endpoint("eu", "10.0.0.1"), exported=False),))
    )
    assert ids(plane.services) == ["shop/web@eu"]
    assert plane.exports == ()
    assert ids(visible_services(plane, "shop", "eu")) == ["shop/web@eu"]
    assert visible_services(plane, "shop", "us") == ()


# --- workspaces and grants --------------------------------------------------------------------


def grant_doc(text: str) -> list[Document]:
    bodies = yaml.safe_load_all(text)
    return [Document("grants.yaml", body, i) for i, body in enumerate(bodies, start=1)]


GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: demo-reaches-billing, namespace: payments}
spec:
  from: [{group: "", kind: Namespace, namespace: demo}]
  to: [{group: "", kind: Service, name: billing}]
"""


def test_a_workspace_sees_only_its_own_services_without_a_grant() -> None:
    plane = example_plane()
    assert ids(visible_services(plane, "demo", "us-east")) == ["demo/hello@*"]
    assert ids(visible_services(plane, "demo", "eu-central")) == [
        "demo/frontend@eu-central",
        "demo/hello@*",
    ]
    assert ids(visible_services(plane, "payments", "us-east")) == ["payments/billing@*"]
    assert visible_services(plane, "other", "eu-central") == ()


@pytest.mark.parametrize(
    ("text", "visible"),
    [
        pytest.param(GRANT, True, id="service-named"),
        pytest.param(GRANT.replace(", name: billing", ""), True, id="namespace-wide"),
        pytest.param(GRANT.replace("name: billing", "name: ledger"), False, id="other-service"),
        pytest.param(GRANT.replace("namespace: demo}", "namespace: ops}"), False, id="other-ws"),
        pytest.param(
            GRANT.replace("namespace: payments", "namespace: demo"), False, id="wrong-side"
        ),
    ],
)
def test_grants_open_another_workspace(text: str, visible: bool) -> None:
    grants, errors = parse_grants(grant_doc(text))
    assert errors == []
    plane = example_plane(grants)
    expected = ["demo/hello@*", *(["payments/billing@*"] if visible else [])]
    assert ids(visible_services(plane, "demo", "us-east")) == expected


def test_reference_grants_parse_into_grants() -> None:
    text = GRANT.replace(
        'from: [{group: "", kind: Namespace, namespace: demo}]',
        'from: [{group: "", kind: Namespace, namespace: demo}, '
        '{group: "", kind: Namespace, namespace: ops}]',
    ).replace("to: [", 'to: [{group: "", kind: Service}, ')
    grants, errors = parse_grants(grant_doc(text))
    assert errors == []
    assert grants == (
        Grant("payments", "demo", None),
        Grant("payments", "demo", "billing"),
        Grant("payments", "ops", None),
        Grant("payments", "ops", "billing"),
    )


def test_grants_and_cluster_profiles_share_the_fleet_wide_files() -> None:
    profile = (EXAMPLE / "clusters.yaml").read_text()
    documents = grant_doc(profile + "\n---\n" + GRANT)
    sites, site_errors = parse_fleet_objects(documents)
    grants, grant_errors = parse_grants(documents)
    assert (len(sites), site_errors) == (3, [])
    assert (grants, grant_errors) == ((Grant("payments", "demo", "billing"),), [])


OBJECT = "grants.yaml: ReferenceGrant payments/demo-reaches-billing"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            'from: [{group: "", ',
            "from: [{",
            "spec.from[0].group: required",
            id="from-group-missing",
        ),
        pytest.param(
            "namespace: demo}",
            "namespace: Demo}",
            "spec.from[0].namespace: must be a DNS label (a-z, 0-9 and '-', at most 63 "
            "characters), got 'Demo'",
            id="from-namespace",
        ),
        pytest.param(
            'to: [{group: "", kind: Service, name: billing}]',
            "to: []",
            "spec.to: must hold at least one entry",
            id="to-empty",
        ),
        pytest.param(
            'from: [{group: "", kind: Namespace, namespace: demo}]',
            "from: x",
            "spec.from: must be a list, got string",
            id="from-type",
        ),
        pytest.param(
            "v1beta1",
            "v1alpha2",
            "apiVersion: must be gateway.networking.k8s.io/v1beta1 or "
            "gateway.networking.k8s.io/v1 for kind ReferenceGrant, got "
            "'gateway.networking.k8s.io/v1alpha2'",
            id="api-version",
        ),
    ],
)
def test_reference_grant_errors(old: str, new: str, message: str) -> None:
    assert old in GRANT
    grants, errors = parse_grants(grant_doc(GRANT.replace(old, new)))
    assert grants == ()
    assert [str(e) for e in errors] == [f"{OBJECT}: {message}"]


def test_a_reference_grant_of_gateway_api_v1_grants_as_v1beta1_does() -> None:
    grants, errors = parse_grants(grant_doc(GRANT.replace("/v1beta1", "/v1")))
    assert (grants, errors) == ((Grant("payments", "demo", "billing"),), [])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param('from: [{group: ""', "from: [{group: not.a.group", id="from"),
        pytest.param('to: [{group: ""', "to: [{group: apps", id="to"),
        pytest.param(
            'from: [{group: "", kind: Namespace',
            'from: [{group: "", kind: HTTPRoute',
            id="from-kind-kontinuum-does-not-read",
        ),
        pytest.param(
            'to: [{group: "", kind: Service',
            'to: [{group: "", kind: ConfigMap',
            id="to-kind-kontinuum-does-not-read",
        ),
    ],
)
def test_an_entry_of_another_api_group_or_an_unread_kind_grants_nothing(old: str, new: str) -> None:
    # As the Gateway API says, an entry names a kind of its group: another group's kind, or
    # a kind kontinuum does not read, matches nothing kontinuum reads or refers to. It is not
    # an error, and the grant's other entries still grant.
    side = "from" if old.startswith("from") else "to"
    extra = (
        '{group: "", kind: Namespace, namespace: ops}'
        if side == "from"
        else '{group: "", kind: Service, name: ledger}'
    )
    grants, errors = parse_grants(grant_doc(GRANT.replace(old, new)))
    assert (grants, errors) == ((), [])
    both = GRANT.replace(old, new).replace(f"{side}: [", f"{side}: [{extra}, ")
    grants, errors = parse_grants(grant_doc(both))
    granted = (
        Grant("payments", "ops", "billing")
        if side == "from"
        else (Grant("payments", "demo", "ledger"))
    )
    assert (grants, errors) == ((granted,), [])


def test_a_missing_spec_and_a_duplicate_grant_are_errors() -> None:
    _, errors = parse_grants(grant_doc(GRANT.split("spec:")[0]))
    assert [str(e) for e in errors] == [f"{OBJECT}: spec: required"]
    grants, errors = parse_grants(grant_doc(GRANT + "---\n" + GRANT))
    assert grants == (Grant("payments", "demo", "billing"),)
    assert [str(e) for e in errors] == [
        f"{OBJECT}: metadata.name: duplicate ReferenceGrant, also in grants.yaml"
    ]


def test_a_reference_grant_belongs_to_the_whole_fleet() -> None:
    from kontinuum.control.fleet import parse_cluster_objects

    _, errors = parse_cluster_objects("eu", grant_doc(GRANT))
    assert [str(e) for e in errors] == [
        f"{OBJECT}: kind: a ReferenceGrant does not belong to one cluster: put it in the "
        "fleet directory's *.yaml"
    ]


def test_a_clash_names_the_export_that_owns_the_port() -> None:
    ap = ClusterSite("ap", "ap-south-1")
    t2 = datetime(2026, 1, 7, 9, tzinfo=UTC)
    plane = build_plane(
        Fleet(
            (EU, US, ap),
            (
                site("eu", web("eu"), created=T0),
                site(
                    "us", web("us", ServicePort(80, "http"), ServicePort(9090, "grpc")), created=T1
                ),
                site(
                    "ap", web("ap", ServicePort(80, "http"), ServicePort(9091, "grpc")), created=t2
                ),
            ),
        )
    )
    assert [(p.name, p.port) for p in find(plane, "web").ports] == [("http", 80), ("grpc", 9090)]
    assert "[grpc:9091/TCP] clash with the ports of the export in cluster us, which wins" in (
        conditions(plane, "ap")[1].message
    )


NARROWED = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: demo-reaches-billing
  namespace: payments
  annotations: {kontinuum.io/service-accounts: "web, batch,web"}
spec:
  from: [{group: "", kind: Namespace, namespace: demo}]
  to: [{group: "", kind: Service, name: billing}]
"""


def _grants(text: str) -> tuple[tuple[Grant, ...], list[str]]:
    grants, errors = parse_grants([Document("grants.yaml", yaml.safe_load(text), 1)])
    return grants, [str(e) for e in errors]


def test_a_workspace_grant_may_be_narrowed_to_service_accounts() -> None:
    grants, errors = _grants(NARROWED)
    assert errors == []
    assert grants == (Grant("payments", "demo", "billing", service_accounts=("batch", "web")),)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"web, batch,web"', '"Web"', "service account 'Web'"),
        ('"web, batch,web"', '" , "', "must name at least one service account"),
        ("kind: Namespace, namespace: demo", "group: gateway.networking.k8s.io, kind: HTTPRoute, "
         "namespace: demo", "narrows a grant from a Namespace only"),
    ],
)  # fmt: skip
def test_a_narrowed_grant_with_an_error_grants_nothing(old: str, new: str, message: str) -> None:
    grants, errors = _grants(NARROWED.replace(old, new))
    assert grants == ()
    assert any(message in e for e in errors), errors
