"""Gateways: east-west gateways between networks, and ingress gateways from a `Gateway`.

East-west. Clusters on different networks (`kontinuum.io/network` of their ClusterProfiles)
cannot reach each other's endpoints. Each such cluster runs an east-west gateway, declared
as a Gateway of class `kontinuum-east-west` with its address and TLS port. A sidecar sees,
for the share of a service that lives in a cluster of another network, one endpoint: that
cluster's gateway, weighted by the number of endpoints it stands for (as Istio does). The
gateway routes to its own cluster's endpoints only. Its listener is split by transport
protocol (a TLS inspector reads the first bytes):

- plaintext (`raw_buffer`): the sidecar's cluster for `<host>:<port>` adds the header
  `x-kontinuum-service: <host>:<port>` upstream (an upstream HTTP filter, so it names
  exactly the Envoy cluster the request took, whatever the route); the gateway routes on it
  to the cluster's plaintext endpoints and removes it.
- mTLS (with `SidecarOptions.mtls`): endpoints that require mTLS (`kontinuum.io/tls-mode:
  mutual`) are reached by a sidecar that originates mTLS to the gateway with the SNI
  `outbound_.<port>_._.<host>` (`tls`). The gateway holds no certificate: a filter chain per
  such service port matches the SNI and passes the TLS stream untouched (`tcp_proxy`) to
  the Envoy cluster of the same name, which holds the local mutual endpoints (Istio's
  sni-dnat clusters), so identity stays end to end. A port whose local endpoints all
  require mTLS has no header route.

Envoy keys a cluster's hosts by address, so a sidecar's Envoy cluster holds one endpoint
per gateway: when a remote cluster has both kinds of endpoints, the mutual one (`networks`).

Ingress. A proxy of role `ingress` runs a Gateway of the fleet: one Envoy listener per
listener port on the Gateway's address (0.0.0.0 when it declares none), whose listeners
share one route configuration with a virtual host per hostname (`virtual_hosts` says which
routes' rules each holds). A port in the `Host` header is ignored when virtual hosts are
matched (`foo.com:8080` is `foo.com`), and the header goes to the backend unmodified, port
and all, as the Gateway API says.
A port of HTTPS listeners terminates TLS, choosing the listener's certificate by SNI
(`gateway_tls`); a redirect's port follows its listener's port and scheme
(`gateway_redirects`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.matcher.v3 import string_pb2

from kontinuum.control.gateway_binding import BoundGateway
from kontinuum.control.naming import ClusterName
from kontinuum.control.plane import PlaneService, ProxyView
from kontinuum.control.route_binding import BoundRoute
from kontinuum.control.routing import GatewayListener
from kontinuum.control.translate import clusters, envoy, gateway_redirects, gateway_tls
from kontinuum.control.translate.backends import BackendClusters, MeshRouting
from kontinuum.control.translate.builder import Builder
from kontinuum.control.translate.networks import SERVICE_HEADER, NetworkGateway
from kontinuum.control.translate.options import SidecarOptions, Translation
from kontinuum.control.translate.virtual_hosts import port_virtual_hosts

EAST_WEST: Final = "east-west"
TCP_PROXY_FILTER: Final = "envoy.filters.network.tcp_proxy"


def east_west_gateway(
    services: Sequence[PlaneService], gateway: NetworkGateway, options: SidecarOptions
) -> Translation:
    """The east-west gateway of `gateway.cluster`: every cluster-set service port with
    endpoints in that cluster, reachable by its `x-kontinuum-service` header, and with
    `options.mtls`, its endpoints that require mTLS by their SNI."""
    view = ProxyView("", gateway.cluster, "gateway")
    cluster_msgs: list[Any] = []
    assignments: list[Any] = []
    passthrough: list[Any] = []
    split = options.mtls is not None  # without mTLS, every endpoint is plaintext
    vhost = rc.VirtualHost(name=EAST_WEST, domains=["*"])
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        if service.scope:
            continue
        for port in sorted(service.ports, key=lambda p: p.port):
            local = [e for e in port.endpoints if e.locality.cluster == gateway.cluster]
            if port.protocol != "TCP" or not local:
                continue
            mutual = [e for e in local if split and e.mutual_tls]
            plain = [e for e in local if not (split and e.mutual_tls)]
            if plain:
                name = str(
                    ClusterName(
                        "outbound", service.name, service.namespace, port.port, gateway.cluster
                    )
                )
                cluster_msgs.append(clusters.outbound_cluster(name, port, options))
                assignments.append(clusters.load_assignment(name, plain, view, None))
                route = vhost.routes.add(name=f"{service.host}:{port.port}")
                route.match.prefix = "/"
                route.match.headers.add(
                    name=SERVICE_HEADER,
                    string_match=string_pb2.StringMatcher(exact=f"{service.host}:{port.port}"),
                )
                route.request_headers_to_remove.append(SERVICE_HEADER)
                route.route.cluster = name
            if mutual:
                sni = ClusterName("outbound", service.name, service.namespace, port.port).sni
                cluster_msgs.append(clusters.passthrough_cluster(sni, options))
                assignments.append(clusters.load_assignment(sni, mutual, view, None))
                passthrough.append(_passthrough_chain(sni))
    config = envoy.route_configuration(EAST_WEST, [vhost])
    listener = listener_pb2.Listener(name=EAST_WEST)
    listener.address.socket_address.address = gateway.address
    listener.address.socket_address.port_value = gateway.port
    inspector = listener.listener_filters.add(name="envoy.filters.listener.tls_inspector")
    inspector.typed_config.CopyFrom(envoy.pack(tls_inspector_pb2.TlsInspector()))
    chain = listener.filter_chains.add(name="plaintext")
    chain.filter_chain_match.CopyFrom(
        listener_components_pb2.FilterChainMatch(transport_protocol="raw_buffer")
    )
    hcm = envoy.http_connection_manager(EAST_WEST, rds=EAST_WEST)
    chain.filters.add(name=envoy.HCM_FILTER).typed_config.CopyFrom(envoy.pack(hcm))
    listener.filter_chains.extend(passthrough)
    resources = [
        *sorted(cluster_msgs, key=lambda m: str(m.name)),
        *sorted(assignments, key=lambda a: str(a.cluster_name)),
        listener,
        config,
    ]
    return Translation(tuple(resources))


def _passthrough_chain(sni: str) -> Any:
    """mTLS with SNI `sni`, passed through untouched to the local cluster of that name."""
    chain = listener_components_pb2.FilterChain(name=sni)
    chain.filter_chain_match.transport_protocol = "tls"
    chain.filter_chain_match.server_names.append(sni)
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=sni, cluster=sni)
    chain.filters.add(name=TCP_PROXY_FILTER).typed_config.CopyFrom(envoy.pack(proxy))
    return chain


def ingress_gateway(
    bound: BoundGateway,
    routes: Sequence[BoundRoute],
    view: ProxyView,
    site: Any,
    options: SidecarOptions,
    routing: MeshRouting,
) -> Translation:
    """An ingress gateway from a Gateway: its listeners, hostnames and attached routes."""
    gateway = bound.gateway
    address = gateway.addresses[0] if gateway.addresses else "0.0.0.0"
    backends = BackendClusters(view, routing, set(), Builder(None, view, site, options).outbound)
    by_port: dict[int, list[GatewayListener]] = {}
    for listener in sorted(bound.listeners, key=lambda li: (li.port, li.name)):
        by_port.setdefault(listener.port, []).append(listener)
    listeners: list[Any] = []
    configs: list[Any] = []
    for port, on_port in sorted(by_port.items()):
        name = f"{gateway.namespace}/{gateway.name}/{port}"
        vhosts = port_virtual_hosts(gateway, on_port, routes, backends)
        config = envoy.route_configuration(name, vhosts)
        config.ignore_port_in_host_matching = True
        gateway_redirects.complete_redirects(config, _origin(on_port, port))
        configs.append(config)
        listeners.append(_port_listener(name, address, port, on_port, bound))
    for config in configs:
        config.validate_clusters.value = False
    resources = [
        *sorted(backends.clusters, key=lambda m: str(m.name)),
        *sorted(backends.assignments, key=lambda a: str(a.cluster_name)),
        *listeners,
        *configs,
        *gateway_tls.gateway_secrets(bound),
    ]
    return Translation(tuple(resources))


def _origin(on_port: list[GatewayListener], port: int) -> gateway_redirects.ListenerOrigin:
    """How requests reach a listener port (its listeners share one protocol)."""
    secure = any(li.protocol == "HTTPS" for li in on_port)
    return gateway_redirects.ListenerOrigin("https" if secure else "http", port)


def _port_listener(
    name: str, address: str, port: int, on_port: list[GatewayListener], bound: BoundGateway
) -> Any:
    """The Envoy listener of one port: its HTTP connection manager (routes by RDS `name`),
    behind TLS termination per listener hostname when its listeners are HTTPS."""
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    hcm = envoy.http_connection_manager(
        name, rds=name, filters=[gateway_redirects.host_port_filter()]
    )
    if any(li.protocol == "HTTPS" for li in on_port):
        gateway_tls.terminate_tls(listener, hcm, on_port, bound)
    else:
        chain = listener.filter_chains.add()
        chain.filters.add(name=envoy.HCM_FILTER).typed_config.CopyFrom(envoy.pack(hcm))
    return listener
