"""Small builders of Envoy messages shared by the translation modules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2

HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER: Final = "envoy.filters.http.router"
HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Kubernetes `appProtocol` values that mean the upstream speaks HTTP/2 (h2c).
HTTP2_APP_PROTOCOLS: Final = frozenset({"grpc", "h2", "h2c", "http2", "kubernetes.io/h2c"})
# Without an `appProtocol`, a port named `grpc`, `http2` or `h2c`, or so with a suffix
# (`grpc-api`), speaks HTTP/2 too: Istio's protocol selection by port name, which Services
# written for a mesh (the Gateway API's conformance mesh among them) rely on. `grpc-web`
# is HTTP/1.1.
HTTP2_PORT_NAMES: Final = frozenset({"grpc", "http2", "h2c"})


def is_http2(app_protocol: str | None, port_name: str = "") -> bool:
    """Whether a port of this `appProtocol` (else of this name) speaks HTTP/2."""
    if app_protocol is not None:
        return app_protocol.lower() in HTTP2_APP_PROTOCOLS
    name = port_name.lower()
    return name != "grpc-web" and name.partition("-")[0] in HTTP2_PORT_NAMES


def duration(value: timedelta) -> Any:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def pack(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ads_source() -> Any:
    """A ConfigSource meaning "over the same ADS stream", API version 3."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def http2_protocol_options() -> Any:
    """`typed_extension_protocol_options` value that makes a cluster speak HTTP/2 upstream."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    return pack(options)


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: Any = None,
    filters: Sequence[Any] = (),
) -> Any:
    """An HCM with the router filter, routes from RDS (`rds`) or inline (`route_config`);
    `filters` (HttpFilters) come before the router."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    if rds is not None:
        hcm.rds.route_config_name = rds
        hcm.rds.config_source.CopyFrom(ads_source())
    else:
        hcm.route_config.CopyFrom(route_config)
    hcm.http_filters.extend(filters)
    router = hcm.http_filters.add(name=ROUTER_FILTER)
    router.typed_config.CopyFrom(pack(router_pb2.Router()))
    return hcm


# Retries a sidecar makes by default, as Istio's do: a request that could not reach an
# endpoint (refused, reset) is retried on another one, so an endpoint that just died costs
# no failed request while outlier detection ejects it. A retry also moves to the next
# priority when the failed one is exhausted: the only endpoint of the preferred cluster
# dying must not cost the request either.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,reset"
DEFAULT_RETRIES = 2


def default_retry_policy() -> Any:
    policy = route_components_pb2.RetryPolicy(retry_on=DEFAULT_RETRY_ON)
    policy.num_retries.value = DEFAULT_RETRIES
    predicate = policy.retry_host_predicate.add(name="envoy.retry_host_predicates.previous_hosts")
    predicate.typed_config.CopyFrom(pack(previous_hosts_pb2.PreviousHostsPredicate()))
    policy.retry_priority.name = "envoy.retry_priorities.previous_priorities"
    policy.retry_priority.typed_config.CopyFrom(
        pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1))
    )
    policy.host_selection_retry_max_attempts = 3
    return policy


def virtual_host(name: str, domains: list[str], cluster: str, *, retries: bool = False) -> Any:
    """A virtual host sending every request (prefix `/`) to one cluster."""
    vhost = route_components_pb2.VirtualHost(name=name, domains=domains)
    if retries:
        vhost.retry_policy.CopyFrom(default_retry_policy())
    route = vhost.routes.add()
    route.match.CopyFrom(route_components_pb2.RouteMatch(prefix="/"))
    route.route.cluster = cluster
    return vhost


def route_configuration(name: str, vhosts: list[Any]) -> Any:
    config = route_pb2.RouteConfiguration(name=name)
    config.virtual_hosts.extend(vhosts)
    return config
