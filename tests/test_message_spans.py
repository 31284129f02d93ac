"""Message spans (``nautilus_mesh.message_spans``): what the exporters receive is what the SDK's own span gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.message_spans import RecordingSpan
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, OPS_SIGNAL_STREAM, Tracing, extract, messaging_attributes

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def spans_of(tracing: Tracing, path: Path) -> list[dict[str, Any]]:
    tracing.force_flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(span: dict[str, Any]) -> dict[str, Any]:
    """A span record without its own span id and times (and with the exception's stack trace cut to its last line)."""
    events = [
        {**e, "attributes": {**e["attributes"], "exception.stacktrace": e["attributes"]["exception.stacktrace"][-40:]}}
        if "exception.stacktrace" in e["attributes"]
        else e
        for e in span["events"]
    ]
    return {k: v for k, v in span.items() if k not in ("span_id", "start_ns", "end_ns")} | {"events": events}


def sdk_span(tracing: Tracing, name: str, kind: SpanKind, carrier: common_pb2.TraceContext, attrs: dict[str, Any]):  # type: ignore[no-untyped-def]
    return tracing.tracer.start_as_current_span(name, context=extract(carrier), kind=kind, attributes=attrs)


def asked_and_skipped(sampler: Any, parent: Any, *, root_trace_id: int = 0, **skip: bool) -> tuple[Any, Any]:
    """The same span started twice with ``start_span``: asking ``sampler``, then with ``skip`` (the keyword that lets
    it take the decision without the sampler) set."""
    from opentelemetry.sdk.resources import Resource

    from nautilus_mesh.message_spans import start_span

    class Drop:
        def on_end(self, span: object) -> None:
            pass

    made = [
        start_span(
            "span",
            SpanKind.CONSUMER,
            parent,
            {"a": "b"},
            sampler=sampler,
            resource=Resource.create({}),
            processor=Drop(),  # type: ignore[arg-type]
            root_trace_id=root_trace_id,
            **{name: on and value for name, value in skip.items()},
        )
        for on in (False, True)
    ]
    return made[0], made[1]


def same_decision(asked: Any, skipped: Any) -> bool:
    a, b = asked.get_span_context(), skipped.get_span_context()
    return (a.trace_id, a.trace_flags, a.trace_state, asked.is_recording()) == (
        b.trace_id,
        b.trace_flags,
        b.trace_state,
        skipped.is_recording(),
    )


@pytest.fixture
def tracing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tracing:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    return Tracing("ops", tmp_path / "spans.jsonl")


def test_consume_and_produce_record_what_the_sdk_span_records(tracing: Tracing, tmp_path: Path) -> None:
    attrs = {"messaging.message.id": "s-1", "nautilus.model_id": "m1", "nautilus.signal_id": "s-1"}
    carrier = common_pb2.TraceContext(traceparent=SAMPLED_PARENT)
    out = common_pb2.TraceContext()
    with tracing.consume("ops.signal receive", carrier, attrs, destination=OPS_SIGNAL_STREAM) as span:
        assert isinstance(span, RecordingSpan)  # made here, not by the SDK
        span.set_attribute("nautilus.client_order_id", "o-1")
        span.add_event("rejected", {"code": "X"})
        with tracing.produce(
            "ops.order send", out, {"nautilus.client_order_id": "o-1"}, destination=ENGINE_ORDER_STREAM
        ):
            pass
    consume_attrs = attrs | messaging_attributes("receive", OPS_SIGNAL_STREAM)
    with sdk_span(tracing, "ops.signal receive", SpanKind.CONSUMER, carrier, consume_attrs) as span:
        span.set_attribute("nautilus.client_order_id", "o-1")
        span.add_event("rejected", {"code": "X"})
        produce_attrs = {"nautilus.client_order_id": "o-1"} | messaging_attributes("send", ENGINE_ORDER_STREAM)
        with tracing.tracer.start_as_current_span("ops.order send", kind=SpanKind.PRODUCER, attributes=produce_attrs):
            pass
    ours_produce, ours_consume, sdk_produce, sdk_consume = spans_of(  # in the order they ended
        tracing, tmp_path / "spans.jsonl"
    )
    assert comparable(ours_consume) == comparable(sdk_consume)
    assert comparable(ours_produce) | {"parent_span_id": ""} == comparable(sdk_produce) | {"parent_span_id": ""}
    assert ours_consume["parent_span_id"] == "b7ad6b7169203331"  # the carrier's span
    assert ours_produce["parent_span_id"] == ours_consume["span_id"]  # the current span while it was made
    assert out.traceparent == f"00-{ours_produce['trace_id']}-{ours_produce['span_id']}-01"
    assert ours_consume["start_ns"] <= ours_produce["start_ns"] <= ours_produce["end_ns"] <= ours_consume["end_ns"]


def test_an_exception_leaving_the_block_is_recorded_as_the_sdk_records_it(tracing: Tracing, tmp_path: Path) -> None:
    carrier = common_pb2.TraceContext(traceparent=SAMPLED_PARENT)
    with pytest.raises(ValueError, match="boom"), tracing.consume("engine.order receive", carrier, {"a": 1}):
        raise ValueError("boom")
    with (
        pytest.raises(ValueError, match="boom"),
        sdk_span(tracing, "engine.order receive", SpanKind.CONSUMER, carrier, {"a": 1}),
    ):
        raise ValueError("boom")
    ours, sdk = spans_of(tracing, tmp_path / "spans.jsonl")
    assert ours["status"] == "ERROR" and ours["status_message"] == "ValueError: boom"
    assert ours["events"][0]["attributes"]["exception.type"] == "ValueError"
    assert comparable(ours) == comparable(sdk)


def test_status_ok_is_final_unset_is_ignored_and_an_ended_span_changes_no_more(
    tracing: Tracing, tmp_path: Path
) -> None:
    carrier = common_pb2.TraceContext(traceparent=SAMPLED_PARENT)
    with tracing.consume("a", carrier) as first:
        first.set_status(Status(StatusCode.ERROR, "X"))
        first.set_status(StatusCode.UNSET)
    with tracing.consume("b", carrier) as second:
        second.set_status(StatusCode.OK)
        second.set_status(Status(StatusCode.ERROR, "late"))
    second.set_attribute("after", "end")
    second.add_event("after")
    assert not second.is_recording()
    a, b = spans_of(tracing, tmp_path / "spans.jsonl")
    assert (a["status"], a["status_message"]) == ("ERROR", "X")
    assert (b["status"], b["attributes"].get("after"), b["events"]) == ("OK", None, [])


def test_a_span_the_sampler_drops_is_not_recorded_and_carries_an_unsampled_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # not parent-based: drops even a sampled parent's child
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    tracing = Tracing("engine", tmp_path / "spans.jsonl")
    out = common_pb2.TraceContext()
    with tracing.produce("engine.report send", out, parent=common_pb2.TraceContext(traceparent=SAMPLED_PARENT)) as span:
        assert not span.is_recording()
    tracing.force_flush()
    assert not (tmp_path / "spans.jsonl").exists() or not (tmp_path / "spans.jsonl").read_text()
    assert out.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-") and out.traceparent.endswith("-00")


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [
        (SAMPLED_PARENT, ""),
        (SAMPLED_PARENT[:-2] + "00", ""),
        (SAMPLED_PARENT, "vendor=1,other=2"),
        (SAMPLED_PARENT.upper(), ""),
        ("ff" + SAMPLED_PARENT[2:], ""),
        ("01" + SAMPLED_PARENT[2:] + "-extra", ""),
        ("00-" + "0" * 32 + "-b7ad6b7169203331-01", ""),
        ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", ""),
        (SAMPLED_PARENT + "-extra", ""),
        ("00-0af7651916cd43dd8448eb211c8031_c-b7ad6b7169203331-01", ""),
        ("garbage", ""),
    ],
)
def test_extract_gives_the_context_the_w3c_propagator_gives(traceparent: str, tracestate: str) -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers = {"traceparent": traceparent} | ({"tracestate": tracestate} if tracestate else {})
    expected = trace.get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()
    context = extract(common_pb2.TraceContext(traceparent=traceparent, tracestate=tracestate))
    got = trace.get_current_span(context).get_span_context()
    assert (got.trace_id, got.span_id, got.trace_flags, got.is_remote, got.is_valid) == (
        expected.trace_id,
        expected.span_id,
        expected.trace_flags,
        expected.is_remote,
        expected.is_valid,
    )
    assert got.trace_state == expected.trace_state


