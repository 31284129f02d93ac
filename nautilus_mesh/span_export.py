"""Where finished spans go: a JSONL span file (rotated by size) or OTLP, counted on the way out.

:class:`JsonlSpanExporter` writes the span files ``nautilus-mesh traces`` reads, in batches written by
:class:`InlineBatchSpanProcessor`; an OTLP exporter gets the SDK's batch processor and its export thread
(:class:`CountingBatchSpanProcessor`). :class:`ExportStats` and the counting wrappers feed the ``tracing`` health
check, ``span_export_failures_total`` and ``spans_dropped_total``; the OTLP note tells ``nautilus-mesh traces``
where spans went instead of a file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.files import JsonlWriter, dumps, json_default

if TYPE_CHECKING:
    from nautilus_mesh.telemetry import Tracing

log = logging.getLogger("nautilus_mesh.telemetry")


SPAN_FILE_MAX_BYTES = 64 * 1024 * 1024
"""Size in bytes past which a span file rotates to ``<name>.1`` by default (64 MiB; ``NAUTILUS_SPAN_FILE_MAX_BYTES``
sets it for a service: :func:`span_file_max_bytes`)."""


def span_file_max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """The span file's rotation size in bytes: ``NAUTILUS_SPAN_FILE_MAX_BYTES`` (a whole number of bytes > 0), else
    :data:`SPAN_FILE_MAX_BYTES`.

    Raises:
        ConfigError: ``BAD_SPAN_FILE_MAX_BYTES``: not a whole number of bytes above 0 (``64MiB`` is not one).
    """
    from nautilus_mesh.errors import ConfigError

    text = environ.get("NAUTILUS_SPAN_FILE_MAX_BYTES", "").strip()
    if not text:
        return SPAN_FILE_MAX_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(
            f"NAUTILUS_SPAN_FILE_MAX_BYTES must be a whole number of bytes above 0 (64 MiB is 67108864), got {text!r}",
            code="BAD_SPAN_FILE_MAX_BYTES",
        )
    return int(text)


_KIND_NAME = {kind: kind.name for kind in SpanKind}
_STATUS_NAME = {code: code.name for code in StatusCode}


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes as the dict the JSON encoder takes: the mapping's own copy when it gives one (the read-only view of a
    span's dict, the SDK's ``BoundedAttributes``), about a tenth of the CPU of rebuilding it item by item."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    plain = copy() if copy is not None else None
    return plain if type(plain) is dict else dict(attributes)


def _json(value: object) -> str:
    """``value`` as compact JSON, encoded by orjson (a tenth of the standard library's CPU for a span's eight
    attributes), else by :func:`nautilus_mesh.files.dumps` where orjson's text would differ in more than a float's
    spelling: text outside ASCII (escaped as ``\\u00e9`` for é, as the span file has always had it) and what orjson
    refuses (an integer beyond 64 bits). A float may be spelled otherwise (``1e-07`` as ``1e-7``); a NaN or an
    infinity, which JSON has no number for, is written ``null``."""
    try:
        text = orjson.dumps(value, default=json_default).decode()
    except orjson.JSONEncodeError:
        return dumps(value)
    return text if text.isascii() else dumps(value)


def _number(value: int | None) -> str:
    """A span timestamp as JSON (``null`` when unset)."""
    return str(value) if type(value) is int else _json(value)


class JsonlSpanExporter(SpanExporter):
    """Writes finished spans as JSON lines (one object per span).

    A line is one JSON object with these keys, in this order: ``trace_id``, ``span_id``, ``parent_span_id`` (hex;
    "" for a root span), ``name``, ``kind`` (the OTel ``SpanKind`` name), ``service`` (the resource's
    ``service.name``), ``start_ns`` and ``end_ns`` (wall clock, nanoseconds since the Unix epoch), ``attributes``
    (tuple values as arrays), ``events`` (each with ``name`` and ``attributes``), ``status`` (the ``StatusCode``
    name) and ``status_message``.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int | None = SPAN_FILE_MAX_BYTES) -> None:
        self._writer = JsonlWriter(path, max_bytes=max_bytes)
        # The last resource and the JSON of its service name (every span of a service shares one), one tuple so
        # that a concurrent export never pairs a resource with another's name.
        self._service: tuple[Resource | None, str] = (None, '""')

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._writer.append_lines(line for line in map(self._line, spans) if line)
        return SpanExportResult.SUCCESS

    def _line(self, span: ReadableSpan) -> str:
        """The span's JSON line ("" for a span without a context), what encoding its record with
        :func:`nautilus_mesh.files.dumps` gives (character for character but for a float's spelling, see
        :func:`_json`), without building the record: the keys, the hex ids and the enum names are written as they are
        and only the span's own strings and mappings go through the encoder (a quarter less CPU per span than building
        and encoding the record)."""
        ctx = span.get_span_context()
        if ctx is None:
            return ""
        resource, service = self._service
        if span.resource is not resource:
            service = _json(str(span.resource.attributes.get("service.name", "")))
            self._service = (span.resource, service)
        parent = f"{span.parent.span_id:016x}" if span.parent else ""
        events = span.events
        status = span.status
        events_json = _json([{"name": e.name, "attributes": _plain(e.attributes)} for e in events]) if events else "[]"
        return (
            f'{{"trace_id":"{ctx.trace_id:032x}","span_id":"{ctx.span_id:016x}","parent_span_id":"{parent}",'
            f'"name":{_json(span.name)},"kind":"{_KIND_NAME[span.kind]}","service":{service},'
            f'"start_ns":{_number(span.start_time)},"end_ns":{_number(span.end_time)},'
            f'"attributes":{_json(_plain(span.attributes))},'
            f'"events":{events_json},'
            f'"status":"{_STATUS_NAME[status.status_code]}","status_message":{_json(status.description or "")}}}'
        )

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class ExportStats:
    """How span export is going: batches exported and failed, the last outcome and its time."""

    exported: int = 0
    failed: int = 0
    last_ok_at: float | None = None
    last_failure_at: float | None = None
    last_error: str = ""
    spans_failed: int = 0
    """Spans in the batches that failed to export."""
    spans_queue_full: int = 0
    """Spans the batch processor dropped because its queue was full (export slower than spans are made)."""


