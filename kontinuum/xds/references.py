"""What one resource needs from others of the same snapshot: read once, when it is wrapped.

A snapshot is consistent when every ClusterLoadAssignment an EDS Cluster names and every
RouteConfiguration a Listener names through RDS is present (`kontinuum.xds.snapshot`).
"""

from __future__ import annotations

from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from kontinuum.xds import types

_HCM_TYPE_URL: Final = types.type_url_for(hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name)


def of(type_url: str, message: Any) -> tuple[str, ...]:
    """The names `message` (of `type_url`) refers to: EDS for a Cluster, RDS for a Listener."""
    if type_url == types.CLUSTER:
        eds_name = _eds_name(message)
        return () if eds_name is None else (eds_name,)
    if type_url == types.LISTENER:
        return tuple(_rds_names(message))
    return ()


def _eds_name(cluster: Any) -> str | None:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    service_name = cluster.eds_cluster_config.service_name
    return str(service_name or cluster.name)


def _rds_names(listener: Any) -> list[str]:
    managers: list[Any] = []
    if listener.HasField("api_listener"):
        managers.append(listener.api_listener.api_listener)
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    managers.extend(
        f.typed_config for chain in chains for f in chain.filters if f.HasField("typed_config")
    )
    names: list[str] = []
    for any_config in managers:
        if any_config.type_url != _HCM_TYPE_URL:
            continue
        hcm = hcm_pb2.HttpConnectionManager.FromString(any_config.value)
        if hcm.HasField("rds"):
            names.append(hcm.rds.route_config_name)
    return names
