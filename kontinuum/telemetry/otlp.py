"""Spans exported over OTLP/gRPC, with the request encoded here.

`xds-protos` ships an old copy of `opentelemetry-proto`'s Python modules under the same
import paths (grpc/grpc#42926), and pip installs it after `opentelemetry-proto`, over its
files: in a plain `pip install`, OpenTelemetry's own OTLP exporter cannot import them.
So kontinuum imports neither copy. It writes the few messages of a trace export itself,
by the field numbers of OTLP's `trace.proto`, `common.proto`, `resource.proto` and
`trace_service.proto` (a stable protocol: numbers never change), and sends the bytes with
grpcio to `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("kontinuum.telemetry")

EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DEFAULT_PORT: Final = 4317
# Worth another try within the export's time (OTLP/gRPC's list of retryable codes).
_RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # bits of Span.flags and Link.flags


# -- the protobuf wire format -----------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF_FFFF_FFFF  # an int64 below 0 is its two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(field: int, value: int) -> bytes:
    """A varint field (int64, uint32, bool, enum); 0 is left out, as proto3 does."""
    return _varint(field << 3) + _varint(value) if value else b""


def _fixed64(field: int, value: int) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<Q", value) if value else b""


def _fixed32(field: int, value: int) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<I", value) if value else b""


def _double(field: int, value: float) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<d", value)


def _message(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message), even when empty."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _text(field: int, value: str) -> bytes:
    return _message(field, value.encode()) if value else b""


# -- OTLP's messages ----------------------------------------------------------------------------


def _any_value(value: object) -> bytes:
    """common.v1.AnyValue: string 1, bool 2, int 3, double 4, array 5, bytes 7."""
    if isinstance(value, bool):
        return _varint(2 << 3) + _varint(int(value))
    if isinstance(value, int):
        return _varint(3 << 3) + _varint(value)
    if isinstance(value, float):
        return _double(4, value)
    if isinstance(value, bytes):
        return _message(7, value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return _message(5, b"".join(_message(1, _any_value(v)) for v in value))
    return _message(1, str(value).encode())


def _attributes(field: int, attributes: Mapping[str, object] | None) -> bytes:
    """Repeated common.v1.KeyValue: key 1, value 2."""
    return b"".join(
        _message(field, _text(1, key) + _message(2, _any_value(value)))
        for key, value in (attributes or {}).items()
    )


def _trace_state(state: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in state.items()) if state else ""


def _span(span: ReadableSpan) -> bytes:
    """trace.v1.Span."""
    context = span.get_span_context()
    assert context is not None  # a span of the SDK always has one
    status = _text(2, span.status.description or "") + _int(3, span.status.status_code.value)
    return b"".join(
        (
            _message(1, context.trace_id.to_bytes(16, "big")),
            _message(2, context.span_id.to_bytes(8, "big")),
            _text(3, _trace_state(context.trace_state)),
            _message(4, span.parent.span_id.to_bytes(8, "big")) if span.parent else b"",
            _text(5, span.name),
            _int(6, span.kind.value + 1),  # the SDK counts from INTERNAL = 0, OTLP from 1
            _fixed64(7, span.start_time or 0),
            _fixed64(8, span.end_time or 0),
            _attributes(9, span.attributes),
            _int(10, span.dropped_attributes),
            *(
                _message(
                    11,
                    _fixed64(1, event.timestamp)
                    + _text(2, event.name)
                    + _attributes(3, event.attributes),
                )
                for event in span.events
            ),
            _int(12, span.dropped_events),
            *(
                _message(
                    13,
                    _message(1, link.context.trace_id.to_bytes(16, "big"))
                    + _message(2, link.context.span_id.to_bytes(8, "big"))
                    + _text(3, _trace_state(link.context.trace_state))
                    + _attributes(4, link.attributes)
                    + _fixed32(6, _flags(link.context)),
                )
                for link in span.links
            ),
            _int(14, span.dropped_links),
            _message(15, status),
            _fixed32(16, _flags(span.parent)),
        )
    )


def _flags(other: Any) -> int:
    """Span.flags and Link.flags: whether the parent (or linked) span is remote."""
    return _HAS_IS_REMOTE | (_IS_REMOTE if other is not None and other.is_remote else 0)


def encode_spans(spans: Iterable[ReadableSpan]) -> bytes:
    """collector.trace.v1.ExportTraceServiceRequest: the spans grouped by resource and
    instrumentation scope (ResourceSpans 1 > ScopeSpans 2 > Span 2)."""
    grouped: dict[Any, dict[Any, list[ReadableSpan]]] = defaultdict(lambda: defaultdict(list))
    for span in spans:
        grouped[span.resource][span.instrumentation_scope].append(span)
    request = b""
    for resource, scopes in grouped.items():
        scope_spans = b""
        for scope, members in scopes.items():
            name, version = (scope.name, scope.version or "") if scope else ("", "")
            scope_spans += _message(
                2,
                _message(1, _text(1, name) + _text(2, version))
                + b"".join(_message(2, _span(span)) for span in members)
                + _text(3, (scope.schema_url or "") if scope else ""),
            )
        request += _message(
            1,
            _message(1, _attributes(1, resource.attributes))
            + scope_spans
            + _text(3, resource.schema_url or ""),
        )
    return request


# -- the exporter ----------------------------------------------------------------------------


def otlp_target(endpoint: str) -> tuple[str, bool]:
    """(gRPC target, TLS?) of an OTLP endpoint: HOST:PORT or http://HOST[:PORT] in the clear,
    https://HOST[:PORT] over TLS (port 4317 by default); ValueError if it is neither."""
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{endpoint!r} is not HOST:PORT or an http(s):// URL")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError as error:
        raise ValueError(f"the port of {endpoint!r} is not between 1 and 65535") from error
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}", parsed.scheme == "https"


