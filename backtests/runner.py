"""Run one strategy's models over a quote tape through the live ops signal path and the engine's sim venue.

Each model runs alone (its own ops core, engine and state folder) on the same tape and seed, LIVE with its
strategy's whole capital, so the runs are comparable and a model's result does not depend on which others were
chosen. Per tape timestamp, in this order (what the live mesh does, minus the network):

1. the simulated clock moves to the quote's time and the sim venue's market maker requotes around it (resting
   orders it crosses fill);
2. ops receives the venue's quotes (marks) and any reports;
3. periodic work that is due by simulated time runs: equity sampling, the allocation cycle, canary evaluation;
4. the model sees the mid and the strategy runtime's planner decides which targets become signals;
5. ops decides the signal frame (validate, route, size, rails, journal) and the engine executes its orders.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtests.mesh import InProcessEngineLink, TapePriceSource, instrument_specs, market_maker, notional
from backtests.report import model_report
from backtests.tape import TapeQuote, batches, symbols
from engine_server.config import EngineConfig, load_engine_config
from engine_server.engine_core import EngineCore
from engine_server.metrics import EngineMetrics
from engine_server.order_manager import OrderManager
from engine_server.server import rails_settings
from engine_server.venue_rails import VenueRails
from engine_server.venues import VENUE_FACTORIES, VenueBuildContext, build_venues
from engine_server.venues.paper import PaperVenueConfig
from engine_server.venues.sim import MarketMakerConfig, SimVenue, SimVenueConfig
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.clock import NS_PER_SECOND, SimClock
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file
from nautilus_mesh.telemetry import Tracing
from ops_server.config import OpsConfig
from ops_server.core import OpsCore
from strategies.config import BuiltModel, StrategyEntry, build_models, load_strategies
from strategies.planner import SignalPlanner
from strategies.runtime import status_name

log = logging.getLogger(__name__)

LIVE_VENUE = "sim"
RUN_ID = "bt"
"""Prefix of the backtest's signal ids (fixed: runs are reproducible)."""
_FILLS = (engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_PARTIAL_FILL)


@dataclass(frozen=True)
class BacktestSpec:
    """What to backtest."""

    strategy: str
    """Strategy name in ``strategies.json`` (``momentum``, ``meanrev`` in the demo config)."""
    config_dir: Path
    """Folder of ``strategies.json``, ``engine.json``, ``risk_limits.json``, ``capital_policy.json`` and
    ``registry.json`` (the demo config by default)."""
    seed: int
    """Seed of the sim venue (and of the synthetic market when there is no quote file)."""
    models: tuple[str, ...] = ()
    """Models of the strategy to run (empty: all of them, in config order)."""
    sample_seconds: float = 30.0
    """Equity sampling interval, simulated seconds (ops' ``sample_interval_seconds``)."""
    bar_seconds: float = 300.0
    """Return bar of the Sharpe ratio and the canary statistics, simulated seconds (ops' ``stats_bar_seconds``)."""


@dataclass
class ModelRun:
    """What one model's run measured."""

    model_id: str
    capital_usd: Decimal
    """The model's quota at the end of the run, USD."""
    performance: dict[str, Any]
    """The report's figures (see :func:`backtests.report.model_report`)."""
    returns: list[float] = field(default_factory=list)
    """Return per sample (equity change over the capital base), one per ``sample_seconds``."""
    curve_s: list[float] = field(default_factory=list)
    """Sample times, seconds since the first quote."""
    curve_pnl_usd: list[float] = field(default_factory=list)
    """PnL at each sample, USD."""


def strategy_entry(config_dir: Path, name: str) -> StrategyEntry:
    """The strategy ``name`` of ``<config_dir>/strategies.json``.

    Raises:
        ConfigError: no such strategy (the message lists the known ones).
    """
    config = load_strategies(config_dir / "strategies.json")
    known = [s.name for s in config.strategies]
    for entry in config.strategies:
        if entry.name == name:
            return entry
    raise ConfigError(
        f"unknown strategy {name!r}; known strategies: {', '.join(known)}",
        {"strategy": name, "known": ",".join(known)},
        code="UNKNOWN_STRATEGY",
    )


def select_models(entry: StrategyEntry, wanted: Sequence[str]) -> list[BuiltModel]:
    """The strategy's models named in ``wanted`` (all when empty), built.

    Raises:
        ConfigError: a name that is not one of the strategy's models (the message lists them).
    """
    built = build_models(entry)
    if not wanted:
        return built
    by_id = {m.model_id: m for m in built}
    unknown = [m for m in wanted if m not in by_id]
    if unknown:
        raise ConfigError(
            f"strategy {entry.name!r} has no model {', '.join(unknown)}; its models: {', '.join(by_id)}",
            {"models": ",".join(unknown)},
            code="UNKNOWN_MODEL",
        )
    return [by_id[m] for m in wanted]


