"""The config cluster's view: fleet-wide objects read from an API, last good versions kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from kontinuum.control.model import FleetConfig, KubernetesAccess
from kontinuum.control.routing import GATEWAY_CONTROLLER as CONTROLLER
from kontinuum.control.routing import ParentRef, Rejection
from kontinuum.discovery.config_cluster import (
    CONFIG_KINDS,
    ConfigClusterSource,
    ConfigView,
    config_source_name,
)
from kontinuum.discovery.kube_view import Changed, Failed, Listed, WatchedKind
from kontinuum.discovery.source import Health
from tests.support.server_certs import TestCa, tls_secret

NAME = "kubernetes-config:hub"
KINDS = {kind.kind: kind for kind in CONFIG_KINDS}

PROFILE = """
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: eu
  namespace: fleet-system
  labels: {topology.kubernetes.io/region: eu-west-1}
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: demo, generation: 1}
spec:
  parentRefs: [{group: "", kind: Service, name: hello}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: hello, port: 80}]
"""


PROBLEM = (
    "spec.rules[0].matches[0].path.value: must be an absolute path starting with '/' for a "
    "PathPrefix match, got 'api'"
)


def body(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def kind(name: str) -> WatchedKind:
    return KINDS[name]


def listed(**objects: list[dict[str, Any]]) -> ConfigView:
    """A view in which every kind was listed: `objects` by kind, the others empty."""
    view = ConfigView(NAME)
    for watched in CONFIG_KINDS:
        view.apply(Listed(watched, objects.get(watched.kind, [])), 0.0, 1000.0)
    return view


def config(view: ConfigView) -> FleetConfig:
    result = view.result()
    assert result is not None
    return result


def broken(generation: int = 2) -> dict[str, Any]:
    """The route with a path that does not start with `/`."""
    route = body(ROUTE)
    route["metadata"]["generation"] = generation
    route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "api"
    return route


def test_the_kinds_are_the_fleet_wide_ones_and_all_but_secrets_and_namespaces_optional() -> None:
    assert [(k.api_version, k.plural) for k in CONFIG_KINDS] == [
        ("multicluster.x-k8s.io/v1alpha1", "clusterprofiles"),
        ("gateway.networking.k8s.io/v1beta1", "referencegrants"),
        ("gateway.networking.k8s.io/v1", "httproutes"),
        ("gateway.networking.k8s.io/v1", "grpcroutes"),
        ("gateway.networking.k8s.io/v1", "gateways"),
        ("policy.kontinuum.io/v1alpha1", "localitypolicies"),
        ("v1", "secrets"),
        ("gateway.networking.k8s.io/v1", "gatewayclasses"),
        ("v1", "namespaces"),
    ]
    assert [k.kind for k in CONFIG_KINDS if not k.optional] == ["Secret", "Namespace"]  # built in


def test_nothing_before_every_kind_was_listed() -> None:
    view = ConfigView(NAME)
    view.apply(Listed(kind("ClusterProfile"), [body(PROFILE)]), 0.0, 1000.0)
    assert view.result() is None
    assert view.status(0.0).health is Health.STARTING
    assert view.status(0.0).detail.startswith("listing ReferenceGrants, HTTPRoutes")


def test_the_objects_read_as_the_fleet_files_do() -> None:
    view = listed(ClusterProfile=[body(PROFILE)], HTTPRoute=[body(ROUTE)])
    fleet = config(view)
    assert [(s.name, s.region) for s in fleet.sites] == [("eu", "eu-west-1")]
    (route,) = fleet.routing.routes
    assert (route.namespace, route.name, route.file, route.generation) == ("demo", "web", NAME, 1)
    assert view.status(0.0).health is Health.HEALTHY
    assert fleet.routing.rejections == ()


def test_namespaces_and_their_labels_are_read_and_follow_their_changes() -> None:
    shop = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "uid": "1", "labels": {"team": "shop"}},
    }
    view = listed(Namespace=[shop])
    (namespace,) = config(view).routing.namespaces
    assert (namespace.name, namespace.file, namespace.labels) == ("shop", NAME, (("team", "shop"),))
    relabelled = copy.deepcopy(shop)
    relabelled["metadata"]["labels"] = {"team": "ops"}
    view.apply(Changed(kind("Namespace"), "MODIFIED", relabelled), 1.0, 1001.0)
    assert config(view).routing.namespaces[0].labels == (("team", "ops"),)
    view.apply(Changed(kind("Namespace"), "DELETED", relabelled), 2.0, 1002.0)
    assert config(view).routing.namespaces == ()


def test_an_invalid_new_version_keeps_the_last_good_one_in_force() -> None:
    view = listed(HTTPRoute=[body(ROUTE)])
    good = config(view).routing.routes
    view.apply(Changed(kind("HTTPRoute"), "MODIFIED", broken()), 1.0, 1001.0)
    assert config(view).routing.routes == good
    hello = ParentRef("Service", "demo", "hello", group="")
    assert config(view).routing.rejections == (
        Rejection("HTTPRoute", "demo", "web", 2, (PROBLEM,), parents=(hello,)),
    )
    status = view.status(1.0)
    assert status.health is Health.DEGRADED
    assert status.detail == "1 error(s) in fleet-wide objects, 1 keep their last good version"
    assert [str(e) for e in status.errors] == [f"{NAME}: HTTPRoute demo/web: {PROBLEM}"]
    fixed = body(ROUTE)
    fixed["metadata"]["generation"] = 3
    fixed["spec"]["rules"][0]["backendRefs"][0]["port"] = 81
    view.apply(Changed(kind("HTTPRoute"), "MODIFIED", fixed), 2.0, 1002.0)
    (route,) = config(view).routing.routes
    assert (route.generation, route.rules[0].backends[0].port) == (3, 81)
    assert config(view).routing.rejections == ()
    assert view.status(2.0).health is Health.HEALTHY


def test_an_object_never_valid_is_left_out() -> None:
    view = listed(HTTPRoute=[broken()])
    assert config(view).routing.routes == ()
    (rejection,) = config(view).routing.rejections  # for its status to say why
    assert (rejection.kept, rejection.generation) == (False, 2)
    assert rejection.parents == (ParentRef("Service", "demo", "hello", group=""),)
    assert view.status(0.0).detail == "1 error(s) in fleet-wide objects"


def test_a_deleted_object_is_gone_with_its_last_good_version() -> None:
    view = listed(HTTPRoute=[body(ROUTE)])
    view.apply(Changed(kind("HTTPRoute"), "MODIFIED", broken()), 1.0, 1001.0)
    view.apply(Changed(kind("HTTPRoute"), "DELETED", broken()), 1.0, 1001.0)
    assert config(view).routing.routes == ()
    # created again, invalid: there is no last good version any more
    view.apply(Changed(kind("HTTPRoute"), "ADDED", broken(5)), 2.0, 1002.0)
    assert config(view).routing.routes == ()


def test_an_object_created_again_does_not_inherit_the_old_ones_last_good_version() -> None:
    """Deleted and created again (a new uid) within one debounce: the view sees only the
    new, invalid object, which must not be served as the old one."""
    old = body(ROUTE)
    old["metadata"]["uid"] = "first"
    view = listed(HTTPRoute=[old])
    assert len(config(view).routing.routes) == 1
    again = broken(1)
    again["metadata"]["uid"] = "second"
    view.apply(Changed(kind("HTTPRoute"), "MODIFIED", again), 1.0, 1001.0)
    assert config(view).routing.routes == ()
    (rejection,) = config(view).routing.rejections
    assert not rejection.kept


def test_out_of_sync_the_last_objects_stay_in_force() -> None:
    view = listed(ClusterProfile=[body(PROFILE)], HTTPRoute=[body(ROUTE)])
    before = config(view)
    assert view.apply(Failed(kind("HTTPRoute"), "cannot reach the API server: refused"), 5, 5)
    assert view.result() == before
    status = view.status(5.0)
    assert status.health is Health.DEGRADED
    assert status.detail == (
        "out of sync with the API server since 1970-01-01T00:00:05Z (HTTPRoutes: cannot reach "
        "the API server: refused): the last fleet-wide objects read stay in force"
    )
    view.apply(Listed(kind("HTTPRoute"), [body(ROUTE)]), 6.0, 6.0)
    assert view.status(6.0).health is Health.HEALTHY


def test_a_missing_api_is_noted() -> None:
    view = ConfigView(NAME)
    note = "the API server has no policy.kontinuum.io/v1alpha1 localitypolicies (...)"
    for watched in CONFIG_KINDS:
        view.apply(Listed(watched, [], note if watched.kind == "LocalityPolicy" else ""), 0, 0)
    assert config(view) == FleetConfig()
    status = view.status(0.0)
    assert (status.health, status.detail) == (Health.HEALTHY, note)


@pytest.mark.parametrize(
    ("access", "name"),
    [
        (KubernetesAccess(context="hub"), "kubernetes-config:hub"),
        (KubernetesAccess(kubeconfig="/k", context="hub"), "kubernetes-config:hub"),
        (KubernetesAccess(in_cluster=True), "kubernetes-config:in-cluster"),
        (KubernetesAccess(), "kubernetes-config:default"),
    ],
)
def test_the_source_is_named_after_its_context(access: KubernetesAccess, name: str) -> None:
    assert config_source_name(access) == name
    source = ConfigClusterSource(access)
    assert source.name == name
    assert source.status().health is Health.STARTING


def test_documents_keep_what_the_api_sent() -> None:
    route = body(ROUTE)
    view = listed(HTTPRoute=[copy.deepcopy(route)])
    (doc,) = [d for d in view.documents() if d.body.get("kind") == "HTTPRoute"]
    assert doc.file == NAME
    assert doc.body == route


# --- what is kontinuum's in a shared cluster ------------------------------------------------

GATEWAY_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kontinuum}
spec: {controllerName: kontinuum.io/gateway-controller}
"""

