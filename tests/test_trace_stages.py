"""Traces split into stages (spans, wire, queue) that add up to end to end; the `traces` command over them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from clients.trace_report import EXIT_NO_SPANS, EXIT_SPANS_ELSEWHERE, add_arguments, run_traces
from clients.trace_stages import FILLED, OPEN, REJECTED, break_down_all, waterfall_lines
from clients.traces import load_spans
from nautilus_mesh.telemetry import FRAME_RECEIVED_ATTRIBUTE, Tracing

MS = 1_000_000


def _span(
    trace: str, span: str, parent: str, name: str, start: float, end: float, *, received: float = 0, error: bool = False
) -> dict[str, Any]:
    service = name.split(".")[0]
    attributes: dict[str, Any] = {FRAME_RECEIVED_ATTRIBUTE: int(received * MS)} if received else {}
    return {
        "trace_id": trace,
        "span_id": span,
        "parent_span_id": parent,
        "name": name,
        "kind": "CONSUMER" if "receive" in name else "PRODUCER",
        "service": "strategy-demo" if service == "strategy" else service,
        "start_ns": int(start * MS),
        "end_ns": int(end * MS),
        "attributes": attributes,
        "status": "ERROR" if error else "UNSET",
    }


def filled_trace(trace: str, base: float) -> list[dict[str, Any]]:
    """strategy send 0-1, ops receive 3-6 (frame read at 2) with order send 4-5 nested, engine 8-9 (read 7),
    report send 10-11, ops report receive 13-15 (read 12) with fill send 14-15 nested, strategy fill 17-18 (read 16).
    """
    b = base
    return [
        _span(trace, "s1", "", "strategy.signal send", b + 0, b + 1),
        _span(trace, "o1", "s1", "ops.signal receive", b + 3, b + 6, received=b + 2),
        _span(trace, "o2", "o1", "ops.order send", b + 4, b + 5),
        _span(trace, "e1", "o2", "engine.order receive", b + 8, b + 9, received=b + 7),
        _span(trace, "e2", "e1", "engine.report send", b + 10, b + 11),
        _span(trace, "o3", "e2", "ops.report receive", b + 13, b + 15, received=b + 12),
        _span(trace, "o4", "o3", "ops.fill send", b + 14, b + 15),
        _span(trace, "s2", "o4", "strategy.fill receive", b + 17, b + 18, received=b + 16),
    ]


def write_spans(directory: Path, spans: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "all.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spans))
    return directory


@pytest.fixture
def span_dir(tmp_path: Path) -> Path:
    spans = [s for i in range(1, 6) for s in filled_trace(f"{i:032x}", i * 100.0)]
    spans += [
        _span("r" * 32, "s1", "", "strategy.signal send", 0, 1),
        _span("r" * 32, "o1", "s1", "ops.signal receive", 2, 4, received=1.5, error=True),
    ]
    # A slower filled trace: its engine hop waited 10 ms longer on the wire.
    slow = filled_trace("f" * 32, 1000.0)
    for s in slow[3:]:
        s["start_ns"] += 10 * MS
        s["end_ns"] += 10 * MS
        if s["attributes"]:
            s["attributes"][FRAME_RECEIVED_ATTRIBUTE] += 10 * MS
    return write_spans(tmp_path / "traces", spans + slow)


def test_break_down_when_trace_filled_splits_it_into_spans_wire_and_queue_that_add_up(span_dir: Path) -> None:
    breakdowns = {b.trace_id: b for b in break_down_all(load_spans(span_dir))}
    b = breakdowns[f"{1:032x}"]
    assert b.outcome == FILLED
    assert [(s.name, s.duration_ns / MS) for s in b.segments] == [
        ("strategy.signal send", 1),
        ("wire strategy->ops", 1),
        ("queue before ops.signal receive", 1),
        ("ops.signal receive", 3),  # the nested order send is part of it
        ("wire ops->engine", 1),
        ("queue before engine.order receive", 1),
        ("engine.order receive", 1),
        ("queue before engine.report send", 1),  # the engine's journal commit, inside one process
        ("engine.report send", 1),
        ("wire engine->ops", 1),
        ("queue before ops.report receive", 1),
        ("ops.report receive", 2),
        ("wire ops->strategy", 1),
        ("queue before strategy.fill receive", 1),
        ("strategy.fill receive", 1),
    ]
    assert b.end_to_end_ns == 18 * MS and b.stage_sum_ns == b.end_to_end_ns and b.coverage == 1.0


def test_break_down_when_a_hop_is_missing_leaves_its_time_unexplained(tmp_path: Path) -> None:
    spans = [s for s in filled_trace("a" * 32, 0) if s["name"] not in ("ops.signal receive", "ops.order send")]
    b = break_down_all(load_spans(write_spans(tmp_path, spans)))[0]
    assert b.outcome == FILLED
    assert b.coverage == pytest.approx(10 / 18)  # the chain starts at the engine (8 ms): 0-8 ms is no stage


def test_break_down_when_frame_read_time_unknown_counts_the_whole_gap_as_wire(tmp_path: Path) -> None:
    spans = filled_trace("a" * 32, 0)
    spans[1]["attributes"] = {}
    b = break_down_all(load_spans(write_spans(tmp_path, spans)))[0]
    assert [(s.name, s.duration_ns / MS) for s in b.segments[1:3]] == [
        ("wire strategy->ops", 2),
        ("ops.signal receive", 3),
    ]
    assert b.coverage == 1.0


def test_break_down_when_ops_rejects_reports_the_trace_as_rejected(span_dir: Path) -> None:
    rejected = [b for b in break_down_all(load_spans(span_dir)) if b.outcome == REJECTED]
    assert len(rejected) == 1 and rejected[0].end_to_end_ns == 4 * MS
    assert [s.name for s in rejected[0].segments][-1] == "ops.signal receive"


def test_break_down_when_no_fill_and_no_error_is_open(tmp_path: Path) -> None:
    spans = filled_trace("a" * 32, 0)[:4]
    assert [b.outcome for b in break_down_all(load_spans(write_spans(tmp_path, spans)))] == [OPEN]


def test_waterfall_when_printed_has_one_bar_row_per_stage(span_dir: Path) -> None:
    b = next(b for b in break_down_all(load_spans(span_dir)) if b.trace_id == "f" * 32)
    lines = waterfall_lines(b, width=28)
    assert lines[0].startswith(f"trace {'f' * 32} (filled): 28.000 ms end to end, stages add up to 100.0%")
    assert len(lines) == 1 + len(b.segments)
    assert lines[1].split()[:2] == ["strategy", "signal"] or lines[1].strip().startswith("strategy.signal send")
    assert "|█" in lines[1] and lines[-1].rstrip().endswith("█|")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run_traces(parser.parse_args(list(argv)), Console(force_terminal=False, width=200))
    out, err = capsys.readouterr()
    return code, out, err


def test_traces_when_run_reports_filled_apart_from_rejected(span_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--dir", str(span_dir))
    assert code == 0
    filled, rejected = out.split("rejected signals: latency by stage")
    assert filled.startswith("filled signals: latency by stage")
    assert "wire ops->engine" in filled and "queue before engine.order receive" in filled
    assert "filled: stages add up to end to end within 5% for 6 of 6 traces" in filled
    assert "rejected: stages add up to end to end within 5% for 1 of 1 traces" in rejected


def test_traces_when_slowest_given_prints_that_many_waterfalls_slowest_first(
    span_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--dir", str(span_dir), "--slowest", "3")
    headers = [line for line in out.splitlines() if line.startswith("trace ")]
    assert code == 0 and len(headers) == 3
    assert headers[0].startswith(f"trace {'f' * 32} (filled): 28.000 ms")


def test_traces_when_trace_given_prints_only_its_waterfall(span_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--dir", str(span_dir), "--trace", "r" * 32)
    assert code == 0
    assert out.strip().splitlines()[0].startswith(f"trace {'r' * 32} (rejected)")
    assert "latency by stage" not in out


def test_traces_when_trace_unknown_exits_1(span_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--dir", str(span_dir), "--trace", "0" * 32)
    assert code == EXIT_NO_SPANS and "no trace" in err


def test_traces_when_json_given_prints_one_document(span_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--dir", str(span_dir), "--json", "--slowest", "1")
    doc = json.loads(out)
    assert code == 0
    assert doc["filled"]["count"] == 6 and doc["filled"]["within_tolerance"] == 6
    assert doc["rejected"]["count"] == 1 and doc["open"]["count"] == 0
    kinds = {s["name"]: s["kind"] for s in doc["filled"]["stages"]}
    assert kinds["wire strategy->ops"] == "wire" and kinds["ops.signal receive"] == "span"
    wire = next(s for s in doc["filled"]["stages"] if s["name"] == "wire ops->engine")
    assert wire["p50_ms"] == pytest.approx(1.0) and wire["p99_ms"] == pytest.approx(10.5)
    assert [w["trace_id"] for w in doc["waterfalls"]] == ["f" * 32]
    assert doc["waterfalls"][0]["coverage"] == 1.0


def test_traces_when_no_spans_exits_1_saying_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--dir", str(tmp_path))
    assert code == EXIT_NO_SPANS and "no spans found" in err


def test_traces_when_services_exported_over_otlp_says_where_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    tracing = Tracing("ops", tmp_path / "traces" / "ops.jsonl")  # notes where its spans go
    tracing.shutdown()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    code, _, err = run(capsys, "--dir", str(tmp_path / "traces"))
    assert code == EXIT_SPANS_ELSEWHERE
    assert "exported over OTLP (ops -> http://127.0.0.1:1)" in err


def test_traces_when_otlp_is_on_and_old_span_files_are_left_says_they_are_older(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ops.jsonl").write_text(
        json.dumps({"trace_id": "0" * 31 + "1", "span_id": "1", "parent_span_id": "", "name": "ops.signal receive",
                    "kind": "CONSUMER", "service": "ops", "start_ns": 1, "end_ns": 2, "attributes": {}}) + "\n"
    )  # fmt: skip
    (tmp_path / "ops.otlp.json").write_text(json.dumps({"service": "ops", "endpoint": "http://127.0.0.1:1"}))
    code, _, err = run(capsys, "--dir", str(tmp_path))
    assert "ops exports its spans over OTLP (http://127.0.0.1:1); the span files here are older" in err
    assert code == EXIT_SPANS_ELSEWHERE  # the old files are read, but a script is told they are not current


def test_tracing_when_back_on_span_files_removes_its_otlp_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    Tracing("ops", tmp_path / "ops.jsonl").shutdown()
    assert (tmp_path / "ops.otlp.json").exists()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    Tracing("ops", tmp_path / "ops.jsonl").shutdown()
    assert not (tmp_path / "ops.otlp.json").exists()


def test_traces_when_otlp_endpoint_in_environment_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    code, _, err = run(capsys, "--dir", str(tmp_path))
    assert code == EXIT_SPANS_ELSEWHERE and "http://collector:4317" in err


async def test_consumer_span_when_its_frame_was_read_records_the_instant(tmp_path: Path) -> None:
    import asyncio

    from nautilus_mesh.api.common.v1 import common_pb2
    from nautilus_mesh.telemetry import frame_received

    tracing = Tracing("t", tmp_path / "spans.jsonl")
    sampled = common_pb2.TraceContext(traceparent=f"00-{'4' * 32}-{'1' * 16}-01")

    async def reader() -> None:  # a stream's reading task: the instant stays with the task that read the frame
        frame_received()
        with tracing.consume("ops.signal receive", sampled):
            pass

    with tracing.consume("before any frame", sampled):
        pass
    await asyncio.create_task(reader())
    tracing.shutdown()
    spans = {s.name: s for s in load_spans(tmp_path)}
    read_at = spans["ops.signal receive"].received_ns
    assert 0 < read_at <= spans["ops.signal receive"].start_ns
    assert spans["before any frame"].received_ns == 0
