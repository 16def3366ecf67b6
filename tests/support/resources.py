"""Builders for the Envoy resources the protocol tests serve."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2


def _ads_source() -> Any:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def cluster(name: str, *, connect_timeout_s: float = 1.0, http2: bool = False) -> Any:
    """An EDS cluster whose endpoints come over ADS under the cluster's own name."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.FromNanoseconds(int(connect_timeout_s * 1e9))
    c.eds_cluster_config.eds_config.CopyFrom(_ads_source())
    if http2:
        from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

        options = hpo.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.SetInParent()
        packed = any_pb2.Any()
        packed.Pack(options)
        c.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(packed)
    return c


def load_assignment(name: str, *ports: int, address: str = "127.0.0.1") -> Any:
    """A ClusterLoadAssignment with one endpoint per port."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = cla.endpoints.add()
    for port in ports:
        socket_address = locality.lb_endpoints.add().endpoint.address.socket_address
        socket_address.address = address
        socket_address.port_value = port
    return cla


def route_config(name: str, cluster_name: str, *, domains: tuple[str, ...] = ("*",)) -> Any:
    """A RouteConfiguration sending every request to one cluster."""
    rc = route_pb2.RouteConfiguration(name=name)
    vhost = rc.virtual_hosts.add(name=name, domains=list(domains))
    route = vhost.routes.add()
    route.match.CopyFrom(route_components_pb2.RouteMatch(prefix="/"))
    route.route.cluster = cluster_name
    return rc


def _hcm(route_name: str, stat_prefix: str) -> Any:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.CopyFrom(_ads_source())
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    return hcm


def http_listener(name: str, port: int, route_name: str, *, address: str = "127.0.0.1") -> Any:
    """A TCP listener with an HTTP connection manager that takes its routes from RDS."""
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    chain = listener.filter_chains.add()
    hcm_filter = chain.filters.add(name="envoy.filters.network.http_connection_manager")
    hcm_filter.typed_config.Pack(_hcm(route_name, name))
    return listener


def api_listener(name: str, route_name: str) -> Any:
    """A listener for proxyless gRPC clients: `xds:///<name>` resolves through it."""
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.CopyFrom(api_listener_pb2.ApiListener())
    listener.api_listener.api_listener.Pack(_hcm(route_name, name))
    return listener
