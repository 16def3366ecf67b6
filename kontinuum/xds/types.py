"""xDS v3 type URLs and the order in which an ADS stream applies them."""

from __future__ import annotations

from typing import Final

_PREFIX: Final = "type.googleapis.com/"

CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET: Final = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break: a cluster exists before endpoints are assigned to it, both before a
# listener points at a route, and the route last. Secrets are named by clusters and
# listeners and are warmed by Envoy independently, so they come last.
PUSH_ORDER: Final[tuple[str, ...]] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
KNOWN_TYPES: Final[frozenset[str]] = frozenset(PUSH_ORDER)

# Which types name resources of a type: listeners and routes name clusters. An update of
# those waits while a Cluster update is due but cannot be sent yet (its last response is
# un-ACKed). Endpoints and secrets are fetched by name once their referrer arrives.
REFERENCED_BY: Final[dict[str, frozenset[str]]] = {CLUSTER: frozenset({LISTENER, ROUTE})}

# Types fetched by name, and the types whose resources name them: a client subscribes to
# the endpoints of the clusters, the routes of the listeners, the secrets of either that
# it takes in.
NAMED_BY: Final[dict[str, frozenset[str]]] = {
    ENDPOINT: frozenset({CLUSTER}),
    ROUTE: frozenset({LISTENER}),
    SECRET: frozenset({CLUSTER, LISTENER}),
}

# Types whose SotW responses carry the full state of the world, and which a client may
# subscribe to with an empty name list (legacy wildcard).
WILDCARD_TYPES: Final[frozenset[str]] = frozenset({CLUSTER, LISTENER})

WILDCARD: Final = "*"

SHORT_NAMES: Final[dict[str, str]] = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    LISTENER: "LDS",
    ROUTE: "RDS",
    SECRET: "SDS",
}


def short_name(type_url: str) -> str:
    """`CDS` for the Cluster type URL and so on; the bare message name for others."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def type_url_for(full_name: str) -> str:
    """The type URL of a protobuf message given its full name."""
    return _PREFIX + full_name
