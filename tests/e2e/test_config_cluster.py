"""`kontinuum serve --config-cluster` end to end: the fleet-wide objects in a config cluster,
workload clusters reached through their APIs, status written back, two replicas.

Every cluster is kmock's Kubernetes API emulator over real HTTP (tests/support/kube.py,
kube_writes.py), read and written by the official client; the sidecar is a real Envoy and
the backends are real HTTP servers on loopback. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kontinuum.app import RunningFleet, running_fleet
from kontinuum.bootstrap import proxy_metadata
from kontinuum.control.model import FleetConfig, KubernetesAccess
from kontinuum.discovery.aggregate import SourceState
from kontinuum.discovery.config_cluster import ConfigClusterSource
from kontinuum.discovery.source import Health
from kontinuum.kube import LeaseConfig
from kontinuum.writeback import StatusOptions
from kontinuum.xds import XdsServer
from tests.e2e.backends import Backend, Reply, request
from tests.e2e.conftest import StartEnvoy
from tests.e2e.test_gateway_https import _https_get
from tests.support.fleet import fast
from tests.support.kube import (
    Follower,
    endpoint_slice,
    service,
    service_export,
    write_kubeconfig,
)
from tests.support.kube_writes import WritableKubeCluster
from tests.support.net import eventually, free_port
from tests.support.server_certs import TestCa, tls_secret

pytestmark = pytest.mark.e2e

LEASE = LeaseConfig(lease_duration=2, renew_deadline=1.2, retry_period=0.3, release_on_cancel=True)
STATUS = StatusOptions(LEASE, backoff=(0.2, 1.0))


def cluster_profile(name: str, kubeconfig: Path) -> dict[str, Any]:
    """A ClusterProfile, as the hub holds it, for a cluster reached through `kubeconfig`."""
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {
            "name": name,
            "namespace": "fleet-system",
            "labels": {"topology.kubernetes.io/region": "eu-west-1"},
            "annotations": {
                "kontinuum.io/source": "kubernetes",
                "kontinuum.io/kubeconfig": str(kubeconfig),
                "kontinuum.io/context": name,
            },
        },
    }


def http_route(path: str, backend: str) -> dict[str, Any]:
    """HTTPRoute shop/front: requests under `path` go to `backend`, the rest to `web`."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "front", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "front", "port": 80}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [{"name": backend, "port": 80}],
                },
                {"backendRefs": [{"name": "web", "port": 80}]},
            ],
        },
    }


def endpointed(name: str, port: int) -> list[dict[str, Any]]:
    """Service shop/`name` on port 80, one endpoint 127.0.0.1:`port`."""
    slice_ = endpoint_slice(f"{name}-1", name, ["127.0.0.1"], port=port)
    slice_["ports"][0]["name"] = "http"
    return [service(name, port=80), slice_]


def route_parent(hub: WritableKubeCluster) -> dict[str, Any] | None:
    """kontinuum's entry in HTTPRoute shop/front's status, if written."""
    found = hub.object("HTTPRoute", "shop", "front")
    parents = (found or {}).get("status", {}).get("parents", [])
    return next(
        (p for p in parents if p["controllerName"] == "kontinuum.io/gateway-controller"), None
    )


def accepted(hub: WritableKubeCluster) -> tuple[str, str, int] | None:
    parent = route_parent(hub)
    if parent is None:
        return None
    (condition,) = [c for c in parent["conditions"] if c["type"] == "Accepted"]
    return (condition["status"], condition["reason"], condition["observedGeneration"])


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(name).start())
        return started[-1]

    yield start
    for backend in started:
        backend.stop()


@contextlib.asynccontextmanager
async def replica(hub: WritableKubeCluster, kubeconfig: Path) -> AsyncIterator[RunningFleet]:
    """One kontinuum replica whose config cluster is `hub`, writing status as leader."""
    access = KubernetesAccess(kubeconfig=str(kubeconfig), context=hub.name)
    async with running_fleet(fast(config_cluster=access, status=STATUS)) as fleet:
        yield fleet


