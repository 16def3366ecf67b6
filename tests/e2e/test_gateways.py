"""Gateways end to end: clusters on separate networks (network namespaces) that meet only
through their east-west gateways, and an ingress gateway programmed from a `Gateway`."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from kontinuum.bootstrap import envoy_bootstrap, proxy_metadata
from tests.e2e.backends import Backend, request
from tests.e2e.conftest import ServeFleet, StartEnvoy
from tests.e2e.netns import FleetNetwork
from tests.support.fleet import cluster_profile, ingress_gateway
from tests.support.net import free_port

pytestmark = pytest.mark.e2e

HELLO = "hello.demo.svc.clusterset.local"
XDS_PORT, ADMIN_PORT, MESH_PORT, OUTBOUND = 18000, 18001, 15443, 15001


def _service(port: int, address: str = "127.0.0.1", name: str = "hello") -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: demo
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [{address}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: demo, creationTimestamp: "2026-01-01T00:00:00Z"}}
"""


def _east_west(cluster: str, address: str) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: east-west-{cluster}
  namespace: kontinuum-system
  labels: {{kontinuum.io/cluster: {cluster}}}
spec:
  gatewayClassName: kontinuum-east-west
  addresses: [{{type: IPAddress, value: {address}}}]
  listeners:
  - name: mesh
    port: {MESH_PORT}
    protocol: TLS
    tls: {{mode: Passthrough}}
"""


def _write_network_fleet(root: Path, network: FleetNetwork, backend_port: int) -> None:
    """eu and us on networks of their own; hello runs only in us."""
    (root / "clusters" / "eu").mkdir(parents=True)
    (root / "clusters" / "us").mkdir(parents=True)
    (root / "clusters.yaml").write_text(
        cluster_profile("eu", "eu-central-1", network="net-eu")
        + "---\n"
        + cluster_profile("us", "us-east-1", network="net-us")
    )
    (root / "gateways.yaml").write_text(
        _east_west("us", network.cluster("us").address)
        + "---\n"
        + _east_west("eu", network.cluster("eu").address)
    )
    (root / "clusters" / "us" / "hello.yaml").write_text(_service(backend_port))


def _bootstrap(network: FleetNetwork, node: str, cluster: str, **metadata: object) -> dict:  # type: ignore[type-arg]
    return envoy_bootstrap(
        node_id=node,
        cluster=cluster,
        xds_address=f"{network.wan.address}:{XDS_PORT}",
        admin_port=0,
        delta=True,
        reconnect_backoff=("0.1s", "1s"),
        metadata=proxy_metadata(namespace="demo", **metadata),  # type: ignore[arg-type]
    )


def test_clusters_on_separate_networks_meet_only_through_east_west_gateways(
    tmp_path: Path,
    fleet_network: Callable[[Iterable[str]], FleetNetwork],
    envoy_path: str,
) -> None:
    network = fleet_network(["eu", "us"])
    eu, us = network.cluster("eu"), network.cluster("us")
    backend = us.backend("us-hello")
    _write_network_fleet(tmp_path / "fleet", network, backend.port)
    # The control plane runs on the WAN, as a real `kontinuum serve`.
    network.wan.popen(
        [sys.executable, "-m", "kontinuum", "serve", "--config", str(tmp_path / "fleet"),
         "--plaintext-xds",
         "--xds-address", f"{network.wan.address}:{XDS_PORT}",
         "--admin-address", f"{network.wan.address}:{ADMIN_PORT}"],
        cwd=str(Path(__file__).parents[2]),
    )  # fmt: skip
    network.wan.wait_http(f"http://{network.wan.address}:{ADMIN_PORT}/readyz", timeout=20)

    # The pod in us is not reachable from eu: only its gateway is.
    status, _ = eu.http_get(f"http://127.0.0.1:{backend.port}/")
    assert status == 0
    gateway = us.envoy(
        tmp_path / "gateway-us",
        node_id="gateway-us",
        view="us",
        xds_port=0,
        mode="delta",
        binary=envoy_path,
        config=_bootstrap(network, "gateway-us", "us", role="gateway"),
    )
    eu.envoy(
        tmp_path / "sidecar-eu",
        node_id="sidecar-eu",
        view="eu",
        xds_port=0,
        mode="delta",
        binary=envoy_path,
        config=_bootstrap(network, "sidecar-eu", "eu", role="sidecar", outbound_port=OUTBOUND),
    )
    url = f"http://127.0.0.1:{OUTBOUND}/"
    answers: list[tuple[int, str]] = []
    for _ in range(100):  # until both proxies have their configuration: 10 s at most
        answers.append(eu.http_get(url, headers={"Host": HELLO}))
        if answers[-1] == (200, "backend us-hello\n"):
            break
        network.wan.run(["sleep", "0.1"])
    assert answers[-1] == (200, "backend us-hello\n"), answers[-5:]

    steady = [eu.http_get(url, headers={"Host": HELLO}) for _ in range(50)]
    assert steady == [(200, "backend us-hello\n")] * 50
    gateway.wait_admin()
    through = gateway.stat("cluster.outbound|80|us|hello.demo.svc.clusterset.local.upstream_rq_2xx")
    assert through is not None
    assert through >= 51  # every request crossed the us gateway

    # A request to the gateway without the service header reaches nothing.
    status, _ = eu.http_get(f"http://{us.address}:{MESH_PORT}/", headers={"Host": HELLO})
    assert status == 404


GATEWAY = (
    ingress_gateway(
        """  - {name: web, port: PORT, protocol: HTTP, hostname: www.example.com}
