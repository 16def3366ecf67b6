"""A push is one trace, from the source event to the proxy's ACK, exported over OTLP to a
real gRPC collector; and the push's convergence shows in the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kontinuum.app import RunningFleet, running_fleet
from kontinuum.bootstrap import proxy_metadata
from kontinuum.telemetry.pushes import tracer_provider
from kontinuum.xds import XdsServer
from tests.e2e.backends import Backend
from tests.e2e.conftest import StartEnvoy
from tests.e2e.routing_fleet import Workload, workload_yaml, write_fleet
from tests.support.fleet import fast, rewrite
from tests.support.net import eventually, free_port
from tests.support.otlp import Collector, ReceivedSpan

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def served(root: Path, endpoint: str | None) -> AsyncIterator[tuple[RunningFleet, int]]:
    async with running_fleet(fast(path=root, otlp_endpoint=endpoint)) as fleet:
        server = XdsServer(fleet.mesh.cache, resolve_view=fleet.mesh.resolve_view)
        port = await server.start("127.0.0.1:0")
        try:
            yield fleet, port
        finally:
            await server.stop(0)


def sample(fleet: RunningFleet, name: str) -> float:
    value = fleet.registry.get_sample_value(name)
    return value if value is not None else 0.0


async def test_a_push_is_one_trace_from_the_source_to_the_ack(
    tmp_path: Path, envoys: StartEnvoy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export spans within 0.1 s
    first, second = Backend("one").start(), Backend("two").start()
    try:
        root = write_fleet(tmp_path / "fleet", {"eu-central": [Workload("hello", (first.port,))]})
        async with Collector() as collector, served(root, collector.endpoint) as (fleet, port):
            envoy = envoys(
                view="eu-central",
                xds_port=port,
                mode="delta",
                node_id="frontend-1",
                metadata=proxy_metadata(
                    namespace="demo", role="sidecar", outbound_port=free_port()
                ),
            )
            await asyncio.to_thread(envoy.wait_live, 15)
            acked_before = sample(fleet, "kontinuum_proxy_convergence_seconds_count")
            # A new endpoint in the files: a push, from the static source to the ACK.
            hello = root / "clusters" / "eu-central" / "hello.yaml"
            rewrite(hello, workload_yaml(Workload("hello", (first.port, second.port))))

            def delivered() -> list[ReceivedSpan]:
                return [
                    s
                    for s in collector.spans
                    if s.name == "kontinuum.xds.deliver"
                    and s.attributes.get("kontinuum.node.id") == "frontend-1"
                ]

            (deliver, *_) = await eventually(delivered, 10, what="the ACK's span")
            push = await eventually(
                lambda: next(
                    (
                        s
                        for s in collector.spans
                        if s.trace_id == deliver.trace_id and s.name == "kontinuum.push"
                    ),
                    None,
                ),
                10,
                what="the push's root span",
            )
            trace = [s for s in collector.spans if s.trace_id == push.trace_id]
            by_name = {s.name: s for s in trace}
            assert set(by_name) == {
                "kontinuum.push",
                "kontinuum.debounce",
                "kontinuum.translate",
                "kontinuum.xds.deliver",
            }
            assert push.parent_id == b""
            for child in ("kontinuum.debounce", "kontinuum.translate", "kontinuum.xds.deliver"):
                span = by_name[child]
                assert span.parent_id == push.span_id, child
                assert push.start_ns <= span.start_ns <= span.end_ns <= push.end_ns, child
            assert push.attributes["kontinuum.sources"] == [f"static:{root}"]
            assert push.attributes["kontinuum.proxies"] == 1
            assert push.attributes["kontinuum.proxies.acked"] == 1
            assert by_name["kontinuum.translate"].attributes["kontinuum.views"] == 1
            assert deliver.attributes["kontinuum.outcome"] == "acked"
            assert deliver.attributes["kontinuum.view"].startswith("sidecar/eu-central/demo")
            # in order: the change, then translating, then delivering
            assert by_name["kontinuum.debounce"].start_ns == push.start_ns
            assert by_name["kontinuum.translate"].end_ns <= deliver.end_ns
            assert collector.services == {"kontinuum"}
            assert sample(fleet, "kontinuum_proxy_convergence_seconds_count") == acked_before + 1
    finally:
        first.stop()
        second.stop()


async def test_without_an_endpoint_there_is_no_trace_but_the_metrics_count(
    tmp_path: Path, envoys: StartEnvoy
) -> None:
    assert tracer_provider(None) is None
    assert tracer_provider("") is None
    backend = Backend("one").start()
    try:
        root = write_fleet(tmp_path / "fleet", {"eu-central": [Workload("hello", (backend.port,))]})
        async with served(root, None) as (fleet, port):
            envoy = envoys(
                view="eu-central",
                xds_port=port,
                mode="sotw",
                metadata=proxy_metadata(
                    namespace="demo", role="sidecar", outbound_port=free_port()
                ),
            )
            await asyncio.to_thread(envoy.wait_live, 15)
            hello = root / "clusters" / "eu-central" / "hello.yaml"
            rewrite(hello, workload_yaml(Workload("hello", (backend.port, free_port()))))
            await eventually(
                lambda: sample(fleet, "kontinuum_proxy_convergence_seconds_count") >= 1,
                10,
                what="a proxy's convergence observed",
            )
            assert (
                fleet.registry.get_sample_value(
                    "kontinuum_push_outcomes_total", {"outcome": "acked"}
                )
                == 1.0
            )
            # The first fleet's push reached no proxy (none had connected): it says nothing
            # of convergence, and only the change does.
            assert sample(fleet, "kontinuum_push_convergence_seconds_count") == 1
            assert sample(fleet, "kontinuum_translation_seconds_count") >= 2
    finally:
        backend.stop()


# What a plain `pip install` leaves (grpc/grpc#42926): xds-protos' old copy of
# opentelemetry-proto's modules in place of the real ones, so that neither they nor
# OpenTelemetry's OTLP exporter import. The child process refuses them the same way.
SHADOWED = """
import importlib.abc, sys

class Shadowed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("opentelemetry.proto", "opentelemetry.exporter")):
            raise ImportError(f"cannot import name 'InstrumentationScope' ({name})")
        return None

sys.meta_path.insert(0, Shadowed())
from kontinuum.telemetry.pushes import tracer_provider

provider = tracer_provider(sys.argv[1])
provider.get_tracer("kontinuum").start_span("kontinuum.shadowed").end()
provider.shutdown()  # exports what is buffered
"""


async def test_traces_are_exported_where_opentelemetrys_proto_modules_are_shadowed() -> None:
    async with Collector() as collector:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SHADOWED, collector.endpoint, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(child.communicate(), 30)
        assert child.returncode == 0, stderr.decode()
        received = await eventually(
            lambda: [s for s in collector.spans if s.name == "kontinuum.shadowed"], 10
        )
    assert len(received) == 1
    assert collector.services == {"kontinuum"}
