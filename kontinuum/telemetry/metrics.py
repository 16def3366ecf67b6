"""Every metric kontinuum exports, declared in one place (Prometheus naming).

Most are read at scrape time from what the layers keep anyway (the xDS server's plain
counters, the streams' state, the aggregator's sources), so the fan-out pays nothing for
telemetry; the histograms of what takes time (translating, converging) are observed as it
happens (`PushMetrics`). Labels are bounded: xDS type, role, fleet cluster, workspace,
source, object kind, outcome; never a stream, node id or resource name.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kontinuum.discovery.aggregate import Aggregator
from kontinuum.discovery.source import Health
from kontinuum.discovery.zone import ZoneSource
from kontinuum.federation.fleet_copy import FleetCopy
from kontinuum.federation.global_identity import GlobalCheck
from kontinuum.federation.global_links import Links
from kontinuum.federation.service import REFUSED_REASONS, FederationService
from kontinuum.kube import LeaderElection, StatusWriter
from kontinuum.mesh import Mesh
from kontinuum.security.workload import WorkloadCertificates
from kontinuum.xds import SyncStatus, XdsServer, types
from kontinuum.xds.stream import Stream

# Seconds: a push over loopback takes milliseconds, one across a fleet seconds; a minute
# is far off anything healthy.
CONVERGENCE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TRANSLATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_SYNC_STATES: Final = (SyncStatus.SYNCED, SyncStatus.STALE, SyncStatus.NACKED, SyncStatus.NOT_SENT)


def _by_type(family: CounterMetricFamily, counts: Counter[str]) -> CounterMetricFamily:
    for type_url in types.PUSH_ORDER:
        family.add_metric([types.short_name(type_url)], counts[type_url])
    return family


class XdsCollector(Collector):
    """The xDS server: streams, the proxies and how they stand (by role, fleet cluster and
    workspace when a mesh resolves their views: the labels Envoy's own stats carry,
    bounded by the fleet), pushes, ACKs and NACKs by type, and the size of what is served."""

    PROXY_LABELS: Final = ["kontinuum_role", "kontinuum_cluster", "kontinuum_workspace"]

    def __init__(self, server: XdsServer, mesh: Mesh | None = None) -> None:
        self._server = server
        self._mesh = mesh

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._server.stats
        streams = self._server.streams()
        yield GaugeMetricFamily(
            "kontinuum_xds_connected_streams", "ADS streams open now.", value=len(streams)
        )
        yield from self._proxies(streams)
        yield _by_type(
            CounterMetricFamily(
                "kontinuum_xds_pushes", "Discovery responses pushed, by type.", labels=["type"]
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
        refused = CounterMetricFamily(
            "kontinuum_xds_streams_refused",
            "Streams refused: unauthenticated (no acceptable credential), denied (the "
            "identity may not claim what the node claims, or the fleet cannot serve it) or "
            "limit (past a bound: the node's size, the views of one identity).",
            labels=["reason"],
        )
        refused.add_metric(["unauthenticated"], stats.streams_unauthenticated)
        refused.add_metric(["denied"], stats.streams_refused)
        refused.add_metric(["limit"], stats.streams_limited)
        yield refused
        views = self._server.cache.views()
        yield GaugeMetricFamily("kontinuum_xds_views", "Views served.", value=len(views))
        size: Counter[str] = Counter()
        for snapshot in views.values():
            for type_url in snapshot.type_urls:
                size[type_url] += snapshot.size(type_url)
        config = GaugeMetricFamily(
            "kontinuum_xds_config_bytes",
            "Serialized size of the configuration served, summed over every view, by type.",
            labels=["type"],
        )
        for type_url in types.PUSH_ORDER:
            config.add_metric([types.short_name(type_url)], size[type_url])
        yield config

    def _proxies(self, streams: Sequence[Stream]) -> Iterator[GaugeMetricFamily]:
        proxies = GaugeMetricFamily(
            "kontinuum_xds_proxies",
            "Proxies connected now, by role, fleet cluster and workspace.",
            labels=self.PROXY_LABELS,
        )
        sync = GaugeMetricFamily(
            "kontinuum_xds_proxies_sync",
            "Connected proxies by how they stand: SYNCED (every response ACKed), STALE (a "
            "response in flight or due), NACKED (rejecting a version of a resource the view "
            "still holds), NOT_SENT (their view has nothing yet).",
            labels=["state", *self.PROXY_LABELS],
        )
        counts: Counter[tuple[str, str, str]] = Counter()
        states: Counter[tuple[str, str, str, str]] = Counter()
        for stream in streams:
            key = self._mesh.view_key(stream.view) if self._mesh is not None else None
            who = (key.view.role, key.view.cluster, key.view.workspace) if key else ("", "", "")
            counts[who] += 1
            states[(stream.sync_status().value, *who)] += 1
        for labels, count in sorted(counts.items()):
            proxies.add_metric(list(labels), count)
            for state in _SYNC_STATES:  # every state, so that a sum over a selection is 0
                sync.add_metric([state.value, *labels], states[(state.value, *labels)])
        if not counts:
            for state in _SYNC_STATES:
                sync.add_metric([state.value, "", "", ""], 0)
        yield proxies
        yield sync


class SourceCollector(Collector):
    """Discovery: each source's health, staleness, last update and sync, size and errors
    (one label value per source, that is per cluster reached through its API or DNS:
    bounded by the fleet), and the errors of every source by object kind."""

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
        synced = GaugeMetricFamily(
            "kontinuum_source_last_sync_timestamp_seconds",
            "When the source's view was last known current (Unix time; sources that watch an API).",
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
        kinds: Counter[str] = Counter()
        for state in states:
            up.add_metric([state.name], 1.0 if state.health is Health.HEALTHY else 0.0)
            stale.add_metric([state.name], 1.0 if state.stale else 0.0)
            if state.last_update is not None:
                last.add_metric([state.name], state.last_update)
            if state.last_sync is not None:
                synced.add_metric([state.name], state.last_sync)
            endpoints.add_metric([state.name], state.endpoints)
            errors.add_metric([state.name], len(state.errors))
            kinds.update(error.kind or "file" for error in state.errors)
        yield from (up, stale, last, synced, endpoints, errors)
        by_kind = GaugeMetricFamily(
            "kontinuum_config_errors",
            "Invalid objects in every source, by kind (`file`: a file that does not parse).",
            labels=["kind"],
        )
        for kind, count in sorted(kinds.items()):
            by_kind.add_metric([kind], count)
        yield by_kind
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


class FederationCollector(Collector):
    """The global's side of federation: zone streams refused by reason, and per zone (one
    label value per site declared with `source: zone`: bounded by the fleet) whether it
    is connected, when it last synced, and the objects it holds and sent."""

    def __init__(self, service: FederationService, aggregator: Aggregator) -> None:
        self._service = service
        self._aggregator = aggregator

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        refused = CounterMetricFamily(
            "kontinuum_federation_refused",
            "Zone streams refused: unauthenticated (no certificate of the fleet CA), identity "
            "(not zone-<site> of the site it names), undeclared (no site with source zone), "
            "issuer (issued by the zone CA of another site).",
            labels=["reason"],
        )
        for reason in REFUSED_REASONS:
            refused.add_metric([reason], self._service.refused[reason])
        yield refused
        connected = GaugeMetricFamily(
            "kontinuum_federation_zone_connected",
            "1 while the zone's stream is open.",
            labels=["zone"],
        )
        last_sync = GaugeMetricFamily(
            "kontinuum_federation_zone_last_sync_timestamp_seconds",
            "When a response of the zone was last applied (Unix time).",
            labels=["zone"],
        )
        held = GaugeMetricFamily(
            "kontinuum_federation_zone_objects", "Objects of the zone held now.", labels=["zone"]
        )
        received = CounterMetricFamily(
            "kontinuum_federation_zone_objects_received",
            "Objects the zone sent that applied (each new or changed object once).",
            labels=["zone"],
        )
        rejected = CounterMetricFamily(
            "kontinuum_federation_zone_objects_refused",
            "Objects the zone sent that were refused (NACKed): invalid, or past the limits.",
            labels=["zone"],
        )
        connections = CounterMetricFamily(
            "kontinuum_federation_zone_connections",
            "Streams of the zone admitted.",
            labels=["zone"],
        )
        transition = GaugeMetricFamily(
            "kontinuum_federation_zone_last_transition_timestamp_seconds",
            "When the zone last connected or disconnected (Unix time).",
            labels=["zone"],
        )
        kept_dropped = CounterMetricFamily(
            "kontinuum_federation_zone_kept_objects_dropped",
            "Objects of the zone kept under the state directory that were dropped at start: "
            "their content does not hash to their version (altered or truncated on disk).",
            labels=["zone"],
        )
        lag = GaugeMetricFamily(
            "kontinuum_federation_zone_lag_seconds",
            "How long the zone has been behind the global: since the oldest response of the "
            "fleet it has not acknowledged (0: none), or since it disconnected.",
            labels=["zone"],
        )
        now = time.time()
        zones = [s for s in self._aggregator.sources if isinstance(s, ZoneSource)]
        for zone in sorted(zones, key=lambda z: z.cluster):
            stats, label = zone.stats, [zone.cluster]
            connected.add_metric(label, 1.0 if stats.connected else 0.0)
            if stats.last_sync is not None:
                last_sync.add_metric(label, stats.last_sync)
            if stats.last_transition is not None:
                transition.add_metric(label, stats.last_transition)
            lag.add_metric(label, self._service.lag(zone, now))
            held.add_metric(label, zone.objects)
            received.add_metric(label, stats.objects_received)
            rejected.add_metric(label, stats.objects_refused)
            connections.add_metric(label, stats.connections)
            kept_dropped.add_metric(label, stats.kept_altered)
        yield from (connected, last_sync, held, received, rejected, connections, transition, lag)
        yield kept_dropped
        subscribed = GaugeMetricFamily(
            "kontinuum_federation_zone_subscribed",
            "GlobalToZone streams of the zone open (what it is sent of the fleet).",
            labels=["zone"],
        )
        subscriptions = CounterMetricFamily(
            "kontinuum_federation_zone_subscriptions",
            "GlobalToZone streams of the zone admitted (of all its replicas).",
            labels=["zone"],
        )
        sent = CounterMetricFamily(
            "kontinuum_federation_zone_resources_sent",
            "Resources sent to the zone on GlobalToZone (each new or changed one once per stream).",
            labels=["zone"],
        )
        removals = CounterMetricFamily(
            "kontinuum_federation_zone_removals_sent",
            "Removals sent to the zone on GlobalToZone.",
            labels=["zone"],
        )
        responses = CounterMetricFamily(
            "kontinuum_federation_zone_responses_sent",
            "GlobalToZone responses sent to the zone.",
            labels=["zone"],
        )
        answers = CounterMetricFamily(
            "kontinuum_federation_zone_answers",
            "The zone's answers to GlobalToZone responses: ack, or nack (resources refused).",
            labels=["zone", "answer"],
        )
        for zone in sorted(zones, key=lambda z: z.cluster):
            label = [zone.cluster]
            subscribed.add_metric(label, self._service.subscribed[zone.cluster])
            subscriptions.add_metric(label, self._service.subscriptions[zone.cluster])
            counts = self._service.sent.get(zone.cluster)
            sent.add_metric(label, counts.objects_sent if counts else 0)
            removals.add_metric(label, counts.removals_sent if counts else 0)
            responses.add_metric(label, counts.responses if counts else 0)
            answers.add_metric([zone.cluster, "ack"], counts.acks if counts else 0)
            answers.add_metric([zone.cluster, "nack"], counts.nacks if counts else 0)
        yield from (subscribed, subscriptions, sent, removals, responses, answers)
        yield from _replica_metrics(zones)


def _replica_metrics(zones: list[ZoneSource]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The replicas of each zone connected, by role, the active one's id, and how many
    times a standby took over."""
    replicas = GaugeMetricFamily(
        "kontinuum_federation_zone_replicas",
        "Replicas of the zone connected, by role: active (its view is the site's) or standby.",
        labels=["zone", "role"],
    )
    active = GaugeMetricFamily(
        "kontinuum_federation_zone_active_replica_info",
        "1 for the replica id of the zone's active replica (absent while none is).",
        labels=["zone", "replica"],
    )
    promotions = CounterMetricFamily(
        "kontinuum_federation_zone_promotions",
        "Times a standby replica of the zone took over from the active one.",
        labels=["zone"],
    )
    for zone in sorted(zones, key=lambda z: z.cluster):
        connected = zone.replicas()
        roles = [is_active for _, is_active in connected]
        replicas.add_metric([zone.cluster, "active"], roles.count(True))
        replicas.add_metric([zone.cluster, "standby"], roles.count(False))
        for replica, is_active in connected:
            if is_active:
                active.add_metric([zone.cluster, replica], 1.0)
        promotions.add_metric([zone.cluster], zone.promotions)
    yield from (replicas, active, promotions)