"""
    )
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: demo}
spec:
  parentRefs: [{name: front, sectionName: web}]
  hostnames: [www.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hello}}]
    backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: 80}]
"""
)


@pytest.fixture
def ingress_fleet(tmp_path: Path, backends: Callable[[str], Backend]) -> tuple[Path, int]:
    """eu-central with hello exported, and a Gateway `front` on a free port: (root, port)."""
    listen = free_port()
    root = tmp_path / "fleet"
    (root / "clusters" / "eu-central").mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "gateway.yaml").write_text(GATEWAY.replace("PORT", str(listen)))
    backend = backends("eu-hello")
    (root / "clusters" / "eu-central" / "hello.yaml").write_text(_service(backend.port))
    return root, listen


async def test_an_ingress_gateway_serves_a_route_from_outside(
    ingress_fleet: tuple[Path, int], serve_fleet: ServeFleet, envoys: StartEnvoy
) -> None:
    root, listen = ingress_fleet
    served = await serve_fleet(root)
    mesh, xds_port = served.mesh, served.xds_port
    statuses = {(s.kind, s.name): s for s in mesh.routing_state.binding.statuses}
    (parent,) = statuses["HTTPRoute", "front"].parents
    assert [(c.type, c.status) for c in parent.conditions] == [
        ("Accepted", "True"),
        ("ResolvedRefs", "True"),
    ]
    envoys(
        view="eu-central",
        xds_port=xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
    )
    url = f"http://127.0.0.1:{listen}/hello/world"
    answer = await _until_ok(url, "www.example.com")
    assert answer == (200, "backend eu-hello\n")
    # Hostname matching ignores a port in the Host header, whichever port it is.
    for host in (f"www.example.com:{listen}", "www.example.com:1234"):
        assert await asyncio.to_thread(_get, url, host) == answer, host
    assert await asyncio.to_thread(_get, url, "other.example.com") == (404, "")
    assert await asyncio.to_thread(_get, url, "other.example.com:1234") == (404, "")
    other_path = f"http://127.0.0.1:{listen}/elsewhere"
    assert (await asyncio.to_thread(_get, other_path, "www.example.com"))[0] == 404


def _get(url: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    reply = request(parts.port or 80, host, parts.path, headers=headers, timeout=2)
    return reply.status, reply.body


async def _until_ok(url: str, host: str) -> tuple[int, str]:
    answer: tuple[int, str] = (0, "")
    for _ in range(100):  # 10 s at most
        answer = await asyncio.to_thread(_get, url, host)
        if answer[0] == 200:
            return answer
        await asyncio.sleep(0.1)
    return answer


ACROSS_ROUTES = (
    ingress_gateway(
        """  - {name: web, port: PORT, protocol: HTTP}
"""
    )
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact, namespace: demo}
spec:
  parentRefs: [{name: front}]
  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /one}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: one, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard, namespace: demo}
spec:
  parentRefs: [{name: front}]
  hostnames: ["*.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /one/more}}, {path: {type: PathPrefix, value: /}}]
    backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: two, port: 80}]
"""
)


async def test_routes_of_one_listener_each_serve_their_own_hostnames(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
) -> None:
    """HTTPRouteMatchingAcrossRoutes and the hostname precedence of HTTPRoute: each route
    serves its own hostnames only, and where they overlap the rules of the route with the
    more specific hostname go first, those of the other after them."""
    listen = free_port()
    root = tmp_path / "fleet"
    site = root / "clusters" / "eu-central"
    site.mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "gateway.yaml").write_text(ACROSS_ROUTES.replace("PORT", str(listen)))
    for name in ("one", "two"):
        (site / f"{name}.yaml").write_text(_service(backends(name).port, name=name))
    served = await serve_fleet(root)
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="demo", role="ingress", gateway="front"),
    )
    base = f"http://127.0.0.1:{listen}"
    assert await _until_ok(f"{base}/one", "example.com") == (200, "backend one\n")
    cases = [
        ("example.com", "/one", {}, "one"),
        ("example.com", "/", {"version": "one"}, "one"),
        # The exact hostname's rules go first: its /one wins over the wildcard route's
        # longer /one/more prefix.
        ("example.com", "/one/more", {}, "one"),
        # What the exact route does not match, the wildcard route (it covers example.com)
        # answers.
        ("example.com", "/two", {}, "two"),
        # The wildcard route does not name example.net: its rules are not there.
        ("example.net", "/one/more", {}, "one"),
        ("example.net", "/two", {}, None),
        # Nor are the exact route's rules on the other hosts the wildcard covers.
        ("shop.com", "/one", {}, "two"),
        ("shop.com", "/", {"version": "one"}, "two"),
        ("example.org", "/one", {}, None),
    ]
    for host, path, headers, expected in cases:
        answer = await asyncio.to_thread(_get, f"{base}{path}", host, headers)
        wanted = (200, f"backend {expected}\n") if expected else (404, "")
        assert answer == wanted, (host, path, headers)


SELECTING_GATEWAY = (
    ingress_gateway(
        """  - name: web
    port: PORT
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-access: front}}
""",
        namespace="infra",
    )
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello, namespace: demo}
spec:
  parentRefs: [{name: front, namespace: infra}]
  rules:
  - backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: hello, port: 80}]
"""
)