FOREIGN_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
"""


def gateway(name: str, gateway_class: str, labelled: bool = True) -> dict[str, Any]:
    found = body(f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: demo}}
spec:
  gatewayClassName: {gateway_class}
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
""")
    if labelled:
        found["metadata"]["labels"] = {"kontinuum.io/cluster": "eu"}
    return found


def attached(name: str, *gateways: str, service: str | None = None) -> dict[str, Any]:
    route = body(ROUTE)
    route["metadata"]["name"] = name
    refs: list[dict[str, Any]] = [{"name": g} for g in gateways]
    if service:
        refs.append({"group": "", "kind": "Service", "name": service})
    route["spec"]["parentRefs"] = refs
    return route


def test_only_gateways_of_kontinuums_classes_are_read() -> None:
    view = listed(
        ClusterProfile=[body(PROFILE)],
        GatewayClass=[body(GATEWAY_CLASS), body(FOREIGN_CLASS)],
        Gateway=[gateway("ours", "kontinuum"), gateway("theirs", "istio", labelled=False)],
    )
    fleet = config(view)
    assert [g.name for g in fleet.routing.gateways] == ["ours"]
    assert fleet.routing.gateway_classes == ("kontinuum",)
    assert view.status(0.0).health is Health.HEALTHY  # the other Gateway is not an error