def strategy_capital(policy: dict[str, Any], strategy: str) -> Decimal:
    """The capital the strategy starts with live, USD: an equal share of the policy's total capital clipped to the
    strategy's bounds (what the allocator holds until it has enough returns to score)."""
    bounds = policy.get("strategies", {}).get(strategy, {})
    share = 1.0 / max(1, len(policy.get("strategies", {})))
    share = min(max(share, float(bounds.get("min_fraction", 0.0))), float(bounds.get("max_fraction", 1.0)))
    return (Decimal(str(policy["total_capital"])) * Decimal(repr(share))).quantize(Decimal("0.01"))


def _engine(config: EngineConfig, seed: int, source: TapePriceSource, clock: SimClock) -> EngineCore:
    # Every model runs LIVE: the paper venue takes no order, so one quoted level is all it needs to follow the sim.
    venues_cfg = [
        v.model_copy(update={"seed": seed})
        if v.name == LIVE_VENUE
        else v.model_copy(update={"market_maker": MarketMakerConfig(levels=1)})
        if isinstance(v, PaperVenueConfig)
        else v
        for v in config.venues
    ]

    def build_sim(cfg: SimVenueConfig, ctx: VenueBuildContext) -> SimVenue:
        return SimVenue(cfg, clock=ctx.clock, price_source=source)

    factories = dict(VENUE_FACTORIES, sim=build_sim)
    venues = build_venues(venues_cfg, clock=clock.time_ns, factories=factories)
    rails = {name: VenueRails(rails_settings(config, name), venue=name) for name in venues}
    manager = OrderManager(venues, rails, None, clock.time_ns)
    return EngineCore(manager, EngineMetrics(), Tracing("engine", None, enabled=False))


def backtest_limits(limits: dict[str, Any], model_id: str, instruments: Sequence[str]) -> dict[str, Any]:
    """The config folder's risk limits for a backtest of one model: the overrides of the other models and the position
    caps of instruments the model does not trade are left out (ops refuses a file naming a model or an instrument its
    registry does not have, and the backtest's registry holds this model alone); every limit that applies is kept."""
    out = dict(limits)

    def own_caps(entry: object) -> object:
        if not isinstance(entry, dict) or not isinstance(entry.get("max_position_qty"), dict):
            return entry
        caps = {k: v for k, v in entry["max_position_qty"].items() if k == "*" or k in instruments}  # * any other
        return {**entry, "max_position_qty": caps}

    out["default_model"] = own_caps(limits.get("default_model"))
    models = limits.get("models")
    if isinstance(models, dict):
        out["models"] = {k: own_caps(v) for k, v in models.items() if k == model_id}
    return out


def _ops_files(spec: BacktestSpec, entry: StrategyEntry, model: BuiltModel, workdir: Path) -> OpsConfig:
    workdir.mkdir(parents=True, exist_ok=True)
    registry = {
        "strategies": {
            entry.name: {
                "stable_model": model.model_id,
                "models": {
                    model.model_id: {"version": "backtest", "instruments": list(model.instruments), "weight": 1.0}
                },
            }
        }
    }
    policy = json.loads((spec.config_dir / "capital_policy.json").read_text(encoding="utf-8"))
    policy["total_capital"] = str(strategy_capital(policy, entry.name))
    policy["strategies"] = {entry.name: {"min_fraction": 1.0, "max_fraction": 1.0}}
    (workdir / "registry.json").write_text(json.dumps(registry), encoding="utf-8")
    (workdir / "capital_policy.json").write_text(json.dumps(policy), encoding="utf-8")
    limits = backtest_limits(load_json_file(spec.config_dir / "risk_limits.json"), model.model_id, model.instruments)
    (workdir / "risk_limits.json").write_text(json.dumps(limits), encoding="utf-8")
    # The strategy signals in process (no stream to authenticate): the token only fills the required field.
    access = {"token": "in-process", "models": [model.model_id]}
    return OpsConfig.model_validate(
        {
            "metrics_port": None,
            "strategies": {entry.name: access},
            "registry_path": workdir / "registry.json",
            "capital_policy_path": workdir / "capital_policy.json",
            "risk_limits_path": workdir / "risk_limits.json",
            "state_dir": workdir / "ops",
            "live_venue": LIVE_VENUE,
            "sample_interval_seconds": spec.sample_seconds,
            "stats_bar_seconds": spec.bar_seconds,
            "stats_min_bars": 2,  # the report gives its Sharpe ratio with the bars behind it, however few
            "allocation_interval_seconds": max(10.0, spec.sample_seconds),
            "canary_interval_seconds": spec.sample_seconds,
            "tracing": False,
        }
    )


