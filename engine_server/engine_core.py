"""The engine's core: the OrderManager, its sessions' report queues, the market ticker and the quote subscribers
(the gRPC servicers, :mod:`engine_server.service` and :mod:`engine_server.market_data`, are its faces).

One event loop owns the OrderManager (it is not thread-safe): order frames, the market ticker and unary calls all run
on it. Each order stream is a session with one writer fed by a bounded queue; reports are routed to the session that
owns the order. A session that is gone (its stream dropped) misses nothing: every report is journaled with its
``seq`` and ops reconciles with ``ListExecutions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass

from engine_server import wire
from engine_server.execution_report import report_pb
from engine_server.metrics import EngineMetrics
from engine_server.order_manager import OrderManager, Report
from engine_server.venues.base import ExecType, Quote
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.bounds import MAX_ID_CHARS, clip, require_bounded
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import MeshError, UnavailableError, ValidationError, VenueRejectedError
from nautilus_mesh.fields import values_of
from nautilus_mesh.group_sync import GroupSync
from nautilus_mesh.status import error_detail
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, Tracing, inject, is_sampled, mark_error

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class EngineCore:
    """The OrderManager plus sessions, market ticker and quote fan-out."""

    manager: OrderManager
    metrics: EngineMetrics
    tracing: Tracing
    _: KW_ONLY
    tick_interval: float = 0.1
    session_queue_size: int = 10_000

    def __post_init__(self) -> None:
        self.sessions: dict[str, asyncio.Queue[list[engine_pb2.ExecutionReport] | None]] = {}
        self._quote_subscribers: set[asyncio.Queue[list[common_pb2.Quote]]] = set()
        self._last_quotes: dict[tuple[str, str], common_pb2.Quote] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.group_sync: GroupSync | None = None
        """fsyncs the journal off the loop (:meth:`start` with ``group_commit``); reports wait for their fsync."""

    async def start(self, *, group_commit: bool = False) -> None:
        """Send the restart's reports, start the market ticker; ``group_commit`` (``batch`` policy): fsync on a thread
        of its own, one fsync for the frames written meanwhile, reports sent in order once theirs returned."""
        sync = self.manager.defer_fsync() if group_commit else None
        if sync is not None:
            self.group_sync = GroupSync(sync, asyncio.get_running_loop(), name="engine-journal-fsync")
        self.manager.compact_in_background()  # snapshots encoded and written on a worker thread
        if self.manager.restart_reports:
            self.dispatch(self.manager.restart_reports)
        self._publish_quotes()
        self._ticker = asyncio.create_task(self._tick_loop(), name="engine-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.group_sync is not None:  # what was written is released (sent) before the sessions end
            if not self.group_sync.failure:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.group_sync.drain(), 10)
            self.group_sync.close()
        for queue in self.sessions.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        await self.manager.aclose()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                reports = self.manager.advance()
                if reports:
                    self.dispatch(reports)
                self._publish_quotes()
            except Exception:
                log.exception("[ENGINE] market tick failed")

    # -- reports ---------------------------------------------------------------------------

    def to_pb(self, report: Report) -> engine_pb2.ExecutionReport:
        """The report's protobuf (built once per report, shared with the journal and queries)."""
        return report_pb(report)

    def dispatch(self, reports: Sequence[Report]) -> None:
        """Send journaled reports (after the manager's frame ended) to the sessions owning their orders, one frame per
        session; under group commit once the fsync covering them returned, after those dispatched before them."""
        if self.group_sync is None:
            self._send(reports)
        else:
            self.group_sync.after_sync(lambda: self._send(reports))

    async def durable(self) -> int:
        """Wait until every report written so far is durable (a unary answer carrying reports waits for it, so no
        client sees a report a crash could take back); returns the newest seq then. Raises ``JOURNAL_FSYNC_FAILED``."""
        seq = self.manager.last_seq
        if self.group_sync is not None:
            try:
                await self.group_sync.drain()
            except OSError as exc:
                raise UnavailableError(
                    "JOURNAL_FSYNC_FAILED", f"the engine journal cannot be made durable: {exc}"
                ) from None
        return seq

    def _send(self, reports: Sequence[Report]) -> None:
        frames: dict[str, list[engine_pb2.ExecutionReport]] = {}
        metrics = self.metrics
        tracing = self.tracing.provider is not None
        counts: dict[tuple[str, ExecType], int] = {}
        for report in reports:
            key = (report.venue, report.exec_type)
            counts[key] = counts.get(key, 0) + 1
            pb = report_pb(report)
            trace = report.trace
            traceparent = trace.get("traceparent", "")
            frame = frames.get(report.session_id)
            if frame is None:
                frame = frames[report.session_id] = []
            if tracing and report.exec_type in wire.TRACED_EXEC_TYPES and is_sampled(traceparent):
                parent = common_pb2.TraceContext(traceparent=traceparent, tracestate=trace.get("tracestate", ""))
                attrs = {
                    "messaging.message.id": report.exec_id,
                    "nautilus.client_order_id": report.client_order_id,
                    "nautilus.model_id": report.model_id,
                    "nautilus.exec_type": report.exec_type.value,
                }
                with self.tracing.produce(
                    "engine.report send", pb.trace, attrs, parent=parent, destination=ENGINE_ORDER_STREAM
                ):
                    frame.append(pb)
            else:  # acks, cancels and unsampled orders carry the order's context on: no span (~50 us each)
                if traceparent:
                    pb.trace.traceparent = traceparent
                    pb.trace.tracestate = trace.get("tracestate", "")
                frame.append(pb)
        for (venue, exec_type), n in counts.items():
            metrics.report_counter(venue, exec_type.value).inc(n)
            if exec_type in wire.FILL_EXEC_TYPES:
                metrics.fill_counter(venue).inc(n)
        metrics.last_seq.set(self.manager.last_seq)
        metrics.orders_in_memory.set(self.manager.orders_in_memory)
        for session_id, frame in frames.items():
            queue = self.sessions.get(session_id)
            if queue is None:
                continue  # the session is gone; ops reconciles these from the journal by seq
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                # A stuck reader: end its session rather than grow without bound; it reconciles on reconnect.
                log.error("[ENGINE] session %s is not reading its reports; closing it", session_id)
                self.close_session(session_id)

    def answer(self, session_id: str, reports: list[engine_pb2.ExecutionReport]) -> None:
        """Send the in-band answers of a session's commands frame (the reports of an order sent again, seq unchanged;
        the refusals of a malformed command or a frame too large, seq 0) after the reports of that frame and of every
        frame before it (under group commit those wait for their fsync): the session reads a frame's answers as one
        reports frame."""

        def send() -> None:
            queue = self.sessions.get(session_id)
            if queue is None:
                return
            try:
                queue.put_nowait(reports)
            except asyncio.QueueFull:
                log.error("[ENGINE] session %s is not reading its reports; closing it", session_id)
                self.close_session(session_id)

        if self.group_sync is None:
            send()
        else:
            self.group_sync.after_sync(send)

    def close_session(self, session_id: str) -> None:
        queue = self.sessions.pop(session_id, None)
        if queue is not None:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    def execute(self, commands: Iterable[engine_pb2.OrderCommand], session_id: str) -> list[engine_pb2.ExecutionReport]:
        """Execute one frame of commands; returns the in-band answers for the session that sent it: the reports of an
        order it sent again (as they were, seq unchanged; nothing executed or counted again) and the rejections of
        malformed commands (seq 0)."""
        started = time.perf_counter()
        reports: list[Report] = []
        malformed: list[engine_pb2.ExecutionReport] = []
        manager = self.manager
        tracing = self.tracing.provider is not None
        received: dict[str, int] = {}
        repeats: list[Report] = []  # an order sent again: its reports as they are, for this session
        with manager.frame():  # one journal commit for the whole frame, before any report is sent
            for command in commands:
                kind = command.WhichOneof("command")
                try:
                    if kind == "new_order":
                        new = command.new_order
                        received[new.venue] = received.get(new.venue, 0) + 1
                        traceparent = new.trace.traceparent
                        if tracing and (not traceparent or is_sampled(traceparent)):
                            reports.extend(self._submit_traced(new, session_id, repeats))
                        else:  # tracing off or an unsampled trace: carry the context on, no span work
                            trace = (
                                {"traceparent": traceparent, "tracestate": new.trace.tracestate} if traceparent else {}
                            )
                            reports.extend(self._submit(new, session_id, trace, repeats))
                    elif kind == "cancel_order":
                        require_bounded(command.cancel_order.client_order_id, "client_order_id", required=True)
                        reports.extend(manager.cancel(command.cancel_order.client_order_id))
                    else:
                        raise ValidationError("EMPTY_COMMAND", "an order command must carry new_order or cancel_order")
                except MeshError as exc:
                    if not isinstance(exc, VenueRejectedError):  # a cancel reject is an answer, not malformed
                        self.metrics.malformed.inc()
                    coid = (
                        command.new_order.client_order_id
                        if kind == "new_order"
                        else command.cancel_order.client_order_id
                    )
                    log.warning("[ENGINE] command for %s refused: %s %s", coid or "?", exc.code, exc.message)
                    malformed.append(
                        engine_pb2.ExecutionReport(
                            client_order_id=clip(coid, MAX_ID_CHARS),
                            exec_type=engine_pb2.EXEC_TYPE_REJECTED,
                            error=error_detail(exc),
                        )
                    )
        for venue, n in received.items():
            self.metrics.order_counter(venue).inc(n)
        if reports:
            self.dispatch(reports)
        self.metrics.frame_latency.observe(time.perf_counter() - started)
        # A repeat is answered on the session that sent it (its first session may be gone: ops reconnects under a new
        # id), in-band, and is not counted again in the report and fill counters.
        return [*(self.to_pb(r) for r in repeats), *malformed]

    def _submit_traced(self, new: engine_pb2.NewOrder, session_id: str, repeats: list[Report]) -> list[Report]:
        attrs = {
            "messaging.message.id": new.client_order_id,
            "nautilus.client_order_id": new.client_order_id,
            "nautilus.model_id": new.model_id,
            "nautilus.venue": new.venue,
        }
        with self.tracing.consume("engine.order receive", new.trace, attrs, destination=ENGINE_ORDER_STREAM) as span:
            carrier = common_pb2.TraceContext()
            inject(carrier)
            trace = {"traceparent": carrier.traceparent, "tracestate": carrier.tracestate}
            try:
                reports = self._submit(new, session_id, trace, repeats)
            except MeshError as exc:  # malformed or a re-used id: the span says which
                mark_error(span, exc.code)
                raise
            for report in reports:
                if report.client_order_id == new.client_order_id and report.exec_type is ExecType.REJECTED:
                    mark_error(span, report.reason_code)  # a venue or rail refused it
            return reports

    def _submit(
        self, new: engine_pb2.NewOrder, session_id: str, trace: dict[str, str], repeats: list[Report]
    ) -> list[Report]:
        """Parse (strictly), refuse a client order id re-used for another order, then submit; an order sent again
        executes nothing and its reports go to ``repeats`` (returns none)."""
        request = wire.order_request(new, session_id, trace)
        previous = self.manager.get_order(request.client_order_id)
        wire.check_reuse(previous, new.venue, request)
        reports = self.manager.submit(new.venue, request)
        if previous is None:
            return reports
        repeats.extend(reports)
        return []

    # -- quotes ----------------------------------------------------------------------------

    def quote_pb(self, venue: str, quote: Quote) -> common_pb2.Quote:
        return common_pb2.Quote(
            instrument=quote.symbol,
            venue=venue,
            ts_unix_nanos=quote.ts_ns,
            **values_of(quote, wire.QUOTE_DECIMALS, fmt),
        )

    def live_quotes(self) -> list[common_pb2.Quote]:
        """The current quote of every instrument on the live venues."""
        out = []
        for name, venue in self.manager.venues.items():
            if venue.kind != "live":
                continue
            for symbol in venue.instruments():
                quote = venue.quote(symbol)
                if quote is not None:
                    out.append(self.quote_pb(name, quote))
        return out

    def _publish_quotes(self) -> None:
        changed = []
        for pb in self.live_quotes():
            key = (pb.venue, pb.instrument)
            last = self._last_quotes.get(key)
            if last is None or (last.bid, last.ask, last.bid_size, last.ask_size) != (
                pb.bid,
                pb.ask,
                pb.bid_size,
                pb.ask_size,
            ):
                self._last_quotes[key] = pb
                changed.append(pb)
        if not changed:
            return
        for queue in self._quote_subscribers:
            if queue.full():  # quotes are latest-state: a slow reader skips to the newest frame
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(changed)

    def subscribe_quotes(self) -> asyncio.Queue[list[common_pb2.Quote]]:
        queue: asyncio.Queue[list[common_pb2.Quote]] = asyncio.Queue(maxsize=64)
        self._quote_subscribers.add(queue)
        self.metrics.quote_subscribers.set(len(self._quote_subscribers))
        return queue

    def unsubscribe_quotes(self, queue: asyncio.Queue[list[common_pb2.Quote]]) -> None:
        self._quote_subscribers.discard(queue)
        self.metrics.quote_subscribers.set(len(self._quote_subscribers))
