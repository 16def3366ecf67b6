"""A push, observed: metrics as it converges, and a trace of it (OpenTelemetry).

Every fleet applied starts a `Push` (`kontinuum.xds.push`) dated from the first source
update of its burst. The xDS streams report each proxy's part as it ends, and the push's
end once every proxy has settled; this turns that into the convergence histograms
(`PushMetrics`) and, when tracing is on, into one trace per push, so that "why did this
proxy get this config, and when" has an answer:

    kontinuum.push                  from the first source update to the last proxy's ACK
      kontinuum.debounce            the updates coalescing (attribute: the sources)
      kontinuum.translate           translating the fleet (attribute: the views)
      kontinuum.xds.deliver         per proxy: its first response to its ACK, NACK or end
                                    (attributes: node id, view, outcome)

With no OTLP endpoint configured (`tracer_provider(None)`), no span is made at all. A push
some proxy has not settled `MAX_PUSH_AGE` seconds after its cause is given up on: the
proxies still owing it count as `expired`, its trace ends marked incomplete, and it is
left out of the push convergence histogram (it did not converge). So is a push no proxy
took part in (it had nothing to converge).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode

from kontinuum import __version__
from kontinuum.discovery.aggregate import Change
from kontinuum.telemetry.metrics import PushMetrics
from kontinuum.telemetry.otlp import OtlpSpanExporter
from kontinuum.xds.push import Outcome, Push

log = logging.getLogger("kontinuum.telemetry")

MAX_PUSH_AGE: Final = 300.0  # seconds a push's trace waits for its last proxy


def tracer_provider(endpoint: str | None) -> TracerProvider | None:
    """Traces exported over OTLP/gRPC to `endpoint` (`host:port`, or a URL), or None for
    no tracing at all."""
    if not endpoint:
        return None
    resource = Resource.create({"service.name": "kontinuum", "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OtlpSpanExporter(endpoint)))
    return provider


# Read once: converting each instant against a fresh pair of clock readings would let two
# spans ending at the same monotonic instant end a few nanoseconds apart, out of order.
_WALL_MINUS_MONOTONIC_NS = time.time_ns() - time.monotonic_ns()


def _wall_ns(monotonic: float) -> int:
    """A monotonic time as the wall-clock nanoseconds OpenTelemetry dates spans with."""
    return _WALL_MINUS_MONOTONIC_NS + round(monotonic * 1e9)


@dataclass(slots=True)
class _Open:
    """A push still converging: its trace (when tracing) and its deadline."""

    push: Push
    span: Span | None
    deadline: asyncio.TimerHandle | None


class PushTelemetry:
    """Makes the pushes of a running mesh and observes them (a `PushObserver`)."""

    def __init__(self, metrics: PushMetrics, provider: TracerProvider | None = None) -> None:
        self._metrics = metrics
        self._tracer = provider.get_tracer("kontinuum") if provider is not None else None
        self._open: dict[int, _Open] = {}  # push id -> the push, while it converges
        self._current: Push | None = None  # the push being translated

    def start(self, change: Change | None) -> Push:
        """The push of a fleet about to be applied, dated from `change`."""
        started = change.started if change is not None else time.monotonic()
        push = Push(started=started, cause=change, observer=self)
        self._current = push
        span: Span | None = None
        if self._tracer is not None:
            start_ns = _wall_ns(started)
            span = self._tracer.start_span("kontinuum.push", start_time=start_ns)
            sources = list(change.sources) if change is not None else []
            span.set_attribute("kontinuum.push.id", push.id)
            span.set_attribute("kontinuum.sources", sources)
            debounce = self._tracer.start_span(
                "kontinuum.debounce", context=trace.set_span_in_context(span), start_time=start_ns
            )
            debounce.set_attribute("kontinuum.sources", sources)
            debounce.end()
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        deadline = None
        if loop is not None:
            left = max(0.0, MAX_PUSH_AGE - (time.monotonic() - started))
            deadline = loop.call_later(left, self._expire, push.id)
        else:  # applied outside an event loop: what is overdue ends now
            now = time.monotonic()
            for overdue in [o for o in self._open.values() if now - o.push.started > MAX_PUSH_AGE]:
                self._expire(overdue.push.id)
        self._open[push.id] = _Open(push, span, deadline)
        return push

    def translated(self, seconds: float, views: int) -> None:
        """`Mesh.translated`: how long the push being applied took to translate."""
        self._metrics.translation.observe(seconds)
        push = self._current
        opened = self._open.get(push.id) if push is not None else None
        if opened is not None and opened.span is not None and self._tracer is not None:
            now = time.monotonic()
            span = self._tracer.start_span(
                "kontinuum.translate",
                context=trace.set_span_in_context(opened.span),
                start_time=_wall_ns(now - seconds),
            )
            span.set_attribute("kontinuum.views", views)
            span.end(end_time=_wall_ns(now))

    # -- PushObserver --------------------------------------------------------------------

    def stream_settled(
        self, push: Push, connection: Any, outcome: Outcome, sent: float, now: float
    ) -> None:
        self._metrics.outcomes.labels(outcome).inc()
        if outcome == "acked":
            self._metrics.proxy_convergence.observe(now - push.started)
        opened = self._open.get(push.id)
        if opened is not None and opened.span is not None and self._tracer is not None:
            span = self._tracer.start_span(
                "kontinuum.xds.deliver",
                context=trace.set_span_in_context(opened.span),
                start_time=_wall_ns(sent),
            )
            span.set_attribute("kontinuum.node.id", str(connection.node.id))
            span.set_attribute("kontinuum.view", str(connection.view))
            span.set_attribute("kontinuum.outcome", outcome)
            if outcome != "acked":
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end(end_time=_wall_ns(now))

    def push_done(self, push: Push, now: float) -> None:
        if push.streams:  # a push no proxy took part in says nothing of convergence
            self._metrics.push_convergence.observe(now - push.started)
        opened = self._open.pop(push.id, None)
        if opened is not None:
            self._close(opened, now, complete=True)

    def _expire(self, push_id: int) -> None:
        """A push some proxy has not settled after `MAX_PUSH_AGE`: given up on."""
        opened = self._open.pop(push_id, None)
        if opened is None:
            return
        pending = opened.push.expire()
        if pending:
            self._metrics.outcomes.labels("expired").inc(pending)
        self._close(opened, time.monotonic(), complete=False)

    def _close(self, opened: _Open, now: float, *, complete: bool) -> None:
        if opened.deadline is not None:
            opened.deadline.cancel()
        span = opened.span
        if span is None:
            return
        push = opened.push
        span.set_attribute("kontinuum.proxies", push.streams)
        span.set_attribute("kontinuum.proxies.acked", push.acked)
        if not complete:
            span.set_status(Status(StatusCode.ERROR, "some proxies never settled"))
        elif push.acked < push.streams:
            span.set_status(Status(StatusCode.ERROR, "not every proxy ACKed"))
        span.end(end_time=_wall_ns(now))
