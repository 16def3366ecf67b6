"""The Listeners of a sidecar view and of proxyless gRPC clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.listener.v3 import listener_pb2

from kontinuum.control.translate import envoy, routes, tls
from kontinuum.control.translate.options import WorkloadTls


def _http_listener(
    name: str, address: str, port: int, hcm: Any, transport_socket: Any = None
) -> Any:
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    chain = listener.filter_chains.add()
    chain.filters.add(name=envoy.HCM_FILTER).typed_config.CopyFrom(envoy.pack(hcm))
    if transport_socket is not None:
        chain.transport_socket.CopyFrom(transport_socket)
    return listener


def outbound_listener(port: int) -> Any:
    """`outbound` on 127.0.0.1:`port`: routes by Host/:authority, routes from RDS `outbound`."""
    hcm = envoy.http_connection_manager(routes.OUTBOUND, rds=routes.OUTBOUND)
    return _http_listener(routes.OUTBOUND, "127.0.0.1", port, hcm)


def inbound_listener(
    address: str,
    port: int,
    cluster: str,
    mtls: WorkloadTls | None = None,
    *,
    namespace: str = "",
    consumers: Sequence[str] = (),
    principals: Sequence[str] = (),
) -> Any:
    """`inbound` on `address`:`port`: everything to the local workload's STATIC cluster.

    The route is inline: it depends on nothing but the cluster name, so it needs no RDS.
    With `mtls`, only mTLS callers that the RBAC filter admits get through: those of the
    service's `namespace`, of the `consumers` namespaces, and the SPIFFE IDs `principals`
    (see `tls`).
    """
    route_config = routes.inbound_route_configuration(cluster)
    if mtls is None:
        hcm = envoy.http_connection_manager(routes.INBOUND, route_config=route_config)
        return _http_listener(routes.INBOUND, address, port, hcm)
    rbac = tls.inbound_rbac(mtls, namespace, consumers, principals)
    hcm = envoy.http_connection_manager(routes.INBOUND, route_config=route_config, filters=[rbac])
    tls.forward_client_identity(hcm)
    return _http_listener(routes.INBOUND, address, port, hcm, tls.downstream_transport_socket())


def api_listener(target: routes.Target) -> Any:
    """`<host>:<port>`: what a gRPC client of `xds:///<host>:<port>` asks LDS for."""
    listener = listener_pb2.Listener(name=target.authority)
    hcm = envoy.http_connection_manager(target.authority, rds=target.authority)
    listener.api_listener.api_listener.CopyFrom(envoy.pack(hcm))
    return listener