def _namespace(labels: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo, labels: {{{labels}}}}}\n"


async def test_a_listener_admits_the_routes_of_the_namespaces_its_selector_selects(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
) -> None:
    """HTTPRouteCrossNamespace: a Gateway of namespace infra takes routes from the namespaces
    labelled for it; labelling the route's namespace later attaches the route."""
    listen = free_port()
    root = tmp_path / "fleet"
    site = root / "clusters" / "eu-central"
    site.mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "gateway.yaml").write_text(SELECTING_GATEWAY.replace("PORT", str(listen)))
    namespaces = root / "namespaces.yaml"
    namespaces.write_text(_namespace("team: demo"))
    (site / "hello.yaml").write_text(_service(backends("hello").port))
    served = await serve_fleet(root)
    mesh = served.mesh

    def accepted() -> tuple[str, str, str]:
        statuses = {(s.kind, s.name): s for s in mesh.routing_state.binding.statuses}
        (parent,) = statuses["HTTPRoute", "hello"].parents
        condition = parent.conditions[0]
        return condition.status, condition.reason, condition.message

    assert accepted() == (
        "False",
        "NotAllowedByListeners",
        "no accepted listener of Gateway infra/front (web) admits HTTPRoutes from namespace demo",
    )
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="infra", role="ingress", gateway="front"),
    )
    url = f"http://127.0.0.1:{listen}/hello"
    answer: tuple[int, str] = (0, "")
    for _ in range(100):  # until the listener is up: 10 s at most
        answer = await asyncio.to_thread(_get, url, "www.example.com")
        if answer[0] != 0:
            break
        await asyncio.sleep(0.1)
    assert answer == (404, "")  # the listener is there, the route is not

    # Labelled for the Gateway, the namespace's route attaches and is served.
    namespaces.write_text(_namespace("team: demo, gateway-access: front"))
    assert await _until_ok(url, "www.example.com") == (200, "backend hello\n")
    assert accepted() == ("True", "Accepted", "")


def _documented_selector() -> str:
    """docs/routing.md's example of a listener that selects namespaces, as written."""
    text = (Path(__file__).parents[2] / "docs" / "routing.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "from: Selector" in b]
    assert len(blocks) == 1, f"docs/routing.md has {len(blocks)} examples of from: Selector"
    return blocks[0]


async def test_the_documented_namespace_selector_admits_the_labelled_namespace_only(
    tmp_path: Path,
    backends: Callable[[str], Backend],
    serve_fleet: ServeFleet,
    envoys: StartEnvoy,
) -> None:
    """docs/routing.md's Namespace `shop` and Gateway `shared` as written (on a free port):
    a route of shop is served, one of a namespace without the label is not admitted."""
    listen = free_port()
    root = tmp_path / "fleet"
    site = root / "clusters" / "eu-central"
    site.mkdir(parents=True)
    (root / "clusters.yaml").write_text(cluster_profile("eu-central", "eu-central-1"))
    (root / "shared.yaml").write_text(_documented_selector().replace("8080", str(listen)))
    routes = []
    for namespace in ("shop", "ops"):
        service = _service(backends(namespace).port, name=namespace)
        (site / f"{namespace}.yaml").write_text(
            service.replace("namespace: demo", f"namespace: {namespace}")
        )
        routes.append(
            f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {namespace}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: shared, namespace: infra}}]
  hostnames: [{namespace}.example.com]
  rules:
  - backendRefs: [{{name: {namespace}, port: 80}}]
"""
        )
    (root / "routes.yaml").write_text("---\n".join(routes))
    served = await serve_fleet(root)
    statuses = {s.name: s for s in served.mesh.routing_state.binding.statuses}
    accepted = {name: statuses[name].parents[0].conditions[0].reason for name in ("shop", "ops")}
    assert accepted == {"shop": "Accepted", "ops": "NotAllowedByListeners"}
    envoys(
        view="eu-central",
        xds_port=served.xds_port,
        mode="delta",
        metadata=proxy_metadata(namespace="infra", role="ingress", gateway="shared"),
    )
    url = f"http://127.0.0.1:{listen}/"
    assert await _until_ok(url, "shop.example.com") == (200, "backend shop\n")
    assert await asyncio.to_thread(_get, url, "ops.example.com") == (404, "")
