"""The span file's processor (``InlineBatchSpanProcessor``): batches written by the thread that ends a span, the
rest by its flusher, sampled spans only, each once."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult

from nautilus_mesh.span_export import InlineBatchSpanProcessor
from nautilus_mesh.telemetry import Tracing


class Recorder(SpanExporter):
    """Keeps each batch it is given, and the thread that gave it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[str] = []
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append([span.name for span in spans])
        self.threads.append(threading.current_thread().name)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


class RecordOnly(Sampler):
    """Records every span without sampling it (``RECORD_ONLY``): such spans are not exported."""

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "record-only"


def provider(processor: InlineBatchSpanProcessor, sampler: Sampler = ALWAYS_ON) -> TracerProvider:
    made = TracerProvider(sampler=sampler)
    made.add_span_processor(processor)
    return made


def test_inline_processor_when_a_batch_fills_writes_it_on_the_thread_that_ended_its_last_span() -> None:
    exporter = Recorder()
    processor = InlineBatchSpanProcessor(exporter, batch=3, flush_seconds=60)
    tracer = provider(processor).get_tracer("t")
    for n in range(7):
        tracer.start_span(f"s{n}").end()
    assert exporter.batches == [["s0", "s1", "s2"], ["s3", "s4", "s5"]]
    assert exporter.threads == [threading.current_thread().name] * 2
    processor.shutdown()
    assert exporter.batches[-1] == ["s6"] and exporter.shut  # what was left, then the exporter shut down


def test_inline_processor_when_shut_down_exports_no_later_span() -> None:
    exporter = Recorder()
    processor = InlineBatchSpanProcessor(exporter, batch=1, flush_seconds=60)
    tracer = provider(processor).get_tracer("t")
    processor.shutdown()
    tracer.start_span("late").end()
    assert exporter.batches == [] and exporter.shut


def test_inline_processor_when_few_spans_come_its_flusher_writes_them_within_the_period() -> None:
    exporter = Recorder()
    processor = InlineBatchSpanProcessor(exporter, batch=100, flush_seconds=0.05)
    provider(processor).get_tracer("t").start_span("lone").end()
    deadline = time.monotonic() + 10
    while not exporter.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exporter.batches == [["lone"]] and exporter.threads == ["span-file-flush"]
    processor.shutdown()
    assert exporter.batches == [["lone"]]  # written once


def test_inline_processor_when_spans_are_recorded_but_not_sampled_exports_none() -> None:
    exporter = Recorder()
    processor = InlineBatchSpanProcessor(exporter, batch=1, flush_seconds=60)
    provider(processor, RecordOnly()).get_tracer("t").start_span("recorded").end()
    processor.shutdown()
    assert exporter.batches == []


def test_inline_processor_when_threads_end_spans_at_once_writes_each_span_once() -> None:
    exporter = Recorder()
    processor = InlineBatchSpanProcessor(exporter, batch=7, flush_seconds=0.01)
    tracer = provider(processor).get_tracer("t")

    def work(worker: int) -> None:
        for n in range(500):
            tracer.start_span(f"{worker}-{n}").end()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    processor.shutdown()
    names = [name for batch in exporter.batches for name in batch]
    assert sorted(names) == sorted(f"{w}-{n}" for w in range(4) for n in range(500))


def test_tracing_with_a_span_file_writes_its_lines_through_the_inline_processor(tmp_path: Path) -> None:
    tracing = Tracing("svc", tmp_path / "spans.jsonl")
    assert tracing.provider is not None
    with tracing.tracer.start_as_current_span("one"):
        pass
    tracing.force_flush()
    assert '"name":"one"' in (tmp_path / "spans.jsonl").read_text(encoding="utf-8")
    tracing.shutdown()
