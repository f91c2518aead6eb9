"""Spans of one request: the request itself, a child per pipeline stage, one per upstream attempt.

    POST /v1/chat/completions        SERVER  gen_ai.* request attributes, gateway.* outcome
    ├── gateway.exact_cache          INTERNAL
    ├── gateway.embed / gateway.semantic_cache / gateway.classify / gateway.route
    ├── gateway.call                 INTERNAL
    │   ├── chat <upstream model>    CLIENT  attempt 1 (gen_ai.provider.name, server.address)
    │   └── chat <upstream model>    CLIENT  attempt 2, or a fallback's
    └── gateway.ledger               INTERNAL

What each span carries is `genai`'s business; this module makes the spans, keeps the
current one, and passes the trace context on.

Why a `RequestTrace` object rather than the global tracer: every app has its own tracer
provider (tests build several apps), and with tracing off the trace is a shared object whose
methods return one shared no-op context manager: no span, no allocation. The trace of the
running request is also kept in a context variable (`activate`), so that code deep in the
call stage (`attempt`, `fallback`, `upstream_headers`) needs no extra parameter.

A stage is a ``with`` block that must not straddle a ``yield`` of an async generator (the
OpenTelemetry context it attaches must be detached in the same context).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal, get_args

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry.genai import (
    ROOT_SPAN,
    attempt_attributes,
    attempt_name,
    error_type,
    record_attributes,
    request_attributes,
    root_attributes,
)
from gateway.telemetry.spans import SpanSink

if TYPE_CHECKING:
    from gateway.ledger.record import LedgerRecord
    from gateway.pipeline.normalize import ChatRequest
    from gateway.policy.schema import ModelConfig
    from gateway.telemetry.metrics import Metrics

Stage = Literal[
    "exact_cache", "budget", "embed", "semantic_cache", "classify", "route", "call", "ledger"
]
STAGE_SPANS: Mapping[str, str] = MappingProxyType({s: f"gateway.{s}" for s in get_args(Stage)})

_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY: Mapping[str, str] = MappingProxyType({})


class _NoopScope:
    """The shared context manager of a trace that records nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NOOP = _NoopScope()


class RequestTrace:
    """The telemetry of one request. This base class records no spans (tracing off); it still
    counts upstream attempts and fallbacks in the metrics and passes an incoming
    ``traceparent`` on upstream unchanged, as a proxy that does not trace should."""

    __slots__ = ("_incoming", "_metrics")

    def __init__(
        self, metrics: Metrics | None = None, incoming: Mapping[str, str] | None = None
    ) -> None:
        self._metrics = metrics
        self._incoming = incoming

    @property
    def recording(self) -> bool:
        """Spans are being recorded for this request."""
        return False

    @property
    def trace_id(self) -> str | None:
        """The W3C trace id (32 hex digits) when this request is traced, for log lines."""
        return None

    def activate(self) -> AbstractContextManager[None]:
        """Make this the current request's trace (for `current`) for the ``with`` block; an
        exception that leaves the block ends the request span with an error."""
        return _Activation(self)

    def describe(self, request: ChatRequest) -> None:
        """Record the request's model and sampling parameters (once it is parsed)."""

    def stage(self, name: Stage) -> AbstractContextManager[Span]:
        """A child span around one pipeline stage; the ``with`` gives the span, for
        ``span.set_attribute(...)`` (a no-op on a span that does not record)."""
        return _NOOP

    def attempt(self, model: str, config: ModelConfig, number: int) -> AbstractContextManager[Span]:
        """Around one upstream attempt on policy model ``model`` (``config`` is its policy
        entry; ``number`` counts from 1 per model). Counts the attempt's outcome in
        ``gateway_upstream_attempts_total`` (``ok``, or the failure's kind) on exit."""
        if self._metrics is None:
            return _NOOP
        return _AttemptScope(self._metrics, model, None)

    def fallback(self, from_model: str, to_model: str) -> None:
        """The call stage gave up on ``from_model`` and moves on to ``to_model``."""
        if self._metrics is not None:
            self._metrics.observe_fallback(from_model, to_model)

    def upstream_headers(self) -> Mapping[str, str]:
        """Headers to add to the upstream request: ``traceparent`` (and ``tracestate``)."""
        return self._incoming or _EMPTY

    def end(self, record: LedgerRecord | None = None, *, status: int | None = None) -> None:
        """End the request span with the ledger record's outcome (idempotent)."""


class _Activation:
    """Sets the current trace and, when it records, makes its root the current span (so that
    other OpenTelemetry instrumentation inside the block joins the request's trace)."""

    __slots__ = ("_otel_token", "_token", "_trace")

    def __init__(self, trace: RequestTrace) -> None:
        self._trace = trace

    def __enter__(self) -> None:
        self._token = _CURRENT.set(self._trace)
        root = getattr(self._trace, "_root_ctx", None)
        self._otel_token = None if root is None else otel_context.attach(root)

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)
        _CURRENT.reset(self._token)
        if e is not None:
            self._trace.end(status=_status_of(e))


