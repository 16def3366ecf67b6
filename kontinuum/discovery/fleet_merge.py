"""The sources' views merged into one `Fleet`.

The fleet's clusters are those of the sources' `FleetConfig`s (a cluster declared twice
keeps the first source's declaration; so does a route, Gateway or policy). A cluster's
snapshot is the union of what every source reports for it; it is stale when any part of
it is. Snapshots of clusters no config declares are left out (the aggregator keeps them:
the cluster may be declared again).
"""

from __future__ import annotations

from collections.abc import Sequence

from kontinuum.control.model import (
    ClusterSite,
    Fleet,
    FleetConfig,
    Grant,
    SiteSnapshot,
    grant_order,
)
from kontinuum.control.routing import RoutingConfig


def merge(configs: Sequence[FleetConfig], snapshots: Sequence[SiteSnapshot]) -> Fleet:
    """One fleet from every source's config and snapshots (see the module doc)."""
    sites: dict[str, ClusterSite] = {}
    grants: set[Grant] = set()
    routing: list[RoutingConfig] = []
    for config in configs:
        for site in config.sites:
            sites.setdefault(site.name, site)
        grants.update(config.grants)
        routing.append(config.routing)
    parts: dict[str, list[SiteSnapshot]] = {}
    for snapshot in snapshots:
        if snapshot.cluster in sites:
            parts.setdefault(snapshot.cluster, []).append(snapshot)
    merged = []
    for name in sorted(sites):
        found = parts.get(name, [])
        if len(found) == 1:
            merged.append(found[0])
            continue
        merged.append(
            SiteSnapshot(
                name,
                services=tuple(s for part in found for s in part.services),
                endpoints=tuple(e for part in found for e in part.endpoints),
                exports=tuple(e for part in found for e in part.exports),
                stale=any(part.stale for part in found),
            )
        )
    return Fleet(
        sites=tuple(sites[name] for name in sorted(sites)),
        snapshots=tuple(merged),
        grants=tuple(sorted(grants, key=grant_order)),
        routing=merge_routing(routing),
    )


def merge_routing(configs: Sequence[RoutingConfig]) -> RoutingConfig:
    """Every source's routes, Gateways, policies, Secrets and Namespaces; an object several
    sources declare (same kind, namespace and name) keeps the first source's version."""
    if len(configs) == 1:
        return configs[0]
    routes = {(r.kind, r.namespace, r.name): r for c in reversed(configs) for r in c.routes}
    gateways = {(g.namespace, g.name): g for c in reversed(configs) for g in c.gateways}
    policies = {(p.namespace, p.name): p for c in reversed(configs) for p in c.policies}
    namespaces = {n.name: n for c in reversed(configs) for n in c.namespaces}
    rejections = {(r.kind, r.namespace, r.name): r for c in reversed(configs) for r in c.rejections}
    secrets = {(s.namespace, s.name): s for c in reversed(configs) for s in c.secrets}
    return RoutingConfig(
        routes=tuple(routes[k] for k in sorted(routes)),
        gateways=tuple(gateways[k] for k in sorted(gateways)),
        policies=tuple(policies[k] for k in sorted(policies)),
        namespaces=tuple(namespaces[k] for k in sorted(namespaces)),
        rejections=tuple(rejections[k] for k in sorted(rejections)),
        secrets=tuple(secrets[k] for k in sorted(secrets)),
        gateway_classes=tuple(sorted({name for c in configs for name in c.gateway_classes})),
        disowned=tuple(sorted({key for c in configs for key in c.disowned})),
    )