async def test_routes_from_the_config_cluster_steer_real_traffic(
    tmp_path: Path, backends: Callable[[str], Backend], envoys: StartEnvoy
) -> None:
    """Routes and ClusterProfiles live in the hub; an edit there moves traffic; an invalid
    edit changes nothing and the route's status says why; a deleted route is gone."""
    web, v2, v3 = backends("web"), backends("web-v2"), backends("web-v3")
    async with (
        WritableKubeCluster("hub") as hub,
        WritableKubeCluster("eu") as eu,
    ):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub, eu])
        eu.put(
            service("front", port=80), *endpointed("web", web.port),
            *endpointed("web-v2", v2.port), *endpointed("web-v3", v3.port),
        )  # fmt: skip
        hub.put(cluster_profile("eu", kubeconfig), http_route("/v2", "web-v2"))
        async with replica(hub, kubeconfig) as fleet:
            server = XdsServer(fleet.mesh.cache, resolve_view=fleet.mesh.resolve_view)
            xds_port = await server.start("127.0.0.1:0")
            try:
                outbound = free_port()
                envoy = envoys(
                    view="eu",
                    xds_port=xds_port,
                    mode="delta",
                    metadata=proxy_metadata(
                        namespace="shop", role="sidecar", outbound_port=outbound
                    ),
                )
                await asyncio.to_thread(envoy.wait_live, 15)

                def answers(path: str) -> Callable[[], Reply | None]:
                    def ask() -> Reply | None:
                        reply = request(outbound, "front.shop", path, None, 2.0)
                        return reply if reply.status == 200 else None

                    return ask

                async def backend_of(path: str, name: str) -> None:
                    await eventually(
                        lambda: (answers(path)() or Reply(0, "")).backend == name,
                        what=f"{path} -> {name}",
                    )

                await backend_of("/v2/x", "web-v2")
                await backend_of("/", "web")
                assert await eventually(lambda: accepted(hub), what="the route's status") == (
                    "True",
                    "Accepted",
                    1,
                )
                parent = route_parent(hub)
                assert parent is not None
                assert parent["parentRef"] == {
                    "group": "",
                    "kind": "Service",
                    "namespace": "shop",
                    "name": "front",
                    "port": 80,
                }

                hub.put(http_route("/v3", "web-v3"))  # generation 2
                await backend_of("/v3/x", "web-v3")
                await backend_of("/v2/x", "web")
                await eventually(
                    lambda: accepted(hub) == ("True", "Accepted", 2), what="generation 2"
                )

                hub.put(http_route("v4", "web-v2"))  # generation 3: not a path
                await eventually(
                    lambda: accepted(hub) == ("False", "UnsupportedValue", 3), what="the rejection"
                )
                parent = route_parent(hub)
                assert parent is not None
                (condition,) = [c for c in parent["conditions"] if c["type"] == "Accepted"]
                assert "must be an absolute path" in condition["message"]
                assert condition["message"].endswith(
                    "its last accepted version (generation 2) stays in force"
                )
                replies = [answers("/v3/x")() for _ in range(20)]
                assert {r.backend if r else None for r in replies} == {"web-v3"}
                config = fleet.config
                assert config is not None
                assert config.status().errors[0].name == "front"

                hub.remove("HTTPRoute", "shop", "front")  # front.shop: its own endpoints, none
                await eventually(
                    lambda: request(outbound, "front.shop", "/v3/x", None, 2.0).status == 503,
                    what="the route is gone",
                )
            finally:
                await server.stop(0)


