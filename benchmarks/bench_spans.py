"""What one message span costs: made and ended on the loop, then exported to the JSONL span file.

Runs ``--spans`` CONSUMER spans under a sampled parent (as the engine's ``engine.order receive``: four attributes
plus the messaging ones) through ``Tracing.consume`` (``nautilus_mesh.message_spans``) and, for comparison, through
the SDK's ``start_as_current_span`` with the same attributes; then exports each set with the JSONL exporter in
batches of 512 (the batch processor's size). Prints microseconds per span, the minimum of ``--rounds`` rounds.

    .venv/bin/python benchmarks/bench_spans.py
    .venv/bin/python benchmarks/bench_spans.py --spans 50000 --rounds 5

Not a test: figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, JsonlSpanExporter, Tracing, extract
from nautilus_mesh.telemetry import messaging_attributes as messaging

PARENT = common_pb2.TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
ATTRIBUTES = {
    "messaging.message.id": "c-1",
    "nautilus.client_order_id": "c-1",
    "nautilus.model_id": "momentum_v1",
    "nautilus.venue": "sim",
}
BATCH = 512


class Keep(SpanProcessor):
    """A span processor that keeps the ended spans (to export them afterwards, timed apart)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def round_us(tracing: Tracing, keep: Keep, spans: int, sdk: bool, folder: Path) -> tuple[float, float]:
    """(make and end, export) in microseconds per span, one round."""
    keep.spans.clear()
    attrs = ATTRIBUTES | messaging("receive", ENGINE_ORDER_STREAM)
    started = time.perf_counter()
    if sdk:
        for _ in range(spans):
            with tracing.tracer.start_as_current_span(
                "engine.order receive", context=extract(PARENT), kind=SpanKind.CONSUMER, attributes=attrs
            ):
                pass
    else:
        for _ in range(spans):
            with tracing.consume("engine.order receive", PARENT, ATTRIBUTES, destination=ENGINE_ORDER_STREAM):
                pass
    made = time.perf_counter()
    if len(keep.spans) != spans:  # every span recorded and ended, or the figures mean nothing
        raise SystemExit(f"{len(keep.spans)} of {spans} spans ended ({'SDK' if sdk else 'message'} spans)")
    exporter = JsonlSpanExporter(folder / f"{'sdk' if sdk else 'message'}.jsonl", max_bytes=None)
    exported = time.perf_counter()
    for first in range(0, len(keep.spans), BATCH):
        exporter.export(keep.spans[first : first + BATCH])
    done = time.perf_counter()
    exporter.shutdown()
    return (made - started) / spans * 1e6, (done - exported) / spans * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_000, help="spans per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternated; the minimum is printed")
    args = parser.parse_args(argv)
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    with tempfile.TemporaryDirectory(prefix="bench-spans-") as tmp:
        folder = Path(tmp)
        tracing = Tracing("engine", folder / "unused.jsonl")
        keep = Keep()
        tracing._processor = keep  # the message spans' processor
        assert tracing.provider is not None
        tracing.provider._active_span_processor._span_processors = (keep,)  # the SDK's
        figures: dict[str, list[tuple[float, float]]] = {"SDK span": [], "message span": []}
        for _ in range(args.rounds):
            figures["SDK span"].append(round_us(tracing, keep, args.spans, True, folder))
            figures["message span"].append(round_us(tracing, keep, args.spans, False, folder))
    print(f"{args.spans} spans a round, {args.rounds} rounds alternated, minimum per span:")
    for name, rounds in figures.items():
        made, exported = min(r[0] for r in rounds), min(r[1] for r in rounds)
        print(f"  {name:<13} made and ended {made:6.1f} us, exported {exported:6.1f} us")


if __name__ == "__main__":
    main()
