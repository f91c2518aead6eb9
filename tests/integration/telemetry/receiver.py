"""A real OTLP/HTTP receiver on 127.0.0.1: accepts protobuf or JSON ``POST /v1/traces`` and
``/v1/metrics`` like a collector would, and keeps the decoded requests for tests to read.

JSON bodies are parsed into the official protobuf messages with ``json_format``, rejecting
unknown fields, after turning the hex trace and span ids of OTLP JSON into the base64 of the
protobuf JSON mapping (what the collector's own JSON decoder does): a body that parses here is
valid OTLP JSON. The receiver can also be told to answer the next POSTs with an error status
(`fail_next`), and to record the headers of each POST."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_SIGNALS: dict[str, tuple[Any, Any]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


class OtlpReceiver:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        """Each POST's body as it arrived (compressed if it was)."""
        self.failures: list[tuple[int, dict[str, str]]] = []
        """Replies to give the next POSTs instead of accepting them: (status, headers)."""
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                kinds = _SIGNALS.get(self.path)
                if kinds is None:
                    self.send_error(404)
                    return
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    receiver.bodies.append(raw)
                    failure = receiver.failures.pop(0) if receiver.failures else None
                if failure is not None:
                    self.send_response(failure[0])
                    for name, header in failure[1].items():
                        self.send_header(name, header)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = _decompress(raw, self.headers.get("content-encoding"))
                content_type = self.headers.get("content-type", "")
                if content_type == "application/json":
                    message = _from_json(body, kinds[0]())
                    reply = json_format.MessageToJson(kinds[1]()).encode()
                else:
                    message = kinds[0].FromString(body)
                    reply = kinds[1]().SerializeToString()
                with receiver._lock:
                    receiver.content_types.append(content_type)
                    signal = receiver.traces if self.path == "/v1/traces" else receiver.metrics
                    signal.append(message)
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int, count: int = 1, **headers: str) -> None:
        """Answer the next ``count`` POSTs with ``status`` (and ``headers``), keeping nothing."""
        with self._lock:
            self.failures += [(status, headers)] * count

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.traces
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def wait_for_spans(self, count: int, timeout_s: float = 10.0) -> list[Span]:
        deadline = time.monotonic() + timeout_s
        while len(self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.spans()

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self.stop()


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _from_json(body: bytes, message: Any) -> Any:
    """An OTLP JSON body as its protobuf message (strict: unknown fields are errors)."""
    document = json.loads(body)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for name in _ID_FIELDS:
                    if name in span:
                        hex_id = span[name]
                        assert len(hex_id) == (32 if name == "traceId" else 16), (name, hex_id)
                        span[name] = base64.b64encode(bytes.fromhex(hex_id)).decode()
    json_format.ParseDict(document, message, ignore_unknown_fields=False)
    return message


def value(any_value: AnyValue) -> Any:
    """The Python value of an OTLP attribute value."""
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attributes(span: Span) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}