async def test_one_of_two_replicas_writes_export_conflicts_and_the_other_takes_over(
    tmp_path: Path,
) -> None:
    """ServiceExport status (a port conflict, an export of no Service) by the Lease's holder
    only; when it stops, the other replica takes the Lease and writes what changes next."""
    async with (
        WritableKubeCluster("hub") as hub,
        WritableKubeCluster("eu") as eu,
        WritableKubeCluster("us") as us,
    ):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub, eu, us])
        hub.put(cluster_profile("eu", kubeconfig), cluster_profile("us", kubeconfig))
        api_export = service_export("api")
        api_export["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
        eu.put(service("api", port=80), api_export)  # the oldest export: its ports win
        us.put(service("api", port=8080), service_export("api"))
        eu.put(service_export("ghost"))  # an export of no Service

        def export_condition(
            cluster: WritableKubeCluster, kind: str, name: str = "api"
        ) -> tuple[str, str] | None:
            found = cluster.object("ServiceExport", "shop", name)
            for condition in (found or {}).get("status", {}).get("conditions", []):
                if condition["type"] == kind:
                    return (condition["status"], condition["reason"])
            return None

        running: dict[str, tuple[contextlib.AsyncExitStack, RunningFleet]] = {}
        try:
            for name in ("a", "b"):
                stack = contextlib.AsyncExitStack()
                running[name] = (stack, await stack.enter_async_context(replica(hub, kubeconfig)))

            def leader() -> str | None:
                leading = [
                    name
                    for name, (_, fleet) in running.items()
                    if fleet.status is not None and fleet.status.election.is_leader
                ]
                assert len(leading) <= 1, f"two replicas lead at once: {leading}"
                return leading[0] if leading else None

            first = await eventually(leader, what="a replica leads")
            await eventually(
                lambda: export_condition(us, "Conflict") == ("True", "PortConflict"),
                what="us's export reports the conflict",
            )
            assert export_condition(eu, "Conflict") == ("False", "NoConflicts")
            assert export_condition(us, "Ready") == ("True", "Ready")
            found = us.object("ServiceExport", "shop", "api")
            assert found is not None
            (conflict,) = [c for c in found["status"]["conditions"] if c["type"] == "Conflict"]
            assert "clash with the ports of the export in cluster eu" in conflict["message"]
            await eventually(
                lambda: export_condition(eu, "Valid", "ghost") == ("False", "NoService"),
                what="the export of no Service is not valid",
            )

            (follower,) = set(running) - {first}
            follower_status = running[follower][1].status
            assert follower_status is not None
            await asyncio.sleep(0.5)  # a follower that would write has had its chance
            assert leader() == first
            assert not any(outcome == "written" for _, outcome in follower_status.writer.totals)
            patches = len(us.status_patches)

            # The leader stops and hands the Lease over: the other takes it at its next try.
            stack, _ = running.pop(first)
            await stack.aclose()
            assert await eventually(leader, 5, what="the other replica leads") == follower
            us.put(service("api", port=80))  # the conflict is resolved
            await eventually(
                lambda: export_condition(us, "Conflict") == ("False", "NoConflicts"),
                what="the new leader writes the resolution",
            )
            assert len(us.status_patches) > patches
            await eventually(  # counted once its answer is read, a moment after the write
                lambda: follower_status.writer.totals["ServiceExport", "written"] >= 1,
                what="the new leader counts its write",
            )

            # Every status write, in every cluster, came from the Lease's holder of the
            # moment: requests name their replica in the User-Agent.
            def holder_at(moment: float) -> str:
                before = [holder for when, holder in hub.lease_holders if when <= moment]
                return before[-1] if before else ""

            writers = set()
            for cluster in (eu, us):
                for when, agent in cluster.status_writers:
                    identity = agent.rpartition("(")[2].rstrip(")")
                    assert identity == holder_at(when), (cluster.name, agent, hub.lease_holders)
                    writers.add(identity)
            assert len(writers) == 2  # the first leader, then the second
        finally:
            for stack, _ in running.values():
                await stack.aclose()


async def test_a_lost_cluster_keeps_its_endpoints_for_its_stale_after(tmp_path: Path) -> None:
    """`kontinuum.io/stale-after: 1s`: once eu's API is gone, its endpoints stay (stale) for
    a second, then go; its Service stays; back, it is fresh again."""
    async with WritableKubeCluster("hub") as hub, WritableKubeCluster("eu") as eu:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub, eu])
        profile = cluster_profile("eu", kubeconfig)
        profile["metadata"]["annotations"]["kontinuum.io/stale-after"] = "1s"
        hub.put(profile)
        eu.put(*endpointed("web", 8081), service_export("web"))
        async with replica(hub, kubeconfig) as fleet:

            def endpoints() -> list[int] | None:
                services = [s for s in fleet.mesh.plane.services if s.name == "web"]
                if not services:
                    return None
                return [e.port for p in services[0].ports for e in p.endpoints]

            def source() -> SourceState:
                (state,) = [
                    s for s in fleet.aggregator.source_states() if s.name == "kubernetes:eu"
                ]
                return state

            assert await eventually(lambda: endpoints() == [8081], what="eu's endpoint")
            await eu.stop()
            lost = time.monotonic()
            await eventually(lambda: source().stale, what="eu is stale")
            assert endpoints() == [8081]  # kept while stale
            await eventually(lambda: endpoints() == [], 5, what="eu's endpoints dropped")
            assert time.monotonic() - lost >= 0.9
            assert source().stale  # its Service stays, marked stale
            await eu.start()
            await eventually(lambda: endpoints() == [8081], 10, what="eu back")
            assert not source().stale


