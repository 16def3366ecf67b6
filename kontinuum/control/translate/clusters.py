"""Envoy Clusters and ClusterLoadAssignments of service ports.

Locality priority (the heart of multi-cluster failover): an endpoint in the proxy's own
fleet cluster is preferred, then one in the same region, then any other. The three tiers
are ranked densely from 0: when a tier has no ready endpoint, the next one takes its
number. Envoy would accept gaps, but gRPC's xDS client rejects a "sparse priority list"
(a priority with no locality), so `priority` 0/1/2 appear as such only when every tier
has endpoints.

Each locality is one `LocalityLbEndpoints` per (fleet cluster, zone): `region` is the
site's region, `zone` the fleet cluster and `sub_zone` the site's zone. The fleet cluster
is Envoy's zone because Envoy counts requests per (local zone, upstream zone), and the
bootstrap makes the proxy's own zone its fleet cluster: the per-zone stats are then the
traffic matrix from cluster to cluster (`kontinuum.telemetry.envoy_stats`). Zone-aware
routing, which would read zones otherwise, is not used (priorities do its work). Every
locality carries a `load_balancing_weight` (its number of endpoints): gRPC ignores a
locality without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from kontinuum.control.model import ClusterSite
from kontinuum.control.plane import PlaneEndpoint, PlanePort, ProxyView
from kontinuum.control.routing import FailoverStep
from kontinuum.control.translate import envoy, tls
from kontinuum.control.translate.options import OutlierDetection, SidecarOptions

# Tiers before dense ranking: own cluster, same region, anywhere else.
_OWN_CLUSTER, _SAME_REGION, _ELSEWHERE = 0, 1, 2
# Locality weights of a weighted spread are multiplied by this, so that a cluster's weight
# divides among its zones without rounding to zero.
_WEIGHT_SCALE = 100


def outbound_cluster(
    name: str, port: PlanePort, options: SidecarOptions, spread: Spread | None = None
) -> Any:
    """An EDS cluster over ADS whose ClusterLoadAssignment has the cluster's own name.

    A weighted spread needs locality-weighted load balancing, which is a Cluster setting.
    """
    cluster = passthrough_cluster(name, options)
    if spread is not None and spread.weights:
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    if envoy.is_http2(port.app_protocol, port.name):
        cluster.typed_extension_protocol_options[envoy.HTTP_PROTOCOL_OPTIONS].CopyFrom(
            envoy.http2_protocol_options()
        )
    return cluster


def passthrough_cluster(name: str, options: SidecarOptions) -> Any:
    """An EDS cluster over ADS that only carries connections (no HTTP settings): what an
    outbound cluster is made of, and alone what an east-west gateway passes mTLS to."""
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN
    )
    cluster.connect_timeout.CopyFrom(envoy.duration(options.connect_timeout))
    cluster.eds_cluster_config.eds_config.CopyFrom(envoy.ads_source())
    if options.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(options.outlier_detection))
    return cluster


def _outlier_detection(settings: OutlierDetection) -> Any:
    detection = outlier_detection_pb2.OutlierDetection()
    detection.consecutive_5xx.value = settings.consecutive_5xx
    detection.interval.CopyFrom(envoy.duration(settings.interval))
    detection.base_ejection_time.CopyFrom(envoy.duration(settings.base_ejection_time))
    detection.max_ejection_percent.value = settings.max_ejection_percent
    return detection


@dataclass(frozen=True, slots=True)
class Spread:
    """How a service owner spreads traffic over fleet clusters (a `LocalityPolicy`).

    - `weights` (cluster -> weight): the named clusters share priority 0 in these
      proportions (Envoy's locality-weighted load balancing, which also scales a locality
      down by its share of healthy endpoints); the other clusters come next, in the
      default order, so they still take over if every named cluster fails.
    - `failover`: priority follows the steps, the first step holding an endpoint's cluster
      (or its region) wins; clusters no step names come last.
    """

    weights: tuple[tuple[str, int], ...] = ()
    failover: tuple[FailoverStep, ...] = ()


def priority_tier(
    endpoint: PlaneEndpoint, view: ProxyView, site: ClusterSite | None, spread: Spread = Spread()
) -> int:
    """The tier of an endpoint: by the spread if there is one, else 0 in the proxy's own
    cluster, 1 in the same (declared) region, 2 elsewhere."""
    cluster, region = endpoint.locality.cluster, endpoint.locality.region
    if spread.failover:
        for tier, step in enumerate(spread.failover):
            if cluster in step.clusters or (region and region in step.regions):
                return tier
        return len(spread.failover)
    offset = 0
    if spread.weights:
        if any(name == cluster and weight > 0 for name, weight in spread.weights):
            return 0
        offset = 1
    if cluster == view.cluster:
        return offset + _OWN_CLUSTER
    if site is not None and site.region and region == site.region:
        return offset + _SAME_REGION
    return offset + _ELSEWHERE


def load_assignment(
    name: str,
    endpoints: Sequence[PlaneEndpoint],
    view: ProxyView,
    site: ClusterSite | None,
    spread: Spread = Spread(),
    *,
    mutual_tls: bool = False,
) -> Any:
    """The ready endpoints of a port, grouped by locality, in priority order.

    An endpoint that is not ready is left out. An address:port listed twice is kept once,
    in its best locality (Envoy keys an EDS cluster's hosts by address: a second one would
    be dropped). No ready endpoint gives an empty (but present) assignment. With
    `mutual_tls`, an endpoint that requires mTLS (any of its listings says so) carries the
    metadata that selects the cluster's `mutual-tls` transport socket (`tls`).
    """
    # (tier, cluster, zone) -> (region, {(address, port): (weight, mutual_tls)})
    groups: dict[tuple[int, str, str], tuple[str, dict[tuple[str, int], tuple[int, bool]]]] = {}
    for endpoint in endpoints:
        if not endpoint.ready:
            continue
        key = (
            priority_tier(endpoint, view, site, spread),
            endpoint.locality.cluster,
            endpoint.locality.zone,
        )
        members = groups.setdefault(key, (endpoint.locality.region, {}))[1]
        where = (endpoint.address, endpoint.port)
        weight, mutual = members.get(where, (0, False))
        members[where] = (
            max(weight, endpoint.weight),
            mutual or (mutual_tls and endpoint.mutual_tls),
        )
    # Drop repeats (keeping the best locality) before ranking, so no priority is empty.
    seen: set[tuple[str, int]] = set()
    kept: list[tuple[int, str, str, str, list[tuple[str, int, tuple[int, bool]]]]] = []
    for key in sorted(groups):
        region, members = groups[key]
        fresh = [(a, p, members[a, p]) for a, p in sorted(members) if (a, p) not in seen]
        if fresh:
            seen.update((a, p) for a, p, _ in fresh)
            kept.append((*key, region, fresh))
    ranks = {tier: rank for rank, tier in enumerate(sorted({k[0] for k in kept}))}
    weights = dict(spread.weights)
    zones: dict[tuple[int, str], int] = {}
    for tier, cluster, *_ in kept:
        zones[tier, cluster] = zones.get((tier, cluster), 0) + 1
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for tier, cluster, zone, region, fresh in kept:
        locality = cla.endpoints.add(priority=ranks[tier])
        locality.locality.CopyFrom(base_pb2.Locality(region=region, zone=cluster, sub_zone=zone))
        if tier == 0 and weights.get(cluster, 0) > 0:
            # The cluster's weight, shared by its zones (scaled so integer shares stay fair).
            share = weights[cluster] * _WEIGHT_SCALE // zones[tier, cluster]
            locality.load_balancing_weight.value = max(1, share)
        else:
            locality.load_balancing_weight.value = sum(weight for _, _, (weight, _) in fresh) * (
                _WEIGHT_SCALE if spread.weights else 1
            )
        for address, port, (weight, mutual) in fresh:
            locality.lb_endpoints.append(_lb_endpoint(address, port, weight, mutual=mutual))
    return cla


def _lb_endpoint(address: str, port: int, weight: int = 1, *, mutual: bool = False) -> Any:
    lb_endpoint = endpoint_components_pb2.LbEndpoint(health_status=health_check_pb2.HEALTHY)
    if weight != 1:
        lb_endpoint.load_balancing_weight.value = weight
    socket_address = lb_endpoint.endpoint.address.socket_address
    socket_address.address = address
    socket_address.port_value = port
    if mutual:
        tls.mark_mutual(lb_endpoint)
    return lb_endpoint


def inbound_cluster(name: str, workload_port: int, http2: bool, options: SidecarOptions) -> Any:
    """A STATIC cluster for the local workload on 127.0.0.1:`workload_port` (speaking
    HTTP/2 to it with `http2`)."""
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN
    )
    cluster.connect_timeout.CopyFrom(envoy.duration(options.connect_timeout))
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    cla.endpoints.add().lb_endpoints.append(_lb_endpoint("127.0.0.1", workload_port))
    cluster.load_assignment.CopyFrom(cla)
    if http2:
        cluster.typed_extension_protocol_options[envoy.HTTP_PROTOCOL_OPTIONS].CopyFrom(
            envoy.http2_protocol_options()
        )
    return cluster
