"""A lean span for the request path; when it ends, a small `SpanData` tuple goes to the exporter.

Why not the SDK's own ``Tracer.start_span``: one SDK span costs a sampler call, locked bounded
attribute and event containers, span limits and three locks, and a request has nine; the SDK's
batch processor then wants a `ReadableSpan` per span, built on the request path, and its OTLP
exporter encodes protobuf on a thread that shares the GIL with the event loop (side by side in
bench/telemetry: about twice the CPU per traced request, and a longer tail). `LeanSpan` keeps a
plain dict of attributes and two timestamps, and at ``end`` hands a `SpanData` tuple to a
`SpanExporter`'s ``emit``: `otlp_traces.OtlpJsonExporter` in production (an append to a bounded
queue; encoding and export happen on its thread), `InMemorySpanExporter` in tests.
The root span asks the provider's sampler exactly as ``Tracer.start_span`` does
(``OTEL_TRACES_SAMPLER`` and an incoming ``traceparent``'s sampled flag are honoured); children
follow their root's decision. Attribute values must be valid OpenTelemetry values (str, bool,
int, float or sequences of one of those); they are not checked here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import Attributes, AttributeValue

_UNSET = Status(StatusCode.UNSET)
_SAMPLED = frozenset({Decision.RECORD_AND_SAMPLE})


class SpanData(NamedTuple):
    """An ended span, as exporters read it (immutable once ended: its span records no more).
    The fields that the SDK's `ReadableSpan` also has carry its names."""

    name: str
    context: SpanContext
    parent: SpanContext | None
    kind: SpanKind
    attributes: Mapping[str, AttributeValue]
    events: list[Event] | None
    status: Status
    start_time: int
    end_time: int


class SpanExporter(Protocol):
    """Where ended spans go."""

    def emit(self, span: SpanData) -> None:
        """Take one ended span; called on the request path, so it must not block or raise."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything taken so far (blocking); False if time ran out."""

    def shutdown(self) -> None:
        """Export what is left and stop taking spans (blocking)."""

    @property
    def lost(self) -> int:
        """Spans taken that will never be exported (``gateway_trace_spans_lost_total``)."""


class InMemorySpanExporter:
    """Keeps every span in a list, in the order they ended (for tests, like the SDK's
    exporter of the same name)."""

    lost = 0

    def __init__(self) -> None:
        self.spans: list[SpanData] = []

    def emit(self, span: SpanData) -> None:
        self.spans.append(span)

    def get_finished_spans(self) -> tuple[SpanData, ...]:
        return tuple(self.spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


class SpanSink:
    """What lean spans need of a tracer provider (its sampler and ids), and where they go."""

    def __init__(self, provider: TracerProvider, exporter: SpanExporter) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.emit = exporter.emit

    def start_root(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
    ) -> Span:
        """A root (or a child of the remote ``parent``), sampled as the SDK would."""
        remote = trace.get_current_span(parent).get_span_context() if parent else None
        if remote is not None and remote.is_valid:
            trace_id = remote.trace_id
        else:
            remote, trace_id = None, self.ids.generate_trace_id()
        decision = self.sampler.should_sample(parent, trace_id, name, kind, attributes)
        flags = TraceFlags(TraceFlags.SAMPLED if decision.decision in _SAMPLED else 0)
        context = SpanContext(
            trace_id, self.ids.generate_span_id(), False, flags, decision.trace_state
        )
        if decision.decision is Decision.DROP:
            return NonRecordingSpan(context)
        if decision.attributes:
            attributes.update(decision.attributes)
        return LeanSpan(self, name, context, remote, kind, attributes)

    def start_child(
        self,
        name: str,
        parent: SpanContext,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> LeanSpan:
        context = SpanContext(
            parent.trace_id,
            self.ids.generate_span_id(),
            False,
            parent.trace_flags,
            parent.trace_state,
        )
        return LeanSpan(self, name, context, parent, kind, {} if attributes is None else attributes)


class LeanSpan(Span):
    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_kind",
        "_name",
        "_parent",
        "_sink",
        "_start",
        "_status",
    )

    def __init__(
        self,
        sink: SpanSink,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self._sink = sink
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: list[Event] | None = None
        self._status = _UNSET
        self._ended = False
        self._start = time.time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self._ended:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._ended:
            return
        if self._events is None:
            self._events = []
        self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended or self._status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the type only: messages may quote a prompt."""
        details = {"exception.type": type(exception).__qualname__, **(attributes or {})}
        self.add_event("exception", details, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._sink.emit(
            SpanData(
                self._name,
                self._context,
                self._parent,
                self._kind,
                self._attributes,
                self._events,
                self._status,
                self._start,
                end_time or time.time_ns(),
            )
        )
