"""The Kubernetes manifests in deploy/: well-formed, least privilege, probes on the admin
endpoint, and a fleet ConfigMap that kontinuum itself accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.model import KubernetesAccess
from kontinuum.control.objects import Document
from kontinuum.discovery.config_cluster import CONFIG_KINDS

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
DISCOVERY = {
    ("", "services"): READ,
    ("discovery.k8s.io", "endpointslices"): READ,
    ("multicluster.x-k8s.io", "serviceexports"): READ,
    ("multicluster.x-k8s.io", "serviceexports/status"): {"patch"},
}


def test_rbac_reads_what_discovery_watches_and_writes_only_status() -> None:
    for name in ("kontinuum.yaml", "remote-reader.yaml"):
        roles = {r["metadata"]["name"]: r for r in by_kind(documents(name), "ClusterRole")}
        role = roles.get("kontinuum-discovery") or roles["kontinuum-reader"]
        assert granted(role) == DISCOVERY, name


def test_rbac_of_the_config_cluster_and_the_lease() -> None:
    docs = documents("kontinuum.yaml")
    (config,) = [
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "kontinuum-config"
    ]
    gateway = "gateway.networking.k8s.io"
    assert granted(config) == {
        ("multicluster.x-k8s.io", "clusterprofiles"): READ,
        **{(gateway, r): READ for r in ("referencegrants", "httproutes", "grpcroutes", "gateways")},
        **{(gateway, f"{r}/status"): {"patch"} for r in ("httproutes", "grpcroutes", "gateways")},
        ("policy.kontinuum.io", "localitypolicies"): READ,
        ("policy.kontinuum.io", "localitypolicies/status"): {"patch"},
    }
    (lease,) = by_kind(docs, "Role")  # namespaced: only the Leases of kontinuum's namespace
    assert lease["metadata"]["namespace"] == "kontinuum-system"
    assert granted(lease) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    bound |= {b["roleRef"]["name"] for b in by_kind(docs, "RoleBinding")}
    assert bound == {"kontinuum-discovery", "kontinuum-config", "kontinuum-leader-election"}


def test_the_locality_policy_crd_matches_what_kontinuum_reads() -> None:
    (crd,) = [d for d in yaml.safe_load_all((DEPLOY / "crds/localitypolicy.yaml").read_text()) if d]
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    (version,) = spec["versions"]
    api_version = f"{spec['group']}/{version['name']}"
    assert (api_version, spec["names"]["kind"]) == (CONFIG_KINDS[-1].api_version, "LocalityPolicy")
    assert spec["names"]["plural"] == CONFIG_KINDS[-1].plural
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
