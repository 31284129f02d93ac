"""What comes back from the engine: reports applied exactly once, fills measured and fanned out to strategies.

- Reports apply exactly once by ``seq`` (:class:`ReportCursor`); a frame of reports is journaled with one write
  before any of it is applied.
- A fill updates measurement (positions, PnL, fees, slippage) and goes to every open stream of the strategy that
  owns the model (bounded queues: a stream that does not read loses fills, counted; ``ListFills`` keeps them).
- After every (re)connect: the instrument rules are refreshed, and orders journaled but never acknowledged are
  re-sent (the engine deduplicates by client order id). Gaps in the seq sequence are closed by reconciliation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, OPS_SIGNAL_STREAM, is_unsampled, trace_exemplar
from ops_server import wire
from ops_server.engine_link import ReportCursor
from ops_server.order_sinks import resend_commands
from ops_server.order_tracker import AppliedFill
from ops_server.parts import OpsParts

log = logging.getLogger(__name__)

# Reports that get a span of their own in ops: fills and rejections (acks and cancels only update state).
TRACED_EXEC_TYPES = frozenset(
    {engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_PARTIAL_FILL, engine_pb2.EXEC_TYPE_REJECTED}
)

FillQueue = asyncio.Queue[ops_pb2.Fill]


@dataclass(eq=False, repr=False)
class ExecutionFeedback:
    """Applies engine reports and delivers fills.

    Args:
        parts: the ops service's domain objects; feedback journals and applies reports on the tracker, updates
            measurement, refreshes the exposure's instrument rules on connect, re-sends through the engine link
            and both venues' sinks, and reads the clock's wall time (signal-to-fill latency from the order's
            arrival time).
        cursor: the exactly-once cursor over report seqs.
    """

    parts: OpsParts
    _: KW_ONLY
    cursor: ReportCursor
    _streams: dict[str, set[FillQueue]] = field(init=False, default_factory=dict)
    _connects: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        link = self.parts.link  # read at each scrape
        self.parts.metrics.reconcile_history_skips.set_function(lambda: getattr(link, "history_skips", 0))

    # -- fill streams ----------------------------------------------------------------------

    def subscribe(self, models: frozenset[str], queue: FillQueue) -> None:
        """Deliver the fills of ``models`` to ``queue`` from now on."""
        for model in models:
            self._streams.setdefault(model, set()).add(queue)

    def unsubscribe(self, queue: FillQueue) -> None:
        for queues in self._streams.values():
            queues.discard(queue)

    # -- reports ---------------------------------------------------------------------------

    def on_reports(self, reports: Sequence[engine_pb2.ExecutionReport]) -> None:
        """A frame of reports from the stream or from reconciliation: journal the new ones once, then apply."""
        fresh = []
        for report in reports:
            if report.seq == 0:  # an in-band rejection of a malformed command: nothing journaled to apply
                log.warning("[OPS] engine rejected a command: %s", report.error.message)
                continue
            if self.cursor.seen(report.seq):
                self.parts.metrics.duplicate_reports.inc()
                continue
            self.cursor.mark(report.seq)
            fresh.append(report)
        self.parts.tracker.journal_reports(fresh)  # one write for the frame, before anything is applied
        for report in fresh:
            self._apply(report, fan_out=True)

    def replay_report(self, report: engine_pb2.ExecutionReport) -> None:
        """Re-apply a journaled report at start (no fan-out, no metrics)."""
        self.cursor.mark(report.seq)
        self._apply(report, fan_out=False)

    def _apply(self, report: engine_pb2.ExecutionReport, *, fan_out: bool) -> None:
        parts = self.parts
        traced = fan_out and report.exec_type in TRACED_EXEC_TYPES
        unsampled = ""  # an unsampled report: no span here, nor for its fill (the context is carried on as it is)
        if traced and parts.tracing.provider is not None and is_unsampled(report.trace.traceparent):
            unsampled = report.trace.traceparent
        span: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if traced and not unsampled:
            attrs = {
                "messaging.message.id": report.exec_id,
                "nautilus.client_order_id": report.client_order_id,
                "nautilus.model_id": report.model_id,
            }
            span = parts.tracing.consume("ops.report receive", report.trace, attrs, destination=ENGINE_ORDER_STREAM)
        with span:
            applied = parts.tracker.apply_report(report, journal=False)
            if applied is not None:
                self._apply_fill(applied, fan_out=fan_out, unsampled=unsampled)

    def _apply_fill(self, applied: AppliedFill, *, fan_out: bool, unsampled: str = "") -> None:
        """Book a fill and send it to its strategy's streams; ``unsampled``: the report's unsampled context, carried on
        to the fill as it is (no span)."""
        parts = self.parts
        order, report = applied.order, applied.report
        parts.measurement.apply_fill(
            order.model_id, order.instrument, applied.signed_qty, applied.price, applied.fee, order.reference_mid
        )
        fill = wire.fill(order, report)
        if not fan_out:
            parts.tracker.remember_fill(fill)
            return
        parts.metrics.model_fills(order.model_id).inc()
        if order.owner and order.filled == abs(applied.signed_qty):  # a strategy's order's first fill (not a twin's)
            latency = max(0.0, (parts.clock.time_ns() - order.created_ns) / 1e9)
            parts.metrics.signal_to_fill.observe(latency, None if unsampled else trace_exemplar())  # the report's trace
        if unsampled:
            fill.trace.traceparent = unsampled
            self._deliver(order.owner, fill)
            return
        attrs = {"messaging.message.id": report.exec_id, "nautilus.model_id": order.model_id}
        with parts.tracing.produce("ops.fill send", fill.trace, attrs, destination=OPS_SIGNAL_STREAM):
            self._deliver(order.owner, fill)

    def _deliver(self, owner: str, fill: ops_pb2.Fill) -> None:
        """Keep the fill for queries as it is sent (its trace context written) and send it to its strategy."""
        self.parts.tracker.remember_fill(fill)
        self._fan_out(owner, fill)

    def _fan_out(self, owner: str, fill: ops_pb2.Fill) -> None:
        for queue in self._streams.get(owner, ()):
            try:
                queue.put_nowait(fill)
            except asyncio.QueueFull:
                self.parts.metrics.fills_dropped.inc()

    # -- connection ------------------------------------------------------------------------

    def on_connected(self, *, resend: bool = True) -> None:
        """After each (re)connect: refresh instrument rules, re-send what may never have left (unless ``resend`` is
        False: the venues do not fit the config)."""
        parts = self.parts
        self._connects += 1
        if self._connects > 1:
            parts.metrics.engine_reconnects.inc()
        parts.exposure.set_instruments(parts.link.instruments)
        pending = list(parts.tracker.unacknowledged()) if resend else []
        if pending:
            parts.link.send(resend_commands(pending, parts.live_sink, parts.paper_sink))
            log.info("[OPS] re-sent %d unacknowledged order(s) after connect", len(pending))

    async def close_gaps(self) -> None:
        """Reconcile when a report seq was skipped (reports of other sessions, or a lost frame)."""
        parts = self.parts
        if parts.link.connected and self.cursor.highest > self.cursor.watermark:
            parts.metrics.reconciled_reports.inc(await parts.link.reconcile())
