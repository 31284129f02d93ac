"""The embedded latency dashboard: span files to per-stage and end-to-end percentiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from clients.traces import END_TO_END, load_spans, percentile, render_summary, summarize_spans
from nautilus_mesh.files import JsonlWriter, read_jsonl

MS = 1_000_000


def _span(trace: str, span: str, name: str, start_ms: float, end_ms: float, service: str) -> dict[str, object]:
    return {
        "trace_id": trace,
        "span_id": span,
        "parent_span_id": "",
        "name": name,
        "kind": "PRODUCER",
        "service": service,
        "start_ns": int(start_ms * MS),
        "end_ns": int(end_ms * MS),
        "attributes": {},
    }


@pytest.fixture
def span_dir(tmp_path: Path) -> Path:
    """Ten traces: strategy send (i ms) -> ops receive (2 ms) -> strategy fill (1 ms), in two files."""
    strategy, ops = [], []
    for i in range(1, 11):
        t = f"{i:032x}"
        base = i * 1000.0
        strategy.append(_span(t, f"a{i}", "strategy.signal send", base, base + i, "strategy-demo"))
        ops.append(_span(t, f"b{i}", "ops.signal receive", base + i, base + i + 2, "ops"))
        strategy.append(_span(t, f"c{i}", "strategy.fill receive", base + 20, base + 21, "strategy-demo"))
    (tmp_path / "strategies.jsonl").write_text("".join(json.dumps(s) + "\n" for s in strategy) + '{"torn":')
    (tmp_path / "ops.jsonl").write_text("".join(json.dumps(s) + "\n" for s in ops))
    (tmp_path / "notes.txt").write_text("not a span file")
    return tmp_path


def test_percentile_when_values_given_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0


def test_percentile_when_empty_returns_zero() -> None:
    assert percentile([], 99) == 0.0


def test_load_spans_when_file_has_torn_line_skips_it(span_dir: Path) -> None:
    spans = load_spans(span_dir)
    assert len(spans) == 30
    assert {s.service for s in spans} == {"strategy-demo", "ops"}


def test_load_spans_reads_a_rotated_file_too(span_dir: Path) -> None:
    """A span file past its size rotates to <name>.jsonl.1: its spans (the older half of a trace) were left out."""
    (span_dir / "ops.jsonl").rename(span_dir / "ops.jsonl.1")
    assert len(load_spans(span_dir)) == 30


def test_summarize_spans_when_span_files_given_reports_stage_percentiles_in_pipeline_order(span_dir: Path) -> None:
    stages, end_to_end = summarize_spans(load_spans(span_dir))
    assert [s.name for s in stages] == ["strategy.signal send", "ops.signal receive", "strategy.fill receive"]
    send, receive, fill = stages
    assert send.count == 10
    assert send.p50_ms == pytest.approx(5.5)
    assert send.p90_ms == pytest.approx(9.1)
    assert send.p99_ms == pytest.approx(9.91)
    assert receive.p50_ms == pytest.approx(2.0) and receive.services == ("ops",)
    assert fill.p99_ms == pytest.approx(1.0)
    assert end_to_end.name == END_TO_END
    assert end_to_end.count == 10
    assert end_to_end.p50_ms == pytest.approx(21.0)  # first start -> last end of every trace


def test_summarize_spans_when_trace_has_one_span_leaves_it_out_of_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "s.jsonl").write_text(json.dumps(_span("t1", "a", "strategy.signal send", 0, 3, "s")) + "\n")
    stages, end_to_end = summarize_spans(load_spans(tmp_path))
    assert [(s.name, s.count) for s in stages] == [("strategy.signal send", 1)]
    assert end_to_end.count == 0


def test_load_spans_when_directory_missing_returns_no_spans(tmp_path: Path) -> None:
    assert load_spans(tmp_path / "missing") == []


def test_render_summary_when_not_a_terminal_prints_plain_rows(span_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as fh:
        console = Console(file=fh, force_terminal=False)
        stages, end_to_end = summarize_spans(load_spans(span_dir))
        render_summary(stages, end_to_end, console, source=str(span_dir))
    lines = out.read_text().splitlines()
    assert lines[1].split() == ["stage", "service", "count", "p50", "ms", "p90", "ms", "p99", "ms"]
    assert lines[2].startswith("strategy.signal send") and "5.500" in lines[2]
    assert lines[-1].startswith(END_TO_END)


def test_span_file_when_past_its_size_rotates_to_one_previous_part(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    writer = JsonlWriter(path, max_bytes=300)
    for i in range(20):
        writer.append({"span": i, "pad": "x" * 40})
    writer.close()
    previous = path.with_name("spans.jsonl.1")
    assert previous.exists() and path.stat().st_size <= 300 + 80
    assert previous.stat().st_size <= 300 + 80  # never much more than max_bytes a part
    kept = [r["span"] for r in read_jsonl(previous)] + [r["span"] for r in read_jsonl(path)]
    assert kept == sorted(kept) and kept[-1] == 19  # the newest spans are kept, in order
