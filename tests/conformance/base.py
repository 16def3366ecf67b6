"""The upstream conformance suite's base infrastructure, as a kontinuum fleet directory.

Upstream's base manifests give every case the same namespaces, echo backends and Gateways;
here they are the same objects in fleet form, all in one cluster (`conformance`):

    fleet/clusters.yaml                       the ClusterProfile of `conformance`
    fleet/gateways.yaml                       the base Gateways, each on its own free port
    fleet/grants.yaml                         the mesh namespace opened to the consumer one
    fleet/clusters/conformance/<ns>.yaml      each namespace's Services and EndpointSlices
    fleet/case.yaml                           the running case's objects (the harness swaps it)

Every Service port leads to one real HTTP echo backend on 127.0.0.1 named as the Service
(`infra-backend-v1` answers `backend infra-backend-v1`); a mesh `echo` Service leads to both
`echo-v1` and `echo-v2`, as upstream's selects both versions' pods; `infra-backend-h2c`
(`appProtocol: kubernetes.io/h2c`) leads to a backend that speaks HTTP/2 only. A Gateway listens on
127.0.0.1 at the port the harness picked for it (upstream's are all port 80: a case names
its listener's port through the harness, never a literal). In Kubernetes any namespace may
call any Service; a kontinuum workspace reaches another's only where that one grants it, so
the base adds the one grant upstream's mesh cases assume: `gateway-conformance-mesh` opens its
Services to `gateway-conformance-mesh-consumer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.support.fleet import cluster_profile

CLUSTER = "conformance"
REGION = "local-1"
INFRA = "gateway-conformance-infra"
APP_BACKEND = "gateway-conformance-app-backend"
WEB_BACKEND = "gateway-conformance-web-backend"
MESH = "gateway-conformance-mesh"
MESH_CONSUMER = "gateway-conformance-mesh-consumer"


@dataclass(frozen=True, slots=True)
class BaseService:
    """A Service of the base, its ports (name, port) and the backends behind every port."""

    namespace: str
    name: str
    ports: tuple[tuple[str, int], ...]
    backends: tuple[str, ...]
    app_protocol: str | None = None  # of every port


H2C_BACKEND = "h2c-backend"  # speaks HTTP/2 without TLS only

# Ports as upstream's base manifests give them: the echo backends on 8080, the mesh's
# `echo` on 80 and 8080.
SERVICES: tuple[BaseService, ...] = (
    *(
        BaseService(INFRA, f"infra-backend-v{n}", (("http", 8080),), (f"infra-backend-v{n}",))
        for n in (1, 2, 3)
    ),
    *(
        BaseService(APP_BACKEND, f"app-backend-v{n}", (("http", 8080),), (f"app-backend-v{n}",))
        for n in (1, 2)
    ),
    BaseService(WEB_BACKEND, "web-backend", (("http", 8080),), ("web-backend",)),
    BaseService(MESH, "echo", (("http", 80), ("http-alt", 8080)), ("echo-v1", "echo-v2")),
    BaseService(MESH, "echo-v1", (("http", 80), ("http-alt", 8080)), ("echo-v1",)),
    BaseService(MESH, "echo-v2", (("http", 80), ("http-alt", 8080)), ("echo-v2",)),
    # Upstream's HTTPRouteBackendProtocolH2C case brings its own; in fleet form Services live
    # in cluster files, so the base has it.
    BaseService(INFRA, "infra-backend-h2c", (("http", 8080),), (H2C_BACKEND,), "kubernetes.io/h2c"),
)

# The echo backends the harness starts (the h2c one is an Envoy, started on demand).
BACKENDS: tuple[str, ...] = tuple(
    dict.fromkeys(b for s in SERVICES for b in s.backends if b != H2C_BACKEND)
)

# The base Gateways: (name, which namespaces' routes they allow); upstream's
# `backend-namespaces` selects namespaces by label (`allowedRoutes.namespaces.from: Selector`).
GATEWAYS: tuple[tuple[str, str], ...] = (
    ("same-namespace", "Same"),
    ("all-namespaces", "All"),
    ("backend-namespaces", "Selector"),
)


# The namespaces of the backends carry the label `backend-namespaces` selects, as upstream's
# base manifests label them.
NAMESPACES = f"""apiVersion: v1
kind: Namespace
metadata: {{name: {INFRA}, labels: {{gateway-conformance: infra}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {APP_BACKEND}, labels: {{gateway-conformance: backend}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {WEB_BACKEND}, labels: {{gateway-conformance: backend}}}}
"""


MESH_TO_CONSUMER = f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: consumers-may-call, namespace: {MESH}}}
spec:
  from: [{{group: "", kind: Namespace, namespace: {MESH_CONSUMER}}}]
  to: [{{group: "", kind: Service}}]
"""


def service_yaml(service: BaseService, backend_ports: Mapping[str, int]) -> str:
    """The Service and one EndpointSlice per backend (every service port to that backend)."""
    app = "" if service.app_protocol is None else f", appProtocol: {service.app_protocol}"
    ports = ", ".join(
        f"{{name: {name}, port: {port}, protocol: TCP{app}}}" for name, port in service.ports
    )
    docs = [
        f"""apiVersion: v1
kind: Service
metadata: {{name: {service.name}, namespace: {service.namespace}}}
spec:
  ports: [{ports}]
"""
    ]
    for index, backend in enumerate(service.backends, start=1):
        target = backend_ports[backend]
        slice_ports = ", ".join(
            f"{{name: {name}, port: {target}, protocol: TCP}}" for name, _ in service.ports
        )
        docs.append(
            f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service.name}-{index}
  namespace: {service.namespace}
  labels: {{kubernetes.io/service-name: {service.name}}}
addressType: IPv4
ports: [{slice_ports}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"""
        )
    return "---\n".join(docs)


def gateway_yaml(name: str, allowed_from: str, port: int) -> str:
    """A base Gateway in the infra namespace with one HTTP listener `http` on `port`."""
    selector = (
        "\n        selector: {matchLabels: {gateway-conformance: backend}}"
        if allowed_from == "Selector"
        else ""
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {INFRA}
  labels: {{kontinuum.io/cluster: {CLUSTER}}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: {allowed_from}{selector}
"""


def http_route(
    name: str,
    rules: str,
    *,
    parents: str = "[{name: same-namespace}]",
    hostnames: str | None = None,
    namespace: str = INFRA,
) -> str:
    """An HTTPRoute: `parents` is the flow-style `parentRefs` list, `hostnames` likewise,
    and `rules` the YAML list under `spec.rules`, indented by two spaces."""
    hostnames_field = "" if hostnames is None else f"\n  hostnames: {hostnames}"
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: {parents}{hostnames_field}
  rules:
{rules}"""


def case_gateway(name: str, listeners: str, namespace: str = INFRA) -> str:
    """A case's own Gateway in fleet form (its cluster, class and address added): `listeners`
    is the YAML list under `spec.listeners`, indented by two spaces."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{kontinuum.io/cluster: {CLUSTER}}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{listeners}"""


def base_files(
    backend_ports: Mapping[str, int], gateway_ports: Mapping[str, int]
) -> dict[str, str]:
    """The base fleet's files, by path relative to the fleet directory."""
    files = {
        "clusters.yaml": cluster_profile(CLUSTER, REGION),
        "namespaces.yaml": NAMESPACES,
        "grants.yaml": MESH_TO_CONSUMER,
        "gateways.yaml": "---\n".join(
            gateway_yaml(name, allowed, gateway_ports[name]) for name, allowed in GATEWAYS
        ),
    }
    by_namespace: dict[str, list[str]] = {}
    for service in SERVICES:
        by_namespace.setdefault(service.namespace, []).append(service_yaml(service, backend_ports))
    for namespace, docs in by_namespace.items():
        files[f"clusters/{CLUSTER}/{namespace}.yaml"] = "---\n".join(docs)
    return files


def joined(documents: Sequence[str]) -> str:
    """YAML documents as one file."""
    return "---\n".join(doc.strip() + "\n" for doc in documents)
