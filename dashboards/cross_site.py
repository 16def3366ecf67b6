"""Cross-site traffic: which cluster calls which, and what crossing sites costs each
workspace (bytes leaving a site, attributed by request share: see dashboards.queries).
Everything here is per serving cluster, so counts only the requests that reached an
endpoint (Envoy's per-zone stats)."""

from __future__ import annotations

from typing import Any

from dashboards import queries as q
from dashboards.panels import Chart, Query, build

UID = "kontinuum-cross-site"
_PAIR_LEGEND = "{{kontinuum_cluster}} → {{kontinuum_destination_cluster}}"
_REQUESTS = f"{q.REQUESTS}{{{q.FILTERS}}}"
_CROSSING = f"unless on ({q.PAIR}) {q.same_site(q.REQUESTS)}"


def dashboard() -> dict[str, Any]:
    charts = [
        Chart(
            "Requests from cluster to cluster",
            "Requests per second from the callers' cluster (rows) to the serving cluster "
            "(columns), now. The diagonal stays in its site.",
            [Query(f"sum by ({q.PAIR}) ({_REQUESTS})", instant=True)],
            unit="reqps",
            kind="table",
            matrix=("kontinuum_cluster", "kontinuum_destination_cluster"),
        ),
        Chart(
            "Cross-site requests",
            "Requests per second that leave the caller's cluster, by pair.",
            [Query(f"sum by ({q.PAIR}) ({_REQUESTS}) {_CROSSING}", _PAIR_LEGEND)],
            unit="reqps",
        ),
        Chart(
            "Bytes crossing sites, per workspace",
            "Bytes per second sent and received across sites by each workspace's sidecars: "
            "what cross-site egress costs each tenant.",
            [
                Query(
                    f"sum by (kontinuum_workspace) ({q.CROSS_SITE_BYTES}{{{q.FILTERS}}})",
                    "{{kontinuum_workspace}}",
                )
            ],
            unit="Bps",
        ),
        Chart(
            "Bytes between clusters",
            "Bytes per second from each cluster's sidecars to each serving cluster.",
            [Query(f"sum by ({q.PAIR}) ({q.SITE_BYTES}{{{q.FILTERS}}})", _PAIR_LEGEND)],
            unit="Bps",
        ),
        Chart(
            "Cross-site 5xx ratio",
            "Share of the requests crossing sites that get a 5xx, by pair, for the chosen "
            "callers and services (over all of them: the KontinuumCrossSite5xxHigh alert's "
            "measure).",
            [
                Query(
                    f"{q.ratio(f'{q.REQUESTS_5XX}{{{q.FILTERS}}}', _REQUESTS, q.PAIR)} {_CROSSING}",
                    _PAIR_LEGEND,
                )
            ],
            unit="percentunit",
        ),
        Chart(
            "Cross-site latency p99",
            "99th percentile latency of the requests served in another cluster, over all "
            "the callers of each pair.",
            [Query(f"{q.latency(0.99, q.PAIR)} {_CROSSING}", _PAIR_LEGEND)],
            unit="s",
        ),
    ]
    return build(
        UID,
        "kontinuum / Cross-site traffic",
        "Traffic between the fleet's clusters, and the bytes each workspace sends across.",
        charts,
    )