async def test_a_kind_kontinuum_may_not_list_degrades_but_does_not_block(tmp_path: Path) -> None:
    """RBAC without LocalityPolicies and Namespaces: the config cluster's routes are read
    all the same, and its source says what it may not read."""
    forbidden = frozenset({"LocalityPolicy", "Namespace"})
    async with WritableKubeCluster("hub", forbidden_apis=forbidden) as hub:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub])
        hub.put(cluster_profile("eu", kubeconfig), http_route("/v2", "web-v2"))
        access = KubernetesAccess(kubeconfig=str(kubeconfig), context="hub")
        source = ConfigClusterSource(access, backoff=(0.05, 0.2), debounce=0.05)
        async with Follower(source) as follower:
            config = await eventually(
                lambda: next((u for u in follower.updates if isinstance(u, FleetConfig)), None),
                what="the config cluster's objects",
            )
            assert [r.name for r in config.routing.routes] == ["front"]
            status = source.status()
            assert status.health is Health.DEGRADED
            assert "kontinuum may not list policy.kontinuum.io/v1alpha1 localitypolicies" in (
                status.detail
            )
            assert "kontinuum may not list v1 namespaces" in status.detail
            assert "403 Forbidden" in status.detail

            # Once listed, a 403 is a failure: the routes read stay in force.
            hub.forbidden_apis = frozenset({"HTTPRoute"})
            hub.expire()  # the watches end: HTTPRoutes are listed again, and refused
            await eventually(
                lambda: "out of sync" in source.status().detail, what="HTTPRoutes out of sync"
            )
            latest = [u for u in follower.updates if isinstance(u, FleetConfig)][-1]
            assert [r.name for r in latest.routing.routes] == ["front"]


def gateway_class(name: str, controller: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def ingress(name: str, gateway_class: str, cluster: str | None) -> dict[str, Any]:
    labels = {"kontinuum.io/cluster": cluster} if cluster else {}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {
            "gatewayClassName": gateway_class,
            "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}],
        },
    }


async def test_other_controllers_objects_are_left_alone(tmp_path: Path) -> None:
    """A shared config cluster: another controller's GatewayClass, Gateway and routes get
    no status from kontinuum; kontinuum's get theirs, and a route that never was valid
    says why on the parents it names."""
    istio_status = {
        "parents": [
            {
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "x"},
                "controllerName": "istio.io/gateway-controller",
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
            }
        ]
    }
    async with WritableKubeCluster("hub") as hub:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub])
        theirs_route = http_route("/", "web")
        theirs_route["metadata"]["name"] = "theirs"
        theirs_route["spec"]["parentRefs"] = [{"name": "x"}]  # istio's Gateway
        theirs_route["status"] = istio_status
        never_valid = http_route("no-slash", "web")
        never_valid["metadata"]["name"] = "broken"
        hub.put(
            {**cluster_profile("eu", kubeconfig), "metadata": {"name": "eu", "namespace": "f"}},
            gateway_class("kontinuum", "kontinuum.io/gateway-controller"),
            gateway_class("istio", "istio.io/gateway-controller"),
            ingress("ours", "kontinuum", "eu"),
            ingress("x", "istio", None),  # no kontinuum.io/cluster label: not kontinuum's
            theirs_route,
            never_valid,
        )
        async with replica(hub, kubeconfig) as fleet:
            assert fleet.config is not None

            def condition(kind: str, name: str, namespace: str = "shop") -> Any:
                found = hub.object(kind, namespace, name) or {}
                return found.get("status", {}).get("conditions", [{}])[0].get("reason")

            await eventually(lambda: condition("GatewayClass", "kontinuum", "") == "Accepted")
            await eventually(lambda: condition("Gateway", "ours") is not None, what="ours")
            broken = await eventually(
                lambda: (hub.object("HTTPRoute", "shop", "broken") or {}).get("status"),
                what="the never-valid route's status",
            )
            (parent,) = broken["parents"]
            assert parent["parentRef"]["name"] == "front"
            (refused,) = parent["conditions"]
            assert (refused["status"], refused["reason"]) == ("False", "UnsupportedValue")
            assert refused["message"].endswith("it is not served")

            assert fleet.status is not None
            decided = {str(d.ref) for d in fleet.status.desired()}
            assert decided == {
                "GatewayClass kontinuum in kubernetes-config:hub",
                "Gateway shop/ours in kubernetes-config:hub",
                "HTTPRoute shop/broken in kubernetes-config:hub",
            }
            written = {(kind, name) for kind, _, name, _ in hub.status_patches}
            assert ("GatewayClass", "istio") not in written
            assert ("Gateway", "x") not in written
            assert ("HTTPRoute", "theirs") not in written
            theirs = hub.object("HTTPRoute", "shop", "theirs")
            assert theirs is not None
            assert theirs["status"] == istio_status
            assert fleet.config.status().health is Health.DEGRADED  # only for "broken"
            assert [e.name for e in fleet.config.status().errors] == ["broken"]


