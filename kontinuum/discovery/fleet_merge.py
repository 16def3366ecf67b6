"""The sources' views merged into one `Fleet`.

The fleet's clusters are those of the sources' `FleetConfig`s (a cluster declared twice
keeps the first source's declaration; so does a route, Gateway or policy). A cluster's
snapshot is the union of what every source reports for it; it is stale when any part of
it is. Snapshots of clusters no config declares are left out (the aggregator keeps them:
the cluster may be declared again).

A `FleetMerge` merges again only what changed: each part of the fleet (its sites, its
grants, its routing, each cluster's snapshot) is the very object it was last time when
what it is merged from is made of the same objects (sources hand over an unchanged part
as the object they handed over before). The mesh takes a routing that is the same object
for one that stands (`control.routing_state`), so with several sources an endpoint change
costs what it does with one: the routes are not bound again, nor the views translated whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from kontinuum.control.model import (
    ClusterSite,
    Fleet,
    FleetConfig,
    Grant,
    SiteSnapshot,
    grant_order,
)
from kontinuum.control.routing import RoutingConfig

In = TypeVar("In")
Out = TypeVar("Out")


class _Last(Generic[In, Out]):
    """`make` of some inputs, made again only when they are not the last ones, object by
    object (held, so that an object's identity is never another's)."""

    __slots__ = ("_inputs", "_make", "_value")

    def __init__(self, make: Callable[[tuple[In, ...]], Out]) -> None:
        self._make = make
        self._inputs: tuple[In, ...] | None = None
        self._value: Out | None = None

    def __call__(self, inputs: tuple[In, ...]) -> Out:
        last = self._inputs
        if (
            last is None
            or len(last) != len(inputs)
            or any(a is not b for a, b in zip(last, inputs, strict=True))
        ):
            self._value = self._make(inputs)
            self._inputs = inputs
        assert self._value is not None
        return self._value


class FleetMerge:
    """`merge`, remembering what it merged last (see the module doc)."""

    def __init__(self) -> None:
        self._sites: _Last[tuple[ClusterSite, ...], tuple[ClusterSite, ...]] = _Last(_sites)
        self._grants: _Last[tuple[Grant, ...], tuple[Grant, ...]] = _Last(_grants)
        self._routing: _Last[RoutingConfig, RoutingConfig] = _Last(merge_routing)
        self._snapshots: dict[str, _Last[SiteSnapshot, SiteSnapshot]] = {}

    def __call__(self, configs: Sequence[FleetConfig], snapshots: Sequence[SiteSnapshot]) -> Fleet:
        sites = self._sites(tuple(c.sites for c in configs))
        parts: dict[str, list[SiteSnapshot]] = {site.name: [] for site in sites}
        for snapshot in snapshots:
            if snapshot.cluster in parts:
                parts[snapshot.cluster].append(snapshot)
        for name in self._snapshots.keys() - parts.keys():
            del self._snapshots[name]
        merged = []
        for name in sorted(parts):
            last = self._snapshots.get(name)
            if last is None:
                last = self._snapshots[name] = _Last(_snapshot_of(name))
            merged.append(last(tuple(parts[name])))
        return Fleet(
            sites=sites,
            snapshots=tuple(merged),
            grants=self._grants(tuple(c.grants for c in configs)),
            routing=self._routing(tuple(c.routing for c in configs)),
        )


def merge(configs: Sequence[FleetConfig], snapshots: Sequence[SiteSnapshot]) -> Fleet:
    """One fleet from every source's config and snapshots (see the module doc)."""
    return FleetMerge()(configs, snapshots)


def _sites(declared: tuple[tuple[ClusterSite, ...], ...]) -> tuple[ClusterSite, ...]:
    sites: dict[str, ClusterSite] = {}
    for of_source in declared:
        for site in of_source:
            sites.setdefault(site.name, site)
    return tuple(sites[name] for name in sorted(sites))


def _grants(granted: tuple[tuple[Grant, ...], ...]) -> tuple[Grant, ...]:
    return tuple(sorted({g for of_source in granted for g in of_source}, key=grant_order))


def _snapshot_of(cluster: str) -> Callable[[tuple[SiteSnapshot, ...]], SiteSnapshot]:
    def union(found: tuple[SiteSnapshot, ...]) -> SiteSnapshot:
        if len(found) == 1:
            return found[0]
        return SiteSnapshot(
            cluster,
            services=tuple(s for part in found for s in part.services),
            endpoints=tuple(e for part in found for e in part.endpoints),
            exports=tuple(e for part in found for e in part.exports),
            stale=any(part.stale for part in found),
        )

    return union


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
