"""The Kubernetes manifests in deploy/: well-formed, least privilege, probes on the admin
endpoint, and a fleet ConfigMap that kontinuum itself accepts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.gateway_binding import GatewayStatus, PolicyStatus
from kontinuum.control.model import KubernetesAccess
from kontinuum.control.objects import Document
from kontinuum.control.plane import Condition, ExportStatus
from kontinuum.control.route_binding import RouteBinding, RouteStatus
from kontinuum.control.routing import EAST_WEST_CLASS, GATEWAY_CONTROLLER
from kontinuum.discovery.config_cluster import CONFIG_KINDS
from kontinuum.discovery.kube_view import KINDS, WatchedKind
from kontinuum.kube import DesiredStatus, LeaseConfig
from kontinuum.kube.desired import export_statuses, routing_statuses

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_manifest_names_its_api_and_object() -> None:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in documents(path.name):
            assert doc.get("apiVersion"), (path.name, doc)
            assert doc["metadata"].get("name"), (path.name, doc)


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


READ = {"get", "list", "watch"}
ACCEPTED = Condition("Accepted", "True", "Accepted")


def reads(kinds: Iterable[WatchedKind]) -> dict[tuple[str, str], set[str]]:
    return {(k.group, k.plural): set(READ) for k in kinds}


def status_writes(desired: Iterable[DesiredStatus]) -> dict[tuple[str, str], set[str]]:
    """What writing these statuses needs: GET of the object (the writer reads it first,
    which `get` on the resource grants) and PATCH of its status subresource."""
    return {(d.ref.group, f"{d.ref.plural}/status"): {"patch"} for d in desired}


# What the code watches and writes, derived from it: RBAC that drifts from it fails here.
DISCOVERY = {
    **reads(KINDS),
    **status_writes(export_statuses([ExportStatus("eu", "a", "b", (ACCEPTED,))], {"eu"})),
}
EVERY_ROUTING_STATUS = routing_statuses(
    RouteBinding(
        statuses=(
            RouteStatus("HTTPRoute", "a", "r", "hub", 1, ()),
            RouteStatus("GRPCRoute", "a", "g", "hub", 1, ()),
        ),
        gateway_statuses=(GatewayStatus("a", "gw", "hub", 1, (), ()),),
        policy_statuses=(PolicyStatus("a", "p", "hub", ("Service", "s"), ()),),
    ),
    "hub",
    gateway_classes=["kontinuum"],
)
CONFIG = {**reads(CONFIG_KINDS), **status_writes(EVERY_ROUTING_STATUS)}


def test_rbac_reads_what_discovery_watches_and_writes_only_status() -> None:
    for name in ("kontinuum.yaml", "remote-reader.yaml"):
        roles = {r["metadata"]["name"]: r for r in by_kind(documents(name), "ClusterRole")}
        role = roles.get("kontinuum-discovery") or roles["kontinuum-reader"]
        assert granted(role) == DISCOVERY, name


def test_rbac_of_the_config_cluster_and_the_lease() -> None:
    lease_config = LeaseConfig()
    for name in ("kontinuum.yaml", "config-cluster.yaml"):
        docs = documents(name)
        (config,) = [
            r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "kontinuum-config"
        ]
        assert granted(config) == CONFIG, name
        (lease,) = by_kind(docs, "Role")  # namespaced: only the Leases of kontinuum's namespace
        assert lease["metadata"]["namespace"] == lease_config.namespace
        create, by_name = lease["rules"]
        assert (create["resources"], create["verbs"]) == (["leases"], ["create"])
        assert by_name["resourceNames"] == [lease_config.name]  # read and renew this one only
        assert sorted(by_name["verbs"]) == ["get", "update"]
        bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
        bound |= {b["roleRef"]["name"] for b in by_kind(docs, "RoleBinding")}
        assert {"kontinuum-config", "kontinuum-leader-election"} <= bound, name


def test_the_gateway_classes_are_kontinuums() -> None:
    classes = documents("gatewayclasses.yaml")
    assert {c["metadata"]["name"] for c in classes} == {"kontinuum", EAST_WEST_CLASS}
    assert {c["spec"]["controllerName"] for c in classes} == {GATEWAY_CONTROLLER}


def test_the_locality_policy_crd_matches_what_kontinuum_reads() -> None:
    (crd,) = [d for d in yaml.safe_load_all((DEPLOY / "crds/localitypolicy.yaml").read_text()) if d]
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    (version,) = spec["versions"]
    api_version = f"{spec['group']}/{version['name']}"
    (read,) = [k for k in CONFIG_KINDS if k.kind == "LocalityPolicy"]
    assert (api_version, spec["names"]["kind"]) == (read.api_version, "LocalityPolicy")
    assert spec["names"]["plural"] == read.plural
    assert version["subresources"] == {"status": {}}  # kontinuum patches status/ only
    assert spec["scope"] == "Namespaced"


def test_the_deployment_probes_the_admin_endpoint_and_runs_unprivileged() -> None:
    docs = documents("kontinuum.yaml")
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    args = container["args"]
    assert "--config=/etc/kontinuum/fleet" in args
    assert "--config-cluster=in-cluster" in args
    assert deployment["spec"]["replicas"] >= 2  # one holds the Lease, the others stand by
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/kontinuum/fleet" in mounts


def test_the_deployment_serves_xds_over_tls_with_a_ca_only_its_group_reads() -> None:
    (deployment,) = by_kind(documents("kontinuum.yaml"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--plaintext-xds" not in container["args"]
    assert "--ca-dir=/etc/kontinuum/ca" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["ca"] == "/etc/kontinuum/ca"
    (ca,) = [v for v in pod["volumes"] if v["name"] == "ca"]
    # Kubernetes adds group read for fsGroup: 0440, which the CA loader accepts (not 0644).
    assert ca["secret"]["defaultMode"] == 0o400
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


def test_the_fleet_configmap_is_a_valid_fleet() -> None:
    (config_map,) = by_kind(documents("kontinuum.yaml"), "ConfigMap")
    docs = [
        Document(key, body, i)
        for key, text in config_map["data"].items()
        for i, body in enumerate(yaml.safe_load_all(text), start=1)
    ]
    sites, errors = parse_fleet_objects(docs)
    assert errors == []
    assert [(s.name, s.access) for s in sites] == [("home", KubernetesAccess(in_cluster=True))]