def run_model(
    spec: BacktestSpec, entry: StrategyEntry, model: BuiltModel, tape: Sequence[TapeQuote], workdir: Path
) -> ModelRun:
    """Run one model over the tape; ``workdir`` (empty or absent) receives ops' state (journal, audit log)."""
    engine_config = load_engine_config(spec.config_dir / "engine.json")
    instruments = instrument_specs(engine_config.venues, LIVE_VENUE)
    known = {i.symbol for i in instruments}
    missing = [s for s in symbols(tape) if s not in known]
    if missing:
        raise ConfigError(f"the sim venue does not list {', '.join(missing)}; it lists {', '.join(sorted(known))}")
    traded = tuple(i for i in model.instruments if i in set(symbols(tape)))
    if not traded:
        raise ConfigError(f"model {model.model_id} trades {', '.join(model.instruments)}: none is on the tape")
    source = TapePriceSource(instruments, market_maker(engine_config.venues, LIVE_VENUE))
    clock = SimClock(tape[0].ts_ns)
    engine = _engine(engine_config, spec.seed, source, clock)
    ops = OpsCore(
        _ops_files(spec, entry, model, workdir),
        tracing=Tracing("ops", None, enabled=False),
        clock=clock,
        link_factory=functools.partial(InProcessEngineLink, engine=engine),
    )
    link = ops.link
    assert isinstance(link, InProcessEngineLink)
    try:
        return _replay(spec, ops, engine, link, source, model, tape, clock)
    finally:
        ops.state.close()
        ops.tracker.close()
        ops.events.close()
        engine.manager.close()


def _replay(
    spec: BacktestSpec,
    ops: OpsCore,
    engine: EngineCore,
    link: InProcessEngineLink,
    source: TapePriceSource,
    model: BuiltModel,
    tape: Sequence[TapeQuote],
    clock: SimClock,
) -> ModelRun:
    link.connect()
    runtime = load_strategies(spec.config_dir / "strategies.json")
    planner = SignalPlanner(
        [(model.model_id, model.model, model.instruments)],
        runtime.min_target_change,
        RUN_ID,
        refresh_seconds=runtime.refresh_seconds,
    )
    principal = Principal(spec.strategy, frozenset({model.model_id}))
    periodic = ops.periodic
    start_ns = tape[0].ts_ns
    sample_ns = int(spec.sample_seconds * NS_PER_SECOND)
    alloc_ns = int(ops.config.allocation_interval_seconds * NS_PER_SECOND)
    canary_ns = int(ops.config.canary_interval_seconds * NS_PER_SECOND)
    next_sample, next_alloc, next_canary = start_ns + sample_ns, start_ns + alloc_ns, start_ns + canary_ns
    run = ModelRun(model.model_id, Decimal(0), {})
    counts: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    turnover = Decimal(0)
    fills = 0

    def sample(now_ns: int) -> None:
        book = ops.measurement.book(model.model_id)
        had_return = book.last_equity is not None and periodic.capital_bases().get(model.model_id, Decimal(0)) > 0
        periodic.sample()
        if had_return:
            run.returns.append(book.returns[-1])
        run.curve_s.append((now_ns - start_ns) / NS_PER_SECOND)
        run.curve_pnl_usd.append(book.equity_samples[-1])

    def drain() -> None:
        nonlocal turnover, fills
        for report in link.delivered:
            if report.exec_type in _FILLS and report.venue == LIVE_VENUE:
                fills += 1
                turnover += notional(report.last_qty, report.last_price)
            elif report.exec_type == engine_pb2.EXEC_TYPE_REJECTED:
                rejections[report.error.code or "VENUE_REJECTED"] += 1
        link.delivered.clear()

    for ts, quotes in batches(tape):
        clock.advance_to(ts)
        for quote in quotes:
            source.set(quote)
        reports = engine.manager.advance(ts)
        if reports:
            engine.dispatch(reports)
        link.pump()
        drain()
        fresh = sorted({q.symbol for q in quotes})
        live = link.publish_quotes(LIVE_VENUE, fresh)
        if ts >= next_sample:
            sample(ts)
            next_sample += sample_ns * ((ts - next_sample) // sample_ns + 1)
        if ts >= next_alloc:
            periodic.run_allocation()
            next_alloc += alloc_ns * ((ts - next_alloc) // alloc_ns + 1)
        if ts >= next_canary:
            periodic.evaluate_canaries()
            next_canary += canary_ns * ((ts - next_canary) // canary_ns + 1)
        prices = [(q.instrument, float(q.mid), ts) for q in live]
        signals = planner.plan(prices, clock.time_ns())
        if signals:
            for decision in ops.signals.handle_frame(signals, principal):
                status = status_name(decision.status)
                counts[status] += 1
                if decision.status == ops_pb2.DECISION_STATUS_REJECTED:
                    rejections[decision.error.code or "REJECTED"] += 1
            link.pump()
            drain()
    if not run.curve_s or run.curve_s[-1] != (clock.time_ns() - start_ns) / NS_PER_SECOND:
        sample(clock.time_ns())  # the end of the tape, unless a sample just fell on it
    run.capital_usd = ops.periodic.capital_bases().get(model.model_id, Decimal(0))
    run.performance = model_report(ops, run, model, counts, rejections, turnover, fills, spec, len(tape))
    return run
