"""Every mapping between ops' domain objects and the wire (protobuf) forms, in one place.

Servicers and the signal path build their answers here; nothing else knows the enum numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.decimals import EXACT, fmt
from ops_server.allocation import CapitalAllocator
from ops_server.canary import CanaryStatus
from ops_server.canary.backtest_gate import BacktestStatus, BacktestVerdict
from ops_server.events import OpsEvent
from ops_server.measurement import ModelPerformance, PositionState
from ops_server.model_registry import ModelRoute, RoutingMode
from ops_server.order_tracker import TrackedOrder
from ops_server.risk import ModelLimits, RiskLimits, TradingState
from ops_server.router import SizedOrder

MODE_PB = {
    RoutingMode.LIVE: ops_pb2.ROUTING_MODE_LIVE,
    RoutingMode.SHADOW: ops_pb2.ROUTING_MODE_SHADOW,
    RoutingMode.DISABLED: ops_pb2.ROUTING_MODE_DISABLED,
}
MODE_BY_NAME = {mode.value: pb for mode, pb in MODE_PB.items()}
SIDE_PB = {"BUY": common_pb2.SIDE_BUY, "SELL": common_pb2.SIDE_SELL}
TRADING_STATE_PB = {
    TradingState.ACTIVE: common_pb2.TRADING_STATE_ACTIVE,
    TradingState.REDUCING: common_pb2.TRADING_STATE_REDUCING,
    TradingState.HALTED: common_pb2.TRADING_STATE_HALTED,
}
STATE_FROM_PB = {pb: state for state, pb in TRADING_STATE_PB.items()}
CANARY_STATE_PB = {
    "SHADOW": ops_pb2.CANARY_STATE_SHADOW,
    "STEPPING": ops_pb2.CANARY_STATE_STEPPING,
    "WAITING_CONFIRMATION": ops_pb2.CANARY_STATE_WAITING_CONFIRMATION,
    "PAUSED": ops_pb2.CANARY_STATE_PAUSED,
    "PROMOTED": ops_pb2.CANARY_STATE_PROMOTED,
    "ROLLED_BACK": ops_pb2.CANARY_STATE_ROLLED_BACK,
}
DECISION_STATUS_NAME = {value: name.removeprefix("DECISION_STATUS_") for name, value in ops_pb2.DecisionStatus.items()}


def unix_nanos(moment: datetime | float | None) -> int:
    """A datetime or epoch seconds as Unix nanoseconds (0 for None)."""
    if moment is None:
        return 0
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return int(seconds * 1e9)


def model_info(route: ModelRoute, quota: Decimal, state: TradingState) -> ops_pb2.ModelInfo:
    """A model as ListModels and SetRoutingWeights show it."""
    return ops_pb2.ModelInfo(
        model_id=route.model_id,
        strategy_id=route.strategy_id,
        version=route.version,
        mode=MODE_PB[route.mode],
        routing_weight=route.weight,
        stable=route.stable,
        instruments=sorted(route.instruments),
        quota_usd=fmt(quota),
        trading_state=TRADING_STATE_PB[state],
    )


def order_command(
    order: SizedOrder, venue: str, account: str, trace: common_pb2.TraceContext
) -> engine_pb2.OrderCommand:
    """The engine command for one of ops' orders: a ``NewOrder`` sent to ``venue`` and booked on ``account`` (always
    MARKET IOC: a signal is a target, not a resting quote). Written into the command's own ``new_order`` field by
    field: building a ``NewOrder`` and then the command around it copies the order once more (0.8 of 1.6 us)."""
    command = engine_pb2.OrderCommand()
    new = command.new_order
    new.client_order_id = order.client_order_id
    new.venue = venue
    new.account = account
    new.model_id = order.model_id
    new.instrument = order.instrument
    new.side = SIDE_PB[order.side]
    new.order_type = common_pb2.ORDER_TYPE_MARKET
    new.time_in_force = common_pb2.TIME_IN_FORCE_IOC
    new.quantity = fmt(order.quantity)
    new.trace.CopyFrom(trace)
    return command


def fill(order: TrackedOrder, report: engine_pb2.ExecutionReport) -> ops_pb2.Fill:
    """The fill a strategy sees for one fill report of its order (addressed to the model that owns it)."""
    return ops_pb2.Fill(
        model_id=order.owner or order.model_id,
        signal_id=order.signal_id,
        client_order_id=order.client_order_id,
        exec_id=report.exec_id,
        seq=report.seq,
        instrument=order.instrument,
        side=SIDE_PB[order.side],
        quantity=report.last_qty,
        price=report.last_price,
        fee=report.fee,
        liquidity=report.liquidity,
        mode=MODE_BY_NAME[order.mode],
        ts_unix_nanos=report.ts_unix_nanos,
    )


_ONE = Decimal(1)


def price_at_tick(price: Decimal, tick: Decimal | None) -> Decimal:
    """A computed price (an average cost) rounded to the nearest whole multiple of the instrument's tick, half to even
    (a tick of 0.5 shows 100.83 as 101); as is without a tick."""
    if tick is None or tick <= 0:
        return price
    ticks = EXACT.divide(price, tick).quantize(_ONE, rounding=ROUND_HALF_EVEN)
    return EXACT.multiply(ticks, tick)


def position(
    route: ModelRoute, instrument: str, state: PositionState, mark: Decimal | None, tick: Decimal | None = None
) -> ops_pb2.Position:
    """One position of a model; ``avg_cost`` is quantized to ``tick`` (the instrument's tick size) when known."""
    return ops_pb2.Position(
        model_id=route.model_id,
        instrument=instrument,
        quantity=fmt(state.quantity),
        avg_cost=fmt(price_at_tick(state.avg_cost, tick)),
        realized_pnl=fmt(state.realized),
        unrealized_pnl=fmt(state.unrealized(mark)),
        mark=fmt(mark),
        fees=fmt(state.fees),
        mode=MODE_PB[route.mode],
    )


def model_stats(route: ModelRoute, perf: ModelPerformance, bar_seconds: float) -> ops_pb2.ModelStats:
    return ops_pb2.ModelStats(
        model_id=route.model_id,
        strategy_id=route.strategy_id,
        mode=MODE_PB[route.mode],
        realized_pnl=fmt(perf.realized),
        unrealized_pnl=fmt(perf.unrealized),
        fees=fmt(perf.fees),
        slippage=fmt(perf.slippage),
        equity=fmt(perf.equity),
        sharpe=perf.sharpe_annual,
        max_drawdown=float(perf.max_drawdown_usd),
        max_drawdown_usd=float(perf.max_drawdown_usd),
        max_drawdown_ratio=perf.max_drawdown_ratio,
        drawdown_ratio=perf.drawdown_ratio,
        hit_rate=perf.hit_rate,
        observations=perf.observations,
        fills=perf.fills,
        bar_seconds=bar_seconds,
        min_bars=perf.min_bars,
    )


def order_summary(order: TrackedOrder) -> ops_pb2.OrderSummary:
    return ops_pb2.OrderSummary(
        client_order_id=order.client_order_id,
        signal_id=order.signal_id,
        model_id=order.model_id,
        instrument=order.instrument,
        side=SIDE_PB[order.side],
        quantity=fmt(order.quantity),
        filled_qty=fmt(order.filled),
        status=engine_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_"),  # type: ignore[arg-type]
        mode=MODE_BY_NAME[order.mode],
        created_at_unix_nanos=order.created_ns,
    )


def allocations(allocator: CapitalAllocator) -> list[ops_pb2.Allocation]:
    return [
        ops_pb2.Allocation(strategy_id=s, fraction=w, capital_usd=fmt(allocator.allocation_usd(s)))
        for s, w in allocator.weights.items()
    ]


def canary_status(
    status: CanaryStatus, schedule: tuple[float, ...], backtest: BacktestVerdict | None = None
) -> ops_pb2.CanaryStatus:
    """The wire form of a controller's status (non-finite statistics are left out) and its backtest verdict."""
    pb = ops_pb2.CanaryStatus(
        strategy_id=status.strategy,
        canary_model=status.canary_model,
        stable_model=status.stable_model,
        state=CANARY_STATE_PB[status.state.value],
        step_index=status.step_index,
        step_percent=status.step_percent,
        weights=status.weights,
        failed_checks=status.failed_checks,
        inconclusive_checks=status.inconclusive_checks,
        step_started_at_unix_nanos=unix_nanos(status.step_started_at),
        schedule=list(schedule),
        trials=status.trials,
        deflated_sharpe_ratio=status.last_check.dsr if status.last_check is not None else 0.0,
    )
    if status.last_check is not None:
        check = status.last_check
        pb.last_check.CopyFrom(
            ops_pb2.CanaryCheck(
                outcome=check.outcome.value,
                # Infinities too (the se of a flat series, MinTRL when SR <= SR*): left out, they would read as 0.
                statistics={k: v for k, v in check.statistics().items() if not math.isnan(v)},
                at_unix_nanos=unix_nanos(check.at),
            )
        )
    if backtest is not None and backtest.status is not BacktestStatus.NONE:
        pb.backtest.CopyFrom(
            ops_pb2.CanaryBacktest(
                report=backtest.report,
                status=backtest.status.value,
                required=backtest.required,
                sharpe_annual=backtest.sharpe_annual,
                max_drawdown_ratio=backtest.max_drawdown_ratio,
                pnl_usd=backtest.pnl_usd,
                note=backtest.note,
            )
        )
    return pb


def event(item: OpsEvent) -> ops_pb2.Event:
    return ops_pb2.Event(
        seq=item.seq,
        kind=item.kind,
        at_unix_nanos=unix_nanos(item.at),
        message=item.message,
        attributes=dict(item.attributes),
    )


def events(items: Iterable[OpsEvent], kinds: frozenset[str]) -> list[ops_pb2.Event]:
    """The events of the given kinds (all when ``kinds`` is empty)."""
    return [event(e) for e in items if not kinds or e.kind in kinds]


def limits(risk_limits: RiskLimits) -> dict[str, Any]:
    """The risk limits in force, in the shape of the limits file (decimals as strings)."""

    def model(m: ModelLimits) -> dict[str, Any]:
        return {
            "max_order_notional": fmt(m.max_order_notional),
            "max_position_qty": {k: fmt(v) for k, v in m.max_position_qty.items()},
            "order_rate_per_second": m.order_rate_per_second,
            "order_burst": m.order_burst,
            "max_daily_loss": fmt(m.max_daily_loss),
            "max_drawdown_ratio": m.max_drawdown_ratio,
            "breach_state": m.breach_state.value,
        }

    global_: dict[str, Any] = {
        "max_gross_exposure": fmt(risk_limits.max_gross_exposure),
        "stale_mark_seconds": risk_limits.stale_mark_seconds,
        "reduce_only_flip": risk_limits.reduce_only_flip,
    }
    if risk_limits.allowed_instruments is not None:
        global_["allowed_instruments"] = sorted(risk_limits.allowed_instruments)
    return {
        "global": global_,
        "default_model": model(risk_limits.default_model),
        "models": {name: model(m) for name, m in risk_limits.models.items()},
    }


def trading_states(
    global_state: TradingState, kill_switch: bool, models: Mapping[str, TradingState]
) -> ops_pb2.GetTradingStateResponse:
    return ops_pb2.GetTradingStateResponse(
        global_state=TRADING_STATE_PB[global_state],
        kill_switch_engaged=kill_switch,
        models={m: TRADING_STATE_PB[s] for m, s in models.items()},
    )
