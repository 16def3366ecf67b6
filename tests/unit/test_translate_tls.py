"""Workload mTLS and authorization in translation (`kontinuum.control.translate.tls`): where
the TLS-mode label is read, which clusters originate mTLS, the inbound listener's RBAC, and
the east-west gateways' grouping by TLS mode. (Envoy accepts the golden cases' output:
tests/unit/test_translate.py; traffic: tests/e2e/test_workload_mtls.py.)"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from kontinuum.control.fleet import TLS_MODE_LABEL, parse_cluster_objects
from kontinuum.control.mcs import build_plane
from kontinuum.control.model import ClusterSite, Fleet, ServiceRef
from kontinuum.control.naming import ClusterName, parse_sni
from kontinuum.control.objects import Document
from kontinuum.control.plane import Locality, PlaneEndpoint, PlanePort, PlaneService, ProxyView
from kontinuum.control.translate import SidecarOptions, translate_sidecar
from kontinuum.control.translate.backends import outbound
from kontinuum.control.translate.gateways import east_west_gateway
from kontinuum.control.translate.networks import NetworkGateway, Networks
from kontinuum.control.translate.options import WorkloadTls
from kontinuum.control.translate.tls import MUTUAL_TLS_MATCH, ROOT_SECRET, WORKLOAD_SECRET
from kontinuum.discovery.kube_view import ENDPOINT_SLICE, SERVICE, object_document
from kontinuum.telemetry.envoy_stats import CLUSTER_TAGS, INCLUDED_STATS
from tests.golden.test_golden import CASES, HERE, translate_case, translate_path

MTLS = WorkloadTls("cluster.local")
VIEW = ProxyView("shop", "east-1")
EAST = Locality("east-1", "us-east")


def _endpoint(
    address: str, *, mutual: bool = False, ready: bool = True, where: Locality = EAST
) -> PlaneEndpoint:
    return PlaneEndpoint(address, 8080, where, ready, mutual_tls=mutual)


def _service(
    *endpoints: PlaneEndpoint, namespace: str = "shop", name: str = "cart", app: str | None = None
) -> PlaneService:
    port = PlanePort(80, "http", app_protocol=app, endpoints=endpoints)
    return PlaneService(namespace, name, namespace, (port,))


def _of(resources: tuple[Any, ...], kind: type) -> dict[str, Any]:
    return {
        (m.cluster_name if kind is endpoint_pb2.ClusterLoadAssignment else m.name): m
        for m in resources
        if isinstance(m, kind)
    }


def _bytes(resources: tuple[Any, ...]) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in resources]


def _unpack(packed: Any, kind: type) -> Any:
    message = kind()
    assert packed.Unpack(message), packed.type_url
    return message


# --- the label, in both sources and through the plane ------------------------------------


def _slice(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "cart-1",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "cart", **labels},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.1.0.1"]}],
    }


_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "cart", "namespace": "shop"},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}


@pytest.mark.parametrize(
    ("labels", "mutual"),
    [({TLS_MODE_LABEL: "mutual"}, True), ({TLS_MODE_LABEL: "disabled"}, False), ({}, False)],
)
def test_the_tls_mode_label_of_a_slice_says_which_endpoints_require_mtls(
    labels: dict[str, str], mutual: bool
) -> None:
    docs = [Document("cart.yaml", _SERVICE, 1), Document("cart.yaml", _slice(labels), 2)]
    snapshot, errors = parse_cluster_objects("east-1", docs)
    assert errors == []
    assert [e.mutual_tls for e in snapshot.endpoints] == [mutual]
    # and through the plane, on every port of the service
    plane = build_plane(Fleet(sites=(ClusterSite("east-1"),), snapshots=(snapshot,)))
    (service,) = plane.services
    assert [e.mutual_tls for p in service.ports for e in p.endpoints] == [mutual]


def test_another_tls_mode_is_an_error_naming_the_object_and_field() -> None:
    docs = [
        Document("cart.yaml", _SERVICE, 1),
        Document("cart.yaml", _slice({TLS_MODE_LABEL: "strict"}), 2),
    ]
    snapshot, errors = parse_cluster_objects("east-1", docs)
    assert snapshot.endpoints == ()
    assert [str(e) for e in errors] == [
        "cart.yaml: EndpointSlice shop/cart-1: metadata.labels[kontinuum.io/tls-mode]: "
        "must be one of mutual, disabled, got 'strict'"
    ]


def test_the_kubernetes_source_reads_the_label_from_the_slice_metadata() -> None:
    body = _slice({TLS_MODE_LABEL: "mutual"})
    del body["apiVersion"], body["kind"]  # as a list answers it
    docs = [
        object_document(
            "kubernetes:east-1", SERVICE, {k: _SERVICE[k] for k in ("metadata", "spec")}
        ),
        object_document("kubernetes:east-1", ENDPOINT_SLICE, body),
    ]
    snapshot, errors = parse_cluster_objects("east-1", docs)
    assert errors == []
    assert [e.mutual_tls for e in snapshot.endpoints] == [True]


# --- outbound ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_without_mtls_the_tls_modes_and_grants_change_nothing(case: str, tmp_path: Path) -> None:
    """Every golden case without `mtls`, its endpoints marked mutual and inbound grants
    given: the same bytes as the case itself."""
    raw = yaml.safe_load((HERE / f"{case}.in.yaml").read_text())
    if (raw.get("options") or {}).get("mtls") is not None:
        return
    for service in raw.get("services", ()):
        for port in service.get("ports", ()):
            for endpoint in port.get("endpoints", ()):
                endpoint["mutual_tls"] = True
    raw["options"] = {
        **(raw.get("options") or {}),
        "inbound_consumers": ["web"],
        "inbound_principals": ["spiffe://cluster.local/ns/ops/sa/prober"],
    }
    marked = tmp_path / f"{case}.in.yaml"
    marked.write_text(yaml.safe_dump(raw))
    same = translate_case(case)[0].resources
    assert _bytes(translate_path(marked)[0].resources) == _bytes(same)


def test_a_cluster_of_plaintext_endpoints_is_the_same_with_mtls() -> None:
    """Proxyless gRPC clients share these clusters and do not speak SDS."""
    service = _service(_endpoint("10.1.0.1"), _endpoint("10.1.0.2"))
    without = translate_sidecar([service], VIEW, None, SidecarOptions())
    with_mtls = translate_sidecar([service], VIEW, None, SidecarOptions(mtls=MTLS))
    assert _bytes(with_mtls.resources) == _bytes(without.resources)


def test_only_a_cluster_with_a_mutual_endpoint_originates_mtls_and_only_to_it() -> None:
    service = _service(_endpoint("10.1.0.1", mutual=True), _endpoint("10.1.0.2"))
    resources = translate_sidecar([service], VIEW, None, SidecarOptions(mtls=MTLS)).resources
    name = "outbound|80||cart.shop.svc.clusterset.local"
    cluster = _of(resources, cluster_pb2.Cluster)[name]
    assert not cluster.HasField("transport_socket")  # plaintext by default
    (match,) = cluster.transport_socket_matches
    assert match.name == MUTUAL_TLS_MATCH
    assert dict(match.match) == {"tlsMode": "mutual"}
    (locality,) = _of(resources, endpoint_pb2.ClusterLoadAssignment)[name].endpoints
    marks = {
        e.endpoint.address.socket_address.address: dict(
            e.metadata.filter_metadata["envoy.transport_socket_match"]
        )
        for e in locality.lb_endpoints
    }
    assert marks == {"10.1.0.1": {"tlsMode": "mutual"}, "10.1.0.2": {}}


def test_a_mutual_endpoint_that_is_not_ready_keeps_the_match() -> None:
    """A readiness change does not change the Cluster (it would be warmed again)."""
    ready = _service(_endpoint("10.1.0.1", mutual=True), _endpoint("10.1.0.2"))
    unready = _service(_endpoint("10.1.0.1", mutual=True, ready=False), _endpoint("10.1.0.2"))
    options = SidecarOptions(mtls=MTLS)
    clusters = [
        _of(translate_sidecar([s], VIEW, None, options).resources, cluster_pb2.Cluster)
        for s in (ready, unready)
    ]
    assert clusters[0] == clusters[1]


def _upstream_context(cluster: Any) -> Any:
    (match,) = cluster.transport_socket_matches
    return _unpack(match.transport_socket.typed_config, tls_pb2.UpstreamTlsContext)


def test_the_peer_must_hold_an_identity_of_the_services_namespace() -> None:
    cart = _service(_endpoint("10.1.0.1", mutual=True))
    billing = _service(
        _endpoint("10.1.1.1", mutual=True), namespace="payments", name="billing", app="grpc"
    )
    resources = translate_sidecar([cart, billing], VIEW, None, SidecarOptions(mtls=MTLS)).resources
    found = {}
    for name, cluster in _of(resources, cluster_pb2.Cluster).items():
        context = _upstream_context(cluster)
        combined = context.common_tls_context.combined_validation_context
        (san,) = combined.default_validation_context.match_typed_subject_alt_names
        assert combined.validation_context_sds_secret_config.name == ROOT_SECRET
        assert combined.validation_context_sds_secret_config.sds_config.HasField("ads")
        (own,) = context.common_tls_context.tls_certificate_sds_secret_configs
        assert own.name == WORKLOAD_SECRET
        found[name] = (
            san.matcher.prefix,
            context.sni,
            list(context.common_tls_context.alpn_protocols),
        )
    assert found == {
        "outbound|80||cart.shop.svc.clusterset.local": (
            "spiffe://cluster.local/ns/shop/sa/",
            "outbound_.80_._.cart.shop.svc.clusterset.local",
            [],
        ),
        "outbound|80||billing.payments.svc.clusterset.local": (
            "spiffe://cluster.local/ns/payments/sa/",
            "outbound_.80_._.billing.payments.svc.clusterset.local",
            ["h2"],
        ),
    }


def test_an_ingress_gateways_backend_cluster_originates_mtls_too() -> None:
    """Ingress gateways and route backends build clusters with `backends.outbound`."""
    port = PlanePort(80, "http", endpoints=(_endpoint("10.1.0.1", mutual=True),))
    view = ProxyView("shop", "east-1", "ingress")
    name = str(ClusterName("outbound", "cart", "shop", 80, "east-1"))
    cluster, assignment = outbound(
        name, port, port.endpoints, view, None, SidecarOptions(mtls=MTLS), None, Networks(), ""
    )
    assert _upstream_context(cluster).sni == "outbound_.80_._.cart.shop.svc.clusterset.local"
    assert assignment.endpoints[0].lb_endpoints[0].metadata.filter_metadata


# --- inbound -----------------------------------------------------------------------------


def _inbound(options: SidecarOptions) -> tuple[Any, tuple[str, ...]]:
    options = replace(options, inbound_service=(ServiceRef("shop", "cart"), 80), inbound_port=9080)
    translation = translate_sidecar([], VIEW, None, options)
    return _of(translation.resources, listener_pb2.Listener)["inbound"], translation.errors


def _hcm(listener: Any) -> Any:
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    return _unpack(network_filter.typed_config, hcm_pb2.HttpConnectionManager)


def _policies(listener: Any) -> dict[str, list[str]]:
    hcm = _hcm(listener)
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    rbac = _unpack(hcm.http_filters[0].typed_config, rbac_filter_pb2.RBAC)
    assert rbac.rules.action == rbac.rules.ALLOW
    found = {}
    for name, policy in rbac.rules.policies.items():
        assert [p.any for p in policy.permissions] == [True]
        found[name] = [_matcher(p.authenticated.principal_name) for p in policy.principals]
    return found


def _matcher(matcher: Any) -> str:
    kind = str(matcher.WhichOneof("match_pattern"))
    return f"{kind}={getattr(matcher, kind)}"


def test_the_inbound_listener_admits_the_own_namespace_and_the_grants() -> None:
    options = SidecarOptions(
        mtls=MTLS,
        inbound_consumers=("web", "shop", "batch", "web"),  # the own one and repeats: once
        inbound_principals=("spiffe://cluster.local/ns/ops/sa/prober",),
    )
    listener, errors = _inbound(options)
    assert errors == ()
    assert _policies(listener) == {
        "workspace": ["prefix=spiffe://cluster.local/ns/shop/sa/"],
        "granted-workspaces": [
            "prefix=spiffe://cluster.local/ns/batch/sa/",
            "prefix=spiffe://cluster.local/ns/web/sa/",
        ],
        "granted-identities": ["exact=spiffe://cluster.local/ns/ops/sa/prober"],
    }
    hcm = _hcm(listener)
    assert hcm.stat_prefix == "inbound"  # so the counters are http.inbound.rbac.*
    assert hcm.forward_client_cert_details == hcm_pb2.HttpConnectionManager.SANITIZE_SET
    assert hcm.set_current_client_cert_details.uri
    (chain,) = listener.filter_chains
    context = _unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    assert context.require_client_certificate.value
    assert list(context.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    assert context.common_tls_context.validation_context_sds_secret_config.name == ROOT_SECRET


def test_empty_grant_policies_are_left_out() -> None:
    listener, _ = _inbound(SidecarOptions(mtls=MTLS))
    assert _policies(listener) == {"workspace": ["prefix=spiffe://cluster.local/ns/shop/sa/"]}


def test_an_invalid_grant_is_an_error_and_grants_nothing() -> None:
    options = SidecarOptions(
        mtls=MTLS,
        inbound_consumers=("Web", "batch"),
        inbound_principals=("web", "spiffe://cluster.local/ns/ops/sa/prober"),
    )
    listener, errors = _inbound(options)
    assert _policies(listener) == {
        "workspace": ["prefix=spiffe://cluster.local/ns/shop/sa/"],
        "granted-workspaces": ["prefix=spiffe://cluster.local/ns/batch/sa/"],
        "granted-identities": ["exact=spiffe://cluster.local/ns/ops/sa/prober"],
    }
    assert len(errors) == 2
    assert errors[0].startswith("inbound shop/cart:80: inbound consumer (a workspace) must be")
    assert "'web'" in errors[1]
    assert "SPIFFE ID" in errors[1]


def test_without_mtls_the_inbound_listener_is_plain() -> None:
    listener, _ = _inbound(SidecarOptions(inbound_consumers=("web",)))
    (chain,) = listener.filter_chains
    assert not chain.HasField("transport_socket")
    assert [f.name for f in _hcm(listener).http_filters] == ["envoy.filters.http.router"]


def test_a_trust_domain_is_checked() -> None:
    with pytest.raises(ValueError, match="trust_domain"):
        WorkloadTls("Cluster Local")


# --- networks and east-west gateways -----------------------------------------------------

NETWORKS = Networks(
    {"east-1": "a", "west-1": "b", "ap-1": "c"},
    {
        "west-1": NetworkGateway("west-1", "192.0.2.10", 15443),
        "ap-1": NetworkGateway("ap-1", "192.0.2.30", 15443),
    },
)
WEST = Locality("west-1", "us-west")
AP = Locality("ap-1", "ap-south")


def test_endpoints_behind_a_gateway_are_grouped_by_tls_mode_with_weights() -> None:
    endpoints = [
        _endpoint("10.1.0.1", mutual=True),
        *(_endpoint(f"10.2.0.{i}", mutual=True, where=WEST) for i in (1, 2, 3)),
        _endpoint("10.2.0.9", mutual=True, where=WEST, ready=False),  # not counted
        *(_endpoint(f"10.3.0.{i}", where=AP) for i in (1, 2)),
    ]
    reachable, plaintext = NETWORKS.endpoints(endpoints, "east-1", mutual_tls=True)
    assert [(e.address, e.weight, e.mutual_tls) for e in reachable] == [
        ("10.1.0.1", 1, True),
        ("192.0.2.30", 2, False),
        ("192.0.2.10", 3, True),
    ]
    assert plaintext == 2  # the header route is needed for ap-1's
    # Without mTLS every endpoint counts as plaintext, as before.
    reachable, plaintext = NETWORKS.endpoints(endpoints, "east-1")
    assert [(e.address, e.weight, e.mutual_tls) for e in reachable][1:] == [
        ("192.0.2.30", 2, False),
        ("192.0.2.10", 3, False),
    ]
    assert plaintext == 5


def test_one_gateway_endpoint_per_cluster_the_mutual_one_when_both_kinds_are_behind() -> None:
    """Envoy keys an EDS cluster's hosts by address: a second endpoint of the same gateway
    would be dropped."""
    endpoints = [
        _endpoint("10.2.0.1", mutual=True, where=WEST),
        _endpoint("10.2.0.2", mutual=True, where=WEST),
        _endpoint("10.2.0.3", where=WEST),
    ]
    reachable, plaintext = NETWORKS.endpoints(endpoints, "east-1", mutual_tls=True)
    assert [(e.address, e.weight, e.mutual_tls) for e in reachable] == [("192.0.2.10", 2, True)]
    assert plaintext == 0


def _gateway(*endpoints: PlaneEndpoint, options: SidecarOptions) -> tuple[Any, ...]:
    service = _service(*endpoints)
    return east_west_gateway([service], NETWORKS.gateways["west-1"], options).resources


def test_the_gateway_passes_mtls_through_by_sni_and_routes_plaintext_by_header() -> None:
    resources = _gateway(
        _endpoint("10.2.0.1", mutual=True, where=WEST),
        _endpoint("10.2.0.2", where=WEST),
        options=SidecarOptions(mtls=MTLS),
    )
    sni = "outbound_.80_._.cart.shop.svc.clusterset.local"
    clusters = _of(resources, cluster_pb2.Cluster)
    assert set(clusters) == {sni, "outbound|80|west-1|cart.shop.svc.clusterset.local"}
    assert parse_sni(sni) == ClusterName("outbound", "cart", "shop", 80)
    assert not clusters[sni].HasField("transport_socket")
    assert not clusters[sni].transport_socket_matches
    assignments = _of(resources, endpoint_pb2.ClusterLoadAssignment)
    addresses = {
        name: [
            e.endpoint.address.socket_address.address
            for loc in a.endpoints
            for e in loc.lb_endpoints
        ]
        for name, a in assignments.items()
    }
    assert addresses == {
        sni: ["10.2.0.1"],
        "outbound|80|west-1|cart.shop.svc.clusterset.local": ["10.2.0.2"],
    }
    listener = _of(resources, listener_pb2.Listener)["east-west"]
    chains = {c.name: c for c in listener.filter_chains}
    assert list(chains[sni].filter_chain_match.server_names) == [sni]
    assert chains[sni].filter_chain_match.transport_protocol == "tls"
    assert not chains[sni].HasField("transport_socket")


def test_a_port_of_only_mutual_endpoints_gets_no_header_route() -> None:
    resources = _gateway(
        _endpoint("10.2.0.1", mutual=True, where=WEST), options=SidecarOptions(mtls=MTLS)
    )
    (config,) = [m for m in resources if m.DESCRIPTOR.name == "RouteConfiguration"]
    assert [len(v.routes) for v in config.virtual_hosts] == [0]


def test_without_mtls_the_gateway_routes_every_endpoint_by_header() -> None:
    mutual = _gateway(
        _endpoint("10.2.0.1", mutual=True, where=WEST),
        _endpoint("10.2.0.2", where=WEST),
        options=SidecarOptions(),
    )
    plain = _gateway(
        _endpoint("10.2.0.1", where=WEST),
        _endpoint("10.2.0.2", where=WEST),
        options=SidecarOptions(),
    )
    assert _bytes(mutual) == _bytes(plain)


# --- stats -------------------------------------------------------------------------------


def _included(stat: str) -> bool:
    return any(
        stat.startswith(pattern) if kind == "prefix" else re.fullmatch(pattern, stat) is not None
        for kind, pattern in INCLUDED_STATS
    )


@pytest.mark.parametrize(
    "stat",
    [
        "http.inbound.rbac.allowed",
        "http.inbound.rbac.denied",
        "listener.10.1.0.1_15006.ssl.handshake",
        "listener.10.1.0.1_15006.ssl.connection_error",
        "listener.10.1.0.1_15006.ssl.fail_verify_no_cert",
        "listener.10.1.0.1_15006.ssl.fail_verify_error",
        "listener.10.1.0.1_15006.ssl.fail_verify_san",
    ],
)
def test_the_mtls_stats_are_created(stat: str) -> None:
    assert _included(stat)


def test_only_those_mtls_stats() -> None:
    assert not _included("http.inbound.rbac.shadow_denied")
    assert not _included("listener.10.1.0.1_15006.ssl.ciphers.TLS_AES_128_GCM_SHA256")
    assert not _included("http.outbound.rbac.denied")
    assert not _included("cluster.outbound_.80_._.cart.shop.svc.clusterset.local.upstream_cx_total")


def test_a_passthrough_clusters_stats_keep_its_whole_name() -> None:
    (regex,) = [r for tag, r in CLUSTER_TAGS if tag == "envoy.cluster_name"]
    stat = "cluster.outbound_.80_._.cart.shop.svc.clusterset.local.upstream_cx_total"
    match = re.match(regex, stat)
    assert match is not None
    assert match.group(2) == "outbound_.80_._.cart.shop.svc.clusterset.local"
