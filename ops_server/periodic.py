"""The periodic decisions: sampling equity into return series, the capital allocation cycle, canary evaluation.

Every interval, equity is sampled into per-model return series (live books and paper books), loss and drawdown
limits are fed, and the model gauges refreshed. The capital allocator and the canary controllers read those series
and publish new allocations and routing weights as events; quotas change for the next signal.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.decimals import fmt
from ops_server import performance
from ops_server.allocation import AllocationDecision
from ops_server.canary import CanaryEvent, CanaryState, GuardSnapshot
from ops_server.measurement import DEFAULT_HISTORY, drawdown_of_pnl_curve
from ops_server.model_registry import RoutingMode, paper_book
from ops_server.parts import OpsParts
from ops_server.signal_path import SignalPath

log = logging.getLogger(__name__)

ZERO = Decimal(0)
STATE_NUMBER = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


@dataclass(frozen=True)
class _GuardBaseline:
    """A canary's counts when its current step began; its guards count only what came after."""

    step: tuple[str, int]
    capital_breaches: int
    risk_refusals: int
    decisions: Counter[str]


@dataclass(eq=False, repr=False)
class PeriodicDecisions:
    """Sampling, allocation and canary evaluation, each run by ops on its own interval.

    Args:
        parts: the ops service's domain objects; sampling reads the registry, measurement (books and return
            series) and exposure (each model's quota, the capital base of its returns), feeds the risk rails daily
            PnL and drawdown, runs the allocator and every strategy's canary, publishes to events, persists to
            state, and reads the clock's wall time (simulated in a backtest); a paper twin's capital base is the
            config's ``shadow_capital_usd``.
        signals: the signal path (decision counts for the canary's error-rate guard).
    """

    parts: OpsParts
    _: KW_ONLY
    signals: SignalPath
    last_allocation: AllocationDecision | None = field(init=False, default=None)
    last_sample_at: float | None = field(init=False, default=None)
    """Epoch seconds of the last equity sample (health)."""
    # Each strategy's return per sample, combined with the routing weights in force when it was taken.
    _strategy_returns: dict[str, deque[float]] = field(init=False, default_factory=dict)
    _guard_baselines: dict[str, _GuardBaseline] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for run in self.parts.canaries.runs.values():  # each canary's current step counts from now
            self._guard_baseline(run.controller.canary_model)

    # -- sampling --------------------------------------------------------------------------

    def capital_bases(self) -> dict[str, Decimal]:
        """Each book's capital base in USD: the model's quota, or the paper capital of a paper twin."""
        parts = self.parts
        bases = {r.book: parts.exposure.quota(r) for r in parts.registry.routes()}
        for run in parts.canaries.runs.values():
            bases[paper_book(run.controller.stable_model)] = parts.config.shadow_capital_usd
        return bases

    def sample(self) -> None:
        """Sample equity into return series, feed loss limits, refresh metrics."""
        parts = self.parts
        now = self.last_sample_at = parts.clock.time()
        if parts.state.roll_day(now):  # daily-loss limits count from UTC midnight
            parts.state.save()  # a crash after midnight keeps the day's start
        bases = self.capital_bases()
        sampled = parts.measurement.sample(now, bases)
        parts.canaries.record_sample(sampled)
        self.record_strategy_returns(sampled)
        m = parts.metrics
        for route in parts.registry.routes():
            model = route.model_id
            perf = parts.measurement.performance(route.book)
            m.model_pnl.labels(model).set(float(perf.equity))
            m.model_sharpe.labels(model).set(perf.sharpe_annual)
            m.model_drawdown_ratio.labels(model).set(perf.drawdown_ratio)
            m.model_max_drawdown_ratio.labels(model).set(perf.max_drawdown_ratio)
            m.model_max_drawdown_usd.labels(model).set(float(perf.max_drawdown_usd))
            m.trading_state.labels("model", model).set(STATE_NUMBER[parts.risk.state(model).value])
            for instrument in route.instruments:
                position = parts.measurement.position(route.book, instrument)
                m.model_position.labels(model, instrument).set(float(position))
            if route.mode is RoutingMode.LIVE and parts.measurement.book_priced(route.book):  # else its PnL is unknown
                drawdown_ratio = parts.measurement.drawdown_ratio(model)
                parts.risk.update_pnl(model, parts.measurement.daily_pnl(model), drawdown_ratio)
        m.trading_state.labels("global", "").set(STATE_NUMBER[parts.risk.global_state.value])
        m.kill_switch.set(1 if parts.risk.kill_switch_engaged else 0)
        self.update_allocation_metrics()

    def record_strategy_returns(self, sampled: Mapping[str, float]) -> None:
        """Append each strategy's return of this sample: its live models' returns by the weights in force now."""
        for strategy in self.parts.registry.strategies():
            routes = [r for r in self.parts.registry.models_of(strategy) if r.mode is RoutingMode.LIVE and r.weight > 0]
            if not any(r.model_id in sampled for r in routes):
                continue  # no live model had a return to give (first sample, or no capital)
            combined = performance.exact_sum([r.weight * sampled.get(r.model_id, 0.0) for r in routes])
            self._strategy_returns.setdefault(strategy, deque(maxlen=DEFAULT_HISTORY)).append(combined)

    def strategy_returns(self) -> dict[str, list[float]]:
        """Per strategy: its return per sample, each combined with the routing weights in force when it was taken."""
        return {s: list(self._strategy_returns.get(s, ())) for s in self.parts.registry.strategies()}

    def strategy_stats(self) -> list[ops_pb2.ModelStats]:
        """Per strategy: its live models' PnL summed, and statistics of the weight-combined return series."""
        parts = self.parts
        out = []
        returns = self.strategy_returns()
        for strategy in parts.registry.strategies():
            live = [r.model_id for r in parts.registry.models_of(strategy) if r.mode is RoutingMode.LIVE]
            perfs = [parts.measurement.performance(model) for model in live]
            series = returns.get(strategy, [])
            bars = parts.measurement.bar_returns(series)
            max_usd = drawdown_of_pnl_curve(parts.measurement.combined_equity(live))
            index = _equity_index(series)
            out.append(
                ops_pb2.ModelStats(
                    strategy_id=strategy,
                    mode=ops_pb2.ROUTING_MODE_LIVE,
                    realized_pnl=fmt(sum((p.realized for p in perfs), start=ZERO)),
                    unrealized_pnl=fmt(sum((p.unrealized for p in perfs), start=ZERO)),
                    fees=fmt(sum((p.fees for p in perfs), start=ZERO)),
                    slippage=fmt(sum((p.slippage for p in perfs), start=ZERO)),
                    equity=fmt(sum((p.equity for p in perfs), start=ZERO)),
                    sharpe=parts.measurement.annual_sharpe(series),
                    max_drawdown=max_usd,
                    max_drawdown_usd=max_usd,
                    max_drawdown_ratio=performance.max_drawdown(index) if index else 0.0,
                    drawdown_ratio=1.0 - index[-1] / max(index) if index and max(index) > 0 else 0.0,
                    hit_rate=performance.hit_rate(bars) if bars else 0.0,
                    observations=len(bars),
                    fills=sum(p.fills for p in perfs),
                    bar_seconds=parts.measurement.bar_seconds,
                    min_bars=parts.measurement.min_bars,
                )
            )
        return out

    # -- allocation ------------------------------------------------------------------------

    def run_allocation(
        self, forced: bool = False, returns: Mapping[str, Sequence[float]] | None = None
    ) -> AllocationDecision:
        """One capital allocator cycle (raises PermissionDeniedError for a forced cycle the policy forbids), on
        ``returns`` when given (every worker's series, sharded ops), else on this process's own series."""
        parts = self.parts
        series = self.strategy_returns() if returns is None else returns
        decision = parts.allocator.run_cycle(series, parts.clock.time(), forced=forced)
        parts.metrics.allocation_decisions.labels(decision.reason.value).inc()
        if decision.changed or forced:
            weights = {f"weight.{k}": f"{v:.6f}" for k, v in decision.new_weights.items()}
            parts.events.publish("ALLOCATION", decision.message, reason=decision.reason.value, **weights)
            parts.state.save()
        else:
            parts.events.publish("ALLOCATION", decision.message, reason=decision.reason.value)
        self.last_allocation = decision
        self.update_allocation_metrics()
        return decision

    def update_allocation_metrics(self) -> None:
        """``strategy_allocation_fraction`` and ``allocated_capital_usd`` (0 for a model that is not live)."""
        parts = self.parts
        for strategy, weight in parts.allocator.weights.items():
            parts.metrics.strategy_allocation.labels(strategy).set(weight)
        for route in parts.registry.routes():
            quota = parts.exposure.quota(route) if route.mode is RoutingMode.LIVE else ZERO
            parts.metrics.allocated_capital.labels(route.model_id).set(float(quota))

    def update_weight_metrics(self, strategy_id: str) -> None:
        """``canary_weight`` of every model of a strategy, at start and after its routing weights changed; for a
        strategy with a canary, its ``canary_transitions_total`` series too, at zero until a transition to that state (a
        counter that first appears at 1 is no increase to ``increase()``, and an alert on it would miss the first)."""
        metrics = self.parts.metrics
        for route in self.parts.registry.models_of(strategy_id):
            metrics.canary_weight.labels(strategy_id, route.model_id).set(route.weight)
        if strategy_id in self.parts.canaries.runs:
            for state in CanaryState:
                metrics.canary_transitions.labels(strategy_id, state.value)
        self.update_allocation_metrics()

    # -- canaries --------------------------------------------------------------------------

    def evaluate_canaries(self) -> list[CanaryEvent]:
        return self.parts.canaries.evaluate(self.canary_guards)

    def canary_guards(self, model_id: str) -> GuardSnapshot:
        """The canary's hard-guard inputs: drawdown and daily loss from measurement, breaches and error rate.

        Breaches are the canary model's own denials by a capital rail since its current step began; the error rate
        is its rejected decisions other than risk denials (already counted as breaches, or not the model's fault)
        over its decisions, since the step began too.
        """
        parts = self.parts
        route = parts.registry.route(model_id)
        book = route.book  # the paper book while the canary is in shadow
        baseline = self._guard_baseline(model_id)
        decisions = self.signals.decision_counts(model_id) - baseline.decisions
        total = sum(decisions.values())
        risk_denials = self.signals.risk_refusals(model_id) - baseline.risk_refusals  # REJECTED by a rail
        errors = max(0, decisions["REJECTED"] - risk_denials)
        return GuardSnapshot(
            drawdown_ratio=parts.measurement.drawdown_ratio(book),
            daily_loss=float(max(ZERO, -parts.measurement.daily_pnl(book))),
            risk_breaches=parts.risk.capital_breaches(model_id) - baseline.capital_breaches,
            error_rate=errors / total if total else 0.0,
        )

    def _canary_step(self, model_id: str) -> tuple[str, int]:
        for run in self.parts.canaries.runs.values():
            if run.controller.canary_model == model_id:
                status = run.controller.status()
                return status.step_started_at.isoformat(), status.step_index
        return "", -1

    def _guard_baseline(self, model_id: str) -> _GuardBaseline:
        """The counts when the canary's current step began (taken now if the step is new to us: at start-up, and on
        every canary event, so a step that began on an event counts from that event)."""
        step = self._canary_step(model_id)
        baseline = self._guard_baselines.get(model_id)
        if baseline is None or baseline.step != step:
            baseline = _GuardBaseline(
                step=step,
                capital_breaches=self.parts.risk.capital_breaches(model_id),
                risk_refusals=self.signals.risk_refusals(model_id),
                decisions=Counter(self.signals.decision_counts(model_id)),
            )
            self._guard_baselines[model_id] = baseline
        return baseline

    def on_canary_event(self, event: CanaryEvent) -> None:
        """Audit a controller event (every check, transition or not), count a transition (the state or the step
        changed), refresh the weight gauges, persist."""
        parts = self.parts
        if event.to_state is not event.from_state or event.step_percent_after != event.step_percent_before:
            parts.metrics.canary_transitions.labels(event.strategy, event.to_state.value).inc()
        parts.events.publish(
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
        self.update_weight_metrics(event.strategy)
        self._guard_baseline(event.model_id)  # a new step starts counting breaches from here
        parts.state.save()


def _equity_index(returns: list[float]) -> list[float]:
    """The time-weighted equity index of a return series: ``I_0 = 1``, ``I_t = I_{t-1} (1 + r_t)``, floored at 0."""
    index = [1.0]
    for r in returns:
        index.append(max(0.0, index[-1] * (1.0 + r)))
    return index
