"""``nautilus.ops.v1.OpsService``: the gRPC face of OpsCore for strategies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import Principal
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import MeshError, NotFoundError, ValidationError
from nautilus_mesh.status import abort, error_detail, error_from_detail
from ops_server.admin import canary_statuses
from ops_server.core import _MODE_PB, _SIDE_PB, TRADING_STATE_PB, OpsCore
from ops_server.events import OpsEvent
from ops_server.model_registry import RoutingMode
from ops_server.risk.rails import ModelLimits, RiskLimits

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]
T = TypeVar("T")

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def paginate(items: Sequence[T], page_size: int, page_token: str) -> tuple[list[T], str]:
    """A page of ``items`` and the token of the next page ("" at the end)."""
    if page_size < 0:
        raise ValidationError("INVALID_PAGE_SIZE", "page_size must be >= 0", field="page_size")
    size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise ValidationError(
            "INVALID_PAGE_TOKEN", "page_token is not one this server issued", field="page_token"
        ) from None
    if start < 0:
        raise ValidationError("INVALID_PAGE_TOKEN", "page_token is not one this server issued", field="page_token")
    page = list(items[start : start + size])
    return page, str(start + size) if start + size < len(items) else ""


class OpsService(ops_pb2_grpc.OpsServiceServicer):
    """Strategies' entry point. Every call needs a strategy token."""

    def __init__(self, core: OpsCore, *, stream_queue_size: int = 10_000) -> None:
        self.core = core
        self._queue_size = stream_queue_size
        self._streams: set[asyncio.Task[None]] = set()

    async def _principal(self, context: Context) -> Principal:
        try:
            return self.core.authenticate(context.invocation_metadata())
        except MeshError as exc:
            await abort(context, exc)

    async def StreamSignals(
        self, request_iterator: AsyncIterator[ops_pb2.StreamSignalsRequest], context: Context
    ) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        principal = await self._principal(context)
        outbox: asyncio.Queue[ops_pb2.SignalDecision | ops_pb2.Fill | None] = asyncio.Queue(self._queue_size)
        self.core.subscribe_fills(principal.models, outbox)  # type: ignore[arg-type]
        max_items = self.core.config.max_signals_per_frame
        log.info("[OPS] signal stream opened by strategy %s", principal.name)

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    if len(frame.signals) > max_items:
                        error = ValidationError(
                            "FRAME_TOO_LARGE",
                            f"a frame carries at most {max_items} signals, got {len(frame.signals)}",
                            {"max": max_items, "got": len(frame.signals)},
                            field="signals",
                        )
                        await outbox.put(
                            ops_pb2.SignalDecision(status=ops_pb2.DECISION_STATUS_REJECTED, error=error_detail(error))
                        )
                        continue
                    for signal in frame.signals:
                        await outbox.put(self.core.handle_signal(signal, principal))
            finally:
                await outbox.put(None)

        reader = asyncio.create_task(read())
        try:
            done = False
            while not done:
                item = await outbox.get()
                decisions: list[ops_pb2.SignalDecision] = []
                fills: list[ops_pb2.Fill] = []
                while True:
                    if item is None:
                        done = True
                    elif isinstance(item, ops_pb2.Fill):
                        fills.append(item)
                    else:
                        decisions.append(item)
                    if outbox.empty() or len(decisions) + len(fills) >= max_items:
                        break
                    item = outbox.get_nowait()
                if decisions or fills:
                    yield ops_pb2.StreamSignalsResponse(decisions=decisions, fills=fills)
        finally:
            self.core.unsubscribe_fills(outbox)  # type: ignore[arg-type]
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError, Exception):
                await reader
            log.info("[OPS] signal stream of strategy %s closed", principal.name)

    async def SubmitSignal(
        self, request: ops_pb2.SubmitSignalRequest, context: Context
    ) -> ops_pb2.SubmitSignalResponse:
        principal = await self._principal(context)
        decision = self.core.handle_signal(request.signal, principal)
        if decision.status == ops_pb2.DECISION_STATUS_REJECTED:
            await abort(context, error_from_detail(decision.error))
        return ops_pb2.SubmitSignalResponse(decision=decision)

    async def GetPositions(
        self, request: ops_pb2.GetPositionsRequest, context: Context
    ) -> ops_pb2.GetPositionsResponse:
        await self._principal(context)
        core = self.core
        positions = []
        for route in core.registry.routes():
            if request.model_id and route.model_id != request.model_id:
                continue
            book = core.measurement.book(route.book)  # a shadow model shows its paper book
            for instrument, pos in sorted(book.positions.items()):
                mark = core.mark(instrument)
                positions.append(
                    ops_pb2.Position(
                        model_id=route.model_id,
                        instrument=instrument,
                        quantity=fmt(pos.quantity),
                        avg_cost=fmt(pos.avg_cost),
                        realized_pnl=fmt(pos.realized),
                        unrealized_pnl=fmt(pos.unrealized(mark)),
                        mark=fmt(mark),
                        fees=fmt(pos.fees),
                        mode=_MODE_PB[route.mode],
                    )
                )
        return ops_pb2.GetPositionsResponse(positions=positions)

    async def ListModels(self, request: ops_pb2.ListModelsRequest, context: Context) -> ops_pb2.ListModelsResponse:
        await self._principal(context)
        core = self.core
        models = [
            core.model_info(r)
            for r in core.registry.routes()
            if not request.strategy_id or r.strategy_id == request.strategy_id
        ]
        return ops_pb2.ListModelsResponse(models=models)

    async def GetAllocations(
        self, request: ops_pb2.GetAllocationsRequest, context: Context
    ) -> ops_pb2.GetAllocationsResponse:
        await self._principal(context)
        allocator = self.core.allocator
        last = self.core.last_allocation
        return ops_pb2.GetAllocationsResponse(
            allocations=[
                ops_pb2.Allocation(strategy_id=s, fraction=w, capital_usd=fmt(allocator.allocation_usd(s)))
                for s, w in allocator.weights.items()
            ],
            total_capital_usd=fmt(allocator.policy.total_capital),
            updated_at_unix_nanos=int((allocator.last_applied_at or 0) * 1e9),
            last_reason=last.reason.value if last is not None else "",
        )

    async def GetModelQuota(
        self, request: ops_pb2.GetModelQuotaRequest, context: Context
    ) -> ops_pb2.GetModelQuotaResponse:
        await self._principal(context)
        try:
            route = self.core.registry.route(request.model_id)
        except NotFoundError as exc:
            await abort(context, exc)
        quota = self.core.quota(route)
        used = self.core.used_quota(route.model_id)
        return ops_pb2.GetModelQuotaResponse(
            model_id=route.model_id,
            quota_usd=fmt(quota),
            used_usd=fmt(used),
            available_usd=fmt(max(quota - used, Decimal(0))),
        )

    async def GetModelStats(
        self, request: ops_pb2.GetModelStatsRequest, context: Context
    ) -> ops_pb2.GetModelStatsResponse:
        await self._principal(context)
        core = self.core
        models = []
        for route in core.registry.routes():
            if request.model_id and route.model_id != request.model_id:
                continue
            p = core.measurement.performance(route.book)
            models.append(
                ops_pb2.ModelStats(
                    model_id=route.model_id,
                    strategy_id=route.strategy_id,
                    mode=_MODE_PB[route.mode],
                    realized_pnl=fmt(p.realized),
                    unrealized_pnl=fmt(p.unrealized),
                    fees=fmt(p.fees),
                    slippage=fmt(p.slippage),
                    equity=fmt(p.equity),
                    sharpe=p.sharpe,
                    max_drawdown=p.max_drawdown,
                    hit_rate=p.hit_rate,
                    observations=p.observations,
                    fills=p.fills,
                )
            )
        return ops_pb2.GetModelStatsResponse(models=models, strategies=core.strategy_stats())

    async def ListOrders(self, request: ops_pb2.ListOrdersRequest, context: Context) -> ops_pb2.ListOrdersResponse:
        await self._principal(context)
        orders = [
            o
            for o in reversed(self.core.tracker.orders.values())
            if not request.model_id or o.model_id == request.model_id
        ]
        try:
            page, token = paginate(orders, request.page_size, request.page_token)
        except MeshError as exc:
            await abort(context, exc)
        return ops_pb2.ListOrdersResponse(
            orders=[
                ops_pb2.OrderSummary(
                    client_order_id=o.client_order_id,
                    signal_id=o.signal_id,
                    model_id=o.model_id,
                    instrument=o.instrument,
                    side=_SIDE_PB[o.side],
                    quantity=fmt(o.quantity),
                    filled_qty=fmt(o.filled),
                    status=_status_name(o.status),
                    mode=_MODE_PB[RoutingMode(o.mode)],
                    created_at_unix_nanos=o.created_ns,
                )
                for o in page
            ],
            next_page_token=token,
        )

    async def GetCanaryStatus(
        self, request: ops_pb2.GetCanaryStatusRequest, context: Context
    ) -> ops_pb2.GetCanaryStatusResponse:
        await self._principal(context)
        return ops_pb2.GetCanaryStatusResponse(canaries=canary_statuses(self.core.canaries, request.strategy_id))

    async def WatchEvents(
        self, request: ops_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[ops_pb2.WatchEventsResponse]:
        await self._principal(context)
        kinds = frozenset(request.kinds)
        hub = self.core.events
        queue = hub.subscribe()
        try:
            if request.include_recent:
                recent = [_event_pb(e) for e in hub.recent if not kinds or e.kind in kinds]
                if recent:
                    yield ops_pb2.WatchEventsResponse(events=recent)
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < 500:
                    batch.append(queue.get_nowait())
                selected = [_event_pb(e) for e in batch if not kinds or e.kind in kinds]
                if selected:
                    yield ops_pb2.WatchEventsResponse(events=selected)
        finally:
            hub.unsubscribe(queue)

    async def GetRiskLimits(
        self, request: ops_pb2.GetRiskLimitsRequest, context: Context
    ) -> ops_pb2.GetRiskLimitsResponse:
        await self._principal(context)
        limits = struct_pb2.Struct()
        limits.update(limits_to_dict(self.core.risk.limits))
        return ops_pb2.GetRiskLimitsResponse(limits=limits)

    async def GetTradingState(
        self, request: ops_pb2.GetTradingStateRequest, context: Context
    ) -> ops_pb2.GetTradingStateResponse:
        await self._principal(context)
        risk = self.core.risk
        return ops_pb2.GetTradingStateResponse(
            global_state=TRADING_STATE_PB[risk.global_state],
            kill_switch_engaged=risk.kill_switch_engaged,
            models={r.model_id: TRADING_STATE_PB[risk.state(r.model_id)] for r in self.core.registry.routes()},
        )

    async def ListFills(self, request: ops_pb2.ListFillsRequest, context: Context) -> ops_pb2.ListFillsResponse:
        await self._principal(context)
        fills = [
            f
            for f in reversed(self.core.tracker.fills.values())
            if not request.model_id or f.model_id == request.model_id
        ]
        try:
            page, token = paginate(fills, request.page_size, request.page_token)
        except MeshError as exc:
            await abort(context, exc)
        return ops_pb2.ListFillsResponse(fills=page, next_page_token=token)


def _event_pb(event: OpsEvent) -> ops_pb2.Event:
    return ops_pb2.Event(
        seq=event.seq,
        kind=event.kind,
        at_unix_nanos=int(event.at * 1e9),
        message=event.message,
        attributes=dict(event.attributes),
    )


def limits_to_dict(limits: RiskLimits) -> dict[str, Any]:
    """The risk limits in force, in the shape of the limits file (decimals as strings)."""

    def model(m: ModelLimits) -> dict[str, Any]:
        return {
            "max_order_notional": fmt(m.max_order_notional),
            "max_position_qty": {k: fmt(v) for k, v in m.max_position_qty.items()},
            "order_rate_per_second": m.order_rate_per_second,
            "order_burst": m.order_burst,
            "max_daily_loss": fmt(m.max_daily_loss),
            "max_drawdown": m.max_drawdown,
            "breach_state": m.breach_state.value,
        }

    global_: dict[str, Any] = {
        "max_gross_exposure": fmt(limits.max_gross_exposure),
        "stale_mark_seconds": limits.stale_mark_seconds,
    }
    if limits.allowed_instruments is not None:
        global_["allowed_instruments"] = sorted(limits.allowed_instruments)
    return {
        "global": global_,
        "default_model": model(limits.default_model),
        "models": {name: model(m) for name, m in limits.models.items()},
    }


def _status_name(status: int) -> str:
    return engine_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")  # type: ignore[arg-type]