_QUIET = RequestTrace()
_CURRENT: contextvars.ContextVar[RequestTrace] = contextvars.ContextVar(
    "gateway_request_trace", default=_QUIET
)


def current() -> RequestTrace:
    """The trace of the request being handled (a silent one outside any request)."""
    return _CURRENT.get()


def attempt(model: str, config: ModelConfig, number: int) -> AbstractContextManager[Span]:
    """`RequestTrace.attempt` on the current request's trace."""
    return _CURRENT.get().attempt(model, config, number)


def fallback(from_model: str, to_model: str) -> None:
    """`RequestTrace.fallback` on the current request's trace."""
    _CURRENT.get().fallback(from_model, to_model)


def upstream_headers() -> Mapping[str, str]:
    """`RequestTrace.upstream_headers` of the current request's trace: call it inside the
    attempt's ``with`` block, so that the upstream's span becomes a child of the attempt."""
    return _CURRENT.get().upstream_headers()


class RecordingTrace(RequestTrace):
    """A traced request (it records unless the sampler says no): lean spans (see `spans`)."""

    __slots__ = ("_ended", "_root", "_root_ctx", "_sink", "_trace_id")

    def __init__(
        self,
        sink: SpanSink,
        metrics: Metrics,
        headers: Mapping[str, str] | None,
        request_id: str,
    ) -> None:
        super().__init__(metrics)
        self._sink = sink
        parent = _PROPAGATOR.extract(headers) if headers and "traceparent" in headers else None
        self._root = sink.start_root(
            ROOT_SPAN, parent, SpanKind.SERVER, root_attributes(request_id)
        )
        self._root_ctx = trace.set_span_in_context(self._root)
        self._trace_id = self._root.get_span_context().trace_id
        self._ended = False

    @property
    def recording(self) -> bool:
        return self._root.is_recording()

    @property
    def trace_id(self) -> str | None:
        return trace.format_trace_id(self._trace_id) if self.recording else None

    def describe(self, request: ChatRequest) -> None:
        if self._root.is_recording():
            self._root.set_attributes(request_attributes(request))

    def _parent(self) -> SpanContext:
        """The current span when it belongs to this request (a stage), else the root."""
        current = trace.get_current_span().get_span_context()
        if current.trace_id == self._trace_id:
            return current
        return self._root.get_span_context()

    def stage(self, name: Stage) -> AbstractContextManager[Span]:
        if not self._root.is_recording():
            return _NOOP
        return _SpanScope(self._sink.start_child(STAGE_SPANS[name], self._parent()))

    def attempt(self, model: str, config: ModelConfig, number: int) -> AbstractContextManager[Span]:
        assert self._metrics is not None
        if not self._root.is_recording():
            return _AttemptScope(self._metrics, model, None)
        span = self._sink.start_child(
            attempt_name(config),
            self._parent(),
            SpanKind.CLIENT,
            attempt_attributes(model, config, number),
        )
        return _AttemptScope(self._metrics, model, span)

    def fallback(self, from_model: str, to_model: str) -> None:
        super().fallback(from_model, to_model)
        self._root.add_event("gateway.fallback", {"from": from_model, "to": to_model})

    def upstream_headers(self) -> Mapping[str, str]:
        context = self._parent()
        if not context.is_valid:
            return _EMPTY
        header = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        if context.trace_state:
            return {"traceparent": header, "tracestate": context.trace_state.to_header()}
        return {"traceparent": header}

    def end(self, record: LedgerRecord | None = None, *, status: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._root
        if span.is_recording():
            if record is not None:
                span.set_attributes(record_attributes(record))
                status = record.status
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
        span.end()


class _SpanScope:
    """Makes a span current for a ``with`` block and ends it; an escaping exception marks it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)
        if e is not None:
            self._span.set_attribute("error.type", error_type(e))
            self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()


class _AttemptScope:
    """An attempt: its span (when traced), and its outcome counted in the metrics."""

    __slots__ = ("_metrics", "_model", "_scope")

    def __init__(self, metrics: Metrics, model: str, span: Span | None) -> None:
        self._metrics = metrics
        self._model = model
        self._scope = None if span is None else _SpanScope(span)

    def __enter__(self) -> Span:
        return INVALID_SPAN if self._scope is None else self._scope.__enter__()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        outcome = "ok" if e is None else error_type(e)
        self._metrics.observe_attempt(self._model, outcome)
        if self._scope is not None:
            status = getattr(e, "status", None)
            if isinstance(status, int):
                self._scope._span.set_attribute("http.response.status_code", status)
            self._scope.__exit__(t, e, tb)


def _status_of(exc: BaseException) -> int:
    """The HTTP status a request that failed with ``exc`` gets (499: the client went away)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    return 499 if type(exc).__name__ == "CancelledError" else 500