class ZoneCollector(Collector):
    """A zone's side of federation (`kontinuum zone`): its streams to the global replicas
    and what it sent on them."""

    def __init__(
        self,
        publisher: Links,
        copy: FleetCopy | None = None,
        global_check: GlobalCheck | None = None,
    ) -> None:
        self._publisher = publisher
        self._copy = copy
        self._global_check = global_check

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        publisher, stats = self._publisher, self._publisher.stats
        yield GaugeMetricFamily(
            "kontinuum_zone_connected",
            "1 while a stream to the global (to one of its replicas, at least) is open.",
            value=1.0 if publisher.connected else 0.0,
        )
        links = GaugeMetricFamily(
            "kontinuum_zone_global_replicas",
            "Global replicas the zone dials, by state: connected (distinct global instances "
            "its site is published to) or disconnected (but for a second address of an "
            "instance reached).",
            labels=["state"],
        )
        up = publisher.connected_links()
        links.add_metric(["connected"], up)
        links.add_metric(["disconnected"], publisher.disconnected_links())
        yield links
        yield GaugeMetricFamily(
            "kontinuum_zone_objects", "Objects of the site published.", value=len(publisher.objects)
        )
        yield GaugeMetricFamily(
            "kontinuum_zone_pending_objects",
            "Objects (and removals) not sent to the global yet (to the replica furthest "
            "behind): the lag.",
            value=publisher.pending(),
        )
        yield CounterMetricFamily(
            "kontinuum_zone_objects_sent",
            "Objects sent to the global (each new or changed object once per stream).",
            value=stats.objects_sent,
        )
        yield CounterMetricFamily(
            "kontinuum_zone_removals_sent",
            "Removals sent to the global.",
            value=stats.removals_sent,
        )
        yield CounterMetricFamily(
            "kontinuum_zone_responses_sent", "Responses sent to the global.", value=stats.responses
        )
        yield CounterMetricFamily(
            "kontinuum_zone_sent_bytes",
            "Bytes of the responses sent to the global (serialized).",
            value=stats.bytes_sent,
        )
        answers = CounterMetricFamily(
            "kontinuum_zone_answers",
            "Answers of the global to the responses: ack, or nack (objects refused).",
            labels=["answer"],
        )
        answers.add_metric(["ack"], stats.acks)
        answers.add_metric(["nack"], stats.nacks)
        yield answers
        if self._global_check is not None:
            yield CounterMetricFamily(
                "kontinuum_zone_global_refused",
                "Dials not made: the global did not prove the control plane's identity.",
                value=self._global_check.refused,
            )
        if self._copy is not None:
            yield from _copy_metrics(self._copy)


