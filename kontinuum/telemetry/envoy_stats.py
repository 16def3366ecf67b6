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

An east-west gateway's passthrough clusters (`outbound_.<port>_._.<host>`, named by the SNI
they pass mTLS through by) get the whole name as `envoy_cluster_name` and no other mesh
label; none of their stats is in `INCLUDED_STATS` (a gateway counts again what a sidecar
counted), so they exist only with an inclusion prefix such as `cluster.outbound_.`.

Envoy counts requests per (local zone, upstream zone) in `cluster.<name>.zone.<from>.<to>.`
and the translator makes the zone of an endpoint its fleet cluster (so does the bootstrap
for the proxy), so those stats carry the traffic matrix between clusters:

    kontinuum_source_cluster       where the request came from (the proxy's cluster)
    kontinuum_destination_cluster  the fleet cluster of the endpoint that served it

In Prometheus' format: `envoy_cluster_upstream_rq_completed{kontinuum_service="hello", ...}`,
`envoy_cluster_zone_upstream_rq{kontinuum_destination_cluster="us-east",
envoy_response_code="200", ...}`.

Only the stats kontinuum's dashboards, rules and alerts read are created at all (a
`stats_matcher` inclusion list, as Istio's proxies have: `INCLUDED_STATS`); Envoy's
default of every stat makes hundreds of series per upstream cluster. The list also
governs the admin interface's `/stats`: a stat left out does not exist.

Envoy's admin interface must not be reachable from other hosts (it can stop the proxy),
so the stats are served, as Istio does on 15090, by a listener of their own that routes
only `/stats/prometheus` to the admin port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

# The parts of a generated cluster name, as regular expressions (RE2, as Envoy runs them).
_DIRECTION: Final = r"(?:outbound|inbound)"
_LABEL: Final = r"[a-z0-9-]+"
_NAME: Final = rf"{_DIRECTION}\|[0-9]+\|[^|]*\|{_LABEL}\.{_LABEL}\.svc\.cluster(?:set)?\.local"
# An east-west gateway's passthrough cluster, named by the SNI it passes through.
_SNI: Final = rf"outbound_\.[0-9]+_\._\.{_LABEL}\.{_LABEL}\.svc\.clusterset\.local"
_PREFIX: Final = rf"^cluster\.{_DIRECTION}\|"
_OUTBOUND: Final = (
    rf"^cluster\.outbound\|[0-9]+\|[^|]*\|{_LABEL}\.{_LABEL}\.svc\.clusterset\.local\."
)

# (tag, regex): the first group is cut from the stat's name, the second is the tag's value.
CLUSTER_TAGS: Final = (
    # Envoy's own cluster-name tag, for names with dots (its default stops at the first).
    ("envoy.cluster_name", rf"^cluster\.(({_NAME}|{_SNI}|[^.]+)\.)"),
    ("kontinuum_direction", r"^cluster\.((outbound|inbound)\|)"),
    ("kontinuum_port", rf"{_PREFIX}(([0-9]+)\|)"),
    ("kontinuum_target_cluster", rf"{_PREFIX}[0-9]+\|(([^|]*)\|)"),
    ("kontinuum_service", rf"{_PREFIX}[0-9]+\|[^|]*\|(({_LABEL})\.)"),
    ("kontinuum_namespace", rf"{_PREFIX}[0-9]+\|[^|]*\|{_LABEL}\.(({_LABEL})\.svc\.)"),
    ("kontinuum_source_cluster", rf"^cluster\.{_NAME}\.zone\.(({_LABEL})\.)"),
    ("kontinuum_destination_cluster", rf"^cluster\.{_NAME}\.zone\.{_LABEL}\.(({_LABEL})\.)"),
)

# Every stat a proxy creates (Envoy's StatsMatcher `inclusion_list`), as (prefix or
# regex, pattern; a regex must match the whole name): what docs/operations.md lists, that
# is what the dashboards, rules and alerts read, and the xDS subscriptions' counters that
# say whether the proxy accepts its configuration (CDS, LDS, RDS updates accepted and
# rejected).
INCLUDED_STATS: Final = (
    ("prefix", "server."),  # Envoy itself: live, uptime, memory, version
    ("prefix", "control_plane."),  # connected_state (KontinuumProxyDisconnected)
    ("prefix", "cluster_manager.cds."),
    ("prefix", "listener_manager.lds."),
    ("regex", r"^http\.[^.]+\.rds\..*"),
    # A service's requests (every one, also those that found no healthy endpoint: Envoy's
    # own 503s), by response code and class, and its bytes: as its callers count them
    # (outbound) and as the sidecar in front of it does (inbound).
    (
        "regex",
        rf"^cluster\.{_NAME}\.(upstream_rq_(completed|[1-5]xx|[0-9]{{3}})"
        r"|upstream_cx_(tx|rx)_bytes_total)$",
    ),
    # Per (caller's, serving) cluster: the requests that reached an endpoint, their codes
    # and latency.
    ("regex", rf"{_OUTBOUND}zone\..*"),
    # The endpoints outlier detection has ejected now, per service.
    ("regex", rf"{_OUTBOUND}outlier_detection\.ejections_active"),
    # Workload mTLS (`kontinuum.control.translate.tls`): the inbound listener's callers
    # that its authorization admitted and denied, and its failed handshakes by cause (no
    # client certificate, one the trust bundle does not verify), beside the successful ones.
    ("regex", r"^http\.inbound\.rbac\.(allowed|denied)$"),
    (
        "regex",
        r"^listener\..+\.ssl\.(handshake|connection_error|fail_verify_no_cert"
        r"|fail_verify_error|fail_verify_san)$",
    ),
)
ADMIN_CLUSTER: Final = "kontinuum-admin"
STATS_PATH: Final = "/stats/prometheus"


def _matcher(kind: str, pattern: str) -> dict[str, Any]:
    return {"prefix": pattern} if kind == "prefix" else {"safe_regex": {"regex": pattern}}


def stats_config(
    cluster: str, workspace: str, role: str, include_prefixes: Sequence[str] = ()
) -> dict[str, Any]:
    """The bootstrap's `stats_config`: fixed tags naming the proxy, the extraction of the
    mesh labels from its stats' names, and the stats created at all (see the module doc):
    `INCLUDED_STATS`, and those whose names start with one of `include_prefixes` (as
    Istio's `statsInclusionPrefixes`: `cluster.inbound|`, `http.`, ...)."""
    patterns = [*INCLUDED_STATS, *(("prefix", prefix) for prefix in include_prefixes if prefix)]
    fixed = {"kontinuum_cluster": cluster, "kontinuum_workspace": workspace, "kontinuum_role": role}
    return {
        "use_all_default_tags": True,
        # Envoy's default envoy.cluster_name stops at the first dot: ours replaces it
        # (a field of Envoy 1.39 and later).
        "allow_default_tag_overrides": True,
        "stats_tags": [
            *({"tag_name": name, "fixed_value": value} for name, value in fixed.items() if value),
            *({"tag_name": name, "regex": regex} for name, regex in CLUSTER_TAGS),
        ],
        "stats_matcher": {"inclusion_list": {"patterns": [_matcher(*p) for p in patterns]}},
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
    return listener, static_cluster(ADMIN_CLUSTER, "127.0.0.1", admin_port)


def static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    """A bootstrap's STATIC cluster of one address (the admin port, the xDS server)."""
    address = {"socket_address": {"address": host, "port_value": port}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
