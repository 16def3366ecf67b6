"""The PromQL the dashboards and rules share, over the metrics kontinuum and its Envoys
export (docs/operations.md lists them).

The mesh's labels on Envoy's stats (`kontinuum.telemetry.envoy_stats`):
`kontinuum_cluster`, `kontinuum_workspace` and `kontinuum_role` say which proxy counted;
`kontinuum_service`, `kontinuum_namespace` and `kontinuum_direction` which service it
called; Envoy's per-zone stats add `kontinuum_source_cluster` and
`kontinuum_destination_cluster`, the fleet cluster the request went from and to.
"""

from __future__ import annotations

from typing import Final

# The template variables of the dashboards, as label matchers.
FILTERS: Final = (
    'kontinuum_cluster=~"$cluster", kontinuum_workspace=~"$workspace", '
    'kontinuum_service=~"$service"'
)
OUTBOUND: Final = 'kontinuum_direction="outbound"'

# Labels of a service's traffic, as the recording rules keep them.
TRAFFIC: Final = (
    "kontinuum_cluster, kontinuum_workspace, kontinuum_namespace, kontinuum_service, "
    "kontinuum_destination_cluster"
)
PAIR: Final = "kontinuum_cluster, kontinuum_destination_cluster"


def same_site(series: str) -> str:
    """`series` (by `kontinuum_destination_cluster`) relabelled so that its source cluster
    is its destination: `X unless on (PAIR) same_site(X)` keeps what crosses sites."""
    return (
        f"label_replace(sum by (kontinuum_destination_cluster) ({series}), "
        f'"kontinuum_cluster", "$1", "kontinuum_destination_cluster", "(.*)")'
    )


# --- recording rules: their names and expressions ----------------------------------------

REQUESTS: Final = "kontinuum:requests:rate1m"
REQUESTS_5XX: Final = "kontinuum:requests_5xx:rate1m"
LATENCY_P50: Final = "kontinuum:request_duration_seconds:p50_1m"
LATENCY_P99: Final = "kontinuum:request_duration_seconds:p99_1m"
UPSTREAM_BYTES: Final = "kontinuum:upstream_bytes:rate1m"
DESTINATION_SHARE: Final = "kontinuum:destination_share:rate1m"
SITE_BYTES: Final = "kontinuum:site_bytes:rate1m"
CROSS_SITE_BYTES: Final = "kontinuum:cross_site_bytes:rate1m"
CROSS_SITE_ERROR_RATIO: Final = "kontinuum:cross_site_error_ratio:rate1m"
PUSH_CONVERGENCE_P99: Final = "kontinuum:push_convergence_seconds:p99_5m"

_ZONE_COMPLETED: Final = f"envoy_cluster_zone_upstream_rq_completed{{{OUTBOUND}}}"


def _latency(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le, {TRAFFIC}) "
        f"(rate(envoy_cluster_zone_upstream_rq_time_bucket{{{OUTBOUND}}}[1m]))) / 1000"
    )


RECORDING_RULES: Final = (
    # A service's requests, by where they came from and which cluster served them.
    (REQUESTS, f"sum by ({TRAFFIC}) (rate({_ZONE_COMPLETED}[1m]))"),
    (
        REQUESTS_5XX,
        f"sum by ({TRAFFIC}) (rate(envoy_cluster_zone_upstream_rq_xx"
        f'{{{OUTBOUND}, envoy_response_code_class="5"}}[1m])) or ({REQUESTS} * 0)',
    ),
    (LATENCY_P50, _latency(0.5)),
    (LATENCY_P99, _latency(0.99)),
    # Bytes cross sites per Envoy cluster, not per zone: a proxy's bytes to a service are
    # attributed to its destinations in proportion to the requests each served.
    (
        UPSTREAM_BYTES,
        "sum by (instance, envoy_cluster_name, kontinuum_cluster, kontinuum_workspace) ("
        f"rate(envoy_cluster_upstream_cx_tx_bytes_total{{{OUTBOUND}}}[1m]) + "
        f"rate(envoy_cluster_upstream_cx_rx_bytes_total{{{OUTBOUND}}}[1m]))",
    ),
    (
        DESTINATION_SHARE,
        "sum by (instance, envoy_cluster_name, kontinuum_destination_cluster) "
        f"(rate({_ZONE_COMPLETED}[1m])) / on (instance, envoy_cluster_name) group_left () "
        f"(sum by (instance, envoy_cluster_name) (rate({_ZONE_COMPLETED}[1m])) > 0)",
    ),
    (
        SITE_BYTES,
        "sum by (kontinuum_cluster, kontinuum_workspace, kontinuum_destination_cluster) ("
        f"{UPSTREAM_BYTES} * on (instance, envoy_cluster_name) "
        f"group_right (kontinuum_cluster, kontinuum_workspace) {DESTINATION_SHARE})",
    ),
    (CROSS_SITE_BYTES, f"{SITE_BYTES} unless on ({PAIR}) {same_site(SITE_BYTES)}"),
    (
        CROSS_SITE_ERROR_RATIO,
        f"(sum by ({PAIR}) ({REQUESTS_5XX}) / (sum by ({PAIR}) ({REQUESTS}) > 0)) "
        f"unless on ({PAIR}) {same_site(REQUESTS)}",
    ),
    (
        PUSH_CONVERGENCE_P99,
        "histogram_quantile(0.99, sum by (le) "
        "(rate(kontinuum_push_convergence_seconds_bucket[5m])))",
    ),
)