def _copy_metrics(copy: FleetCopy) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """What a zone holds of what the global sent it (GlobalToZone)."""
    stats = copy.stats
    yield GaugeMetricFamily(
        "kontinuum_zone_fleet_subscribed",
        "1 while the GlobalToZone stream is open (the zone receives the fleet).",
        value=1.0 if stats.subscribed else 0.0,
    )
    yield GaugeMetricFamily(
        "kontinuum_zone_fleet_resources",
        "Resources of the fleet held (fleet-wide objects and other sites' services).",
        value=len(copy.resources),
    )
    yield CounterMetricFamily(
        "kontinuum_zone_fleet_resources_received",
        "Resources received from the global (each new or changed one once).",
        value=stats.resources_received,
    )
    yield CounterMetricFamily(
        "kontinuum_zone_fleet_removals_received",
        "Removals received from the global.",
        value=stats.removals_received,
    )
    yield CounterMetricFamily(
        "kontinuum_zone_fleet_resources_refused",
        "Resources received from the global that were refused (NACKed).",
        value=stats.refused,
    )
    yield CounterMetricFamily(
        "kontinuum_zone_fleet_kept_resources_dropped",
        "Resources of the copy kept under the state directory that were dropped at start: "
        "their content does not hash to their version (altered or truncated on disk).",
        value=stats.kept_altered,
    )
    if stats.last_sync is not None:
        yield GaugeMetricFamily(
            "kontinuum_zone_fleet_last_sync_timestamp_seconds",
            "When a response of the global was last applied (Unix time).",
            value=stats.last_sync,
        )


