"""The PromQL the dashboards and rules share, over the metrics kontinuum and its Envoys
export (docs/operations.md lists them).

One label vocabulary, on kontinuum's own metrics and on Envoy's stats alike:
`kontinuum_cluster`, `kontinuum_workspace` and `kontinuum_role` say which proxy counted
(Envoy's fixed tags, `kontinuum.telemetry.envoy_stats`; `kontinuum_xds_proxies*` use the
same names); `kontinuum_service`, `kontinuum_namespace` and `kontinuum_direction` which
service it called; Envoy's per-zone stats add `kontinuum_source_cluster` and
`kontinuum_destination_cluster`, the fleet cluster the request went from and to.

Two sources of request counts, for two questions:

- an upstream cluster's own counters (`envoy_cluster_upstream_rq_completed`,
  `envoy_cluster_upstream_rq_xx`) count every request to a service, also those Envoy
  answered itself with a 503 because no endpoint was healthy: the service's rate and
  error ratio (`SERVICE_REQUESTS`, `SERVICE_REQUESTS_5XX`);
- the per-zone counters (`envoy_cluster_zone_*`) exist only for requests that reached an
  endpoint, and say which cluster served them: the traffic matrix, cross-site traffic,
  latency by serving cluster (`REQUESTS`, `REQUESTS_5XX`, `LATENCY_BUCKETS`).

Every Envoy selector leaves out the east-west gateways (`kontinuum_role="gateway"`): they
forward what a sidecar or an ingress gateway in another cluster already counted.
"""

from __future__ import annotations

from typing import Final

# The template variables of the dashboards, as label matchers: on Envoy's series, and on
# kontinuum's own proxy gauges (which have no service).
WHERE: Final = 'kontinuum_cluster=~"$cluster", kontinuum_workspace=~"$workspace"'
FILTERS: Final = f'{WHERE}, kontinuum_service=~"$service"'

# The callers' view of outbound traffic: sidecars and ingress gateways, not the east-west
# gateways in between.
CALLERS: Final = 'kontinuum_direction="outbound", kontinuum_role!="gateway"'

# Labels of a service's traffic, as the recording rules keep them.
SERVICE: Final = "kontinuum_cluster, kontinuum_workspace, kontinuum_namespace, kontinuum_service"
TRAFFIC: Final = f"{SERVICE}, kontinuum_destination_cluster"
PAIR: Final = "kontinuum_cluster, kontinuum_destination_cluster"


def same_site(series: str) -> str:
    """`series` (by `kontinuum_destination_cluster`) relabelled so that its source cluster
    is its destination: `X unless on (PAIR) same_site(X)` keeps what crosses sites."""
    return (
        f"label_replace(sum by (kontinuum_destination_cluster) ({series}), "
        f'"kontinuum_cluster", "$1", "kontinuum_destination_cluster", "(.*)")'
    )


def ratio(errors: str, total: str, by: str) -> str:
    """Share of `total` that `errors` is, by `by`: 0 where there are requests and no
    errors (Envoy creates a 5xx counter at the first 5xx), nothing where no requests."""
    return (
        f"(sum by ({by}) ({errors}) or sum by ({by}) ({total}) * 0) / (sum by ({by}) ({total}) > 0)"
    )


def latency(quantile: float, by: str, filters: str = FILTERS) -> str:
    """The `quantile` of the request duration (seconds) by `by`, from the recorded
    per-zone buckets: summed by `le` first, so that it is a quantile of all the requests,
    not a mean or maximum of each caller's."""
    return (
        f"histogram_quantile({quantile}, sum by (le, {by}) ({LATENCY_BUCKETS}{{{filters}}})) / 1000"
    )


# --- recording rules: their names and expressions ----------------------------------------

