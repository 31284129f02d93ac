"""spans_dropped_total{reason}: spans a failing exporter lost, spans a full batch queue dropped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.span_export import CountingBatchSpanProcessor, CountingExporter
from nautilus_mesh.telemetry import Tracing, count_dropped_spans

SAMPLED = common_pb2.TraceContext(traceparent=f"00-{'4' * 32}-{'1' * 16}-01")


def dropped(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("spans_dropped_total", {"reason": reason})


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def test_spans_dropped_when_nothing_lost_is_zero_for_both_reasons(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    tracing = Tracing("t", tmp_path / "spans.jsonl")
    count_dropped_spans(tracing, registry)
    count_dropped_spans(tracing, registry)  # once per registry, however many servers share it
    with tracing.consume("ops.signal receive", SAMPLED):
        pass
    tracing.shutdown()
    assert dropped(registry, "export_failed") == 0 and dropped(registry, "queue_full") == 0


def test_spans_dropped_when_export_fails_counts_the_spans_of_the_batch(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    tracing = Tracing("t", tmp_path / "spans.jsonl")
    count_dropped_spans(tracing, registry)
    assert tracing.provider is not None
    processor = tracing.provider._active_span_processor._span_processors[0]  # type: ignore[attr-defined]
    counting = processor._exporter  # the span file's processor (InlineBatchSpanProcessor) and its counting exporter
    span_file, counting._inner = counting._inner, FailingExporter()
    for _ in range(3):
        with tracing.consume("ops.signal receive", SAMPLED):
            pass
    tracing.force_flush()
    assert dropped(registry, "export_failed") == 3
    tracing.shutdown()
    span_file.shutdown()


def test_spans_dropped_when_batch_queue_full_counts_what_it_pushed_out() -> None:
    """The SDK's batch processor (an OTLP exporter's) drops the oldest span when its queue is full, and counts it."""
    registry = CollectorRegistry()
    tracing = Tracing("t", enabled=False)
    count_dropped_spans(tracing, registry)
    processor = CountingBatchSpanProcessor(
        CountingExporter(FailingExporter(), tracing.export_stats),
        tracing.export_stats,
        max_queue_size=4,
        max_export_batch_size=4,
        schedule_delay_millis=60_000,
    )
    awaken = processor._batch_processor._worker_awaken
    wake, awaken.set = awaken.set, lambda: None  # type: ignore[method-assign]  # the export thread never wakes early
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for n in range(10):
        provider.get_tracer("t").start_span(f"s{n}").end()
    assert dropped(registry, "queue_full") == 6
    awaken.set = wake  # type: ignore[method-assign]  # shutdown wakes it
    provider.shutdown()
