"""One trace split into stages that add up to its end-to-end time: spans, and the wire and queue segments between.

A signal's trace is a chain of hops (strategy send, ops receive, engine receive, engine report send, ops report
receive, strategy fill receive), each a span in its own process. Spans nested in a span of the same service (ops'
order send inside its signal receive) are part of their parent's stage. Between two consecutive hops:

- across processes, ``wire <from>-><to>`` runs from the producer span's end to the instant the receiver read the
  frame off the stream (the consumer span's ``nautilus.frame.received_ns``; it includes the sender's outbox wait),
  and ``queue before <span>`` from that instant to the consumer span's start;
- inside one process (the engine's journal commit between executing an order and sending its reports),
  ``queue before <span>`` is the whole gap.

A trace whose chain lacks a hop (a span lost or not yet flushed) keeps a gap no segment names, so its stages no
longer add up: :attr:`TraceBreakdown.coverage` says how much of its end-to-end time the stages explain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clients.traces import END_TO_END, SpanRecord, StageStats, percentile, stage_stats

__all__ = [
    "FILLED",
    "HOPS",
    "OPEN",
    "REJECTED",
    "Segment",
    "TraceBreakdown",
    "break_down",
    "break_down_all",
    "outcome_summary",
    "waterfall_lines",
]

HOPS = (
    "strategy.signal send",
    "ops.signal receive",
    "ops.order send",
    "engine.order receive",
    "engine.report send",
    "ops.report receive",
    "ops.fill send",
    "strategy.fill receive",
)
"""The spans of a filled signal's trace, in the order the signal and its fill pass them."""

FILL_RECEIVE = HOPS[-1]
"""The span that ends a filled signal's trace: the strategy received its first fill."""

FILLED = "filled"
REJECTED = "rejected"
OPEN = "open"
"""Outcomes: a fill reached the strategy; a hop refused it (a span with status ERROR); neither (yet)."""


@dataclass(frozen=True)
class Segment:
    """One stage of one trace: a span (``kind`` "span") or the ``wire``/``queue`` time between two spans."""

    name: str
    kind: str
    start_ns: int
    end_ns: int
    service: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class TraceBreakdown:
    """A trace's outcome, its end-to-end interval and the stages of its chain, in order."""

    trace_id: str
    outcome: str
    start_ns: int
    end_ns: int
    segments: list[Segment] = field(default_factory=list)

    @property
    def end_to_end_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def stage_sum_ns(self) -> int:
        return sum(s.duration_ns for s in self.segments)

    @property
    def coverage(self) -> float:
        """Sum of the stages over the end-to-end time (1.0 when they add up exactly)."""
        return self.stage_sum_ns / self.end_to_end_ns if self.end_to_end_ns else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "outcome": self.outcome,
            "end_to_end_ms": self.end_to_end_ns / 1e6,
            "stage_sum_ms": self.stage_sum_ns / 1e6,
            "coverage": round(self.coverage, 6),
            "segments": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "service": s.service,
                    "offset_ms": (s.start_ns - self.start_ns) / 1e6,
                    "duration_ms": s.duration_ns / 1e6,
                }
                for s in self.segments
            ],
        }


def _component(span: SpanRecord) -> str:
    """``strategy``, ``ops`` or ``engine``: the span name's prefix (service names vary per strategy)."""
    return span.name.split(".", 1)[0]


def _nested(span: SpanRecord, parent: SpanRecord) -> bool:
    return parent.service == span.service and parent.start_ns <= span.start_ns and span.end_ns <= parent.end_ns


def _tail(members: Sequence[SpanRecord]) -> tuple[str, SpanRecord]:
    fills = [s for s in members if s.name == FILL_RECEIVE]
    if fills:
        return FILLED, min(fills, key=lambda s: s.end_ns)
    last = max(members, key=lambda s: s.end_ns)
    return (REJECTED if any(s.status == "ERROR" for s in members) else OPEN), last