class PushMetrics:
    """What is observed as it happens: translating a fleet, and pushes converging."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.translation = Histogram(
            "kontinuum_translation_seconds",
            "Time to translate a fleet into every view in use.",
            buckets=TRANSLATION_BUCKETS,
            registry=registry,
        )
        self.proxy_convergence = Histogram(
            "kontinuum_proxy_convergence_seconds",
            "From a source's change to one proxy's ACK of all it changed for the proxy (as "
            "Istio's pilot_proxy_convergence_time).",
            buckets=CONVERGENCE_BUCKETS,
            registry=registry,
        )
        self.push_convergence = Histogram(
            "kontinuum_push_convergence_seconds",
            "From a source's change to the last ACK (or NACK, or disconnect) of the proxies "
            "it changed: how long the fleet took to converge.",
            buckets=CONVERGENCE_BUCKETS,
            registry=registry,
        )
        self.outcomes = CounterMetric(
            "kontinuum_push_outcomes",
            "Proxies' parts in pushes, by how they ended: acked, nacked, gone (the stream "
            "ended), expired (not settled within 5 minutes of the change).",
            labelnames=["outcome"],
            registry=registry,
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


class CertificateCollector(Collector):
    """The fleet CA's end and the workload certificates in use: renew the CA well before
    `kontinuum_ca_expiry_timestamp_seconds` (workload certificates cannot outlive it)."""

    def __init__(self, certificates: WorkloadCertificates) -> None:
        self._certificates = certificates

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kontinuum_ca_expiry_timestamp_seconds",
            "When the fleet CA kontinuum signs with expires (Unix time).",
            value=self._certificates.ca.not_after.timestamp(),
        )
        yield GaugeMetricFamily(
            "kontinuum_workload_certificates",
            "Workload certificates in use (one per identity of a view in use).",
            value=self._certificates.in_use,
        )
        due = self._certificates.next_renewal()
        if due is not None:
            yield GaugeMetricFamily(
                "kontinuum_workload_certificate_next_renewal_timestamp_seconds",
                "When the next workload certificate is due for renewal (Unix time).",
                value=due.timestamp(),
            )
