"""Pushes turned into metrics and traces (kontinuum.telemetry.pushes), with an in-memory
span exporter from OpenTelemetry's SDK and a real Prometheus registry."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from kontinuum.discovery.aggregate import Change
from kontinuum.telemetry.metrics import PushMetrics
from kontinuum.telemetry.pushes import PushTelemetry

CONNECTION = SimpleNamespace(node=SimpleNamespace(id="sidecar-1"), view="sidecar/eu/demo")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(registry: CollectorRegistry, exporter: InMemorySpanExporter) -> PushTelemetry:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return PushTelemetry(PushMetrics(registry), provider)


async def test_a_push_that_converges_is_measured_and_traced(
    telemetry: PushTelemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    push = telemetry.start(Change(started=time.monotonic() - 0.1, sources=("static",)))
    telemetry.translated(0.002, views=3)
    push.join()
    push.seal()
    sent = time.monotonic()
    push.settle(CONNECTION, "acked", sent, time.monotonic())
    assert push.done
    assert sample(registry, "kontinuum_push_convergence_seconds_count") == 1
    assert sample(registry, "kontinuum_proxy_convergence_seconds_count") == 1
    assert sample(registry, "kontinuum_push_outcomes_total", outcome="acked") == 1
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "kontinuum.push",
        "kontinuum.debounce",
        "kontinuum.translate",
        "kontinuum.xds.deliver",
    }
    root = spans["kontinuum.push"]
    assert root.status.status_code is StatusCode.UNSET
    assert spans["kontinuum.xds.deliver"].attributes["kontinuum.node.id"] == "sidecar-1"
    for name in ("kontinuum.debounce", "kontinuum.translate", "kontinuum.xds.deliver"):
        child = spans[name]
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time, name
    # The last ACK ends the push: both spans end at the same instant, to the nanosecond.
    assert spans["kontinuum.xds.deliver"].end_time == root.end_time


async def test_a_push_no_proxy_took_part_in_says_nothing_of_convergence(
    telemetry: PushTelemetry, registry: CollectorRegistry
) -> None:
    push = telemetry.start(None)
    push.seal()
    assert push.done
    assert sample(registry, "kontinuum_push_convergence_seconds_count") == 0


async def test_a_push_a_proxy_never_settles_expires_on_its_own(
    telemetry: PushTelemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No later push is needed: the deadline ends it on a quiet fleet too."""
    monkeypatch.setattr("kontinuum.telemetry.pushes.MAX_PUSH_AGE", 0.05)
    push = telemetry.start(None)
    push.join()
    push.join()
    push.seal()
    push.settle(CONNECTION, "acked", push.started, push.started)
    await asyncio.sleep(0.15)
    assert push.over
    assert sample(registry, "kontinuum_push_outcomes_total", outcome="expired") == 1
    assert sample(registry, "kontinuum_push_convergence_seconds_count") == 0
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "kontinuum.push"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["kontinuum.proxies.acked"] == 1
    # The straggler's late ACK is not heard: the push was given up on.
    push.settle(CONNECTION, "acked", push.started, push.started + 1)
    assert sample(registry, "kontinuum_push_outcomes_total", outcome="acked") == 1


async def test_a_push_that_converges_in_time_does_not_expire(
    telemetry: PushTelemetry, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kontinuum.telemetry.pushes.MAX_PUSH_AGE", 0.05)
    push = telemetry.start(None)
    push.join()
    push.seal()
    push.settle(CONNECTION, "nacked", push.started, push.started)
    await asyncio.sleep(0.1)
    assert sample(registry, "kontinuum_push_outcomes_total", outcome="expired") == 0
    assert sample(registry, "kontinuum_push_outcomes_total", outcome="nacked") == 1
    assert sample(registry, "kontinuum_push_convergence_seconds_count") == 1