def _gap(a: SpanRecord, b: SpanRecord) -> list[Segment]:
    queue = f"queue before {b.name}"
    if _component(a) == _component(b):
        return [Segment(queue, "queue", a.end_ns, b.start_ns, b.service)]
    wire = f"wire {_component(a)}->{_component(b)}"
    received = b.received_ns
    if received and a.end_ns <= received <= b.start_ns:
        return [
            Segment(wire, "wire", a.end_ns, received, b.service),
            Segment(queue, "queue", received, b.start_ns, b.service),
        ]
    return [Segment(wire, "wire", a.end_ns, b.start_ns, b.service)]


def break_down(members: Sequence[SpanRecord]) -> TraceBreakdown:
    """The stages of one trace's spans: the chain from its root to the first fill the strategy received (or, for a
    trace with no fill, to its last span)."""
    outcome, tail = _tail(members)
    by_id = {s.span_id: s for s in members}
    chain = [tail]
    seen = {tail.span_id}
    while chain[-1].parent_span_id in by_id and chain[-1].parent_span_id not in seen:
        parent = by_id[chain[-1].parent_span_id]
        seen.add(parent.span_id)
        chain.append(parent)
    chain.reverse()
    hops = [s for i, s in enumerate(chain) if i == 0 or not _nested(s, chain[i - 1])]
    # A nested span's parent may itself be dropped as nested; keep only hops not inside an earlier kept hop.
    kept: list[SpanRecord] = []
    for span in hops:
        if kept and _nested(span, kept[-1]):
            continue
        kept.append(span)
    segments: list[Segment] = []
    for i, span in enumerate(kept):
        if i:
            segments.extend(_gap(kept[i - 1], span))
        segments.append(Segment(span.name, "span", span.start_ns, span.end_ns, span.service))
    start = min(s.start_ns for s in members)
    return TraceBreakdown(members[0].trace_id, outcome, start, tail.end_ns, segments)


def break_down_all(spans: Iterable[SpanRecord]) -> list[TraceBreakdown]:
    """Every trace with at least two spans, broken down (a lone span is already a stage, not a trace)."""
    traces: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return [break_down(members) for members in traces.values() if len(members) >= 2]


def outcome_summary(breakdowns: Sequence[TraceBreakdown], *, tolerance: float = 0.05) -> dict[str, Any]:
    """Per-stage stats (in pipeline order) and end-to-end stats of traces of one outcome, and how many of them
    have stages adding up to their end-to-end time within ``tolerance``."""
    durations: dict[str, list[int]] = defaultdict(list)
    offsets: dict[str, list[int]] = defaultdict(list)
    kinds: dict[str, str] = {}
    services: dict[str, set[str]] = defaultdict(set)
    for b in breakdowns:
        for s in b.segments:
            durations[s.name].append(s.duration_ns)
            offsets[s.name].append(s.start_ns - b.start_ns)
            kinds[s.name] = s.kind
            services[s.name].add(s.service)
    order = sorted(durations, key=lambda n: (percentile(offsets[n], 50), n))
    stages: list[StageStats] = [stage_stats(n, durations[n], services[n]) for n in order]
    within = sum(1 for b in breakdowns if abs(b.coverage - 1.0) <= tolerance)
    return {
        "count": len(breakdowns),
        "stages": stages,
        "kinds": kinds,
        "end_to_end": stage_stats(END_TO_END, [b.end_to_end_ns for b in breakdowns]),
        "within_tolerance": within,
        "tolerance": tolerance,
    }


def waterfall_lines(b: TraceBreakdown, *, width: int = 48) -> list[str]:
    """A text waterfall of one trace: each stage's offset, duration and a bar on a common time axis."""
    total = max(1, b.end_to_end_ns)
    name_width = max((len(s.name) for s in b.segments), default=10)
    lines = [
        f"trace {b.trace_id} ({b.outcome}): {b.end_to_end_ns / 1e6:.3f} ms end to end, "
        f"stages add up to {b.coverage:.1%}"
    ]
    for s in b.segments:
        first = int((s.start_ns - b.start_ns) * width / total)
        length = max(1, round(max(0, s.duration_ns) * width / total))
        bar = (" " * first + ("█" if s.kind == "span" else "░") * length)[:width].ljust(width)
        offset_ms = (s.start_ns - b.start_ns) / 1e6
        lines.append(f"  {s.name.ljust(name_width)}  {offset_ms:9.3f} +{s.duration_ns / 1e6:8.3f} ms |{bar}|")
    return lines
