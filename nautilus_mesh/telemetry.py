"""Tracing and metrics plumbing shared by every service.

Each service owns one ``Tracing`` (its own TracerProvider, so several services can run in
one process, as the tests do) and one Prometheus ``CollectorRegistry``.

Spans go to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else to a local JSONL file
(``var/traces/<service>.jsonl`` by default) that ``nautilus-mesh traces`` summarises.
Sampling follows the standard ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` variables
(the SDK reads them); ``parentbased_traceidratio`` makes the strategy's decision stick.

Per-message context travels inside each stream item as a ``TraceContext`` message, because
gRPC metadata is sent once per stream.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import logging
import os
import random
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, start_http_server

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.message_spans import CurrentSpan, parent_decides, root_bound, root_sampled, start_span
from nautilus_mesh.span_export import OTLP_NOTE_SUFFIX as OTLP_NOTE_SUFFIX
from nautilus_mesh.span_export import SPAN_FILE_MAX_BYTES as SPAN_FILE_MAX_BYTES
from nautilus_mesh.span_export import (
    CountingBatchSpanProcessor,
    CountingExporter,
    InlineBatchSpanProcessor,
    note_exporter,
    span_file_max_bytes,
)
from nautilus_mesh.span_export import ExportStats as ExportStats
from nautilus_mesh.span_export import JsonlSpanExporter as JsonlSpanExporter
from nautilus_mesh.span_export import SpansDroppedCollector as SpansDroppedCollector
from nautilus_mesh.span_export import count_dropped_spans as count_dropped_spans
from nautilus_mesh.span_export import otlp_note_path as otlp_note_path

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()

# Latency buckets fine enough for sub-millisecond stages (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    float("inf"),
)


OPS_SIGNAL_STREAM = "nautilus.ops.v1.OpsService/StreamSignals"
"""The stream signals travel up and decisions and fills travel down (``messaging.destination.name``)."""
ENGINE_ORDER_STREAM = "nautilus.engine.v1.EngineService/StreamOrders"
"""The stream orders travel up and execution reports travel down (``messaging.destination.name``)."""


def _package_version() -> str:
    try:
        return importlib.metadata.version("nautilus-mesh")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def service_resource(service_name: str) -> Resource:
    """The span resource: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over our defaults.

    ``service.name`` defaults to the service's own name and ``service.version`` to the package version; the
    environment (``deployment.environment``, ...) comes from ``OTEL_RESOURCE_ATTRIBUTES``.
    """
    detected = dict(Resource.create().attributes)  # the SDK reads both variables
    if str(detected.get("service.name", "")).startswith("unknown_service"):
        detected["service.name"] = service_name
    detected.setdefault("service.version", _package_version())
    return Resource(detected)


def messaging_attributes(operation: str, destination: str) -> dict[str, str]:
    """The OTel messaging attributes of one stream message (``operation`` is ``send`` or ``receive``)."""
    return {
        "messaging.system": "grpc",
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
    }


def mark_error(span: Span, code: str) -> None:
    """Status ERROR with the error code as its description (a rejection or a failure)."""
    span.set_status(Status(StatusCode.ERROR, code))


def trace_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the active sampled span, for a histogram observation; None outside one.

    Prometheus keeps one exemplar per bucket (the newest), shown with ``Accept: application/openmetrics-text``.
    """
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": f"{context.trace_id:032x}"}


class TraceCarrier(Protocol):
    """Anything shaped like the ``TraceContext`` proto message."""

    traceparent: str
    tracestate: str