def test_span_file_writes_sequence_attributes_as_json_arrays(tracing: Tracing, tmp_path: Path) -> None:
    with tracing.consume("a", common_pb2.TraceContext(traceparent=SAMPLED_PARENT)) as span:
        span.set_attribute("venues", ("sim", "paper"))
        span.set_attribute("n", 3)
        span.set_attribute("missing", None)  # dropped, as the SDK drops it
    (record,) = spans_of(tracing, tmp_path / "spans.jsonl")
    assert record["attributes"] == {"venues": ["sim", "paper"], "n": 3}


@pytest.mark.parametrize(
    ("sampler", "decides"),
    [
        ("parentbased_always_on", True),
        ("parentbased_always_off", True),
        ("parentbased_traceidratio", True),
        ("always_on", False),
        ("traceidratio", False),
    ],
)
def test_parent_decides_for_the_parent_based_samplers_only(
    sampler: str, decides: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    from nautilus_mesh.message_spans import parent_decides

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert parent_decides(TracerProvider().sampler) is decides
    assert not parent_decides(ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON))  # a delegate of its own


@pytest.mark.parametrize("flags", ["01", "00"])
@pytest.mark.parametrize("remote", [True, False])
@pytest.mark.parametrize("tracestate", ["", "vendor=1,other=2"])
def test_a_child_that_follows_its_parent_gets_what_the_sampler_gives(flags: str, remote: bool, tracestate: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    parent = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=remote,
        trace_flags=TraceFlags(int(flags, 16)),
        trace_state=TraceState.from_header([tracestate]) if tracestate else TraceState(),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    sampler = ParentBasedTraceIdRatio(0.0)  # a root here would never be sampled
    asked, skipped = asked_and_skipped(sampler, context, follow_parent=True)
    assert same_decision(asked, skipped)
    followed = skipped.get_span_context()
    assert followed.trace_flags.sampled is (flags == "01") and followed.trace_state == parent.trace_state
    assert skipped.is_recording() is (flags == "01")


@pytest.mark.parametrize(
    ("sampler", "arg", "bound"),
    [
        ("parentbased_traceidratio", "0.25", 1 << 62),
        ("parentbased_traceidratio", "0", 0),
        ("parentbased_always_on", "", 1 << 64),
        ("parentbased_always_off", "", 0),
        ("traceidratio", "0.25", None),  # not parent-based: asked for every span
        ("always_on", "", None),
    ],
)
def test_root_bound_of_the_samplers_that_decide_a_root_by_its_trace_id(
    sampler: str, arg: str, bound: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    from nautilus_mesh.message_spans import root_bound

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    assert root_bound(TracerProvider().sampler) == bound

    class Stricter(TraceIdRatioBased):  # a subclass may decide otherwise: asked
        pass

    assert root_bound(ParentBased(Stricter(0.5))) is None
    assert root_bound(ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON)) is None


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_root_sampled_decides_as_the_sdk_sampler_for_every_trace_id(rate: float) -> None:
    import random

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Decision, ParentBasedTraceIdRatio, TraceIdRatioBased

    from nautilus_mesh.message_spans import root_bound, root_sampled

    sampler = ParentBasedTraceIdRatio(rate)
    bound = root_bound(sampler)
    assert bound is not None
    low = TraceIdRatioBased.get_bound_for_rate(rate)
    edges = [1, low - 1, low, low + 1, (1 << 64) - 1, (1 << 64) | max(low - 1, 0), (1 << 128) - 1]
    rng = random.Random(7)
    for trace_id in [t for t in edges if t > 0] + [rng.getrandbits(128) or 1 for _ in range(2000)]:
        asked = sampler.should_sample(Context(), trace_id, "root", SpanKind.CONSUMER)
        assert root_sampled(bound, trace_id) is (asked.decision is Decision.RECORD_AND_SAMPLE), hex(trace_id)


def test_a_root_decided_by_its_trace_id_gets_what_the_sampler_gives() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    asked, decided = asked_and_skipped(ParentBasedTraceIdRatio(1.0), None, root_decided=True, root_trace_id=trace_id)
    assert same_decision(asked, decided)
    assert decided.get_span_context().trace_id == trace_id and decided.is_recording()


@pytest.mark.parametrize("ratio", ["0.0", "0.3", "1.0"])
def test_a_message_without_a_trace_is_sampled_as_its_trace_id_says(
    ratio: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    tracing = Tracing("ops", tmp_path / "spans.jsonl")
    seen = []
    for _ in range(300):
        out = common_pb2.TraceContext()
        with tracing.consume("ops.signal receive", common_pb2.TraceContext()):
            if tracing.in_unsampled_trace():
                tracing.carry_unsampled(out)
        seen.append(out.traceparent)
    spans = spans_of(tracing, tmp_path / "spans.jsonl")
    bound = TraceIdRatioBased.get_bound_for_rate(float(ratio))
    for span in spans:  # each sampled root's trace id is one the ratio samples
        assert int(span["trace_id"], 16) & ((1 << 64) - 1) < bound
    for traceparent in filter(None, seen):  # each unsampled one's is one it does not
        assert int(traceparent.split("-")[1], 16) & ((1 << 64) - 1) >= bound
    assert len(spans) + len(list(filter(None, seen))) == 300
    assert (len(spans) == 300) is (ratio == "1.0") and (len(spans) == 0) is (ratio == "0.0")
