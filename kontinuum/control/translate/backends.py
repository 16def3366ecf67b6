"""The Envoy clusters that a view's routes send to, and which routes a view's hosts get.

Routes attach to services the GAMMA way (Gateway API for service meshes): a route in the
service's own namespace (a *producer* route) applies to every consumer; a route in another
namespace (a *consumer* route) applies only to proxies of that namespace's workspace, and
for them it replaces the producer routes of the same service port.

A backendRef leads to an Envoy cluster named by the naming scheme:

- a `ServiceImport`: the cluster-set service, `outbound|<port>||<host>`, in locality
  priority (or as the service's LocalityPolicy spreads it);
- a `Service`: that Service in the proxy's own cluster only, `outbound|<port>|<cluster>|<host>`;
  when the proxy's cluster has no such Service port, the backend cannot be served here and
  its share of requests is answered with 500 (see `http_routes`).

A backend the view does not otherwise see (another workspace's service that a route grant
lets the route name) gets its cluster on demand: the route's owner decided it, and the
consumer learns only that cluster, not the service's other routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kontinuum.control.model import ClusterSite
from kontinuum.control.naming import ClusterName, parse_cluster_name
from kontinuum.control.plane import PlaneEndpoint, PlanePort, PlaneService, ProxyView
from kontinuum.control.route_binding import BoundRoute, ResolvedBackend
from kontinuum.control.translate import clusters, envoy, tls
from kontinuum.control.translate.clusters import Spread
from kontinuum.control.translate.networks import Networks, service_header_options
from kontinuum.control.translate.options import SidecarOptions


@dataclass(frozen=True, slots=True)
class MeshRouting:
    """The routing a sidecar view is translated with: the accepted routes of the fleet (the
    view picks those that apply to it), each service's spread by (namespace, name), and the
    networks with their east-west gateways."""

    routes: tuple[BoundRoute, ...] = ()
    spreads: Mapping[tuple[str, str], Spread] = field(default_factory=dict)
    networks: Networks = field(default_factory=Networks)


def routes_for(
    routing: MeshRouting, view: ProxyView, service: PlaneService, port: int
) -> list[BoundRoute]:
    """The routes attached to one service port, as this view's workspace sees them."""
    producer: list[BoundRoute] = []
    consumer: list[BoundRoute] = []
    for bound in routing.routes:
        route = bound.route
        if route.namespace != service.namespace and route.namespace != view.workspace:
            continue
        attached = any(
            service in parent.services and (not parent.ports or port in parent.ports)
            for parent in bound.parents
        )
        if attached:
            (producer if route.namespace == service.namespace else consumer).append(bound)
    return consumer or producer


def outbound(
    name: str,
    port: PlanePort,
    endpoints: Sequence[PlaneEndpoint],
    view: ProxyView,
    site: ClusterSite | None,
    options: SidecarOptions,
    spread: Spread | None,
    networks: Networks,
    authority: str,
) -> tuple[Any, Any]:
    """An outbound Cluster and its ClusterLoadAssignment; endpoints on other networks are
    reached through their cluster's east-west gateway, which the cluster's upstream filter
    tells the service (`authority`) it wants.

    With `options.mtls`, a cluster given an endpoint that requires mTLS (ready or not: a
    readiness change does not change the Cluster) originates mTLS to such endpoints, and
    only to them (`tls`); `name` says the service port the SNI and peer identity are of."""
    mtls = options.mtls
    reachable, behind = networks.endpoints(endpoints, view.cluster, mutual_tls=mtls is not None)
    cluster = clusters.outbound_cluster(name, port, options, spread)
    http2 = envoy.is_http2(port.app_protocol, port.name)
    if behind and authority:
        cluster.typed_extension_protocol_options[envoy.HTTP_PROTOCOL_OPTIONS].CopyFrom(
            service_header_options(authority, http2)
        )
    destination = parse_cluster_name(name)  # generated (`ClusterName`): it parses back
    if mtls is not None and destination is not None and any(e.mutual_tls for e in reachable):
        cluster.transport_socket_matches.append(
            tls.mutual_tls_match(mtls, destination, http2=http2)
        )
    # Endpoints select the match only where the cluster has it.
    mutual_tls = len(cluster.transport_socket_matches) > 0
    assignment = clusters.load_assignment(
        name, reachable, view, site, spread or Spread(), mutual_tls=mutual_tls
    )
    return cluster, assignment


def _port(service: PlaneService, number: int) -> PlanePort | None:
    return next((p for p in service.ports if p.port == number and p.protocol == "TCP"), None)


class MakeOutbound(Protocol):
    """Builds an outbound Cluster and its ClusterLoadAssignment for one view (`outbound`
    with the view's own arguments bound)."""

    def __call__(
        self,
        name: str,
        port: PlanePort,
        endpoints: Sequence[PlaneEndpoint],
        spread: Spread | None,
        networks: Networks,
        authority: str,
    ) -> tuple[Any, Any]: ...


class BackendClusters:
    """Names the cluster of each backend and makes the clusters no target made already."""

    def __init__(
        self, view: ProxyView, routing: MeshRouting, existing: set[str], make: MakeOutbound
    ) -> None:
        self._view = view
        self._spreads = routing.spreads
        self._networks = routing.networks
        self._existing = existing
        self._outbound = make
        self.clusters: list[Any] = []
        self.assignments: list[Any] = []

    def _make(
        self,
        name: str,
        port: PlanePort,
        endpoints: Sequence[PlaneEndpoint],
        spread: Spread | None,
        authority: str = "",
    ) -> str:
        if name not in self._existing:
            self._existing.add(name)
            cluster, assignment = self._outbound(
                name, port, endpoints, spread, self._networks, authority
            )
            self.clusters.append(cluster)
            self.assignments.append(assignment)
        return name

    def __call__(self, backend: ResolvedBackend) -> str | None:
        if backend.ref.kind == "ServiceImport":
            service = next((s for s in backend.services if not s.scope), None)
            port = _port(service, backend.port) if service else None
            if service is None or port is None:
                return None
            name = str(ClusterName("outbound", service.name, service.namespace, port.port))
            spread = self._spreads.get((service.namespace, service.name))
            return self._make(name, port, port.endpoints, spread, f"{service.host}:{port.port}")
        here = self._view.cluster
        for service in sorted(backend.services, key=lambda s: s.scope != here):
            port = _port(service, backend.port)
            if port is None or not service.reachable_from(here):
                continue
            local = [e for e in port.endpoints if e.locality.cluster == here]
            if service.scope != here and not local:
                continue
            target = ClusterName("outbound", service.name, service.namespace, port.port, here)
            return self._make(str(target), port, local, None)
        return None
