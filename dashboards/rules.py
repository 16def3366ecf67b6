"""Prometheus recording and alerting rules, as code (`python -m dashboards.generate`
writes them to `dashboards/rules/kontinuum.rules.yaml`).

Each alert links to what it means and what to do in docs/operations.md. `rules(hold=...)`
scales every alert's `for:` (the end-to-end test fires them in seconds with hold 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from dashboards import queries as q

RUNBOOK: Final = "docs/operations.md"


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    expr: str
    hold: int  # seconds the condition must last (`for:`)
    severity: str
    summary: str
    description: str

    def rule(self, scale: float) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": f"{int(self.hold * scale)}s",
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK}#{self.name.lower()}",
            },
        }


ALERTS: Final = (
    Alert(
        "KontinuumProxyNacking",
        'max(kontinuum_xds_proxies_sync{state="NACKED"}) > 0',
        60,
        "warning",
        "A proxy rejects the configuration kontinuum sends it",
        "{{ $value }} proxies reject a version they were sent; they run on their last "
        "accepted configuration. `kontinuum status` names them and shows Envoy's message.",
    ),
    Alert(
        "KontinuumSourceStale",
        "max by (source) (kontinuum_source_stale) > 0",
        120,
        "warning",
        "Source {{ $labels.source }} serves a stale view",
        "kontinuum lost contact with {{ $labels.source }}; its last known endpoints serve, "
        "marked stale, until they expire.",
    ),
    Alert(
        "KontinuumConvergenceSlow",
        f"{q.PUSH_CONVERGENCE_P99} > 5",
        600,
        "warning",
        "Configuration takes long to reach the proxies",
        "The 99th percentile from a source's change to the last proxy's ACK is "
        "{{ $value | humanizeDuration }}.",
    ),
    Alert(
        "KontinuumCrossSite5xxHigh",
        f"{q.CROSS_SITE_ERROR_RATIO} > 0.05",
        300,
        "warning",
        "Requests from {{ $labels.kontinuum_cluster }} to "
        "{{ $labels.kontinuum_destination_cluster }} fail",
        "{{ $value | humanizePercentage }} of the requests crossing from "
        "{{ $labels.kontinuum_cluster }} to {{ $labels.kontinuum_destination_cluster }} "
        "get a 5xx.",
    ),
    Alert(
        "KontinuumProxyDisconnected",
        "max by (instance, kontinuum_cluster, kontinuum_workspace) "
        "(envoy_control_plane_connected_state) == 0",
        60,
        "warning",
        "Proxy {{ $labels.instance }} is not connected to kontinuum",
        "The proxy in {{ $labels.kontinuum_cluster }} ({{ $labels.kontinuum_workspace }}) runs "
        "on its last configuration and receives no updates.",
    ),
    Alert(
        "KontinuumProxyDown",
        'up{job="kontinuum-envoy"} == 0',
        120,
        "warning",
        "Proxy {{ $labels.instance }} cannot be scraped",
        "A proxy that was connected does not answer on its stats listener: it most likely stopped.",
    ),
    Alert(
        "KontinuumDown",
        'up{job="kontinuum"} == 0',
        60,
        "critical",
        "kontinuum does not answer",
        "The control plane's /metrics cannot be scraped; proxies keep their configuration "
        "but receive no updates.",
    ),
)


def rules(hold: float = 1.0) -> dict[str, Any]:
    """The rule file: the recording rules, then the alerts (`for:` scaled by `hold`)."""
    return {
        "groups": [
            {
                "name": "kontinuum.recording",
                "rules": [{"record": name, "expr": expr} for name, expr in q.RECORDING_RULES],
            },
            {"name": "kontinuum.alerts", "rules": [a.rule(hold) for a in ALERTS]},
        ]
    }
