"""The ops service's Prometheus metrics (one registry per service instance).

The signal path never calls ``labels()``: the children of a model, a venue and a stage are bound once
(:meth:`OpsMetrics.model`, :meth:`OpsMetrics.venue`) and reused.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.telemetry import LATENCY_BUCKETS

DECISION_STATUSES = tuple(
    name.removeprefix("DECISION_STATUS_")
    for name, _ in ops_pb2.DecisionStatus.items()
    if not name.endswith("UNSPECIFIED")
)
ROUTING_MODES = ("LIVE", "SHADOW", "DISABLED")
SIGNAL_STAGES = ("route", "size", "risk", "send")


class ModelMetrics:
    """The children of one model's labelled metrics, bound once."""

    def __init__(self, metrics: OpsMetrics, model: str) -> None:
        self.received = metrics.signals_received.labels(model)
        self.routed = {mode: metrics.signals_routed.labels(model, mode) for mode in ROUTING_MODES}
        self.decided = {status: metrics.decisions.labels(model, status) for status in DECISION_STATUSES}
        self.fills = metrics.model_fills(model)
        self._model = model
        self._by_code_metric = metrics.decisions_by_code
        # Each status without a code at zero from the start (a rejection's code is bound when it first happens).
        self._by_code: dict[tuple[str, str], Any] = {
            (status, ""): metrics.decisions_by_code.labels(model, status, "") for status in DECISION_STATUSES
        }

    def count_decision(self, status: str, code: str = "") -> None:
        """One decision: ``signal_decisions_total{model,status}`` and ``decisions_total{model,status,code}``."""
        self.decided[status].inc()
        child = self._by_code.get((status, code))
        if child is None:
            child = self._by_code[(status, code)] = self._by_code_metric.labels(self._model, status, code)
        child.inc()


