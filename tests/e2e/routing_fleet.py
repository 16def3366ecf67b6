"""Fleet directories for the cross-cluster routing tests: standard YAML, as a user writes it.

    fleet/clusters.yaml                  one ClusterProfile per site
    fleet/routing.yaml                   fleet-wide HTTPRoutes, LocalityPolicies, grants
    fleet/clusters/<site>/<svc>.yaml     a Service (ServiceExport) and one EndpointSlice
                                         per backend of that Service in the site

Every endpoint is a backend on 127.0.0.1; a Service's port is 80, named `http`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.fleet import cluster_profile

# Two sites in one region, one in another: the sidecars under test run in eu-central.
SITES: Mapping[str, str] = {
    "eu-central": "eu-central-1",
    "edge-paris": "eu-central-1",
    "us-east": "us-east-1",
}
NAMESPACE = "demo"


@dataclass(frozen=True, slots=True)
class Workload:
    """A Service in one site, its backends' ports (one EndpointSlice each), and whether
    the site exports it to the cluster set."""

    name: str
    ports: tuple[int, ...]
    exported: bool = True
    namespace: str = NAMESPACE
    mutual_tls: bool = False  # fronted by a kontinuum sidecar (kontinuum.io/tls-mode)


def service(namespace: str, name: str, *, exported: bool = True) -> str:
    text = f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: 80, protocol: TCP}}]
"""
    if exported:
        text += f"""---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: "2026-01-01T00:00:00Z"}}
"""
    return text


def endpoint_slice(
    namespace: str, name: str, port: int, index: int = 1, *, mutual_tls: bool = False
) -> str:
    """One ready endpoint, 127.0.0.1:`port`, of Service `name` (requiring mTLS)."""
    mode = ", kontinuum.io/tls-mode: mutual" if mutual_tls else ""
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{index}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}{mode}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""


def workload_yaml(workload: Workload) -> str:
    docs = [service(workload.namespace, workload.name, exported=workload.exported)]
    docs += [
        endpoint_slice(
            workload.namespace, workload.name, port, index, mutual_tls=workload.mutual_tls
        )
        for index, port in enumerate(workload.ports, start=1)
    ]
    return "---\n".join(docs)


def write_fleet(
    root: Path,
    workloads: Mapping[str, Sequence[Workload]],
    routing: Sequence[str] = (),
    sites: Mapping[str, str] = SITES,
) -> Path:
    """Write the fleet directory `root`: every site of `sites`, each site's `workloads`, and
    the fleet-wide `routing` documents. Returns `root`."""
    root.mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        "---\n".join(cluster_profile(name, region) for name, region in sites.items())
    )
    for site in sites:
        directory = root / "clusters" / site
        directory.mkdir(parents=True)
        for workload in workloads.get(site, ()):
            (directory / f"{workload.name}.yaml").write_text(workload_yaml(workload))
    if routing:
        (root / "routing.yaml").write_text("---\n".join(doc.strip() + "\n" for doc in routing))
    return root
