"""The ops service's state and its signal path, independent of the gRPC servicers.

Everything here runs on one event loop: the signal path is synchronous between awaits, so
sizing reads a consistent view of positions, open orders and quotas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal, StrategyAuthenticator
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import ConfigError, MeshError, PermissionDeniedError, UnavailableError
from nautilus_mesh.files import atomic_write_text, load_json_file
from nautilus_mesh.status import error_detail
from nautilus_mesh.store import open_store
from nautilus_mesh.telemetry import Tracing
from ops_server import performance
from ops_server.canary import CanaryEvent, GuardSnapshot
from ops_server.canary_manager import CanaryManager
from ops_server.capital_allocator import AllocationDecision, CapitalAllocator, CapitalPolicy
from ops_server.circuit_breaker import EngineGate
from ops_server.config import OpsConfig
from ops_server.engine_link import EngineLink, ReportCursor
from ops_server.events import EventHub
from ops_server.measurement import Measurement, drawdown_of_pnl_curve
from ops_server.metrics import OpsMetrics
from ops_server.model_registry import ModelRegistry, ModelRoute, RoutingMode, paper_book
from ops_server.order_tracker import AppliedFill, OrderTracker, TrackedOrder
from ops_server.risk_rails import OrderIntent, RiskContext, RiskEvent, RiskLimits, RiskRails, Side, TradingState
from ops_server.router import InstrumentRules, LiveOrder, ShadowOrder, SignalRouter, SizedOrder

log = logging.getLogger(__name__)

ZERO = Decimal(0)
CENT = Decimal("0.01")
SECONDS_PER_YEAR = 365 * 24 * 3600
_STATE_NUMBER = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
_MODE_PB = {
    RoutingMode.LIVE: ops_pb2.ROUTING_MODE_LIVE,
    RoutingMode.SHADOW: ops_pb2.ROUTING_MODE_SHADOW,
    RoutingMode.DISABLED: ops_pb2.ROUTING_MODE_DISABLED,
}
_SIDE_PB = {"BUY": common_pb2.SIDE_BUY, "SELL": common_pb2.SIDE_SELL}
TRADING_STATE_PB = {
    TradingState.ACTIVE: common_pb2.TRADING_STATE_ACTIVE,
    TradingState.REDUCING: common_pb2.TRADING_STATE_REDUCING,
    TradingState.HALTED: common_pb2.TRADING_STATE_HALTED,
}
# Reports that get a span of their own in ops: fills and rejections (acks and cancels only update state).
TRACED_EXEC_TYPES = frozenset(
    {engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_PARTIAL_FILL, engine_pb2.EXEC_TYPE_REJECTED}
)


class LiveOrderSink:
    """Sends live orders to the live venue. Accepts only ``LiveOrder``."""

    def __init__(self, link: EngineLink, venue: str, account: str) -> None:
        self._link = link
        self.venue = venue
        self._account = account

    def send(self, order: LiveOrder, trace: common_pb2.TraceContext) -> engine_pb2.NewOrder:
        new = _new_order(order.order, self.venue, self._account, trace)
        self._link.send([engine_pb2.OrderCommand(new_order=new)])
        return new


class PaperOrderSink:
    """Sends shadow orders to the paper venue. Accepts only ``ShadowOrder``; knows no live venue."""

    def __init__(self, link: EngineLink, paper_venue: str) -> None:
        self._link = link
        self.venue = paper_venue

    def send(self, order: ShadowOrder, trace: common_pb2.TraceContext) -> engine_pb2.NewOrder:
        new = _new_order(order.order, self.venue, "paper", trace)
        self._link.send([engine_pb2.OrderCommand(new_order=new)])
        return new


def _new_order(order: SizedOrder, venue: str, account: str, trace: common_pb2.TraceContext) -> engine_pb2.NewOrder:
    return engine_pb2.NewOrder(
        client_order_id=order.client_order_id,
        venue=venue,
        account=account,
        model_id=order.model_id,
        instrument=order.instrument,
        side=_SIDE_PB[order.side],
        order_type=common_pb2.ORDER_TYPE_MARKET,
        time_in_force=common_pb2.TIME_IN_FORCE_IOC,
        quantity=fmt(order.quantity),
        trace=trace,
    )


class OpsCore:
    """Registry, allocator, rails, measurement, orders and the engine link of one ops service."""

    def __init__(self, config: OpsConfig, *, tracing: Tracing | None = None) -> None:
        self.config = config
        self.metrics = OpsMetrics()
        self.tracing = tracing or Tracing("ops", config.span_file, enabled=config.tracing)
        state_dir = Path(config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._legacy_state_path = state_dir / "state.json"  # the pre-store snapshot, imported once
        self.store = open_store(config.database_url, state_dir / "state.db")
        self.events = EventHub(state_dir / "audit.jsonl")
        # The registry changes at run time (weights, canary steps): ops works on a copy in its state dir,
        # seeded from the configured file on first start, so restarts keep the routing it had.
        working_registry = state_dir / "registry.json"
        if not working_registry.exists():
            seed = ModelRegistry.load(config.registry_path)  # validated before it is copied
            atomic_write_text(working_registry, json.dumps(seed.data.model_dump(mode="json"), indent=2) + "\n")
        self.registry = ModelRegistry.load(working_registry)
        self.canaries = CanaryManager(self.registry, self._on_canary_event)
        self.auth = StrategyAuthenticator({name: (s.token, s.models) for name, s in config.strategies.items()})
        policy = CapitalPolicy.load(config.capital_policy_path, known_strategies=self.registry.strategies())
        self.allocator = CapitalAllocator(policy)
        if config.risk_limits_path is None:
            raise ConfigError("risk_limits_path is required: ops does not trade without risk limits")
        self.risk = RiskRails(RiskLimits.load(config.risk_limits_path), on_event=self._on_risk_event)
        self.measurement = Measurement(periods_per_year=SECONDS_PER_YEAR / config.sample_interval_seconds)
        self.tracker = OrderTracker(state_dir / "journal.jsonl", dedup_window=config.dedup_window)
        self.cursor = ReportCursor()
        self.rules: dict[str, InstrumentRules] = {}
        self._mark_time: dict[str, float] = {}
        self.link = EngineLink(
            config.engine_address,
            config.engine_token,
            self.on_reports,
            self.on_quotes,
            self.cursor,
            on_connected=self._on_engine_connected,
        )
        self.engine_gate = EngineGate(self.link, self.metrics)  # ENGINE_UNAVAILABLE before sizing; circuit breaker
        self.last_sample_at: float | None = None
        self.live_sink = LiveOrderSink(self.link, config.live_venue, config.account)
        self.paper_sink = PaperOrderSink(self.link, config.paper_venue)
        self.router = SignalRouter(self.registry, self.quota, self.exposure_qty, self.mark, self.rules)
        self._fill_streams: dict[str, set[asyncio.Queue[ops_pb2.Fill]]] = {}
        self.decision_counts: dict[str, Counter[str]] = {}
        self.last_allocation: AllocationDecision | None = None
        self._connects = 0
        self._trading_day = time.gmtime()[:3]
        self._tasks: list[asyncio.Task[None]] = []
        self._restore_state()
        replayed = self.tracker.replay(self._replay_report)
        self._restore_trading_day()
        if replayed:
            self.events.publish("RECOVERED", f"replayed {replayed} journal records", records=replayed)
        self.update_allocation_metrics()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        self._tasks = [
            asyncio.create_task(self._every(self.config.sample_interval_seconds, self.sample), name="ops-sampler"),
            asyncio.create_task(
                self._every(self.config.allocation_interval_seconds, self.run_allocation), name="ops-allocator"
            ),
            asyncio.create_task(self._every(2.0, self._close_gaps), name="ops-reconcile"),
            asyncio.create_task(
                self._every(self.config.canary_interval_seconds, self.evaluate_canaries), name="ops-canary"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.link.stop()
        if not self.store.closed:  # stop() may run twice; the first one saved the final state
            self.save_state()
            self.store.close()
        self.tracker.close()
        self.events.close()
        self.tracing.force_flush()

    async def _every(self, seconds: float, action: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("[OPS] periodic task %s failed", getattr(action, "__name__", action))

    def _on_engine_connected(self) -> None:
        self.metrics.engine_connected.set(1)
        self._connects += 1
        if self._connects > 1:
            self.metrics.engine_reconnects.inc()
        for symbol, spec in self.link.instruments.items():
            self.rules[symbol] = InstrumentRules(
                lot_size=Decimal(spec.lot_size),
                min_quantity=Decimal(spec.min_quantity or "0"),
                tick_size=Decimal(spec.tick_size),
            )
        # Orders journaled before a crash may never have left: re-send them (the engine deduplicates).
        pending = list(self.tracker.unacknowledged())
        for order in pending:
            sized = SizedOrder(
                order.client_order_id,
                order.signal_id,
                order.model_id,
                order.strategy_id,
                order.instrument,
                order.side,
                order.quantity,
                order.reference_mid,
                ZERO,
                ZERO,
                order.owner,
            )
            trace = common_pb2.TraceContext(traceparent=order.traceparent)
            if order.venue == self.paper_sink.venue:
                self.paper_sink.send(ShadowOrder(sized), trace)
            else:
                self.live_sink.send(LiveOrder(sized), trace)
        if pending:
            log.info("[OPS] re-sent %d unacknowledged order(s) after connect", len(pending))

    async def _close_gaps(self) -> None:
        self.metrics.engine_connected.set(1 if self.link.connected else 0)
        if self.link.connected and self.cursor.highest > self.cursor.watermark:
            self.metrics.reconciled_reports.inc(await self.link.reconcile())

    # -- views used by the router and the rails -------------------------------------------

    def quota(self, route: ModelRoute) -> Decimal:
        """Model quota: strategy allocation x routing weight, or the paper capital for a shadow model."""
        if route.mode is RoutingMode.SHADOW:
            return self.config.shadow_capital_usd
        return (self.allocator.allocation_usd(route.strategy_id) * Decimal(repr(route.weight))).quantize(CENT)

    def exposure_qty(self, model_id: str, instrument: str) -> Decimal:
        return self.measurement.position(model_id, instrument) + self.tracker.open_quantity(model_id, instrument)

    def mark(self, instrument: str) -> Decimal | None:
        return self.measurement.marks.get(instrument)

    def model_info(self, route: ModelRoute) -> ops_pb2.ModelInfo:
        """A model as ListModels and SetRoutingWeights show it."""
        return ops_pb2.ModelInfo(
            model_id=route.model_id,
            strategy_id=route.strategy_id,
            version=route.version,
            mode=_MODE_PB[route.mode],
            routing_weight=route.weight,
            stable=route.stable,
            instruments=sorted(route.instruments),
            quota_usd=fmt(self.quota(route)),
            trading_state=TRADING_STATE_PB[self.risk.state(route.model_id)],
        )

    def used_quota(self, model_id: str) -> Decimal:
        """Gross notional of a model's positions plus open orders, at current marks."""
        route = self.registry.route(model_id)
        used = ZERO
        for instrument in route.instruments:
            mark = self.mark(instrument)
            if mark is not None:
                used += abs(self.exposure_qty(model_id, instrument)) * mark
        return used

    # -- the signal path -------------------------------------------------------------------

    def authenticate(self, metadata: Any) -> Principal:
        return self.auth.authenticate(metadata)

    def handle_signal(self, signal: ops_pb2.Signal, principal: Principal) -> ops_pb2.SignalDecision:
        """Validate, route, size, check and send one signal; always returns a decision (never raises)."""
        started = time.perf_counter()
        model_label = signal.model_id if self.registry.knows(signal.model_id) else "unknown"
        self.metrics.signals_received.labels(model_label).inc()
        attrs = {
            "messaging.message.id": signal.signal_id,
            "nautilus.model_id": signal.model_id,
            "nautilus.signal_id": signal.signal_id,
        }
        with self.tracing.consume("ops.signal receive", signal.trace, attrs) as span:
            decision = ops_pb2.SignalDecision(signal_id=signal.signal_id, model_id=signal.model_id)
            previous = self.tracker.previous_decision(signal.model_id, signal.signal_id)
            if previous is not None and signal.model_id in principal.models:
                duplicate = ops_pb2.SignalDecision()
                duplicate.CopyFrom(previous)
                duplicate.status = ops_pb2.DECISION_STATUS_DUPLICATE
                self.metrics.decisions.labels(model_label, "DUPLICATE").inc()
                self.metrics.decisions_by_code.labels(model_label, "DUPLICATE", "").inc()
                return duplicate
            try:
                principal.require_model(signal.model_id)
                route = self.router.route(signal)
                self.engine_gate.require()  # link down: ENGINE_UNAVAILABLE now, never a stale-mark rail later
                decision.mode = _MODE_PB[route.mode]
                if route.model_id in self.canaries.shadow_twins():
                    # Paper-trade the stable model beside its shadow canary whatever happens to the live order.
                    self._trade_paper_twin(signal, route)
                t_route = time.perf_counter()
                routed = self.router.size(signal, route)
                self.metrics.signals_routed.labels(route.model_id, route.mode.value).inc()
                if routed is None:
                    decision.status = ops_pb2.DECISION_STATUS_NO_ACTION
                    self.tracker.record(decision, None)
                    self._count_decision(model_label, decision)
                    return decision
                t_size = time.perf_counter()
                self._check_risk(routed, route)
                t_risk = time.perf_counter()
                order = routed.order
                decision.status = ops_pb2.DECISION_STATUS_ACCEPTED
                decision.client_order_id = order.client_order_id
                decision.side = _SIDE_PB[order.side]
                decision.quantity = fmt(order.quantity)
                span.set_attribute("nautilus.client_order_id", order.client_order_id)
                self._send(decision, routed, route)
                t_send = time.perf_counter()
                stage = self.metrics.stage_latency
                stage.labels("route").observe(t_route - started)
                stage.labels("size").observe(t_size - t_route)
                stage.labels("risk").observe(t_risk - t_size)
                stage.labels("send").observe(t_send - t_risk)
            except MeshError as exc:
                decision.status = ops_pb2.DECISION_STATUS_REJECTED
                decision.error.CopyFrom(error_detail(exc))
                span.add_event("rejected", {"code": exc.code, "kind": exc.kind, "rail": getattr(exc, "rail", "")})
                if isinstance(exc, PermissionDeniedError):
                    log.warning("[OPS] signal %s refused: %s", signal.signal_id, exc.message)
                else:
                    log.info(
                        "[OPS] signal %s for %s rejected: %s %s",
                        signal.signal_id,
                        signal.model_id,
                        exc.code,
                        exc.message,
                    )
            self._count_decision(model_label, decision)
            self.metrics.signal_latency.observe(time.perf_counter() - started)
            return decision

    def _trade_paper_twin(self, signal: ops_pb2.Signal, route: ModelRoute) -> None:
        """Paper-trade the stable model beside its shadow canary, so the canary is compared paper against paper."""
        twin = ModelRoute(
            model_id=paper_book(route.model_id),
            strategy_id=route.strategy_id,
            version=route.version,
            instruments=route.instruments,
            weight=0.0,
            mode=RoutingMode.SHADOW,
            stable=False,
        )
        twin_signal = ops_pb2.Signal()
        twin_signal.CopyFrom(signal)
        twin_signal.model_id = twin.model_id
        try:
            routed = self.router.size(twin_signal, twin)
            if routed is None:
                return
            decision = ops_pb2.SignalDecision(
                signal_id=signal.signal_id,
                model_id=twin.model_id,
                status=ops_pb2.DECISION_STATUS_ACCEPTED,
                mode=ops_pb2.ROUTING_MODE_SHADOW,
                client_order_id=routed.order.client_order_id,
                side=_SIDE_PB[routed.order.side],
                quantity=fmt(routed.order.quantity),
            )
            self._send(decision, routed, twin)
        except MeshError as exc:  # the twin only measures; it never changes the live decision
            log.debug("[OPS] paper twin of %s skipped: %s", route.model_id, exc.code)

    def _count_decision(self, model_label: str, decision: ops_pb2.SignalDecision) -> None:
        status = ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")
        self.metrics.decisions.labels(model_label, status).inc()
        self.metrics.decisions_by_code.labels(model_label, status, decision.error.code).inc()
        if model_label != "unknown":
            self.decision_counts.setdefault(model_label, Counter())[status] += 1

    def _check_risk(self, routed: LiveOrder | ShadowOrder, route: ModelRoute) -> None:
        order = routed.order
        if isinstance(routed, ShadowOrder):
            return  # paper orders carry no risk to capital; the paper venue applies its own venue rails
        now = time.monotonic()
        mark_time = self._mark_time.get(order.instrument)
        available = max(ZERO, self.quota(route) - self.used_quota(order.model_id))
        context = RiskContext(
            position_qty=self.measurement.position(order.model_id, order.instrument),
            open_order_qty=self.tracker.open_quantity(order.model_id, order.instrument),
            available_quota=available,
            gross_exposure=self.measurement.gross_exposure(self._live_models()),
            mark_age_seconds=None if mark_time is None else now - mark_time,
        )
        intent = OrderIntent(order.model_id, order.instrument, Side(order.side), order.quantity, order.mark)
        self.risk.check(intent, context)

    def _live_models(self) -> list[str]:
        return [r.model_id for r in self.registry.routes() if r.mode is RoutingMode.LIVE]

    def _send(self, decision: ops_pb2.SignalDecision, routed: LiveOrder | ShadowOrder, route: ModelRoute) -> None:
        order = routed.order
        if not self.link.ready_to_send():
            raise UnavailableError("ENGINE_UNAVAILABLE", "the engine link is down or backlogged; no order was sent")
        venue = self.paper_sink.venue if isinstance(routed, ShadowOrder) else self.live_sink.venue
        trace = common_pb2.TraceContext()
        attrs = {
            "messaging.message.id": order.client_order_id,
            "nautilus.client_order_id": order.client_order_id,
            "nautilus.model_id": order.model_id,
        }
        with self.tracing.produce("ops.order send", trace, attrs):
            decision.trace.CopyFrom(trace)
            tracked = TrackedOrder(
                client_order_id=order.client_order_id,
                signal_id=order.signal_id,
                model_id=order.model_id,
                strategy_id=order.strategy_id,
                instrument=order.instrument,
                side=order.side,
                quantity=order.quantity,
                mode=route.mode.value,
                venue=venue,
                reference_mid=order.mark,
                created_ns=time.time_ns(),
                traceparent=trace.traceparent,
                owner=order.owner,
            )
            # Write-ahead: the decision is journaled before the order leaves, so a crash cannot lose it;
            # an order journaled but never acknowledged is re-sent on reconnect (the engine deduplicates).
            self.tracker.record(decision, tracked)
            match routed:
                case LiveOrder():
                    self.live_sink.send(routed, trace)
                case ShadowOrder():
                    self.paper_sink.send(routed, trace)
        self.metrics.orders_submitted.labels(venue).inc()

    # -- reports and quotes ----------------------------------------------------------------

    def on_reports(self, reports: Sequence[engine_pb2.ExecutionReport]) -> None:
        fresh = []
        for report in reports:
            if report.seq == 0:  # an in-band rejection of a malformed command: nothing journaled to apply
                log.warning("[OPS] engine rejected a command: %s", report.error.message)
                continue
            if self.cursor.seen(report.seq):
                self.metrics.duplicate_reports.inc()
                continue
            self.cursor.mark(report.seq)
            fresh.append(report)
        self.tracker.journal_reports(fresh)  # one write for the frame, before anything is applied
        for report in fresh:
            self._apply_report(report, fan_out=True)

    def _replay_report(self, report: engine_pb2.ExecutionReport) -> None:
        self.cursor.mark(report.seq)
        self._apply_report(report, fan_out=False)

    def _apply_report(self, report: engine_pb2.ExecutionReport, *, fan_out: bool) -> None:
        attrs = {
            "messaging.message.id": report.exec_id,
            "nautilus.client_order_id": report.client_order_id,
            "nautilus.model_id": report.model_id,
        }
        traced = fan_out and report.exec_type in TRACED_EXEC_TYPES
        ctx = self.tracing.consume("ops.report receive", report.trace, attrs) if traced else contextlib.nullcontext()
        with ctx:
            applied = self.tracker.apply_report(report, journal=False)
            if applied is None:
                return
            self._apply_fill(applied, fan_out=fan_out)

    def _apply_fill(self, applied: AppliedFill, *, fan_out: bool) -> None:
        order, report = applied.order, applied.report
        self.measurement.apply_fill(
            order.model_id, order.instrument, applied.signed_qty, applied.price, applied.fee, order.reference_mid
        )
        fill = ops_pb2.Fill(
            model_id=order.owner or order.model_id,
            signal_id=order.signal_id,
            client_order_id=order.client_order_id,
            exec_id=report.exec_id,
            seq=report.seq,
            instrument=order.instrument,
            side=_SIDE_PB[order.side],
            quantity=report.last_qty,
            price=report.last_price,
            fee=report.fee,
            liquidity=report.liquidity,
            mode=_MODE_PB[RoutingMode(order.mode)],
            ts_unix_nanos=report.ts_unix_nanos,
        )
        self.tracker.remember_fill(fill)
        if not fan_out:
            return
        self.metrics.fills.labels(order.model_id).inc()
        if order.filled == abs(applied.signed_qty):  # first fill of this order
            self.metrics.signal_to_fill.observe(max(0.0, (time.time_ns() - order.created_ns) / 1e9))
        attrs = {"messaging.message.id": report.exec_id, "nautilus.model_id": order.model_id}
        with self.tracing.produce("ops.fill send", fill.trace, attrs):
            for queue in self._fill_streams.get(order.owner, ()):
                try:
                    queue.put_nowait(fill)
                except asyncio.QueueFull:
                    self.metrics.fills_dropped.inc()

    def on_quotes(self, quotes: Sequence[common_pb2.Quote]) -> None:
        now = time.monotonic()
        for quote in quotes:
            if quote.mid:
                self.measurement.set_mark(quote.instrument, Decimal(quote.mid))
                self._mark_time[quote.instrument] = now

    def subscribe_fills(self, models: frozenset[str], queue: asyncio.Queue[ops_pb2.Fill]) -> None:
        for model in models:
            self._fill_streams.setdefault(model, set()).add(queue)

    def unsubscribe_fills(self, queue: asyncio.Queue[ops_pb2.Fill]) -> None:
        for queues in self._fill_streams.values():
            queues.discard(queue)

    # -- periodic decisions ----------------------------------------------------------------

    def capital_bases(self) -> dict[str, Decimal]:
        bases = {r.book: self.quota(r) for r in self.registry.routes()}
        for run in self.canaries.runs.values():
            bases[paper_book(run.controller.stable_model)] = self.config.shadow_capital_usd
        return bases

    def sample(self) -> None:
        """Sample equity into return series, feed loss limits, refresh metrics."""
        now = self.last_sample_at = time.time()
        today = time.gmtime(now)[:3]
        if today != self._trading_day:  # daily-loss limits count from UTC midnight
            self.measurement.start_day()
            self._trading_day = today
        bases = self.capital_bases()
        self.canaries.record_sample(self.measurement.sample(now, bases))
        m = self.metrics
        for route in self.registry.routes():
            model = route.model_id
            perf = self.measurement.performance(route.book)
            m.model_pnl.labels(model).set(float(perf.equity))
            m.model_sharpe.labels(model).set(perf.sharpe)
            m.model_drawdown.labels(model).set(perf.max_drawdown)
            m.trading_state.labels(model).set(_STATE_NUMBER[self.risk.state(model).value])
            for instrument in route.instruments:
                position = self.measurement.position(route.book, instrument)
                m.model_position.labels(model, instrument).set(float(position))
            if route.mode is RoutingMode.LIVE:
                self.risk.update_pnl(
                    model, self.measurement.daily_pnl(model), self.measurement.drawdown(model, bases.get(model, ZERO))
                )
        m.trading_state.labels("").set(_STATE_NUMBER[self.risk.global_state.value])
        self.update_allocation_metrics()

    def strategy_returns(self) -> dict[str, list[float]]:
        """Per strategy: its models' return series combined by routing weight (aligned by sample)."""
        out: dict[str, list[float]] = {}
        for strategy in self.registry.strategies():
            routes = [r for r in self.registry.models_of(strategy) if r.mode is RoutingMode.LIVE and r.weight > 0]
            series = [(r.weight, self.measurement.returns(r.model_id)) for r in routes]
            n = min((len(s) for _, s in series), default=0)
            out[strategy] = [sum(w * s[len(s) - n + i] for w, s in series) for i in range(n)]
        return out

    def strategy_stats(self) -> list[ops_pb2.ModelStats]:
        """Per strategy: its live models' PnL summed, and statistics of the weight-combined return series."""
        out = []
        returns = self.strategy_returns()
        for strategy in self.registry.strategies():
            perfs = [
                self.measurement.performance(r.model_id)
                for r in self.registry.models_of(strategy)
                if r.mode is RoutingMode.LIVE
            ]
            series = returns.get(strategy, [])
            equity_curve = self.measurement.combined_equity(
                [r.model_id for r in self.registry.models_of(strategy) if r.mode is RoutingMode.LIVE]
            )
            out.append(
                ops_pb2.ModelStats(
                    strategy_id=strategy,
                    mode=ops_pb2.ROUTING_MODE_LIVE,
                    realized_pnl=fmt(sum((p.realized for p in perfs), start=ZERO)),
                    unrealized_pnl=fmt(sum((p.unrealized for p in perfs), start=ZERO)),
                    fees=fmt(sum((p.fees for p in perfs), start=ZERO)),
                    slippage=fmt(sum((p.slippage for p in perfs), start=ZERO)),
                    equity=fmt(sum((p.equity for p in perfs), start=ZERO)),
                    sharpe=performance.annualized_sharpe(series, self.measurement.periods_per_year)
                    if len(series) >= 2
                    else 0.0,
                    max_drawdown=drawdown_of_pnl_curve(equity_curve),
                    hit_rate=performance.hit_rate(series) if series else 0.0,
                    observations=len(series),
                    fills=sum(p.fills for p in perfs),
                )
            )
        return out

    def run_allocation(self, forced: bool = False) -> AllocationDecision:
        """One capital allocator cycle (raises PermissionDeniedError for a forced cycle the policy forbids)."""
        decision = self.allocator.run_cycle(self.strategy_returns(), time.time(), forced=forced)
        self.metrics.allocation_decisions.labels(decision.reason.value).inc()
        if decision.changed or forced:
            self.events.publish(
                "ALLOCATION",
                decision.message,
                reason=decision.reason.value,
                **{f"weight.{k}": f"{v:.6f}" for k, v in decision.new_weights.items()},
            )
            self.save_state()
        else:
            self.events.publish("ALLOCATION", decision.message, reason=decision.reason.value)
        self.last_allocation = decision
        self.update_allocation_metrics()
        return decision

    def update_allocation_metrics(self) -> None:
        for strategy, weight in self.allocator.weights.items():
            self.metrics.strategy_allocation.labels(strategy).set(weight)
        for route in self.registry.routes():
            quota = self.quota(route) if route.mode is RoutingMode.LIVE else ZERO
            self.metrics.allocated_capital.labels(route.model_id).set(float(quota))

    async def engage_kill_switch(self, reason: str) -> tuple[int, int]:
        """Halt everything, then cancel every resting order at the engine; returns (cancelled, still resting)."""
        self.risk.engage_kill_switch(reason)
        self.save_state()
        try:
            response = await self.link.cancel_all()
        except grpc.aio.AioRpcError as exc:
            raise UnavailableError(
                "ENGINE_UNAVAILABLE",
                f"trading is halted, but the engine could not cancel resting orders: {exc.code().name}",
            ) from None
        self.events.publish(
            "KILL_SWITCH",
            f"kill switch engaged: {response.canceled_count} order(s) cancelled, {response.resting_remaining} resting",
            canceled=response.canceled_count,
            resting=response.resting_remaining,
            reason=reason,
        )
        log.warning(
            "[OPS] kill switch engaged (%s): %d cancelled, %d still resting",
            reason,
            response.canceled_count,
            response.resting_remaining,
        )
        return response.canceled_count, response.resting_remaining

    def evaluate_canaries(self) -> list[CanaryEvent]:
        return self.canaries.evaluate(self.canary_guards)

    def canary_guards(self, model_id: str) -> GuardSnapshot:
        """The canary's hard-guard inputs: drawdown and daily loss from measurement, breaches and error rate."""
        route = self.registry.route(model_id)
        base = self.quota(route)
        book = route.book  # the paper book while the canary is in shadow
        decisions = self.decision_counts.get(model_id, Counter())
        total = sum(decisions.values())
        breaches = sum(n for (rail, model), n in self.risk.rejections.items() if model == model_id)
        return GuardSnapshot(
            drawdown=min(1.0, self.measurement.drawdown(book, base)) if base > 0 else 0.0,
            daily_loss=float(max(ZERO, -self.measurement.daily_pnl(book))),
            risk_breaches=breaches,
            error_rate=decisions["REJECTED"] / total if total else 0.0,
        )

    def _on_canary_event(self, event: CanaryEvent) -> None:
        self.metrics.canary_transitions.labels(event.strategy, event.to_state.value).inc()
        self.events.publish(
            "CANARY",
            event.message,
            strategy=event.strategy,
            model_id=event.model_id,
            from_state=event.from_state.value,
            to_state=event.to_state.value,
            reason=event.reason.value,
            step_percent=event.step_percent_after,
            **{f"stat.{k}": f"{v:.6g}" for k, v in event.statistics.items()},
        )
        for route in self.registry.models_of(event.strategy):
            self.metrics.canary_weight.labels(event.strategy, route.model_id).set(route.weight)
        self.update_allocation_metrics()
        self.save_state()

    def _on_risk_event(self, event: RiskEvent) -> None:
        if event.kind == "REJECTED":
            self.metrics.risk_rejections.labels(event.rail, event.model_id or "global").inc()
        record = event.to_dict()
        attributes = {k: v for k, v in record.items() if k not in ("kind", "message", "details", "at")}
        attributes.update({f"detail.{k}": v for k, v in event.details.items()})
        self.events.publish(f"RISK_{event.kind}", event.message, **attributes)
        if event.kind != "REJECTED":
            self.save_state()

    # -- persistence -----------------------------------------------------------------------

    def save_state(self) -> None:
        """Write the restartable state as store documents, all in one transaction."""
        documents = {
            "allocator": self.allocator.snapshot(),
            "risk": self.risk.snapshot(),
            "canaries": self.canaries.snapshot(),
            "trading_day": {
                "day": list(self._trading_day),
                "day_start_equity": {
                    m: str(self.measurement.book(m).day_start_equity) for m in self.measurement.models()
                },
            },
        }
        # Through JSON with str() for what JSON lacks (Decimals, enums), exactly as the old state file was written.
        self.store.put_many({key: json.loads(json.dumps(value, default=str)) for key, value in documents.items()})

    def _restore_trading_day(self) -> None:
        """Daily-loss limits keep counting from the day's start across a restart on the same UTC day."""
        saved = self.store.get("trading_day") or {}
        if tuple(saved.get("day", ())) == self._trading_day:
            for model_id, equity in saved.get("day_start_equity", {}).items():
                self.measurement.book(model_id).day_start_equity = Decimal(equity)
        else:
            self.measurement.start_day()

    def _restore_state(self) -> None:
        parts = ("allocator", "risk", "canaries")
        legacy = self._legacy_state_path
        if legacy.exists():
            if all(self.store.get(key) is None for key in (*parts, "trading_day")):
                old = load_json_file(legacy)
                documents = {key: old[key] for key in parts if key in old}
                if "trading_day" in old:
                    documents["trading_day"] = {
                        "day": old["trading_day"],
                        "day_start_equity": old.get("day_start_equity", {}),
                    }
                self.store.put_many(documents)
                imported = legacy.with_name(legacy.name + ".imported")
                legacy.replace(imported)
                log.info(
                    "[OPS] imported %s into the state store %s (kept as %s)", legacy, self.store.location, imported.name
                )
            else:
                log.warning("[OPS] ignoring %s: the state store %s already holds state", legacy, self.store.location)
        state = {key: self.store.get(key) for key in parts}
        if state["allocator"] is not None:
            self.allocator.restore(state["allocator"])
        if state["risk"] is not None:
            self.risk.restore(state["risk"])
        if state["canaries"] is not None:
            self.canaries.restore(state["canaries"])
        if any(value is not None for value in state.values()):
            log.info("[OPS] restored allocator and risk state from %s", self.store.location)