def test_routes_keep_only_parents_of_kontinuum() -> None:
    view = listed(
        GatewayClass=[body(GATEWAY_CLASS), body(FOREIGN_CLASS)],
        Gateway=[gateway("ours", "kontinuum"), gateway("theirs", "istio", labelled=False)],
        HTTPRoute=[
            attached("both", "ours", "theirs"),
            attached("foreign", "theirs"),
            attached("mesh", "theirs", service="hello"),
        ],
    )
    routes = {r.name: [(p.kind, p.name) for p in r.parents] for r in config(view).routing.routes}
    assert routes == {"both": [("Gateway", "ours")], "mesh": [("Service", "hello")]}
    assert view.status(0.0).health is Health.HEALTHY


def test_parents_of_other_kinds_are_other_controllers() -> None:
    """A parentRef to another kind (an XListenerSet, a vendor's) is not kontinuum's; one to
    a Gateway this cluster does not hold may be the fleet files' and is kept."""
    route = attached("mixed", "elsewhere")
    route["spec"]["parentRefs"].append(
        {"group": "gateway.networking.x-k8s.io", "kind": "XListenerSet", "name": "ls"}
    )
    only_theirs = attached("vendor")
    only_theirs["spec"]["parentRefs"] = [{"group": "example.com", "kind": "Mesh", "name": "m"}]
    view = listed(HTTPRoute=[route, only_theirs])
    routes = {r.name: [(p.kind, p.name) for p in r.parents] for r in config(view).routing.routes}
    assert routes == {"mixed": [("Gateway", "elsewhere")]}


def test_a_route_that_stops_being_kontinuums_is_disowned() -> None:
    """Its Gateway moved to another controller's class: kontinuum's entries are to go."""
    route = attached("moved", "ours")
    route["status"] = {"parents": [{"parentRef": {"name": "ours"}, "controllerName": CONTROLLER}]}
    view = listed(
        GatewayClass=[body(GATEWAY_CLASS), body(FOREIGN_CLASS)],
        Gateway=[gateway("ours", "istio", labelled=False)],
        HTTPRoute=[route, attached("never-ours", "ours")],
    )
    assert config(view).routing.routes == ()
    assert config(view).routing.disowned == (("HTTPRoute", "demo", "moved"),)


def test_gateways_of_a_missing_well_known_class_are_reported() -> None:
    view = listed(Gateway=[gateway("ours", "kontinuum")])
    assert config(view).routing.gateways == ()
    status = view.status(0.0)
    assert status.health is Health.DEGRADED
    assert "GatewayClass(es) kontinuum, which do not exist" in status.detail
    assert "deploy/gatewayclasses.yaml" in status.detail


def test_tls_secrets_are_read_and_other_secrets_are_not() -> None:
    issued = TestCa().issue("www.example.com")
    certificate = body(tls_secret("demo", "www", issued.certificate, issued.key))
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "demo"},
        "type": "kubernetes.io/service-account-token",
        "data": {"token": "not base64 at all, and never read"},
    }
    view = listed(Secret=[certificate, token])
    (secret,) = config(view).routing.secrets
    assert (secret.namespace, secret.name, secret.problem) == ("demo", "www", "")
    assert (secret.certificate, secret.key) == (issued.certificate, issued.key)
    assert view.status(0.0).health is Health.HEALTHY
