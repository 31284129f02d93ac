"""``nautilus.engine.v1.EngineService`` and ``MarketDataService``: the gRPC face of the OrderManager.

One event loop owns the OrderManager (it is not thread-safe): order frames, the market ticker
and unary calls all run on it. Each order stream is a session with one writer fed by a bounded
queue; reports are routed to the session that owns the order. A session that is gone (its
stream dropped) misses nothing: every report is journaled with its ``seq`` and ops reconciles
with ``ListExecutions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from engine_server.metrics import EngineMetrics
from engine_server.order_lifecycle import Order
from engine_server.order_manager import OrderManager, Report
from engine_server.venues.base import ExecType, OrderRequest, OrderType, Quote, Side, TimeInForce
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.auth import ENGINE_TOKEN_HEADER, SESSION_ID_HEADER, metadata_value, require_token
from nautilus_mesh.bounds import MAX_ID_CHARS, clip, require_bounded
from nautilus_mesh.decimals import fmt, parse_decimal
from nautilus_mesh.errors import MeshError, NotFoundError, ValidationError, VenueRejectedError
from nautilus_mesh.status import abort, error_detail
from nautilus_mesh.telemetry import Tracing, inject

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]

_SIDE = {common_pb2.SIDE_BUY: Side.BUY, common_pb2.SIDE_SELL: Side.SELL}
_SIDE_PB = {Side.BUY: common_pb2.SIDE_BUY, Side.SELL: common_pb2.SIDE_SELL}
_TYPE = {common_pb2.ORDER_TYPE_MARKET: OrderType.MARKET, common_pb2.ORDER_TYPE_LIMIT: OrderType.LIMIT}
_TIF = {
    common_pb2.TIME_IN_FORCE_GTC: TimeInForce.GTC,
    common_pb2.TIME_IN_FORCE_IOC: TimeInForce.IOC,
    common_pb2.TIME_IN_FORCE_FOK: TimeInForce.FOK,
}
_TYPE_PB = {v: k for k, v in _TYPE.items()}
_TIF_PB = {v: k for k, v in _TIF.items()}
DEFAULT_PAGE = 500
# Reports that get a span of their own: the ones that change positions or end an order in error.
TRACED_EXEC_TYPES = frozenset({ExecType.FILL, ExecType.PARTIAL_FILL, ExecType.REJECTED})
MAX_PAGE = 5000


def order_request(new: engine_pb2.NewOrder, session_id: str, trace: dict[str, str]) -> OrderRequest:
    """Parse a NewOrder; raises ValidationError naming the field."""
    for name, value, required in (
        ("client_order_id", new.client_order_id, True),
        ("instrument", new.instrument, True),
        ("venue", new.venue, False),
        ("account", new.account, False),
        ("model_id", new.model_id, False),
    ):
        require_bounded(value, name, required=required)
    if new.side not in _SIDE:
        raise ValidationError("INVALID_SIDE", "side must be BUY or SELL", field="side")
    if new.order_type not in _TYPE:
        raise ValidationError("INVALID_ORDER_TYPE", "order_type must be MARKET or LIMIT", field="order_type")
    if new.time_in_force not in _TIF and new.time_in_force != common_pb2.TIME_IN_FORCE_UNSPECIFIED:
        raise ValidationError(
            "INVALID_TIME_IN_FORCE", f"unknown time_in_force {new.time_in_force}", field="time_in_force"
        )
    tif = _TIF.get(new.time_in_force, TimeInForce.IOC if new.order_type == common_pb2.ORDER_TYPE_MARKET else None)
    if tif is None:
        raise ValidationError(
            "INVALID_TIME_IN_FORCE", "time_in_force is required for LIMIT orders", field="time_in_force"
        )
    quantity = parse_decimal(new.quantity, "quantity", positive=True, code="INVALID_QUANTITY")
    assert quantity is not None
    limit = parse_decimal(new.limit_price, "limit_price", positive=True, allow_empty=True, code="INVALID_PRICE")
    if new.order_type == common_pb2.ORDER_TYPE_LIMIT and limit is None:
        raise ValidationError("MISSING_FIELD", "limit_price is required for LIMIT orders", field="limit_price")
    if new.order_type == common_pb2.ORDER_TYPE_MARKET and limit is not None:
        raise ValidationError("INVALID_FIELD", "limit_price must be empty for MARKET orders", field="limit_price")
    return OrderRequest(
        client_order_id=new.client_order_id,
        session_id=session_id,
        account=new.account or "default",
        model_id=new.model_id,
        symbol=new.instrument,
        side=_SIDE[new.side],
        order_type=_TYPE[new.order_type],
        time_in_force=tif,
        quantity=quantity,
        limit_price=limit,
        trace=trace,
    )


def check_reuse(previous: Order | None, venue: str, request: OrderRequest) -> None:
    """A repeated ``client_order_id`` must name the same order (then the existing one is answered).

    Raises:
        ValidationError: ``CLIENT_ORDER_ID_REUSED`` when the id names an order with another venue, account,
            model, instrument, side, type, time in force, quantity or limit price.
    """
    if previous is None:
        return
    old = previous.request
    differs = [
        name
        for name, a, b in (
            ("venue", previous.venue, venue),
            ("account", old.account, request.account),
            ("model_id", old.model_id, request.model_id),
            ("instrument", old.symbol, request.symbol),
            ("side", old.side, request.side),
            ("order_type", old.order_type, request.order_type),
            ("time_in_force", old.time_in_force, request.time_in_force),
            ("quantity", old.quantity, request.quantity),
            ("limit_price", old.limit_price, request.limit_price),
        )
        if a != b
    ]
    if differs:
        raise ValidationError(
            "CLIENT_ORDER_ID_REUSED",
            f"client_order_id {request.client_order_id} already names another order (differs in {', '.join(differs)})",
            {"differs": ",".join(differs)},
            field="client_order_id",
        )


def _status_pb(status: str) -> int:
    return int(engine_pb2.OrderStatus.Value(f"ORDER_STATUS_{status}"))


class EngineCore:
    """The OrderManager plus sessions, market ticker and quote fan-out."""

    def __init__(
        self,
        manager: OrderManager,
        metrics: EngineMetrics,
        tracing: Tracing,
        *,
        tick_interval: float = 0.1,
        session_queue_size: int = 10_000,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.tracing = tracing
        self.tick_interval = tick_interval
        self.session_queue_size = session_queue_size
        self.sessions: dict[str, asyncio.Queue[list[engine_pb2.ExecutionReport] | None]] = {}
        self._quote_subscribers: set[asyncio.Queue[list[common_pb2.Quote]]] = set()
        self._last_quotes: dict[tuple[str, str], common_pb2.Quote] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.manager.restart_reports:
            self.dispatch(self.manager.restart_reports)
        self._publish_quotes()
        self._ticker = asyncio.create_task(self._tick_loop(), name="engine-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for queue in self.sessions.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self.manager.close()

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
        pb = engine_pb2.ExecutionReport(
            seq=report.seq,
            exec_id=report.exec_id,
            client_order_id=report.client_order_id,
            venue_order_id=report.venue_order_id,
            venue=report.venue,
            model_id=report.model_id,
            account=report.account,
            instrument=report.symbol,
            side=_SIDE_PB[report.side],
            exec_type=engine_pb2.ExecType.Value(f"EXEC_TYPE_{report.exec_type.value}"),
            order_status=_status_pb(report.order_status.value),  # type: ignore[arg-type]
            last_qty=fmt(report.last_qty),
            last_price=fmt(report.last_price),
            cum_qty=fmt(report.cum_qty),
            leaves_qty=fmt(report.leaves_qty),
            avg_price=fmt(report.avg_price),
            fee=fmt(report.fee),
            liquidity=report.liquidity,
            ts_unix_nanos=report.ts_ns,
        )
        if report.reason_code:
            pb.error.CopyFrom(
                common_pb2.ErrorDetail(
                    kind="venue_rejected" if report.exec_type.value == "REJECTED" else "venue_event",
                    code=report.reason_code,
                    message=report.reason_text,
                    details=dict(report.reason_details),
                )
            )
        return pb

    def dispatch(self, reports: Sequence[Report]) -> None:
        """Send reports to the sessions that own their orders (one frame per session)."""
        frames: dict[str, list[engine_pb2.ExecutionReport]] = {}
        for report in reports:
            self.metrics.reports.labels(report.venue, report.exec_type.value).inc()
            if report.last_qty > 0:
                self.metrics.fills.labels(report.venue).inc()
            pb = self.to_pb(report)
            parent = common_pb2.TraceContext(
                traceparent=report.trace.get("traceparent", ""), tracestate=report.trace.get("tracestate", "")
            )
            if report.exec_type in TRACED_EXEC_TYPES:
                attrs = {
                    "messaging.message.id": report.exec_id,
                    "nautilus.client_order_id": report.client_order_id,
                    "nautilus.model_id": report.model_id,
                    "nautilus.exec_type": report.exec_type.value,
                }
                with self.tracing.produce("engine.report send", pb.trace, attrs, parent=parent):
                    frames.setdefault(report.session_id, []).append(pb)
            else:  # acks and cancels carry the order's context on: no span of their own (spans cost ~50 us)
                pb.trace.CopyFrom(parent)
                frames.setdefault(report.session_id, []).append(pb)
        self.metrics.last_seq.set(self.manager.last_seq)
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

    def close_session(self, session_id: str) -> None:
        queue = self.sessions.pop(session_id, None)
        if queue is not None:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    def execute(self, commands: Iterable[engine_pb2.OrderCommand], session_id: str) -> list[engine_pb2.ExecutionReport]:
        """Execute one frame of commands; returns in-band rejections of malformed commands (seq 0)."""
        started = time.perf_counter()
        reports: list[Report] = []
        malformed: list[engine_pb2.ExecutionReport] = []
        for command in commands:
            kind = command.WhichOneof("command")
            try:
                if kind == "new_order":
                    new = command.new_order
                    attrs = {
                        "messaging.message.id": new.client_order_id,
                        "nautilus.client_order_id": new.client_order_id,
                        "nautilus.model_id": new.model_id,
                        "nautilus.venue": new.venue,
                    }
                    with self.tracing.consume("engine.order receive", new.trace, attrs):
                        carrier = common_pb2.TraceContext()
                        inject(carrier)
                        request = order_request(
                            new, session_id, {"traceparent": carrier.traceparent, "tracestate": carrier.tracestate}
                        )
                        self.metrics.orders_received.labels(new.venue).inc()
                        check_reuse(self.manager.get_order(request.client_order_id), new.venue, request)
                        reports.extend(self.manager.submit(new.venue, request))
                elif kind == "cancel_order":
                    require_bounded(command.cancel_order.client_order_id, "client_order_id", required=True)
                    reports.extend(self.manager.cancel(command.cancel_order.client_order_id))
                else:
                    raise ValidationError("EMPTY_COMMAND", "an order command must carry new_order or cancel_order")
            except MeshError as exc:
                if not isinstance(exc, VenueRejectedError):  # a cancel reject is an answer, not a malformed command
                    self.metrics.malformed.inc()
                coid = (
                    command.new_order.client_order_id if kind == "new_order" else command.cancel_order.client_order_id
                )
                log.warning("[ENGINE] command for %s refused: %s %s", coid or "?", exc.code, exc.message)
                malformed.append(
                    engine_pb2.ExecutionReport(
                        client_order_id=clip(coid, MAX_ID_CHARS),
                        exec_type=engine_pb2.EXEC_TYPE_REJECTED,
                        error=error_detail(exc),
                    )
                )
        if reports:
            self.dispatch(reports)
        self.metrics.frame_latency.observe(time.perf_counter() - started)
        return malformed

    # -- quotes ----------------------------------------------------------------------------

    def quote_pb(self, venue: str, quote: Quote) -> common_pb2.Quote:
        return common_pb2.Quote(
            instrument=quote.symbol,
            venue=venue,
            bid=fmt(quote.bid),
            ask=fmt(quote.ask),
            bid_size=fmt(quote.bid_size),
            ask_size=fmt(quote.ask_size),
            mid=fmt(quote.mid),
            ts_unix_nanos=quote.ts_ns,
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


class EngineService(engine_pb2_grpc.EngineServiceServicer):
    """Order entry for ops only (``x-engine-token``)."""

    def __init__(self, core: EngineCore, ops_token: str, *, max_commands_per_frame: int = 1000) -> None:
        self.core = core
        self._token = ops_token
        self._max_commands = max_commands_per_frame

    async def _authorize(self, context: Context) -> None:
        try:
            require_token(context.invocation_metadata(), ENGINE_TOKEN_HEADER, self._token, door="engine order entry")
        except MeshError as exc:
            log.warning("[ENGINE] refused a call: %s", exc.code)
            await abort(context, exc)

    async def StreamOrders(
        self, request_iterator: AsyncIterator[engine_pb2.StreamOrdersRequest], context: Context
    ) -> AsyncIterator[engine_pb2.StreamOrdersResponse]:
        await self._authorize(context)
        core = self.core
        session_id = metadata_value(context.invocation_metadata(), SESSION_ID_HEADER) or f"s-{uuid.uuid4().hex[:12]}"
        old = core.sessions.get(session_id)
        if old is not None:  # a reconnect under the same id replaces the stale stream
            core.close_session(session_id)
        queue: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue(core.session_queue_size)
        core.sessions[session_id] = queue
        core.metrics.sessions.set(len(core.sessions))
        log.info("[ENGINE] order session %s opened", session_id)

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    if len(frame.commands) > self._max_commands:
                        error = ValidationError(
                            "FRAME_TOO_LARGE",
                            f"a frame carries at most {self._max_commands} commands, got {len(frame.commands)}",
                            field="commands",
                        )
                        await queue.put(
                            [
                                engine_pb2.ExecutionReport(
                                    exec_type=engine_pb2.EXEC_TYPE_REJECTED, error=error_detail(error)
                                )
                            ]
                        )
                        continue
                    malformed = core.execute(frame.commands, session_id)
                    if malformed:
                        await queue.put(malformed)
            finally:
                if core.sessions.get(session_id) is queue:
                    await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                while not queue.empty() and len(frame) < self._max_commands:
                    more = queue.get_nowait()
                    if more is None:
                        queue.put_nowait(None)
                        break
                    frame.extend(more)
                yield engine_pb2.StreamOrdersResponse(reports=frame)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if core.sessions.get(session_id) is queue:
                del core.sessions[session_id]
                core.metrics.sessions.set(len(core.sessions))
                cancels = core.manager.on_session_closed(session_id)
                if cancels:
                    core.dispatch(cancels)
            log.info("[ENGINE] order session %s closed", session_id)

    async def ListExecutions(
        self, request: engine_pb2.ListExecutionsRequest, context: Context
    ) -> engine_pb2.ListExecutionsResponse:
        await self._authorize(context)
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        since = request.since_seq
        if request.page_token:
            try:
                since = int(request.page_token)
            except ValueError:
                await abort(context, ValidationError("INVALID_PAGE_TOKEN", "bad page_token", field="page_token"))
        try:
            reports = self.core.manager.list_executions(since, size)
        except MeshError as exc:
            await abort(context, exc)
        last = self.core.manager.last_seq
        next_token = str(reports[-1].seq) if reports and reports[-1].seq < last and len(reports) == size else ""
        return engine_pb2.ListExecutionsResponse(
            reports=[self.core.to_pb(r) for r in reports], next_page_token=next_token, last_seq=last
        )

    async def GetOrder(self, request: engine_pb2.GetOrderRequest, context: Context) -> engine_pb2.GetOrderResponse:
        await self._authorize(context)
        order = self.core.manager.get_order(request.client_order_id)
        if order is None:
            await abort(
                context,
                NotFoundError("ORDER_NOT_FOUND", f"no order {request.client_order_id!r}", field="client_order_id"),
            )
        req = order.request
        return engine_pb2.GetOrderResponse(
            order=engine_pb2.Order(
                client_order_id=order.client_order_id,
                venue=order.venue,
                model_id=req.model_id,
                account=req.account,
                instrument=req.symbol,
                side=_SIDE_PB[req.side],
                order_type=_TYPE_PB[req.order_type],
                time_in_force=_TIF_PB[req.time_in_force],
                quantity=fmt(req.quantity),
                limit_price=fmt(req.limit_price),
                status=_status_pb(order.status.value),  # type: ignore[arg-type]
                filled_qty=fmt(order.filled_qty),
                avg_price=fmt(order.avg_price),
                fees=fmt(order.fees),
            )
        )

    async def CancelOrder(
        self, request: engine_pb2.CancelOrderRequest, context: Context
    ) -> engine_pb2.CancelOrderResponse:
        await self._authorize(context)
        try:
            require_bounded(request.client_order_id, "client_order_id", required=True)
            reports = self.core.manager.cancel(request.client_order_id)
        except MeshError as exc:  # ORDER_NOT_FOUND, or a cancel reject (TOO_LATE_TO_CANCEL, ORDER_ALREADY_DONE)
            await abort(context, exc)
        self.core.dispatch(reports)
        return engine_pb2.CancelOrderResponse(reports=[self.core.to_pb(r) for r in reports])

    async def ListVenues(
        self, request: engine_pb2.ListVenuesRequest, context: Context
    ) -> engine_pb2.ListVenuesResponse:
        await self._authorize(context)
        return engine_pb2.ListVenuesResponse(venues=venue_infos(self.core.manager))

    async def CancelAllOrders(
        self, request: engine_pb2.CancelAllOrdersRequest, context: Context
    ) -> engine_pb2.CancelAllOrdersResponse:
        await self._authorize(context)
        manager = self.core.manager
        reports = manager.cancel_all(model_id=request.model_id or None, venue=request.venue or None)
        self.core.dispatch(reports)
        canceled = sum(1 for r in reports if r.exec_type.value == "CANCELED")
        remaining = len(manager.open_orders(model_id=request.model_id or None, venue=request.venue or None))
        log.warning(
            "[ENGINE] cancel-all (venue=%s model=%s): %d cancelled, %d left",
            request.venue or "*",
            request.model_id or "*",
            canceled,
            remaining,
        )
        return engine_pb2.CancelAllOrdersResponse(canceled_count=canceled, resting_remaining=remaining)


def venue_infos(manager: OrderManager) -> list[engine_pb2.VenueInfo]:
    out = []
    for name, venue in manager.venues.items():
        status = venue.status()
        out.append(
            engine_pb2.VenueInfo(
                name=name,
                kind=status.kind,
                connected=status.connected,
                instruments=list(status.instruments),
                detail=status.detail,
                instrument_specs=[
                    engine_pb2.InstrumentInfo(
                        instrument=i.symbol,
                        tick_size=fmt(i.tick_size),
                        lot_size=fmt(i.lot_size),
                        min_quantity=fmt(i.min_qty),
                    )
                    for i in venue.instruments().values()
                ],
            )
        )
    return out


class MarketDataService(engine_pb2_grpc.MarketDataServiceServicer):
    """Quotes of the live venues. Public, read-only: no token needed."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    async def StreamQuotes(
        self, request: engine_pb2.StreamQuotesRequest, context: Context
    ) -> AsyncIterator[engine_pb2.StreamQuotesResponse]:
        wanted = frozenset(request.instruments)
        queue = self.core.subscribe_quotes()
        try:
            snapshot = [q for q in self.core.live_quotes() if not wanted or q.instrument in wanted]
            if snapshot:
                yield engine_pb2.StreamQuotesResponse(quotes=snapshot)
            while True:
                quotes = await queue.get()
                selected = [q for q in quotes if not wanted or q.instrument in wanted]
                if selected:
                    yield engine_pb2.StreamQuotesResponse(quotes=selected)
        finally:
            self.core.unsubscribe_quotes(queue)

    async def GetQuote(self, request: engine_pb2.GetQuoteRequest, context: Context) -> engine_pb2.GetQuoteResponse:
        for quote in self.core.live_quotes():
            if quote.instrument == request.instrument:
                return engine_pb2.GetQuoteResponse(quote=quote)
        await abort(
            context,
            NotFoundError("UNKNOWN_INSTRUMENT", f"no quote for {request.instrument!r}", field="instrument"),
        )