SERVICE_REQUESTS: Final = "kontinuum:service_requests:rate1m"
SERVICE_REQUESTS_5XX: Final = "kontinuum:service_requests_5xx:rate1m"
REQUESTS: Final = "kontinuum:requests:rate1m"
REQUESTS_5XX: Final = "kontinuum:requests_5xx:rate1m"
LATENCY_BUCKETS: Final = "kontinuum:request_duration_milliseconds_bucket:rate1m"
UPSTREAM_BYTES: Final = "kontinuum:upstream_bytes:rate1m"
DESTINATION_SHARE: Final = "kontinuum:destination_share:rate1m"
SITE_BYTES: Final = "kontinuum:site_bytes:rate1m"
CROSS_SITE_BYTES: Final = "kontinuum:cross_site_bytes:rate1m"
CROSS_SITE_ERROR_RATIO: Final = "kontinuum:cross_site_error_ratio:rate1m"
PUSH_CONVERGENCE_P99: Final = "kontinuum:push_convergence_seconds:p99_5m"

_COMPLETED: Final = f"envoy_cluster_upstream_rq_completed{{{CALLERS}}}"
_5XX: Final = f'envoy_cluster_upstream_rq_xx{{{CALLERS}, envoy_response_code_class="5"}}'
_ZONE_COMPLETED: Final = f"envoy_cluster_zone_upstream_rq_completed{{{CALLERS}}}"
_ZONE_5XX: Final = f'envoy_cluster_zone_upstream_rq_xx{{{CALLERS}, envoy_response_code_class="5"}}'
# Bytes per Envoy cluster (one per service and port), with the service it leads to.
_BYTES_BY: Final = f"instance, envoy_cluster_name, {SERVICE}"

RECORDING_RULES: Final = (
    # A service's requests and 5xx answers, by the callers' cluster and workspace: every
    # request, also those that found no healthy endpoint.
    (SERVICE_REQUESTS, f"sum by ({SERVICE}) (rate({_COMPLETED}[1m]))"),
    (SERVICE_REQUESTS_5XX, f"sum by ({SERVICE}) (rate({_5XX}[1m]))"),
    # The requests that reached an endpoint, by which cluster served them.
    (REQUESTS, f"sum by ({TRAFFIC}) (rate({_ZONE_COMPLETED}[1m]))"),
    (REQUESTS_5XX, f"sum by ({TRAFFIC}) (rate({_ZONE_5XX}[1m]))"),
    # Their duration's histogram (Envoy's milliseconds), for quantiles over any grouping.
    (
        LATENCY_BUCKETS,
        f"sum by (le, {TRAFFIC}) "
        f"(rate(envoy_cluster_zone_upstream_rq_time_bucket{{{CALLERS}}}[1m]))",
    ),
    # Bytes cross sites per Envoy cluster, not per zone: a proxy's bytes to a service are
    # attributed to its destinations in proportion to the requests each served.
    (
        UPSTREAM_BYTES,
        f"sum by ({_BYTES_BY}) ("
        f"rate(envoy_cluster_upstream_cx_tx_bytes_total{{{CALLERS}}}[1m]) + "
        f"rate(envoy_cluster_upstream_cx_rx_bytes_total{{{CALLERS}}}[1m]))",
    ),
    (
        DESTINATION_SHARE,
        "sum by (instance, envoy_cluster_name, kontinuum_destination_cluster) "
        f"(rate({_ZONE_COMPLETED}[1m])) / on (instance, envoy_cluster_name) group_left () "
        f"(sum by (instance, envoy_cluster_name) (rate({_ZONE_COMPLETED}[1m])) > 0)",
    ),
    (
        SITE_BYTES,
        f"sum by ({TRAFFIC}) ("
        f"{UPSTREAM_BYTES} * on (instance, envoy_cluster_name) "
        f"group_right ({SERVICE}) {DESTINATION_SHARE})",
    ),
    (CROSS_SITE_BYTES, f"{SITE_BYTES} unless on ({PAIR}) {same_site(SITE_BYTES)}"),
    (
        CROSS_SITE_ERROR_RATIO,
        f"{ratio(REQUESTS_5XX, REQUESTS, PAIR)} unless on ({PAIR}) {same_site(REQUESTS)}",
    ),
    (
        PUSH_CONVERGENCE_P99,
        "histogram_quantile(0.99, sum by (le) "
        "(rate(kontinuum_push_convergence_seconds_bucket[5m])))",
    ),
)
