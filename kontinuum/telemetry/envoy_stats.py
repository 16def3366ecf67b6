"""Envoy's own stats with mesh labels: the `stats_config` and Prometheus listener of the
bootstrap (`kontinuum bootstrap`). Pure: it builds configuration, as JSON-ready dicts.

Every stat of a proxy carries, as fixed tags, who the proxy is:

    kontinuum_cluster    the fleet cluster the proxy runs in
    kontinuum_workspace  its workspace (the namespace it declares)
    kontinuum_role       sidecar, gateway or ingress

and the stats of an upstream cluster carry what the cluster name says
(`kontinuum.control.naming`: `outbound|<port>|<target>|<service>.<namespace>.svc...`):

    envoy_cluster_name        the whole name (Envoy's own tag, with a regex that
                              understands names with dots and `|`)
    kontinuum_direction       outbound or inbound
    kontinuum_port            the service port
    kontinuum_target_cluster  the fleet cluster the Envoy cluster is limited to ("" for
                              the whole cluster set)
    kontinuum_service         the service
    kontinuum_namespace       the service's namespace

Envoy counts requests per (local zone, upstream zone) in `cluster.<name>.zone.<from>.<to>.`
and the translator makes the zone of an endpoint its fleet cluster (so does the bootstrap
for the proxy), so those stats carry the traffic matrix between clusters:

    kontinuum_source_cluster       where the request came from (the proxy's cluster)
    kontinuum_destination_cluster  the fleet cluster of the endpoint that served it

In Prometheus' format: `envoy_cluster_upstream_rq_total{kontinuum_service="hello", ...}`,
`envoy_cluster_zone_upstream_rq{kontinuum_destination_cluster="us-east",
envoy_response_code="200", ...}`.

Envoy's admin interface must not be reachable from other hosts (it can stop the proxy),
so the stats are served, as Istio does on 15090, by a listener of their own that routes
only `/stats/prometheus` to the admin port.
"""

from __future__ import annotations

from typing import Any, Final

# The parts of a generated cluster name, as regular expressions (RE2, as Envoy runs them).
_DIRECTION: Final = r"(?:outbound|inbound)"
_LABEL: Final = r"[a-z0-9-]+"
_NAME: Final = rf"{_DIRECTION}\|[0-9]+\|[^|]*\|{_LABEL}\.{_LABEL}\.svc\.cluster(?:set)?\.local"
_PREFIX: Final = rf"^cluster\.{_DIRECTION}\|"

# (tag, regex): the first group is cut from the stat's name, the second is the tag's value.
CLUSTER_TAGS: Final = (
    # Envoy's own cluster-name tag, for names with dots (its default stops at the first).
    ("envoy.cluster_name", rf"^cluster\.(({_NAME}|[^.]+)\.)"),
    ("kontinuum_direction", r"^cluster\.((outbound|inbound)\|)"),
    ("kontinuum_port", rf"{_PREFIX}(([0-9]+)\|)"),
    ("kontinuum_target_cluster", rf"{_PREFIX}[0-9]+\|(([^|]*)\|)"),
    ("kontinuum_service", rf"{_PREFIX}[0-9]+\|[^|]*\|(({_LABEL})\.)"),
    ("kontinuum_namespace", rf"{_PREFIX}[0-9]+\|[^|]*\|{_LABEL}\.(({_LABEL})\.svc\.)"),
    ("kontinuum_source_cluster", rf"^cluster\.{_NAME}\.zone\.(({_LABEL})\.)"),
    ("kontinuum_destination_cluster", rf"^cluster\.{_NAME}\.zone\.{_LABEL}\.(({_LABEL})\.)"),
)
ADMIN_CLUSTER: Final = "kontinuum-admin"
STATS_PATH: Final = "/stats/prometheus"


def stats_config(cluster: str, workspace: str, role: str) -> dict[str, Any]:
    """The bootstrap's `stats_config`: fixed tags naming the proxy, and the extraction of
    the mesh labels from its stats' names (see the module doc)."""
    fixed = {"kontinuum_cluster": cluster, "kontinuum_workspace": workspace, "kontinuum_role": role}
    return {
        "use_all_default_tags": True,
        # Envoy's default envoy.cluster_name stops at the first dot: ours replaces it.
        "allow_default_tag_overrides": True,
        "stats_tags": [
            *({"tag_name": name, "fixed_value": value} for name, value in fixed.items() if value),
            *({"tag_name": name, "regex": regex} for name, regex in CLUSTER_TAGS),
        ],
    }


def stats_listener(host: str, port: int, admin_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The listener serving `/stats/prometheus` on `host:port` (nothing else of the
    admin interface), and the cluster that leads it to the admin port."""
    route = {
        "virtual_hosts": [
            {
                "name": "stats",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"path": STATS_PATH},
                        "route": {"cluster": ADMIN_CLUSTER, "timeout": "10s"},
                    }
                ],
            }
        ]
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "kontinuum_stats",
        "route_config": route,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "kontinuum-stats",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    admin = {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": "127.0.0.1",
                                        "port_value": admin_port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return listener, admin