class Tracing:
    """One service's tracer provider and helpers for per-message spans.

    Args:
        service_name: ``service.name`` resource attribute.
        span_file: JSONL span file used when no OTLP endpoint is configured.
        enabled: False disables tracing entirely (no-op tracer).
    """

    def __init__(self, service_name: str, span_file: str | os.PathLike[str] | None = None, *, enabled: bool = True):
        self.service_name = service_name
        self.provider: TracerProvider | None = None
        self.export_stats = ExportStats()
        self.exporter_kind = "off"
        self._follow_parent = False
        self._root_bound: int | None = None
        if not enabled:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        provider = TracerProvider(resource=service_resource(service_name), id_generator=_PresetTraceIds())
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        exporter: SpanExporter
        path = Path(span_file) if span_file else Path("var/traces") / f"{service_name}.jsonl"
        note_exporter(path, service_name, endpoint or "")
        if endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
            log.info("[TRACING] %s exports spans over OTLP to %s", service_name, endpoint)
        else:
            exporter = JsonlSpanExporter(path, max_bytes=span_file_max_bytes())
            log.info("[TRACING] %s writes spans to %s", service_name, path)
        self.exporter_kind = "otlp" if endpoint else "jsonl"
        counted = CountingExporter(exporter, self.export_stats)
        self._processor: SpanProcessor = (
            CountingBatchSpanProcessor(counted, self.export_stats, schedule_delay_millis=500)
            if endpoint  # an export over the network may block: on the SDK's export thread
            else InlineBatchSpanProcessor(counted)  # the span file: written in batches, no thread hand-off
        )
        provider.add_span_processor(self._processor)
        self.provider = provider
        self.tracer = provider.get_tracer("nautilus_mesh")
        self._follow_parent = parent_decides(provider.sampler)
        self._root_bound = root_bound(provider.sampler)

    def consume(
        self,
        name: str,
        carrier: TraceCarrier | None,
        attributes: Mapping[str, str | int | float] | None = None,
        *,
        destination: str = "",
    ) -> AbstractContextManager[Span]:
        """A CONSUMER span parented on the context carried in a received message.

        ``destination`` (the stream, e.g. :data:`OPS_SIGNAL_STREAM`) adds the OTel messaging attributes.

        An unsampled context (the strategy decided once, at the root) costs no span work: no span is made, and what
        this message produces carries the same unsampled context on (see :meth:`produce`). That path is a small
        context manager of its own rather than a generator: it is what most messages take.
        """
        if self.provider is None:  # tracing off: no span work on the hot path
            return _NO_SPAN
        traceparent = carrier.traceparent if carrier is not None else ""
        unsampled = traceparent if is_unsampled(traceparent) else ""
        if not unsampled and not is_sampled(traceparent) and not _current_span_valid():
            unsampled = self._root_decision(name)  # a root here: decide once, and skip the span if unsampled
        if unsampled:
            return _Passthrough(unsampled)
        return self._consumer_span(name, carrier, attributes, destination)

    def _consumer_span(
        self,
        name: str,
        carrier: TraceCarrier | None,
        attributes: Mapping[str, str | int | float] | None,
        destination: str,
    ) -> AbstractContextManager[Span]:
        attrs = dict(attributes or {})
        if destination:
            attrs.update(messaging_attributes("receive", destination))
        received_ns = _FRAME_RECEIVED_NS.get()
        if received_ns:
            attrs[FRAME_RECEIVED_ATTRIBUTE] = received_ns
        return CurrentSpan(self._start(name, SpanKind.CONSUMER, extract(carrier), attrs))

    def _start(self, name: str, kind: SpanKind, parent: Context | None, attributes: dict[str, Any]) -> Span:
        """A message span (:mod:`nautilus_mesh.message_spans`), sampled by the provider's sampler."""
        assert self.provider is not None
        preset = _NEXT_TRACE_ID.get()  # a root whose sampling decision was taken: its trace id
        if preset:
            _NEXT_TRACE_ID.set(0)
        return start_span(
            name,
            kind,
            parent,
            attributes,
            sampler=self.provider.sampler,
            resource=self.provider.resource,
            processor=self._processor,
            root_trace_id=preset,
            follow_parent=self._follow_parent,
            root_decided=self._root_bound is not None,
        )

    def _root_decision(self, name: str) -> str:
        """Take the sampling decision for a trace that starts here, before any span work.

        Returns an unsampled traceparent to carry on when the sampler says no; when it says yes, returns "" and the
        next root span gets the trace id the sampler decided on (a ratio sampler decides by trace id).
        """
        assert self.provider is not None
        trace_id = random.getrandbits(128) or 1
        bound = self._root_bound  # a ratio, always-on or always-off root: decided by the trace id, as the SDK does
        if bound is not None:
            sampled = root_sampled(bound, trace_id)
        else:
            result = self.provider.sampler.should_sample(_EMPTY_CONTEXT, trace_id, name, SpanKind.CONSUMER)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
        if sampled:
            _NEXT_TRACE_ID.set(trace_id)
            return ""
        return f"00-{trace_id:032x}-{random.getrandbits(64) or 1:016x}-00"

    def produce(
        self,
        name: str,
        carrier: TraceCarrier,
        attributes: Mapping[str, str | int | float] | None = None,
        *,
        parent: TraceCarrier | None = None,
        destination: str = "",
    ) -> AbstractContextManager[Span]:
        """A PRODUCER span whose context is written into ``carrier``.

        Its parent is ``parent``'s context when given (a report about an earlier order), else the current span.
        ``destination`` (the stream) adds the OTel messaging attributes.
        """
        if self.provider is None:
            return _NO_SPAN
        unsampled = parent.traceparent if parent is not None else _PASSTHROUGH.get()
        if is_unsampled(unsampled):  # carry the unsampled context on, no span work
            carrier.traceparent = unsampled
            return _NO_SPAN
        attrs = dict(attributes or {})
        if destination:
            attrs.update(messaging_attributes("send", destination))
        span = self._start(name, SpanKind.PRODUCER, extract(parent) if parent is not None else None, attrs)
        write_context(carrier, span.get_span_context())
        return CurrentSpan(span)

    def in_unsampled_trace(self) -> bool:
        """True inside :meth:`consume` of a message whose trace is not sampled (what it produces makes no span)."""
        return self.provider is not None and bool(_PASSTHROUGH.get())

    def carry_unsampled(self, carrier: TraceCarrier) -> None:
        """Write the current trace into ``carrier`` with the sampled flag cleared: whatever follows the message (the
        receiver's spans, their reports) makes no span, though it stays in the same trace id. No-op with tracing off."""
        if self.provider is None:
            return
        unsampled = _PASSTHROUGH.get()
        if not unsampled:
            context = trace.get_current_span().get_span_context()
            if not context.is_valid:
                return
            unsampled = f"00-{context.trace_id:032x}-{context.span_id:016x}-00"
        carrier.traceparent = unsampled
        carrier.tracestate = ""

    def force_flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


