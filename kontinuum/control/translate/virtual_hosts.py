"""The virtual hosts of one port of an ingress gateway, keyed by hostname.

The listeners of a Gateway that share a port share one Envoy route configuration. What a
request may reach there follows the Gateway API:

- A route's hostnames on a listener are their intersection with the listener's hostname
  (`intersect_hostnames`); a route without hostnames takes the listener's (or every host).
- A request matches the most specific listener whose hostname matches its `Host` (an exact
  hostname, then the longest wildcard, then a listener without hostname), and only the
  routes attached to that listener serve it (listener isolation).
- Among those routes, a route serves the request when one of its hostnames matches it, and
  the rules of the route with the more specific matching hostname go first (more characters
  in an exact hostname, then in a wildcard: the API's hostname precedence), so a route of
  `*.example.com` serves `foo.example.com` with whatever rules a route of `foo.example.com`
  does not match. The hostname counted is the route's own, also where the listener narrows
  it: on a listener of `foo.example.com`, the route of `*.example.com` is still a wildcard's.

So there is one virtual host per distinct hostname (the listeners' and the routes'), whose
domain is that hostname, holding the rules of every route of its listener whose hostnames
match it: ordered by that hostname precedence, then by the Gateway API's precedence of
matches across routes (`http_routes.match_rank`), then the older route, then
namespace/name. Envoy picks a virtual host the same way a
request picks a listener (exact domain, longest wildcard suffix, then `*`), and every
domain belongs to one virtual host only, as Envoy requires. A hostname no route serves
still gets its (empty) virtual host, so its requests get 404 rather than falling through to
a less specific listener's routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc

from kontinuum.control.cross_serving import route_key
from kontinuum.control.route_binding import BoundRoute
from kontinuum.control.routing import (
    Gateway,
    GatewayListener,
    hostname_covers,
    hostname_specificity,
    intersect_hostnames,
)
from kontinuum.control.translate import http_routes

CATCH_ALL = "*"


def _route_hostnames(
    gateway: Gateway, listener: GatewayListener, routes: Sequence[BoundRoute]
) -> list[tuple[BoundRoute, dict[str, tuple[int, int]]]]:
    """The routes attached to `listener` with their hostnames on it (`*`: every host), each
    with the specificity of the route's own hostname that it comes from."""
    attached = []
    for bound in routes:
        if any(p.gateway == gateway and listener in p.listeners for p in bound.parents):
            hostnames = intersect_hostnames(listener.hostname, bound.route.hostnames)
            attached.append(
                (bound, {h: _own_specificity(bound, h) for h in hostnames or (CATCH_ALL,)})
            )
    return attached


def _own_specificity(bound: BoundRoute, hostname: str) -> tuple[int, int]:
    """How specific the route's own hostname is that gave it `hostname` on a listener: a
    route of `*.example.com` on a listener of `foo.example.com` serves `foo.example.com`,
    but its matching hostname, the one precedence counts, is still the wildcard. A route
    without hostnames has the listener's."""
    own = [h for h in bound.route.hostnames if hostname_covers(h, hostname)]
    return max(map(hostname_specificity, own or (hostname,)))


def _owner(domain: str, listeners: Sequence[GatewayListener]) -> str | None:
    """The hostname of the most specific listener matching `domain` (None: no hostname)."""
    matching = [li.hostname for li in listeners if hostname_covers(li.hostname, domain)]
    return max(matching, key=hostname_specificity)


def _rank(
    ranks: Mapping[tuple[str, str, str], tuple[int, int]], bound: BoundRoute
) -> tuple[int, int]:
    return ranks[route_key(bound.route)]


def _domain_order(domain: str) -> tuple[int, int, str]:
    kind, length = hostname_specificity(domain)
    return (-kind, -length, domain)


def _serving(
    domain: str, attached: Sequence[tuple[BoundRoute, dict[str, tuple[int, int]]]]
) -> dict[tuple[str, str, str], tuple[BoundRoute, tuple[int, int]]]:
    """The routes among `attached` (those of `domain`'s listeners) with a hostname matching
    `domain`, each with the specificity of its most specific such hostname."""
    serving: dict[tuple[str, str, str], tuple[BoundRoute, tuple[int, int]]] = {}
    for bound, hosts in attached:
        matching = [h for h in hosts if hostname_covers(h, domain)]
        if not matching:
            continue
        key = route_key(bound.route)
        best = max(hosts[h] for h in matching)
        if key not in serving or serving[key][1] < best:
            serving[key] = (bound, best)
    return serving


def port_virtual_hosts(
    gateway: Gateway,
    listeners: Sequence[GatewayListener],
    routes: Sequence[BoundRoute],
    clusters: http_routes.BackendCluster,
) -> list[Any]:
    """The virtual hosts of `listeners` (all on one port): one per hostname."""
    # The attached routes of the listeners of each hostname, in listener order.
    by_hostname: dict[str | None, list[tuple[BoundRoute, dict[str, tuple[int, int]]]]] = {}
    for listener in listeners:
        found = _route_hostnames(gateway, listener, routes)
        by_hostname.setdefault(listener.hostname, []).extend(found)
    domains = {li.hostname or CATCH_ALL for li in listeners}
    domains.update(h for found in by_hostname.values() for _, hosts in found for h in hosts)
    vhosts = []
    built: dict[tuple[str, str], Any] = {}  # a route serving several hostnames is built once
    for domain in sorted(domains, key=_domain_order):
        serving = _serving(domain, by_hostname[_owner(domain, listeners)])
        ranks = {key: (-kind, -length) for key, (_, (kind, length)) in serving.items()}
        vhost = rc.VirtualHost(name=f"{gateway.name}/{domain}", domains=[domain])
        vhost.routes.extend(
            http_routes.ranked_routes(
                [bound for bound, _ in serving.values()],
                clusters,
                hostname_rank=partial(_rank, ranks),
                built=built,
            )
        )
        vhosts.append(vhost)
    return vhosts
