"""Every metric kontinuum exports, declared in one place (Prometheus naming).

The xDS server keeps plain counters (`ServerStats`) and knows nothing of Prometheus;
this collector reads them at scrape time, so the fan-out pays nothing for telemetry.
Labels are bounded: xDS type, never a stream or node id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.source import Health
from kontinuum.kube import LeaderElection, StatusWriter
from kontinuum.xds import XdsServer, types


def _by_type(family: CounterMetricFamily, counts: Counter[str]) -> CounterMetricFamily:
    for type_url in types.PUSH_ORDER:
        family.add_metric([types.short_name(type_url)], counts[type_url])
    return family


class XdsCollector(Collector):
    """The xDS server's own counters and gauges."""

    def __init__(self, server: XdsServer) -> None:
        self._server = server

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._server.stats
        yield GaugeMetricFamily(
            "kontinuum_xds_connected_streams",
            "ADS streams open now.",
            value=len(self._server.streams()),
        )
        yield _by_type(
            CounterMetricFamily(
                "kontinuum_xds_responses", "Discovery responses sent, by type.", labels=["type"]
            ),
            stats.responses,
        )
        yield _by_type(
            CounterMetricFamily(
                "kontinuum_xds_resources_sent",
                "Resources carried by discovery responses, by type.",
                labels=["type"],
            ),
            stats.resources,
        )
        yield _by_type(
            CounterMetricFamily("kontinuum_xds_acks", "Responses ACKed, by type.", labels=["type"]),
            stats.acks,
        )
        yield _by_type(
            CounterMetricFamily(
                "kontinuum_xds_nacks", "Responses rejected (NACKed), by type.", labels=["type"]
            ),
            stats.nacks,
        )
        yield CounterMetricFamily(
            "kontinuum_xds_streams_refused",
            "Streams refused by authentication or view resolution.",
            value=stats.streams_refused,
        )


class SourceCollector(Collector):
    """Discovery: each source's health, staleness, last update and size (one label value
    per source, that is per cluster reached through its API or DNS: bounded by the fleet)."""

    def __init__(self, aggregator: Aggregator) -> None:
        self._aggregator = aggregator

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        states = self._aggregator.source_states()
        up = GaugeMetricFamily(
            "kontinuum_source_up",
            "1 when the source has a current view of everything it covers.",
            labels=["source"],
        )
        stale = GaugeMetricFamily(
            "kontinuum_source_stale",
            "1 while the source serves the last view of a cluster it lost contact with.",
            labels=["source"],
        )
        last = GaugeMetricFamily(
            "kontinuum_source_last_update_timestamp_seconds",
            "When the source last reported a change (Unix time).",
            labels=["source"],
        )
        endpoints = GaugeMetricFamily(
            "kontinuum_source_endpoints", "Endpoints the source reports now.", labels=["source"]
        )
        errors = GaugeMetricFamily(
            "kontinuum_source_config_errors",
            "Invalid objects the source reports (left out; the last good view serves).",
            labels=["source"],
        )
        for state in states:
            up.add_metric([state.name], 1.0 if state.health is Health.HEALTHY else 0.0)
            stale.add_metric([state.name], 1.0 if state.stale else 0.0)
            if state.last_update is not None:
                last.add_metric([state.name], state.last_update)
            endpoints.add_metric([state.name], state.endpoints)
            errors.add_metric([state.name], state.errors)
        yield from (up, stale, last, endpoints, errors)
        yield CounterMetricFamily(
            "kontinuum_fleet_applies",
            "Fleets applied after debouncing the sources' updates.",
            value=self._aggregator.applied,
        )
        yield CounterMetricFamily(
            "kontinuum_source_updates",
            "Updates received from the sources, before debouncing.",
            value=self._aggregator.updates,
        )


class StatusCollector(Collector):
    """Leader election and status writes (labels: the kind written and the outcome, both
    from fixed sets)."""

    def __init__(self, election: LeaderElection, writer: StatusWriter) -> None:
        self._election = election
        self._writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "kontinuum_leader",
            "1 while this replica holds the Lease, and so writes status into objects.",
            value=1.0 if self._election.is_leader else 0.0,
        )
        yield CounterMetricFamily(
            "kontinuum_leader_terms",
            "Times this replica became the Lease's holder.",
            value=self._election.term,
        )
        writes = CounterMetricFamily(
            "kontinuum_status_writes",
            "Status writes by kind and outcome: written, unchanged (already right), failed and "
            "refused (retried with backoff), conflict (retried soon), deferred (its API did "
            "not answer), gone (no such object), skipped (not a Kubernetes API).",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in sorted(self._writer.totals.items()):
            writes.add_metric([kind, outcome], count)
        yield writes