FRAME_RECEIVED_ATTRIBUTE = "nautilus.frame.received_ns"
"""CONSUMER span attribute: when (wall-clock ns since the epoch) the stream frame carrying the message was read.

Between the producer span's end and this instant the message was on the wire (with the sender's outbox wait);
between this instant and the consumer span's start it queued in the receiver (earlier items of its frame, the
event loop). ``nautilus-mesh traces`` splits each hop into those two segments.
"""

_FRAME_RECEIVED_NS: contextvars.ContextVar[int] = contextvars.ContextVar("nautilus_frame_received_ns", default=0)


def frame_received() -> None:
    """Note that a stream frame was just read: the CONSUMER spans of its items record the instant.

    Call it in the task that reads the stream, right after each frame arrives and before its items are handled.
    One clock read per frame; unsampled items never look at it.
    """
    _FRAME_RECEIVED_NS.set(REAL_CLOCK.time_ns())  # wall time, as span timestamps are, in a backtest too


_PASSTHROUGH: contextvars.ContextVar[str] = contextvars.ContextVar("nautilus_unsampled_traceparent", default="")
"""The unsampled traceparent of the message being consumed, for what it produces."""
_NEXT_TRACE_ID: contextvars.ContextVar[int] = contextvars.ContextVar("nautilus_next_trace_id", default=0)
"""The trace id a root's sampling decision was taken for, for the root span that follows it."""
_EMPTY_CONTEXT = Context()


