"""Cross-site traffic: which cluster calls which, and what crossing sites costs each
workspace (bytes leaving a site, attributed by request share: see dashboards.queries)."""

from __future__ import annotations

from typing import Any

from dashboards import queries as q
from dashboards.panels import Chart, Query, build

UID = "kontinuum-cross-site"
_PAIR_LEGEND = "{{kontinuum_cluster}} → {{kontinuum_destination_cluster}}"


def dashboard() -> dict[str, Any]:
    charts = [
        Chart(
            "Requests from cluster to cluster",
            "Requests per second from the callers' cluster (rows) to the serving cluster "
            "(columns), now. The diagonal stays in its site.",
            [Query(f"sum by ({q.PAIR}) ({q.REQUESTS}{{{q.FILTERS}}})", instant=True)],
            unit="reqps",
            kind="table",
            matrix=("kontinuum_cluster", "kontinuum_destination_cluster"),
        ),
        Chart(
            "Cross-site requests",
            "Requests per second that leave the caller's cluster, by pair.",
            [
                Query(
                    f"sum by ({q.PAIR}) ({q.REQUESTS}{{{q.FILTERS}}}) unless on ({q.PAIR}) "
                    f"{q.same_site(q.REQUESTS)}",
                    _PAIR_LEGEND,
                )
            ],
            unit="reqps",
        ),
        Chart(
            "Bytes crossing sites, per workspace",
            "Bytes per second sent and received across sites by each workspace's sidecars: "
            "what cross-site egress costs each tenant.",
            [
                Query(
                    "sum by (kontinuum_workspace) "
                    f'({q.CROSS_SITE_BYTES}{{kontinuum_cluster=~"$cluster", '
                    'kontinuum_workspace=~"$workspace"})',
                    "{{kontinuum_workspace}}",
                )
            ],
            unit="Bps",
        ),
        Chart(
            "Bytes between clusters",
            "Bytes per second from each cluster's sidecars to each serving cluster.",
            [
                Query(
                    f"sum by ({q.PAIR}) "
                    f'({q.SITE_BYTES}{{kontinuum_cluster=~"$cluster", '
                    'kontinuum_workspace=~"$workspace"})',
                    _PAIR_LEGEND,
                )
            ],
            unit="Bps",
        ),
        Chart(
            "Cross-site 5xx ratio",
            "Share of the requests crossing sites that get a 5xx, by pair (the "
            "KontinuumCrossSite5xxHigh alert's measure).",
            [Query(q.CROSS_SITE_ERROR_RATIO, _PAIR_LEGEND)],
            unit="percentunit",
        ),
        Chart(
            "Cross-site latency p99",
            "99th percentile latency of the requests served in another cluster.",
            [
                Query(
                    f"max by ({q.PAIR}) ({q.LATENCY_P99}{{{q.FILTERS}}}) unless on ({q.PAIR}) "
                    f"{q.same_site(q.LATENCY_P99)}",
                    _PAIR_LEGEND,
                )
            ],
            unit="s",
        ),
    ]
    return build(
        UID,
        "kontinuum / Cross-site traffic",
        "Traffic between the fleet's clusters, and the bytes each workspace sends across.",
        charts,
    )