def _headers() -> tuple[tuple[str, str], ...]:
    """OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: `key=value,key2=value2`, values URL-encoded."""
    text = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    )
    pairs = (item.partition("=") for item in text.split(",") if "=" in item)
    return tuple((k.strip().lower(), urllib.parse.unquote(v.strip())) for k, _, v in pairs)


def _root_certificates() -> bytes | None:
    """OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE: the roots to trust (else the system's)."""
    path = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
    )
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


class OtlpSpanExporter(SpanExporter):
    """Sends spans to an OTLP/gRPC collector, retrying what may pass later (a collector
    restarting) within `timeout` seconds per batch; a batch that still fails is dropped,
    with a warning, and tracing goes on."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        target, tls = otlp_target(endpoint)
        self._endpoint = endpoint
        self._timeout = timeout
        self._metadata = _headers()
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(_root_certificates()))
            if tls
            else grpc.insecure_channel(target)
        )
        # No (de)serializer: the request is bytes already, the (empty) answer is not read.
        self._export = self._channel.unary_unary(EXPORT_METHOD, None, None)
        self._stopped = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped.is_set():
            return SpanExportResult.FAILURE
        request = encode_spans(spans)
        deadline = time.monotonic() + self._timeout
        pause = 0.5
        while True:
            left = deadline - time.monotonic()
            try:
                self._export(request, timeout=max(left, 0.1), metadata=self._metadata)
                return SpanExportResult.SUCCESS
            except grpc.RpcError as error:
                code = error.code()
                if code not in _RETRYABLE or left < pause or self._stopped.wait(pause):
                    log.warning(
                        "could not export %d spans to %s: %s %s",
                        len(spans),
                        self._endpoint,
                        code.name,
                        error.details(),
                    )
                    return SpanExportResult.FAILURE
                pause *= 2

    def shutdown(self) -> None:
        self._stopped.set()
        self._channel.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is held here: the span processor holds the batches
