"""The span file's lines (``JsonlSpanExporter``) and the trace context the engine writes (``telemetry.inject``).

Each line is checked against the documented record, built here key by key and encoded with ``files.dumps``: the
exporter writes its lines without building that record (and encodes the span's values with orjson where that gives the
same text), so the test holds the two equal character for character, floats aside (the same number, maybe spelled
otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.files import dumps
from nautilus_mesh.span_export import JsonlSpanExporter
from nautilus_mesh.telemetry import inject

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7
PARENT_ID = 0xB7AD6B7169203331


def record(span: ReadableSpan) -> dict[str, Any]:
    """The span file's record of ``span``, as the exporter's docstring describes it."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "service": str(span.resource.attributes.get("service.name", "")),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "status": span.status.status_code.name,
        "status_message": span.status.description or "",
    }


def readable(
    name: str = "ops.order send",
    *,
    parent: bool = True,
    kind: SpanKind = SpanKind.PRODUCER,
    attributes: dict[str, Any] | None = None,
    events: tuple[Event, ...] = (),
    status: Status | None = None,
    resource: Resource | None = None,
    end: int | None = 1_700_000_000_000_002_000,
) -> ReadableSpan:
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent_context = SpanContext(TRACE_ID, PARENT_ID, is_remote=True) if parent else None
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent_context,
        resource=resource if resource is not None else Resource.create({"service.name": "ops"}),
        attributes=attributes,
        events=events,
        kind=kind,
        status=status if status is not None else Status(StatusCode.UNSET),
        start_time=1_700_000_000_000_000_000,
        end_time=end,
    )


SPANS = {
    "a child span with attributes": readable(
        attributes={"messaging.message.id": "o-1", "nautilus.frame.received_ns": 17, "ratio": 0.25, "ok": True}
    ),
    "a root span with no attributes": readable("ops.signal receive", parent=False, kind=SpanKind.CONSUMER),
    "events and an error status": readable(
        events=(Event("rejected", {"code": "MAX_POSITION", "kind": "risk"}), Event("retry", None)),
        status=Status(StatusCode.ERROR, 'RiskRejectedError: "quota" exceeded'),
    ),
    "tuple values and text to escape": readable(
        "engine.order receive \u00e9\u2713",
        attributes={"venues": ("sim", "paper"), "note": 'line\nbreak "quoted" \\ tab\t', "sizes": (1, 2)},
    ),
    "a resource without a service name": readable(resource=Resource({"host.name": "h1"})),
    "a span not ended": readable(end=None),
    "text outside ASCII in an attribute and an event": readable(
        attributes={"model": "mom\u00e9ntum"}, events=(Event("note", {"text": "\u2713 ok"}),)
    ),
}


@pytest.mark.parametrize("case", list(SPANS))
def test_each_line_is_the_documented_record_character_for_character(case: str, tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    exporter.export([SPANS[case]])
    exporter.shutdown()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line == dumps(record(SPANS[case]))
    assert json.loads(line) == json.loads(dumps(record(SPANS[case])))


def test_a_float_is_the_same_number_however_it_is_spelled(tmp_path: Path) -> None:
    span = readable(attributes={"tiny": 1e-07, "huge": 1e16, "third": 1 / 3})
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    exporter.export([span])
    exporter.shutdown()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == json.loads(dumps(record(span)))
    assert json.loads(line)["attributes"] == {"tiny": 1e-07, "huge": 1e16, "third": 1 / 3}


def test_an_integer_beyond_64_bits_is_written_as_the_standard_encoder_writes_it(tmp_path: Path) -> None:
    span = readable(attributes={"big": 2**70, "small": -(2**63)})
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    exporter.export([span])
    exporter.shutdown()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line == dumps(record(span))
    assert json.loads(line)["attributes"]["big"] == 2**70


def test_spans_of_two_services_in_one_batch_name_their_own_service(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    ops, engine = Resource.create({"service.name": "ops"}), Resource.create({"service.name": "engine"})
    exporter.export([readable(resource=ops), readable(resource=engine), readable(resource=ops)])
    exporter.shutdown()
    assert [json.loads(line)["service"] for line in path.read_text().splitlines()] == ["ops", "engine", "ops"]


def test_sdk_spans_with_bounded_attributes_export_as_their_record(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    provider = TracerProvider(resource=Resource.create({"service.name": "engine"}))
    ended: list[ReadableSpan] = []

    class Keep(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    provider.add_span_processor(Keep(exporter))
    with provider.get_tracer("t").start_as_current_span("rpc", attributes={"rpc.method": "GetHealth"}) as span:
        span.add_event("deadline", {"left_ms": 12})
        span.set_status(Status(StatusCode.ERROR, "DEADLINE_EXCEEDED"))
    exporter.export(ended)
    exporter.shutdown()
    (line,) = path.read_text().splitlines()
    assert line == dumps(record(ended[0]))
    assert json.loads(line)["attributes"] == {"rpc.method": "GetHealth"}


@pytest.mark.parametrize(
    "context",
    [
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT)),
        SpanContext(
            TRACE_ID,
            SPAN_ID,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
        ),
    ],
    ids=["sampled", "unsampled", "with trace state"],
)
def test_inject_writes_what_the_w3c_propagator_writes(context: SpanContext) -> None:
    headers: dict[str, str] = {}
    carrier = common_pb2.TraceContext(traceparent="stale", tracestate="stale")
    with trace.use_span(NonRecordingSpan(context)):
        TraceContextTextMapPropagator().inject(headers)
        inject(carrier)
    assert carrier.traceparent == headers["traceparent"]
    assert carrier.tracestate == headers.get("tracestate", "")


def test_inject_without_a_current_span_writes_an_empty_context() -> None:
    carrier = common_pb2.TraceContext(traceparent="stale", tracestate="stale")
    inject(carrier)
    assert (carrier.traceparent, carrier.tracestate) == ("", "")
