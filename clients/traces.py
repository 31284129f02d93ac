"""Span files read back: the spans of ``var/traces/`` and latency percentiles over them.

With no OTLP collector configured, every service writes its spans as JSON lines under ``var/traces/`` (see
``nautilus_mesh.span_export.JsonlSpanExporter``). This module loads them (:func:`load_spans`, rotated files
included) and computes percentiles (:func:`percentile`, linear interpolation) and per-span-name statistics; the
stage-by-stage report of ``nautilus-mesh traces`` (end to end from the strategy's signal to its first fill) is built
on them in :mod:`clients.trace_stages` and :mod:`clients.trace_report`.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nautilus_mesh.files import read_jsonl
from nautilus_mesh.telemetry import FRAME_RECEIVED_ATTRIBUTE

__all__ = [
    "END_TO_END",
    "SpanRecord",
    "StageStats",
    "load_spans",
    "percentile",
    "print_table",
    "render_summary",
    "stage_stats",
    "summarize_spans",
]

END_TO_END = "end-to-end (per trace)"
"""Name of the synthetic stage that measures whole traces."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    Returns 0.0 for an empty sequence so summaries stay JSON-serialisable; check the count.
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


@dataclass(frozen=True)
class SpanRecord:
    """The fields of one span line that the summary needs."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    status: str = ""
    received_ns: int = 0
    """When the frame carrying the span's message was read off the stream (CONSUMER spans; 0 when unknown)."""

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass(frozen=True)
class StageStats:
    """Latency percentiles of one stage, in milliseconds."""

    name: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    services: tuple[str, ...] = ()


def load_spans(directory: str | os.PathLike[str]) -> list[SpanRecord]:
    """Every well-formed span in the ``*.jsonl`` files of ``directory`` and the ``*.jsonl.1`` each rotated to
    (``NAUTILUS_SPAN_FILE_MAX_BYTES``); malformed lines are skipped."""
    spans: list[SpanRecord] = []
    root = Path(directory)
    if not root.is_dir():
        return spans
    for path in sorted([*root.glob("*.jsonl.1"), *root.glob("*.jsonl")]):
        for record in read_jsonl(path):
            try:
                spans.append(
                    SpanRecord(
                        trace_id=str(record["trace_id"]),
                        span_id=str(record["span_id"]),
                        parent_span_id=str(record.get("parent_span_id") or ""),
                        name=str(record["name"]),
                        kind=str(record.get("kind", "")),
                        service=str(record.get("service", "")),
                        start_ns=int(record["start_ns"]),
                        end_ns=int(record["end_ns"]),
                        status=str(record.get("status", "")),
                        received_ns=int((record.get("attributes") or {}).get(FRAME_RECEIVED_ATTRIBUTE, 0)),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a span without timing cannot contribute a latency
    return spans


def stage_stats(name: str, durations_ns: Sequence[int], services: Iterable[str] = ()) -> StageStats:
    ms = [d / 1e6 for d in durations_ns]
    return StageStats(
        name=name,
        count=len(ms),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        services=tuple(sorted(set(services))),
    )


def summarize_spans(spans: Iterable[SpanRecord]) -> tuple[list[StageStats], StageStats]:
    """Per-stage stats (ordered by median start offset within their traces) and end-to-end stats.

    End to end covers traces with at least two spans: a lone span is already a stage.
    """
    by_name: dict[str, list[int]] = defaultdict(list)
    services: dict[str, set[str]] = defaultdict(set)
    traces: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_name[span.name].append(span.duration_ns)
        services[span.name].add(span.service)
        traces[span.trace_id].append(span)

    # Order stages as they happen: by their median offset from the start of their trace.
    offsets: dict[str, list[int]] = defaultdict(list)
    end_to_end: list[int] = []
    for members in traces.values():
        first = min(s.start_ns for s in members)
        for s in members:
            offsets[s.name].append(s.start_ns - first)
        if len(members) >= 2:
            end_to_end.append(max(s.end_ns for s in members) - first)
    order = sorted(by_name, key=lambda n: (percentile(offsets[n], 50), n))
    stages = [stage_stats(name, by_name[name], services[name]) for name in order]
    return stages, stage_stats(END_TO_END, end_to_end)


def render_summary(stages: Sequence[StageStats], end_to_end: StageStats, console: Console, *, source: str) -> None:
    """Print the per-stage and end-to-end latency table."""
    if not stages:
        console.print(f"no spans found in {source}")
        return
    rows = [
        [s.name, ",".join(s.services), str(s.count), f"{s.p50_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.p99_ms:.3f}"]
        for s in (*stages, end_to_end)
    ]
    headers = ["stage", "service", "count", "p50 ms", "p90 ms", "p99 ms"]
    print_table(console, f"latency by stage ({source})", headers, rows)


def print_table(console: Console, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal, aligned plain text otherwise (logs, pipes, CI)."""
    if console.is_terminal:
        table = Table(title=title)
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i < 2 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()
