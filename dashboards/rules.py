"""Prometheus recording and alerting rules, as code (`python -m dashboards.generate`
writes them to `dashboards/rules/kontinuum.rules.yaml`).

Each alert names the section of docs/operations.md that says what it means and what to
do: a `runbook` annotation (`docs/operations.md#kontinuumdown`), a reference into this
repository, not a URL. Given where that document is served (`rules(runbook_base=URL)`,
`python -m dashboards.generate --runbook-base URL --rules-to FILE`), the alerts carry the
`runbook_url` annotation that Alertmanager templates and Grafana link to instead:
`URL#kontinuumdown`. `rules(hold=...)` scales every alert's `for:` (the end-to-end test
fires them in seconds with hold 0).

The alerts select kontinuum's and the Envoys' scrape jobs by name: `kontinuum` and
`kontinuum-envoy`, as `kontinuum prometheus-config` and deploy/README.md's Kubernetes
scrape configuration name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from dashboards import queries as q

RUNBOOK: Final = "docs/operations.md"
JOB: Final = "kontinuum"
ENVOY_JOB: Final = "kontinuum-envoy"


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    expr: str
    hold: int  # seconds the condition must last (`for:`)
    severity: str
    summary: str
    description: str

    def rule(self, scale: float, runbook_base: str | None = None) -> dict[str, Any]:
        anchor = self.name.lower()
        runbook = (
            {"runbook": f"{RUNBOOK}#{anchor}"}
            if runbook_base is None
            else {"runbook_url": f"{runbook_base}#{anchor}"}
        )
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": f"{int(self.hold * scale)}s",
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description, **runbook},
        }


ALERTS: Final = (
    Alert(
        "KontinuumProxyNacking",
        # A count of proxies: summed over the replicas (each proxy is on one of them).
        "sum by (kontinuum_cluster, kontinuum_workspace) "
        '(kontinuum_xds_proxies_sync{state="NACKED"}) > 0',
        60,
        "warning",
        "Proxies in {{ $labels.kontinuum_cluster }} reject the configuration kontinuum sends them",
        "{{ $value }} proxies of {{ $labels.kontinuum_cluster }} "
        "({{ $labels.kontinuum_workspace }}) reject a version they were sent; they run on "
        "their last accepted configuration. `kontinuum status` names them and shows "
        "Envoy's message.",
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
        "KontinuumZoneDisconnected",
        # Connected to one global replica is connected: the largest over the replicas.
        "max by (zone) (kontinuum_federation_zone_connected) == 0",
        60,
        "warning",
        "Zone {{ $labels.zone }} is not connected to the global control plane",
        "The global serves the last view {{ $labels.zone }} published, marked stale, until "
        "its stale-after; the site's changes do not arrive meanwhile.",
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
        f'up{{job="{ENVOY_JOB}"}} == 0',
        120,
        "warning",
        "Proxy {{ $labels.instance }} cannot be scraped",
        "A proxy kontinuum lists (connected, or disconnected with its stats port still "
        "accepting connections) does not answer Prometheus on its stats listener.",
    ),
    Alert(
        "KontinuumDown",
        # Also when Prometheus has no kontinuum target at all (none discovered, or the
        # scrape job is named otherwise): the alerts would otherwise stay silent.
        f'up{{job="{JOB}"}} == 0 or absent(up{{job="{JOB}"}})',
        60,
        "critical",
        "kontinuum does not answer",
        "The control plane's /metrics cannot be scraped (or Prometheus has no target of "
        f"job {JOB}); proxies keep their configuration but receive no updates.",
    ),
)


def rules(hold: float = 1.0, runbook_base: str | None = None) -> dict[str, Any]:
    """The rule file: the recording rules, then the alerts (`for:` scaled by `hold`;
    `runbook_url`s under `runbook_base` if given, see the module doc)."""
    return {
        "groups": [
            {
                "name": "kontinuum.recording",
                "rules": [{"record": name, "expr": expr} for name, expr in q.RECORDING_RULES],
            },
            {"name": "kontinuum.alerts", "rules": [a.rule(hold, runbook_base) for a in ALERTS]},
        ]
    }
