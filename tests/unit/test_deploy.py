"""The Kubernetes manifests in deploy/: well-formed, least privilege, probes on the admin
endpoint, and a fleet ConfigMap that kontinuum itself accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.model import KubernetesAccess
from kontinuum.control.objects import Document

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


def test_rbac_only_reads_what_discovery_watches() -> None:
    watched = {("", "services"), ("discovery.k8s.io", "endpointslices")}
    watched.add(("multicluster.x-k8s.io", "serviceexports"))
    for name in ("kontinuum.yaml", "remote-reader.yaml"):
        (role,) = by_kind(documents(name), "ClusterRole")
        granted = set()
        for rule in role["rules"]:
            assert sorted(rule["verbs"]) == ["get", "list", "watch"], (name, rule)
            granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
        assert granted == watched, name


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
