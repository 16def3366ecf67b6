"""Fleet overview: per service and the cluster that serves it, request rate, error ratio
and p50/p99 latency, as the callers' sidecars measure them."""

from __future__ import annotations

from typing import Any

from dashboards import queries as q
from dashboards.panels import Chart, Query, build

UID = "kontinuum-fleet"
_BY = "kontinuum_namespace, kontinuum_service, kontinuum_destination_cluster"
_LEGEND = "{{kontinuum_service}}.{{kontinuum_namespace}} in {{kontinuum_destination_cluster}}"


def dashboard() -> dict[str, Any]:
    charts = [
        Chart(
            "Request rate",
            "Requests per second to each service, by the fleet cluster that served them.",
            [Query(f"sum by ({_BY}) ({q.REQUESTS}{{{q.FILTERS}}})", _LEGEND)],
            unit="reqps",
        ),
        Chart(
            "Error ratio",
            "Share of the requests answered with a 5xx (or not answered: Envoy counts a "
            "request that found no healthy endpoint as a 503).",
            [
                Query(
                    f"sum by ({_BY}) ({q.REQUESTS_5XX}{{{q.FILTERS}}}) / "
                    f"(sum by ({_BY}) ({q.REQUESTS}{{{q.FILTERS}}}) > 0)",
                    _LEGEND,
                )
            ],
            unit="percentunit",
        ),
        Chart(
            "Latency p50",
            "Median time from the request leaving the caller's sidecar to the response "
            "coming back, by serving cluster.",
            [Query(f"max by ({_BY}) ({q.LATENCY_P50}{{{q.FILTERS}}})", _LEGEND)],
            unit="s",
        ),
        Chart(
            "Latency p99",
            "99th percentile of the same.",
            [Query(f"max by ({_BY}) ({q.LATENCY_P99}{{{q.FILTERS}}})", _LEGEND)],
            unit="s",
        ),
        Chart(
            "Requests by caller's cluster",
            "Where the traffic comes from.",
            [
                Query(
                    f"sum by (kontinuum_cluster) ({q.REQUESTS}{{{q.FILTERS}}})",
                    "from {{kontinuum_cluster}}",
                )
            ],
            unit="reqps",
        ),
        Chart(
            "Services",
            "Per service: requests per second and error ratio now.",
            [
                Query(
                    f"sum by (kontinuum_namespace, kontinuum_service) "
                    f"({q.REQUESTS}{{{q.FILTERS}}})",
                    instant=True,
                )
            ],
            unit="reqps",
            kind="table",
        ),
    ]
    return build(
        UID,
        "kontinuum / Fleet overview",
        "Every service of the cluster set, per serving cluster: traffic, errors, latency.",
        charts,
    )
