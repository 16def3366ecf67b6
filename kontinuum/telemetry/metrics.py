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
