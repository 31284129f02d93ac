"""``nautilus-mesh traces``: per-stage latency (spans, wire and queue) of filled and rejected signals, waterfalls.

Reads the span files under ``--dir`` (see :mod:`clients.traces`) and splits each trace into stages that add up
to its end-to-end time (see :mod:`clients.trace_stages`). With no spans there, it says where they went (a service's
``<service>.otlp.json`` note, or ``OTEL_EXPORTER_OTLP_ENDPOINT``) and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from clients.trace_stages import (
    FILLED,
    OPEN,
    REJECTED,
    TraceBreakdown,
    break_down_all,
    outcome_summary,
    waterfall_lines,
)
from clients.traces import StageStats, load_spans, print_table
from nautilus_mesh.telemetry import OTLP_NOTE_SUFFIX

__all__ = ["EXIT_NO_SPANS", "EXIT_SPANS_ELSEWHERE", "add_arguments", "otlp_destinations", "run_traces"]

EXIT_NO_SPANS = 1
"""Exit code when the directory holds no spans and nothing says where they went."""
EXIT_SPANS_ELSEWHERE = 3
"""Exit code when the spans were exported over OTLP (to a collector, Jaeger) instead of to span files."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``traces`` command's options."""
    parser.add_argument("--dir", default="var/traces", help="directory of span JSONL files")
    parser.add_argument("--trace", metavar="ID", help="print the waterfall of one trace (its 32-hex trace id)")
    parser.add_argument("--slowest", type=int, default=0, metavar="N", help="print the N slowest filled traces")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def otlp_destinations(directory: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Services that noted (in ``directory``) that they export spans over OTLP, and where to."""
    found: list[dict[str, str]] = []
    root = Path(directory)
    for note in sorted(root.glob(f"*{OTLP_NOTE_SUFFIX}")) if root.is_dir() else []:
        try:
            data = json.loads(note.read_text(encoding="utf-8"))
            found.append({"service": str(data["service"]), "endpoint": str(data["endpoint"])})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if endpoint and not found:
        found.append({"service": "(this environment)", "endpoint": endpoint})
    return found


def _stage_json(s: StageStats) -> dict[str, Any]:
    return {"name": s.name, "count": s.count, "p50_ms": s.p50_ms, "p90_ms": s.p90_ms, "p99_ms": s.p99_ms}


def _outcome_json(summary: dict[str, Any]) -> dict[str, Any]:
    kinds = summary["kinds"]
    return {
        "count": summary["count"],
        "within_tolerance": summary["within_tolerance"],
        "tolerance": summary["tolerance"],
        "end_to_end": _stage_json(summary["end_to_end"]),
        "stages": [{**_stage_json(s), "kind": kinds.get(s.name, "span")} for s in summary["stages"]],
    }


def report(breakdowns: Sequence[TraceBreakdown], *, slowest: int = 0, trace_id: str = "") -> dict[str, Any]:
    """The whole report as one JSON-able document."""
    by_outcome = {o: [b for b in breakdowns if b.outcome == o] for o in (FILLED, REJECTED, OPEN)}
    filled = sorted(by_outcome[FILLED], key=lambda b: b.end_to_end_ns, reverse=True)
    waterfalls = [b for b in breakdowns if b.trace_id == trace_id] if trace_id else filled[: max(0, slowest)]
    return {
        **{o: _outcome_json(outcome_summary(by_outcome[o])) for o in (FILLED, REJECTED, OPEN)},
        "waterfalls": [b.to_json() for b in waterfalls],
    }


def _print_outcome(console: Console, outcome: str, data: dict[str, Any], source: str) -> None:
    if not data["count"]:
        return
    rows = [
        [s["name"], s["kind"], str(s["count"]), f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}"]
        for s in data["stages"]
    ]
    e2e = data["end_to_end"]
    rows.append([e2e["name"], "", str(e2e["count"]), *(f"{e2e[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms"))])
    title = f"{outcome} signals: latency by stage ({source})"
    print_table(console, title, ["stage", "kind", "count", "p50 ms", "p90 ms", "p99 ms"], rows)
    console.print(
        f"{outcome}: stages add up to end to end within {data['tolerance']:.0%} "
        f"for {data['within_tolerance']} of {data['count']} traces",
        highlight=False,
    )


def run_traces(args: argparse.Namespace, console: Console) -> int:
    """Run ``nautilus-mesh traces``; returns the exit code."""
    spans = load_spans(args.dir)
    if not spans:
        destinations = otlp_destinations(args.dir)
        if destinations:
            where = ", ".join(f"{d['service']} -> {d['endpoint']}" for d in destinations)
            print(
                f"no spans in {args.dir}: spans were exported over OTLP ({where}); "
                "look them up in the collector's backend (Jaeger), or unset OTEL_EXPORTER_OTLP_ENDPOINT",
                file=sys.stderr,
            )
            return EXIT_SPANS_ELSEWHERE
        print(f"no spans found in {args.dir}", file=sys.stderr)
        return EXIT_NO_SPANS
    elsewhere = otlp_destinations(args.dir)
    for d in elsewhere:  # span files left from before: say where the new spans go
        print(
            f"note: {d['service']} exports its spans over OTLP ({d['endpoint']}); the span files here are older",
            file=sys.stderr,
        )
    # Exit 3 whenever the spans went over OTLP: the older files are printed, but a script must not take them as current.
    done = EXIT_SPANS_ELSEWHERE if elsewhere else 0
    breakdowns = break_down_all(spans)
    doc = report(breakdowns, slowest=args.slowest, trace_id=args.trace or "")
    if args.trace and not doc["waterfalls"]:
        print(f"no trace {args.trace} in {args.dir}", file=sys.stderr)
        return EXIT_NO_SPANS
    if args.json:
        console.file.write(json.dumps({"source": args.dir, **doc}, indent=2) + "\n")
        console.file.flush()
        return done
    if not args.trace:
        for outcome in (FILLED, REJECTED, OPEN):
            _print_outcome(console, outcome, doc[outcome], args.dir)
    chosen = {b["trace_id"] for b in doc["waterfalls"]}
    try:
        for b in sorted((b for b in breakdowns if b.trace_id in chosen), key=lambda b: b.end_to_end_ns, reverse=True):
            console.file.write("\n" + "\n".join(waterfall_lines(b)) + "\n")
        console.file.flush()
    except BrokenPipeError:  # piped into head: the reader has seen enough
        pass
    return done
