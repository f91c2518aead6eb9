"""Ended spans as one OTLP/HTTP JSON ``ExportTraceServiceRequest`` body.

The OTLP JSON encoding is the protobuf JSON mapping with OTLP's exceptions: field names in
lowerCamelCase, trace and span ids as hex strings (not base64), enums as integers, 64-bit
integers (timestamps, ``intValue``) as decimal strings.

Why JSON written here rather than the SDK's protobuf encoder: the SDK builds a protobuf message
object per span, attribute and value, on an exporter thread that shares the GIL with the event
loop. Here each span is one bytes template; attribute keys are encoded once and kept (they come
from code, so there are few), values go through msgspec's C encoder, and the resource and scope
are encoded once per exporter. Side by side, all threads counted, a traced request costs about
a third of the CPU it costs through the SDK (bench/telemetry/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.telemetry.spans import SpanData

_KEY_CACHE_MAX = 1024
_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SPAN = (
    b'{"traceId":"%032x","spanId":"%016x",%s"name":%s,"kind":%d,'
    b'"startTimeUnixNano":"%d","endTimeUnixNano":"%d",%s"flags":%d}'
)
_NON_FINITE = {math.inf: b'"Infinity"', -math.inf: b'"-Infinity"'}


class SpanEncoder:
    """Encodes batches of spans of one resource and instrumentation scope."""

    def __init__(self, resource: Resource, scope: str) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._keys: dict[str, bytes] = {}
        head = b'{"resourceSpans":[{"resource":{"attributes":[%s]},"scopeSpans":[{"scope":%s,'
        self._head = head % (
            self._attributes(resource.attributes),
            self._encode({"name": scope}),
        )
        if resource.schema_url:
            self._tail = b']}]},"schemaUrl":%s}]}' % self._encode(resource.schema_url)
        else:
            self._tail = b"]}]}]}"

    def encode(self, spans: Iterable[SpanData]) -> bytes:
        """One request body for ``POST /v1/traces``."""
        return self.body([self.spans(spans)])

    def spans(self, spans: Iterable[SpanData]) -> bytes:
        """Some spans of a body (a body may be encoded in parts: see `body`)."""
        return b",".join(map(self._span, spans))

    def body(self, parts: Iterable[bytes]) -> bytes:
        """The request body of spans encoded in parts by `spans`."""
        return b"".join((self._head, b'"spans":[', b",".join(parts), self._tail))

    def _span(self, span: SpanData) -> bytes:
        context, parent = span.context, span.parent
        flags = int(context.trace_flags) | _HAS_IS_REMOTE
        fields = b""
        if parent is not None:
            fields = b'"parentSpanId":"%016x",' % parent.span_id
            if parent.is_remote:
                flags |= _IS_REMOTE
        if context.trace_state:
            fields += b'"traceState":%s,' % self._encode(context.trace_state.to_header())
        extra = b""
        if span.attributes:
            extra = b'"attributes":[%s],' % self._attributes(span.attributes)
        if span.events:
            extra += b'"events":[%s],' % b",".join(map(self._event, span.events))
        status = span.status
        if status.status_code is not StatusCode.UNSET:
            if status.description:
                extra += b'"status":{"code":%d,"message":%s},' % (
                    status.status_code.value,
                    self._encode(status.description),
                )
            else:
                extra += b'"status":{"code":%d},' % status.status_code.value
        return _SPAN % (
            context.trace_id,
            context.span_id,
            fields,
            self._encode(span.name),
            span.kind.value + 1,  # the SDK's INTERNAL is 0, OTLP's SPAN_KIND_INTERNAL is 1
            span.start_time,
            span.end_time,
            extra,
            flags,
        )

    def _event(self, event: Event) -> bytes:
        attributes = event.attributes
        if not attributes:
            return b'{"timeUnixNano":"%d","name":%s}' % (event.timestamp, self._encode(event.name))
        return b'{"timeUnixNano":"%d","name":%s,"attributes":[%s]}' % (
            event.timestamp,
            self._encode(event.name),
            self._attributes(attributes),
        )

    def _attributes(self, attributes: Mapping[str, AttributeValue]) -> bytes:
        return b",".join([self._key_value(k, v) for k, v in attributes.items()])

    def _key_value(self, key: str, value: AttributeValue) -> bytes:
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = b'{"key":%s,"value":' % self._encode(key)
            if len(self._keys) < _KEY_CACHE_MAX:
                self._keys[key] = prefix
        return b"%s%s}" % (prefix, self._value(value))

    def _value(self, value: object) -> bytes:
        # type() rather than isinstance: bool is an int, and exact types are the common case.
        if type(value) is str:
            return b'{"stringValue":%s}' % self._encode(value)
        if type(value) is bool:
            return b'{"boolValue":true}' if value else b'{"boolValue":false}'
        if type(value) is int:
            return b'{"intValue":"%d"}' % value
        if type(value) is float:
            if math.isfinite(value):
                return b'{"doubleValue":%s}' % self._encode(value)
            return b'{"doubleValue":%s}' % _NON_FINITE.get(value, b'"NaN"')
        if isinstance(value, int):  # a subclass, such as an IntEnum
            return self._value(int(value))
        if isinstance(value, float):
            return self._value(float(value))
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return b'{"arrayValue":{"values":[%s]}}' % b",".join(map(self._value, value))
        return self._value(str(value))  # not an OpenTelemetry value: as text