class CountingExporter(SpanExporter):
    """Wraps an exporter and counts successes and failures (health and ``span_export_failures_total``)."""

    def __init__(self, inner: SpanExporter, stats: ExportStats) -> None:
        self._inner = inner
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as exc:
            self._stats.failed += 1
            self._stats.spans_failed += len(spans)
            self._stats.last_failure_at = REAL_CLOCK.monotonic()
            self._stats.last_error = type(exc).__name__
            log.warning("[TRACING] span export failed: %s", type(exc).__name__)
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._stats.exported += 1
            self._stats.last_ok_at = REAL_CLOCK.monotonic()
        else:
            self._stats.failed += 1
            self._stats.spans_failed += len(spans)
            self._stats.last_failure_at = REAL_CLOCK.monotonic()
            self._stats.last_error = "export returned FAILURE"
            log.warning("[TRACING] span export failed (%d so far)", self._stats.failed)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


OTLP_NOTE_SUFFIX = ".otlp.json"
"""Beside a service's span file, ``<service>.otlp.json`` says its spans went to an OTLP endpoint instead."""


def otlp_note_path(span_file: Path) -> Path:
    """Where a service whose span file would be ``span_file`` notes that it exports over OTLP."""
    return span_file.with_name(span_file.name.removesuffix(".jsonl") + OTLP_NOTE_SUFFIX)


