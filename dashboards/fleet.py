"""Fleet overview: per service, request rate and error ratio as its callers count them
(every request, also those that found no healthy endpoint), and per serving cluster the
requests that reached an endpoint, their errors and p50/p99 latency; and the requests the
inbound listeners' authorization refused."""

from __future__ import annotations

from typing import Any

from dashboards import queries as q
from dashboards.panels import Chart, Query, build

UID = "kontinuum-fleet"
_SERVICE = "kontinuum_namespace, kontinuum_service"
_BY = f"{_SERVICE}, kontinuum_destination_cluster"
_SERVICE_LEGEND = "{{kontinuum_service}}.{{kontinuum_namespace}}"
_LEGEND = f"{_SERVICE_LEGEND} in {{{{kontinuum_destination_cluster}}}}"
_REQUESTS = f"{q.SERVICE_REQUESTS}{{{q.FILTERS}}}"
_ERRORS = f"{q.SERVICE_REQUESTS_5XX}{{{q.FILTERS}}}"
# Envoy's RBAC filter counts on the HTTP connection manager of the inbound listener.
AUTHORIZATION_DENIALS = (
    "sum by (kontinuum_cluster, kontinuum_workspace) (rate(envoy_http_rbac_denied"
    f'{{envoy_http_conn_manager_prefix="inbound", {q.WHERE}}}[$__rate_interval]))'
)


def dashboard() -> dict[str, Any]:
    charts = [
        Chart(
            "Request rate",
            "Requests per second to each service, as its callers' sidecars and ingress "
            "gateways count them: every request, also those Envoy answered itself because "
            "no endpoint was healthy.",
            [Query(f"sum by ({_SERVICE}) ({_REQUESTS})", _SERVICE_LEGEND)],
            unit="reqps",
        ),
        Chart(
            "Error ratio",
            "Share of each service's requests answered with a 5xx: by its endpoints, or by "
            "the caller's Envoy (a 503 when no endpoint was healthy, or there is none).",
            [Query(q.ratio(_ERRORS, _REQUESTS, _SERVICE), _SERVICE_LEGEND)],
            unit="percentunit",
        ),
        Chart(
            "Requests by serving cluster",
            "Requests per second that reached an endpoint, by the fleet cluster that served "
            "them (a request that found no endpoint has no serving cluster: see Error ratio).",
            [Query(f"sum by ({_BY}) ({q.REQUESTS}{{{q.FILTERS}}})", _LEGEND)],
            unit="reqps",
        ),
        Chart(
            "Error ratio by serving cluster",
            "Share of the requests each serving cluster answered with a 5xx.",
            [
                Query(
                    q.ratio(
                        f"{q.REQUESTS_5XX}{{{q.FILTERS}}}", f"{q.REQUESTS}{{{q.FILTERS}}}", _BY
                    ),
                    _LEGEND,
                )
            ],
            unit="percentunit",
        ),
        Chart(
            "Latency p50",
            "Median time from the request leaving the caller's sidecar to the response "
            "coming back, over all the callers, by serving cluster.",
            [Query(q.latency(0.5, _BY), _LEGEND)],
            unit="s",
        ),
        Chart(
            "Latency p99",
            "99th percentile of the same.",
            [Query(q.latency(0.99, _BY), _LEGEND)],
            unit="s",
        ),
        Chart(
            "Requests by caller's cluster",
            "Where the traffic comes from (every request).",
            [Query(f"sum by (kontinuum_cluster) ({_REQUESTS})", "from {{kontinuum_cluster}}")],
            unit="reqps",
        ),
        Chart(
            "Services",
            "Per service, now: requests per second and the share answered with a 5xx "
            "(as Request rate and Error ratio).",
            [
                Query(
                    f"sum by ({_SERVICE}) ({_REQUESTS})",
                    instant=True,
                    column="requests/s",
                    unit="reqps",
                ),
                Query(
                    q.ratio(_ERRORS, _REQUESTS, _SERVICE),
                    instant=True,
                    column="5xx ratio",
                    unit="percentunit",
                ),
            ],
            unit="reqps",
            kind="table",
        ),
        Chart(
            "Authorization denials",
            "Requests per second the inbound listeners' RBAC refused (403), by the called "
            "proxy's cluster and workspace: callers of another workspace that no "
            "ReferenceGrant of the called workspace names (docs/security.md).",
            [Query(AUTHORIZATION_DENIALS, "{{kontinuum_workspace}} in {{kontinuum_cluster}}")],
            unit="reqps",
        ),
    ]
    return build(
        UID,
        "kontinuum / Fleet overview",
        "Every service of the cluster set: traffic and errors, and per serving cluster "
        "traffic, errors and latency.",
        charts,
    )