async def test_a_gateway_certificate_from_the_config_cluster_is_served_and_rotated(
    tmp_path: Path, backends: Callable[[str], Backend], envoys: StartEnvoy
) -> None:
    """An HTTPS Gateway and its kubernetes.io/tls Secret in the hub: the ingress Envoy
    presents the Secret's certificate, and a renewed Secret there is served without a
    restart; the listener's status says when its Secret is missing."""
    web = backends("web")
    ca = TestCa()
    first, renewed = ca.issue("www.example.com"), ca.issue("www.example.com")
    listen = free_port()
    gateway = ingress("secure", "kontinuum", "eu")
    gateway["spec"]["addresses"] = [{"type": "IPAddress", "value": "127.0.0.1"}]
    gateway["spec"]["listeners"] = [
        {
            "name": "https",
            "port": listen,
            "protocol": "HTTPS",
            "hostname": "www.example.com",
            "tls": {"certificateRefs": [{"name": "www"}]},
        }
    ]
    route = http_route("/", "web")
    route["spec"]["parentRefs"] = [{"name": "secure"}]
    async with (
        WritableKubeCluster("hub") as hub,
        WritableKubeCluster("eu") as eu,
    ):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [hub, eu])
        eu.put(*endpointed("web", web.port))
        hub.put(
            cluster_profile("eu", kubeconfig),
            gateway_class("kontinuum", "kontinuum.io/gateway-controller"),
            gateway,
            route,
            yaml.safe_load(tls_secret("shop", "www", first.certificate, first.key)),
        )
        async with replica(hub, kubeconfig) as fleet:
            server = XdsServer(fleet.mesh.cache, resolve_view=fleet.mesh.resolve_view)
            xds_port = await server.start("127.0.0.1:0")
            try:
                envoy = envoys(
                    view="eu",
                    xds_port=xds_port,
                    mode="delta",
                    metadata=proxy_metadata(namespace="shop", role="ingress", gateway="secure"),
                )

                def served() -> int:
                    return _https_get(listen, "www.example.com", ca.pem, "/").serial

                await eventually(lambda: served() == first.serial, what="the first certificate")
                pid = envoy.pid
                hub.put(yaml.safe_load(tls_secret("shop", "www", renewed.certificate, renewed.key)))
                await eventually(lambda: served() == renewed.serial, what="the renewed one")
                assert envoy.pid == pid

                hub.remove("Secret", "shop", "www")

                def listener_reason() -> str | None:
                    found = hub.object("Gateway", "shop", "secure") or {}
                    for listener in found.get("status", {}).get("listeners", []):
                        for condition in listener["conditions"]:
                            if condition["type"] == "ResolvedRefs":
                                return str(condition["reason"])
                    return None

                await eventually(
                    lambda: listener_reason() == "InvalidCertificateRef", what="the status"
                )
            finally:
                await server.stop(0)