def note_exporter(span_file: Path, service_name: str, endpoint: str) -> None:
    """Leave (OTLP) or remove (span file) the note ``nautilus-mesh traces`` reads when it finds no spans."""
    note = otlp_note_path(span_file)
    try:
        if endpoint:
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(json.dumps({"service": service_name, "endpoint": endpoint}) + "\n", encoding="utf-8")
        else:
            note.unlink(missing_ok=True)
    except OSError as exc:  # a read-only directory: the note is a convenience, never a reason to fail
        log.debug("[TRACING] could not update %s: %s", note, exc)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A batch span processor that counts the spans it drops because its queue is full.

    The SDK drops the oldest queued span to make room and only logs it; this looks at the queue's length first.
    """

    def __init__(self, exporter: SpanExporter, stats: ExportStats, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._stats = stats
        self._queue = getattr(self._batch_processor, "_queue", None)  # a bounded deque in SDK 1.3x-1.4x

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        full = queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen
        if full and span.context is not None and span.context.trace_flags.sampled:
            self._stats.spans_queue_full += 1
        super().on_end(span)


INLINE_BATCH_SPANS = 256
"""Sampled spans :class:`InlineBatchSpanProcessor` collects before the thread that ends the last one writes them
(count): about a millisecond of formatting and one write."""
INLINE_FLUSH_SECONDS = 0.5
"""How often :class:`InlineBatchSpanProcessor`'s flusher writes what has waited since (seconds), as the SDK's batch
processor exports every 500 ms: a span's line is in the file within about this long when few spans are made."""


class InlineBatchSpanProcessor(SpanProcessor):
    """The span file's processor: sampled spans are collected and written ``batch`` at a time by the thread that ends
    the batch's last span (a service's event loop), and what waits is written every ``flush_seconds`` by a flusher
    thread.

    The SDK's batch processor hands every batch to its export thread, woken for each; in a service that thread and the
    event loop then take turns on the GIL, which costs CPU whenever the host is busy: with every signal sampled, ops
    and the engine took 50-100 us less CPU a signal with this processor (``docs/performance.md``). An exporter whose
    export may block (OTLP, over the network) keeps the SDK's processor. Export failures are the exporter's to count
    (:class:`CountingExporter`); nothing is queued, so nothing is dropped for a full queue.

    Thread-safe: spans may end on any thread; batches are written one at a time.
    """

    def __init__(
        self, exporter: SpanExporter, *, batch: int = INLINE_BATCH_SPANS, flush_seconds: float = INLINE_FLUSH_SECONDS
    ) -> None:
        self._exporter = exporter
        self._batch = batch
        self._spans: list[ReadableSpan] = []
        self._buffer_lock = threading.Lock()
        self._export_lock = threading.Lock()  # one batch written at a time, in the order they were taken
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), name="span-file-flush", daemon=True
        )
        self._flusher.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Collect a sampled span; write the batch once it has ``batch`` spans (an unsampled one, or one ended after
        :meth:`shutdown`, is not exported, as with the SDK's processor)."""
        context = span.context
        if context is None or not context.trace_flags.sampled or self._stopped.is_set():
            return
        with self._buffer_lock:
            self._spans.append(span)
            full = len(self._spans) >= self._batch
        if full:
            self._write()

    def _write(self) -> None:
        with self._export_lock:
            with self._buffer_lock:
                spans, self._spans = self._spans, []
            if spans:
                self._exporter.export(spans)

    def _flush_every(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            if self._spans:
                self._write()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write what is collected now."""
        self._write()
        return True

    def shutdown(self) -> None:
        """Stop the flusher, write what is left, shut the exporter down."""
        self._stopped.set()
        self._flusher.join()
        self._write()
        self._exporter.shutdown()


class SpansDroppedCollector:
    """``spans_dropped_total{reason}``: spans lost on the way out (``export_failed``, ``queue_full``).

    Registered on a service's registry; reads the live :class:`ExportStats`, so both series exist from the start.
    """

    def __init__(self, tracing: Tracing, registry: CollectorRegistry) -> None:
        self._stats = tracing.export_stats
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "spans_dropped",
            "Spans never exported, by reason: export_failed (the exporter failed) or queue_full (the OTLP exporter's "
            "batch queue full).",
            labels=["reason"],
        )
        family.add_metric(["export_failed"], self._stats.spans_failed)
        family.add_metric(["queue_full"], self._stats.spans_queue_full)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        return self.collect()


_SPANS_DROPPED: weakref.WeakKeyDictionary[CollectorRegistry, SpansDroppedCollector] = weakref.WeakKeyDictionary()


def count_dropped_spans(tracing: Tracing, registry: CollectorRegistry) -> None:
    """Export ``spans_dropped_total`` of ``tracing`` on ``registry`` (once per registry)."""
    if registry not in _SPANS_DROPPED:
        _SPANS_DROPPED[registry] = SpansDroppedCollector(tracing, registry)
