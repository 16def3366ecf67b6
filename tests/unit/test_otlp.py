"""kontinuum's OTLP encoding (kontinuum.telemetry.otlp) against OpenTelemetry's own: the same
spans, made by the real SDK, must give the same ExportTraceServiceRequest as OpenTelemetry's
encoder makes with opentelemetry-proto's classes."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as reference
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from kontinuum.telemetry.otlp import encode_spans, otlp_target


def _spans() -> list[ReadableSpan]:
    exported = InMemorySpanExporter()
    for service in ("kontinuum", "other"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exported))
        tracer = provider.get_tracer("kontinuum", "1.2.3", schema_url="https://example/1.0")
        with tracer.start_as_current_span("kontinuum.push", kind=SpanKind.SERVER) as push:
            push.set_attributes(
                {
                    "text": "x",
                    "empty": "",
                    "yes": True,
                    "no": False,
                    "count": 7,
                    "zero": 0,
                    "negative": -3,
                    "ratio": 0.25,
                    "texts": ["a", "b"],
                    "numbers": [1, 2],
                }
            )
            push.add_event("settled", {"proxies": 3})
            with tracer.start_as_current_span(
                "kontinuum.xds.deliver", links=[Link(push.get_span_context(), {"why": "cause"})]
            ) as deliver:
                deliver.set_status(Status(StatusCode.ERROR, "not every proxy ACKed"))
        tracer.start_span("kontinuum.translate", kind=SpanKind.INTERNAL).end()
    return list(exported.get_finished_spans())


def test_the_request_is_what_opentelemetry_encodes() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = reference(spans)
    assert ours == theirs, (ours, theirs)
    names = [s.name for rs in ours.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(s.name for s in spans)


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("127.0.0.1:4317", ("127.0.0.1:4317", False)),
        ("collector:55680", ("collector:55680", False)),
        ("http://collector", ("collector:4317", False)),
        ("https://otel.example.com:443/", ("otel.example.com:443", True)),
        ("http://[::1]:4317", ("[::1]:4317", False)),
    ],
)
def test_an_endpoint_is_a_host_and_port_or_a_url(endpoint: str, target: tuple[str, bool]) -> None:
    assert otlp_target(endpoint) == target


@pytest.mark.parametrize("endpoint", ["ftp://collector:21", "http://", "collector:99999"])
def test_a_bad_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="not"):
        otlp_target(endpoint)
