"""Control plane: are the proxies connected and in sync, how fast do changes reach them,
do they reject any, and how are the sources of the fleet doing.

Only the proxy gauges carry a cluster and workspace (`kontinuum_xds_proxies*`): the
dashboard's variables filter those. kontinuum counts pushes, NACKs and convergence for the
whole fleet (by xDS type at most), so those panels are fleet-wide, and say so."""

from __future__ import annotations

from typing import Any

from dashboards import queries as q
from dashboards.panels import Chart, Query, build

UID = "kontinuum-control-plane"


def dashboard() -> dict[str, Any]:
    charts = [
        Chart(
            "Connected proxies",
            "Proxies connected to kontinuum, by role, cluster and workspace.",
            [
                Query(
                    "sum by (kontinuum_role, kontinuum_cluster, kontinuum_workspace) "
                    f"(kontinuum_xds_proxies{{{q.WHERE}}})",
                    "{{kontinuum_role}} {{kontinuum_cluster}}/{{kontinuum_workspace}}",
                )
            ],
        ),
        Chart(
            "Proxy sync state",
            "Connected proxies of the chosen clusters and workspaces by how they stand. "
            "SYNCED: every response ACKed; STALE: one in flight or due; NACKED: rejecting "
            "a version sent; NOT_SENT: its view has nothing yet.",
            [Query(f"sum by (state) (kontinuum_xds_proxies_sync{{{q.WHERE}}})", "{{state}}")],
        ),
        Chart(
            "Refused xDS streams",
            "Streams the xDS server refused per second, over the whole fleet (not "
            "filtered): unauthenticated (no acceptable certificate or token) or denied (an "
            "identity claiming another cluster or workspace, or an unknown cluster).",
            [
                Query(
                    "sum by (reason) (rate(kontinuum_xds_streams_refused_total[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            unit="ops",
        ),
        Chart(
            "Pushes",
            "Discovery responses sent per second, by type, to the whole fleet (not filtered).",
            [
                Query(
                    "sum by (type) (rate(kontinuum_xds_pushes_total[$__rate_interval]))", "{{type}}"
                )
            ],
            unit="ops",
        ),
        Chart(
            "Convergence",
            "From a source's change to the proxies' ACKs: p99 of the last proxy of each "
            "push, and p50/p99 of each proxy, over the whole fleet (not filtered).",
            [
                Query(q.PUSH_CONVERGENCE_P99, "push p99"),
                Query(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(kontinuum_proxy_convergence_seconds_bucket[$__rate_interval])))",
                    "proxy p50",
                ),
                Query(
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(kontinuum_proxy_convergence_seconds_bucket[$__rate_interval])))",
                    "proxy p99",
                ),
            ],
            unit="s",
        ),
        Chart(
            "NACKs",
            "Responses proxies rejected, by type, over the whole fleet (not filtered); "
            "`kontinuum status` says which proxies and why.",
            [
                Query(
                    "sum by (type) (increase(kontinuum_xds_nacks_total[$__rate_interval]))",
                    "{{type}}",
                )
            ],
        ),
        Chart(
            "Sources",
            "Each source: up (a current view of all it covers) and stale (serving the last "
            "view of a cluster it lost); every source, not filtered.",
            [
                Query("kontinuum_source_up", "{{source}} up"),
                Query("kontinuum_source_stale", "{{source}} stale"),
            ],
        ),
        Chart(
            "Time since sources were in sync",
            "Seconds since each watching source last knew its view current (every source, "
            "not filtered).",
            [Query("time() - kontinuum_source_last_sync_timestamp_seconds", "{{source}}")],
            unit="s",
        ),
        Chart(
            "Zones",
            "Each zone control plane: connected to the global (1) or not, and its replicas "
            "connected (the most any global replica sees); and the zone streams refused per "
            "second, by reason (every zone, not filtered).",
            [
                Query("max by (zone) (kontinuum_federation_zone_connected)", "{{zone}} connected"),
                Query(
                    "max by (zone) (sum without (role) (kontinuum_federation_zone_replicas))",
                    "{{zone}} replicas",
                ),
                Query(
                    "sum by (reason) (rate(kontinuum_federation_refused_total[$__rate_interval]))",
                    "refused: {{reason}}",
                ),
            ],
        ),
        Chart(
            "Time since zones synced",
            "Seconds since a response of each zone last applied at the global (every zone, "
            "not filtered).",
            [
                Query(
                    "time() - max by (zone) "
                    "(kontinuum_federation_zone_last_sync_timestamp_seconds)",
                    "{{zone}}",
                )
            ],
            unit="s",
        ),
        Chart(
            "Configuration errors",
            "Invalid objects each source leaves out (the last good view serves); every "
            "source, not filtered.",
            [Query("sum by (source) (kontinuum_source_config_errors)", "{{source}}")],
        ),
        Chart(
            "Translation time",
            "p99 time to translate the fleet into every view in use (not filtered).",
            [
                Query(
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(kontinuum_translation_seconds_bucket[$__rate_interval])))",
                    "p99",
                )
            ],
            unit="s",
        ),
        Chart(
            "Configuration size",
            "Bytes of configuration served, over every view, by type (not filtered).",
            [Query("sum by (type) (kontinuum_xds_config_bytes)", "{{type}}")],
            unit="bytes",
        ),
    ]
    return build(
        UID,
        "kontinuum / Control plane",
        "The xDS server, its proxies' sync state, push convergence and the fleet's sources.",
        charts,
    )