class OpsMetrics:
    """Every metric ops exports, on its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
        PlatformCollector(registry=r)  # python_info
        counter = functools.partial(Counter, registry=r)
        gauge = functools.partial(Gauge, registry=r)
        histogram = functools.partial(Histogram, registry=r)
        self.signals_received = counter("signals_received_total", "Signals received, by model.", ["model"])
        self.signals_routed = counter(
            "signals_routed_total", "Signals routed to an order or no-op, by model and mode.", ["model", "mode"]
        )
        self.decisions = counter("signal_decisions_total", "Signal decisions by status.", ["model", "status"])
        self.orders_submitted = counter("orders_submitted_total", "Orders sent to the engine, by venue.", ["venue"])
        self.fills = counter(
            "fills_total",
            "Fills applied, by model (a paper book's as <model>@paper: a SHADOW model's, a stable model's paper "
            "twin's).",
            ["model"],
        )
        self.fills_dropped = counter(
            "fills_dropped_total", "Fills not delivered to a slow strategy stream (still in ListFills)."
        )
        self.archived = gauge(
            "order_archive_rows_written",
            "Orders and fills that left memory written to the on-disk archive (history.db) by this process, by kind.",
            ["kind"],
        )
        self.archive_failed_batches = gauge(
            "order_archive_failed_batches",
            "Batches of orders and fills the archive's writer could not write since this process started (their rows "
            "come back with the journal's replay: no journal snapshot is taken until a flush succeeds).",
        )
        self.risk_rejections = counter("risk_rejections_total", "Signals denied by a risk rail.", ["rail", "model"])
        self.allocated_capital = gauge(
            "allocated_capital_usd", "Capital quota per model (strategy allocation x routing weight).", ["model"]
        )
        self.strategy_allocation = gauge("strategy_allocation_fraction", "Capital fraction per strategy.", ["strategy"])
        self.allocation_decisions = counter(
            "allocation_decisions_total", "Capital allocator cycles by reason.", ["reason"]
        )
        self.signal_latency = histogram(
            "signal_latency_seconds",
            "Time from receiving a signal to its decision in ops (ACCEPTED with its order queued, or REJECTED; a "
            "NO_ACTION or DUPLICATE answer is not observed).",
            buckets=LATENCY_BUCKETS,
        )
        self.signal_to_fill = histogram(
            "signal_to_fill_seconds",
            "Time from a signal's arrival at ops to the first fill of its order (a strategy's order: a paper twin's "
            "fill is not observed).",
            buckets=LATENCY_BUCKETS,
        )
        self.stage_latency = histogram(
            "ops_stage_latency_seconds", "Per-stage latency of the signal path.", ["stage"], buckets=LATENCY_BUCKETS
        )
        self.model_pnl = gauge("model_pnl_usd", "Equity (realized + unrealized - fees) per model.", ["model"])
        self.model_sharpe = gauge(
            "model_sharpe",
            "Sharpe ratio per model, annualised from returns summed into bars (Sharpe per sqrt(year)); "
            "0 until stats_min_bars bars.",
            ["model"],
        )
        self.model_drawdown_ratio = gauge(
            "model_drawdown_ratio",
            "Current fall of equity (capital base + PnL) from its peak per model, fraction of the peak.",
            ["model"],
        )
        self.model_max_drawdown_ratio = gauge(
            "model_max_drawdown_ratio",
            "Largest fall of equity (capital base + PnL) from its peak per model, fraction of the peak.",
            ["model"],
        )
        self.model_max_drawdown_usd = gauge(
            "model_max_drawdown_usd", "Largest fall of PnL from its peak per model, USD.", ["model"]
        )
        self.model_position = gauge("model_position", "Position per model and instrument.", ["model", "instrument"])
        self.trading_state = gauge(
            "trading_state",
            'Trading state (0 ACTIVE, 1 REDUCING, 2 HALTED): scope="global", or scope="model" with its model.',
            ["scope", "model"],
        )
        self.kill_switch = gauge(
            "kill_switch_engaged",
            "1 while the kill switch is engaged (EngageKillSwitch until ReleaseKillSwitch: global trading HALTED), "
            "else 0; a global HALTED set by SetTradingState is trading_state alone.",
        )
        self.canary_weight = gauge("canary_weight", "Routing weight per model under canary.", ["strategy", "model"])
        self.engine_connected = gauge("engine_connected", "1 while the engine order stream is up.")
        self.allocator_leader = gauge(
            "ops_allocator_leader",
            "1 while this ops process runs the allocation cycles (a single ops always; one of several workers).",
        )
        self.coordination_failures = counter(
            "ops_coordination_failures_total",
            "Coordination rounds of an ops worker (one of several) that failed, e.g. the store unreachable.",
        )
        self.allocation_requests = counter(
            "ops_allocation_requests_total",
            "Forced allocation cycles this ops worker (one of several) asked the allocator leader for, by outcome: "
            "RAN, REFUSED (by the capital policy), TIMEOUT (no leader answered; withdrawn, nothing ran).",
            ["outcome"],
        )
        self.engine_reconnects = counter("engine_reconnects_total", "Engine order stream reconnects.")
        self.reconciled_reports = counter(
            "reconciled_reports_total", "Reports fetched by ListExecutions reconciliation."
        )
        self.reconcile_history_skips = gauge(
            "engine_reconcile_history_skips",
            "Reconciliations (since start) that began at the engine's oldest retained report: this ops had applied "
            "none and the engine let older ones go (EXECUTIONS_PAST_RETENTION).",
        )
        self.duplicate_reports = counter(
            "duplicate_reports_total", "Engine reports ignored because their seq was already applied."
        )
        # Operability: rejections by code, component health, mark freshness, circuit breaker, canary.
        self.decisions_by_code = counter(
            "decisions_total",
            'Signal decisions by model, status and code (code: the rejection code; "" for other decisions, but '
            "REDUCE_ONLY_OPENING_REFUSED on an ACCEPTED or NO_ACTION reduce-only flip whose opening part was refused).",
            ["model", "status", "code"],
        )
        self.component_up = gauge(
            "component_up",
            "1 while a dependency of ops is healthy (engine_link, quotes, marks, store, span_exporter, "
            "engine_circuit).",
            ["component"],
        )
        self.mark_age = gauge(
            "mark_age_seconds", "Seconds since the last quote of each routed instrument.", ["instrument"]
        )
        self.circuit_state = gauge(
            "engine_circuit_state", "Engine-link circuit breaker: 0 CLOSED, 1 HALF_OPEN, 2 OPEN."
        )
        self.circuit_transitions = counter(
            "engine_circuit_transitions_total", "Circuit breaker state changes, by new state.", ["state"]
        )
        self.canary_transitions = counter(
            "canary_transitions_total",
            "Canary controller transitions (its state or its step changed; a check that holds it where it was is "
            "none), by strategy and new state (e.g. ROLLED_BACK).",
            ["strategy", "state"],
        )
        # Fair intake (ops_server/fair_intake.py, ops_server/intake.py): what a flooding strategy is held to.
        self.intake_rejections = counter(
            "intake_rejections_total",
            "Signals answered RATE_LIMITED at intake (not decided): the strategy is over its signal rate.",
            ["strategy"],
        )
        self.stream_pauses = counter(
            "signal_stream_pauses_total",
            "Times a signal stream was paused: stream_max_pending_answers of its answers waited to be sent (the "
            "strategy is not reading them); nothing more of it is read or decided until half of them are sent.",
            ["strategy"],
        )
        self.stream_holds = counter(
            "signal_stream_holds_total",
            "Times a signal stream with a backlog was held back because another stream without one was active: "
            "streams with a backlog then get stream_backlog_share of ops' deciding time until none is active.",
            ["strategy"],
        )
        self.streams_paused = gauge(
            "signal_streams_paused", "Signal streams paused now (their answers are not being read)."
        )
        self.intake_pending = gauge(
            "intake_pending_signals",
            "Signals read from the signal streams and waiting for their turn to be decided (at most two frames per "
            "stream).",
        )
        self.span_export_failures = counter(
            "span_export_failures_total", "Span export batches that failed (OTLP unreachable, file error)."
        )
        stages = {stage: self.stage_latency.labels(stage) for stage in SIGNAL_STAGES}
        self.stage_route, self.stage_size = stages["route"], stages["size"]
        self.stage_risk, self.stage_send = stages["risk"], stages["send"]
        self._models: dict[str, ModelMetrics] = {}
        self._venues: dict[str, Any] = {}
        self._fills: dict[str, Any] = {}

    def model(self, model_id: str) -> ModelMetrics:
        """The bound children of one model (created, at zero, on first use)."""
        bound = self._models.get(model_id)
        if bound is None:
            bound = self._models[model_id] = ModelMetrics(self, model_id)
        return bound

    def model_fills(self, book: str) -> Any:
        """The bound ``fills_total`` child of a book: a model's, or a paper twin's (``<model>@paper``), which has no
        signal series of its own."""
        bound = self._fills.get(book)
        if bound is None:
            bound = self._fills[book] = self.fills.labels(book)
        return bound

    def venue_orders(self, venue: str) -> Any:
        """The bound ``orders_submitted_total`` child of a venue."""
        bound = self._venues.get(venue)
        if bound is None:
            bound = self._venues[venue] = self.orders_submitted.labels(venue)
        return bound