class _Passthrough(AbstractContextManager[Span]):
    """What :meth:`Tracing.consume` returns for an unsampled message: no span, the unsampled traceparent set for what
    the message produces while it is handled."""

    __slots__ = ("_token", "_traceparent")

    def __init__(self, traceparent: str) -> None:
        self._traceparent = traceparent

    def __enter__(self) -> Span:
        self._token = _PASSTHROUGH.set(self._traceparent)
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        _PASSTHROUGH.reset(self._token)


_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)
"""What :meth:`Tracing.consume` returns with tracing off (reusable: it holds no state)."""


class _PresetTraceIds(RandomIdGenerator):
    """Random ids, except that a root span takes the trace id its sampling decision was taken for."""

    def generate_trace_id(self) -> int:
        preset = _NEXT_TRACE_ID.get()
        if preset:
            _NEXT_TRACE_ID.set(0)
            return preset
        return super().generate_trace_id()


def _current_span_valid() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def is_sampled(traceparent: str) -> bool:
    """True for a well-formed W3C traceparent whose flags say sampled (``-01``)."""
    return len(traceparent) == 55 and traceparent[-1] in "13579bdf"


def is_unsampled(traceparent: str) -> bool:
    """True for a well-formed W3C traceparent whose flags say not sampled (``-00``): the root decided against it."""
    return len(traceparent) == 55 and traceparent[-1] not in "13579bdf"


_PLAIN_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version-00 traceparent, the only kind the mesh writes: read without the propagator's general parsing."""


def extract(carrier: TraceCarrier | None) -> Context | None:
    """The OpenTelemetry context carried in a ``TraceContext`` message, or None when it is empty.

    A plain version-00 ``traceparent`` without ``tracestate`` (what the mesh writes) is read directly, to the context
    the W3C propagator would give; anything else goes through the propagator."""
    if carrier is None or not carrier.traceparent:
        return None
    plain = None if carrier.tracestate else _PLAIN_TRACEPARENT.fullmatch(carrier.traceparent)
    if plain is not None:
        trace_id, span_id = int(plain[1], 16), int(plain[2], 16)
        if trace_id and span_id:
            flags = TraceFlags(int(plain[3], 16))
            remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
            return trace.set_span_in_context(trace.NonRecordingSpan(remote), _EMPTY_CONTEXT)
    headers = {"traceparent": carrier.traceparent}
    if carrier.tracestate:
        headers["tracestate"] = carrier.tracestate
    return _PROPAGATOR.extract(headers)


def inject(carrier: TraceCarrier) -> None:
    """Write the current span's context into a ``TraceContext`` message, as the W3C propagator writes it (both fields
    empty when there is no current span), without the propagator's header dict."""
    context = trace.get_current_span().get_span_context()
    if context == trace.INVALID_SPAN_CONTEXT:
        carrier.traceparent = carrier.tracestate = ""
    else:
        write_context(carrier, context)


def write_context(carrier: TraceCarrier, context: SpanContext) -> None:
    """Write ``context`` into a ``TraceContext`` message, as W3C ``traceparent`` and ``tracestate`` (what
    :func:`inject` writes for the same span once it is current)."""
    carrier.traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    carrier.tracestate = context.trace_state.to_header() if context.trace_state else ""


def trace_id_of(traceparent: str) -> str:
    """The trace id part of a W3C traceparent ("" when malformed)."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


class MetricsServer:
    """Serves one registry on ``/metrics`` (Prometheus text and OpenMetrics) in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_port
        self.host = host
        log.info("[METRICS] serving /metrics on %s:%d", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
