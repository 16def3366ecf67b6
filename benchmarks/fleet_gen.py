"""A generated fleet for scale benchmarks: S services over W namespaces in C clusters.

Every service is exported from every cluster and has one HTTP port with `endpoints`
endpoints per cluster; each namespace grants the next one (a ring), so a sidecar sees its
own workspace's services and one other workspace's. One file per service per cluster holds
its Service, EndpointSlice and ServiceExport, as `kubectl get -o yaml` would write them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FleetShape:
    services: int = 1000
    namespaces: int = 50
    clusters: int = 3
    endpoints: int = 2

    def cluster(self, index: int) -> str:
        return f"c{index}"

    def namespace(self, service: int) -> str:
        return f"ns{service % self.namespaces}"

    def service(self, index: int) -> str:
        return f"svc{index}"

    def address(self, service: int, cluster: int, endpoint: int) -> str:
        n = (service * self.clusters + cluster) * self.endpoints + endpoint
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    @property
    def documents(self) -> int:
        return self.clusters + self.namespaces + 3 * self.services * self.clusters


def cluster_profile(name: str, index: int) -> str:
    return f"""apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: {name}
  namespace: fleet
  labels:
    topology.kubernetes.io/region: region{index % 2}
    topology.kubernetes.io/zone: region{index % 2}a
    kontinuum.io/network: backbone
spec:
  displayName: {name}
"""


def grant(provider: str, consumer: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: from-{consumer}
  namespace: {provider}
spec:
  from:
  - group: ""
    kind: Namespace
    namespace: {consumer}
  to:
  - group: ""
    kind: Service
"""


def service_file(shape: FleetShape, service: int, cluster: int, generation: int = 0) -> str:
    """A service's objects in one cluster; `generation` shifts its last endpoint's address."""
    name, namespace = shape.service(service), shape.namespace(service)
    endpoints = []
    for e in range(shape.endpoints):
        address = shape.address(service, cluster, e)
        if e == shape.endpoints - 1 and generation:
            address = f"10.255.{generation >> 8 & 255}.{generation & 255}"
        endpoints.append(
            f"""- addresses: ["{address}"]
  conditions: {{ready: true, serving: true, terminating: false}}
  zone: z{e % 2}
"""
        )
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
    protocol: TCP
    appProtocol: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{shape.cluster(cluster)}
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
{"".join(endpoints)}---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: {name}
  namespace: {namespace}
  creationTimestamp: "2026-01-05T09:00:00Z"
"""


def service_path(root: Path, shape: FleetShape, service: int, cluster: int) -> Path:
    return root / "clusters" / shape.cluster(cluster) / f"{shape.service(service)}.yaml"


def write_fleet(root: Path, shape: FleetShape) -> None:
    """Write the whole fleet directory under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    profiles = [cluster_profile(shape.cluster(c), c) for c in range(shape.clusters)]
    (root / "clusters.yaml").write_text("---\n".join(profiles))
    grants = [
        grant(f"ns{w}", f"ns{(w + 1) % shape.namespaces}")
        for w in range(shape.namespaces)
        if shape.namespaces > 1
    ]
    (root / "grants.yaml").write_text("---\n".join(grants) or "")
    for c in range(shape.clusters):
        (root / "clusters" / shape.cluster(c)).mkdir(parents=True, exist_ok=True)
        for s in range(shape.services):
            service_path(root, shape, s, c).write_text(service_file(shape, s, c))


def route_header(generation: int) -> str:
    """The header name the route of `generation` matches on: distinctive in RDS bytes."""
    return f"x-bench-route-{generation:05d}"


def http_route(shape: FleetShape, service: int, generation: int) -> str:
    """A GAMMA producer HTTPRoute on `service` (parentRef: its Service, port 80).

    Requests with the header `route_header(generation)` go to another service of the same
    namespace; the rest are split 90/10 between the service and that other one (the
    service alone when its namespace has no other). Backends are ServiceImports: the
    cluster-set clusters every consumer already has, so the change is a route change only.
    """
    name, namespace = shape.service(service), shape.namespace(service)
    other = service + shape.namespaces if service + shape.namespaces < shape.services else None
    target = shape.service(other) if other is not None else name
    import_ref = "{group: multicluster.x-k8s.io, kind: ServiceImport, name: %s, port: 80%s}"
    split = [import_ref % (name, ", weight: 90" if other is not None else "")]
    if other is not None:
        split.append(import_ref % (target, ", weight: 10"))
    backends = "".join(f"    - {ref}\n" for ref in split)
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bench-{name}
  namespace: {namespace}
  creationTimestamp: "2026-01-05T09:00:00Z"
spec:
  parentRefs:
  - {{group: "", kind: Service, name: {name}, port: 80}}
  rules:
  - matches:
    - headers: [{{name: {route_header(generation)}, value: canary}}]
    backendRefs:
    - {import_ref % (target, "")}
  - backendRefs:
{backends}"""


def route_path(root: Path) -> Path:
    """The fleet-wide file the benchmark's routes go in."""
    return root / "bench-routes.yaml"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole (a reader sees the old file or the new one, never a part)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
