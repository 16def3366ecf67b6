"""The network-namespace harness: clusters are isolated except through their WAN address.

A pod (127.0.0.1 in its cluster's namespace) answers only there; whatever listens on a
cluster's WAN address, such as an Envoy gateway, answers every other cluster and the WAN.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import (
    BackendProcess,
    FleetNetwork,
    harness_namespaces,
    ip,
    sweep_leftovers,
)

pytestmark = pytest.mark.e2e

MakeNetwork = Callable[[Iterable[str]], FleetNetwork]
GATEWAY_PORT = 15443  # every namespace has its own ports: fixed numbers cannot clash


def test_a_pod_answers_only_inside_its_cluster(fleet_network: MakeNetwork) -> None:
    network = fleet_network(["eu", "us"])
    eu, us = network.cluster("eu"), network.cluster("us")
    pod = eu.backend("pod")

    assert eu.http_get(pod.url) == (200, "backend pod\n")
    for outside in (us, network.wan):
        status, error = outside.http_get(pod.url)
        assert status == 0, f"{pod.url} answered from {outside}"
        assert "ConnectionRefused" in error


def test_a_cluster_address_answers_every_other_cluster(fleet_network: MakeNetwork) -> None:
    network = fleet_network(["eu", "us", "ap"])
    eu = network.cluster("eu")
    gateway = eu.backend("eu-gateway", address=eu.address, port=GATEWAY_PORT)
    control_plane = network.wan.backend("control-plane", address=network.wan.address)

    for other in (network.cluster("us"), network.cluster("ap"), network.wan):
        assert other.http_get(gateway.url) == (200, "backend eu-gateway\n")
    assert eu.http_get(control_plane.url) == (200, "backend control-plane\n")
    assert len({n.address for n in network.namespaces}) == 4


def test_an_envoy_in_a_namespace_is_its_cluster_gateway(
    fleet_network: MakeNetwork, envoy_path: str, tmp_path: Path
) -> None:
    network = fleet_network(["eu", "us"])
    eu, us = network.cluster("eu"), network.cluster("us")
    pod = eu.backend("pod")
    envoy = eu.envoy(
        tmp_path / "gateway",
        node_id="eu-gateway",
        view="eu",
        xds_port=0,
        mode="sotw",
        binary=envoy_path,
        config=_tcp_gateway(eu.address, GATEWAY_PORT, pod.port),
    )
    envoy.wait_admin()  # over its Unix socket, from the test's own namespace
    url = f"http://{eu.address}:{GATEWAY_PORT}/"
    us.wait_http(url)

    assert us.http_get(url) == (200, "backend pod\n")
    assert us.http_get(pod.url)[0] == 0  # the pod itself stays out of reach
    assert (envoy.stat("cluster.pods.upstream_cx_total") or 0) >= 2


def test_a_cluster_behind_nat_dials_out_and_answers_only_on_its_published_ports(
    fleet_network: Callable[..., FleetNetwork],
) -> None:
    network = fleet_network(["eu", "edge"], behind_nat=["edge"])
    edge, nat = network.cluster("edge"), network.nat("edge")
    control_plane = network.wan.backend("control-plane", address=network.wan.address)
    gateway = edge.backend("edge-gateway", address=edge.address, port=GATEWAY_PORT)

    # Out: through the router, masqueraded.
    assert edge.http_get(control_plane.url) == (200, "backend control-plane\n")
    # In: no route to the private subnet; the published address only on a published port.
    private = f"http://{nat.private_address}:{GATEWAY_PORT}/"
    status, error = network.wan.http_get(private, timeout=1.0)
    assert (status, "unreachable" in error) == (0, True), error
    assert network.wan.http_get(gateway.url, timeout=1.0)[0] == 0
    nat.publish(GATEWAY_PORT)
    for outside in (network.wan, network.cluster("eu")):
        assert outside.http_get(gateway.url) == (200, "backend edge-gateway\n")

    nat.cut()
    assert edge.http_get(control_plane.url, timeout=1.0)[0] == 0
    assert network.wan.http_get(gateway.url, timeout=1.0)[0] == 0
    nat.restore()
    assert edge.http_get(control_plane.url) == (200, "backend control-plane\n")
    assert network.wan.http_get(gateway.url) == (200, "backend edge-gateway\n")


@pytest.mark.usefixtures("fleet_network")  # fails clearly without root or `ip`
def test_every_namespace_is_deleted_on_exit_even_after_a_failure() -> None:
    network = FleetNetwork(["eu", "us"])
    names = {namespace.name for namespace in network.namespaces}
    pods: list[BackendProcess] = []

    def crash() -> None:
        with network:
            assert names <= set(harness_namespaces())
            pods.append(network.cluster("eu").backend("pod"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash()
    assert not names & set(harness_namespaces())
    assert pods[0].process.poll() is not None


@pytest.mark.usefixtures("fleet_network")
def test_leftovers_of_a_dead_run_are_swept_and_live_ones_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"kn-{dead.pid}-0-eu"
    with FleetNetwork(["eu"]) as live:  # entering the first fleet sweeps too: add it after
        ip("netns", "add", leftover)
        try:
            swept = sweep_leftovers()
        finally:
            if leftover in harness_namespaces():
                ip("netns", "delete", leftover)
        assert leftover in swept
        assert {n.name for n in live.namespaces} <= set(harness_namespaces())


def _tcp_gateway(address: str, port: int, pod_port: int) -> dict[str, Any]:
    """A static Envoy that forwards `address:port` to the pod on 127.0.0.1:`pod_port`."""
    tcp_proxy = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    return {
        "node": {"id": "eu-gateway", "cluster": "eu"},
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": address, "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": f"type.googleapis.com/{tcp_proxy}",
                                        "stat_prefix": "gateway",
                                        "cluster": "pods",
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "pods",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "pods",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": pod_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
