"""Host names a service port answers to, and the RouteConfigurations that route them.

The `outbound` RouteConfiguration has one virtual host per (service, port), named
`<host>:<port>`, with the domains

    <host>                          <host>:<port>
    <svc>.<ns>.svc.cluster.local    <svc>.<ns>.svc.cluster.local:<port>   a cluster-set service
    <svc>.<ns>                      <svc>.<ns>:<port>
    <svc>                           <svc>:<port>       only for a service of the view's workspace

where `<host>` is `<svc>.<ns>.svc.clusterset.local` (or `.svc.cluster.local` for a service
reachable only in one cluster). Every name is of a service the view may see (its own
workspace's or granted to it); `<svc>` alone means the caller's own namespace, as Kubernetes
DNS reads it. Envoy rejects a domain that two virtual hosts share, so a domain goes to the
first virtual host that claims it, in translation order (services by namespace, name and
scope, cluster-set first; ports by number):

- a host with several ports: only the `:<port>` forms are unambiguous; the forms without a
  port go to the lowest port number;
- a short form that two services would share (the same name as a cluster-set service and a
  one-cluster service): it goes to the first of them.

A proxyless gRPC client asks for `xds:///<host>:<port>`; it gets its own RouteConfiguration
of that name with one virtual host for `<host>:<port>` and `<host>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kontinuum.control.naming import LOCAL_DOMAIN
from kontinuum.control.plane import PlaneService, ProxyView
from kontinuum.control.translate import envoy

OUTBOUND = "outbound"
INBOUND = "inbound"


@dataclass(frozen=True, slots=True)
class Target:
    """One service port that is routed, and the Envoy cluster it leads to."""

    service: PlaneService
    port: int
    cluster: str
    routes: tuple[Any, ...] = ()  # Envoy routes of the attached Gateway API routes, if any

    @property
    def authority(self) -> str:
        return f"{self.service.host}:{self.port}"


def candidate_domains(target: Target, view: ProxyView) -> list[str]:
    """Every name a client may use for the port, before ambiguous ones are dropped."""
    service, port = target.service, target.port
    names = [service.host]
    if not service.scope:
        names.append(f"{service.name}.{service.namespace}.{LOCAL_DOMAIN}")
    names.append(f"{service.name}.{service.namespace}")
    if service.workspace == view.workspace:
        names.append(service.name)
    return [form for name in names for form in (name, f"{name}:{port}")]


def _virtual_host(target: Target, domains: list[str], *, retries: bool) -> Any:
    """The target's own routes if routes attach to it, else everything to its cluster."""
    vhost = envoy.virtual_host(target.authority, domains, target.cluster, retries=retries)
    if target.routes:
        del vhost.routes[:]
        vhost.routes.extend(target.routes)
    return vhost


def outbound_route_configuration(targets: Sequence[Target], view: ProxyView) -> Any:
    """The `outbound` RouteConfiguration: one virtual host per target, domains unique."""
    claimed: set[str] = set()
    vhosts = []
    for target in targets:
        domains = [d for d in candidate_domains(target, view) if d not in claimed]
        claimed.update(domains)
        # `<host>:<port>` is unique per target, so no virtual host is left without domains.
        vhosts.append(_virtual_host(target, domains, retries=True))
    config = envoy.route_configuration(OUTBOUND, vhosts)
    # Routes may name `INVALID_BACKEND` on purpose (a share answered with 500): never make
    # Envoy refuse the whole RouteConfiguration for it.
    config.validate_clusters.value = False
    return config


def grpc_route_configuration(target: Target) -> Any:
    """The RouteConfiguration a proxyless gRPC client of `xds:///<host>:<port>` reads."""
    vhost = _virtual_host(target, [target.authority, target.service.host], retries=False)
    return envoy.route_configuration(target.authority, [vhost])


def inbound_route_configuration(cluster: str) -> Any:
    """Everything that arrives on the inbound listener goes to the local workload."""
    return envoy.route_configuration(INBOUND, [envoy.virtual_host(INBOUND, ["*"], cluster)])
