"""Tracing: OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set (to a real gRPC collector endpoint on loopback)."""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.telemetry import Tracing, extract, is_sampled, is_unsampled, trace_id_of


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver that remembers span names and trace ids."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.received = threading.Event()

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((s.name, s.trace_id.hex()) for s in scope_spans.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_tracing_when_otlp_endpoint_set_exports_spans_over_otlp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        tracing = Tracing("otlp-test", tmp_path / "unused.jsonl")
        carrier = common_pb2.TraceContext()
        with tracing.produce("strategy.signal send", carrier):
            pass_on = carrier.traceparent
        tracing.force_flush()
        assert collector.received.wait(10)
        assert ("strategy.signal send", trace_id_of(pass_on)) in collector.spans
        tracing.shutdown()
        assert not (tmp_path / "unused.jsonl").exists()  # OTLP replaces the local file
    finally:
        server.stop(None)


async def test_consumer_span_when_message_carries_context_joins_that_trace(tmp_path: Path) -> None:
    tracing = Tracing("t", tmp_path / "spans.jsonl")
    outgoing = common_pb2.TraceContext()
    with tracing.produce("a send", outgoing):
        await asyncio.sleep(0)
    with tracing.consume("b receive", outgoing) as span:
        assert f"{span.get_span_context().trace_id:032x}" == trace_id_of(outgoing.traceparent)
    assert extract(common_pb2.TraceContext()) is None  # an empty carrier starts no trace
    tracing.shutdown()


def _ratio_tracing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ratio: str) -> Tracing:
    """A service's tracing that samples roots at ``ratio`` (as ``make run`` configures it)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    return Tracing("roots", tmp_path / "spans.jsonl")


def _root_then_child(tracing: Tracing) -> tuple[object, str]:
    """A message consumed with no trace context (a root here), and what its order would carry on."""
    carried = common_pb2.TraceContext()
    with tracing.consume("root receive", common_pb2.TraceContext()) as span, tracing.produce("child send", carried):
        pass
    return span, carried.traceparent


def _one_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ratio: str) -> tuple[Tracing, object, str]:
    """One root and its child under a sampling ``ratio``, flushed: the tracing, the root span and the child's
    carried traceparent."""
    tracing = _ratio_tracing(monkeypatch, tmp_path, ratio)
    span, carried = _root_then_child(tracing)
    tracing.force_flush()
    return tracing, span, carried


def test_root_when_sampler_says_no_makes_no_span_and_carries_an_unsampled_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracing, span, carried = _one_root(monkeypatch, tmp_path, "0")
    assert not span.get_span_context().is_valid  # no span work at all, not even a non-recording SDK span
    assert is_unsampled(carried)  # the order carries the decision on, so the engine skips its spans too
    assert not (tmp_path / "spans.jsonl").exists() or not (tmp_path / "spans.jsonl").read_text().strip()
    tracing.shutdown()


def test_root_when_sampler_says_yes_is_a_recorded_trace_with_the_decided_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracing, span, carried = _one_root(monkeypatch, tmp_path, "1")
    context = span.get_span_context()  # type: ignore[attr-defined]
    assert context.is_valid and context.trace_flags.sampled
    assert is_sampled(carried) and trace_id_of(carried) == f"{context.trace_id:032x}"
    names = (tmp_path / "spans.jsonl").read_text()
    assert "root receive" in names and "child send" in names
    tracing.shutdown()


def test_root_sampling_at_a_ratio_records_about_that_share_of_roots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracing = _ratio_tracing(monkeypatch, tmp_path, "0.25")
    sampled = sum(is_sampled(_root_then_child(tracing)[1]) for _ in range(4000))
    tracing.shutdown()
    assert 800 <= sampled <= 1200  # 1000 expected; a binomial sd of 27, so this fails only if the ratio is wrong
