"""The ops core: builds the parts of one ops service, wires them together and runs their lifecycle.

The parts, one concept each (see docs/architecture.md):

- :class:`~ops_server.signal_path.SignalPath`: validate, deduplicate, route, size, check and send, per frame.
- :class:`~ops_server.execution_feedback.ExecutionFeedback`: engine reports, fills, fan-out, re-sends.
- :class:`~ops_server.exposure.ExposureView`: quotas, positions + open orders, marks (sizing and rails).
- :class:`~ops_server.periodic.PeriodicDecisions`: sampling, the allocation cycle, canary evaluation.
- :class:`~ops_server.queries.OpsQueries` and :class:`~ops_server.controls.OpsControls`: what the servicers call.
- :class:`~ops_server.ops_state.OpsState`: the restartable state in the state store.
- :class:`~ops_server.journal_compaction.JournalCompaction`: the journal's snapshot in the store, old segments deleted.

Everything runs on one event loop: the signal path is synchronous between awaits, so sizing reads a consistent
view of positions, open orders and quotas.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.auth import StrategyAuthenticator
from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import atomic_write_text
from nautilus_mesh.store import open_store
from nautilus_mesh.tasks import cancel_and_wait
from nautilus_mesh.telemetry import Tracing
from ops_server.allocation import CapitalAllocator, CapitalPolicy
from ops_server.canary import CanaryEvent
from ops_server.canary.manager import CanaryManager
from ops_server.circuit_breaker import EngineGate
from ops_server.config import OpsConfig
from ops_server.controls import OpsControls
from ops_server.engine_link import EngineLink, ReportCursor
from ops_server.events import EventHub
from ops_server.execution_feedback import ExecutionFeedback
from ops_server.exposure import ExposureView
from ops_server.journal_compaction import JournalCompaction
from ops_server.measurement import Measurement
from ops_server.metrics import OpsMetrics
from ops_server.model_registry import ModelRegistry
from ops_server.ops_state import OpsState
from ops_server.order_sinks import LiveOrderSink, PaperOrderSink, venue_problem
from ops_server.order_tracker import OrderTracker
from ops_server.parts import OpsParts
from ops_server.periodic import PeriodicDecisions
from ops_server.queries import OpsQueries
from ops_server.risk import RiskEvent, RiskLimits, RiskRails
from ops_server.router import SignalRouter
from ops_server.sharding import check_deployment, worker_database_url
from ops_server.signal_path import SignalPath

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_SECONDS = 2.0
STATE_SAVE_SECONDS = 10.0
"""How often ops saves its restartable state besides each decision that changes it (seconds): a crash loses at most
this much of the drawdown maxima, canary observations and the like."""


def working_registry(config: OpsConfig, state_dir: Path) -> ModelRegistry:
    """The registry ops works on: a copy in its state dir (weights and canary steps change at run time), seeded
    from the configured file on first start, so a restart keeps the routing it had."""
    path = state_dir / "registry.json"
    if not path.exists():
        seed = ModelRegistry.load(config.registry_path)  # validated before it is copied
        atomic_write_text(path, json.dumps(seed.data.model_dump(mode="json"), indent=2) + "\n")
    return ModelRegistry.load(path)


class OpsCore:
    """The parts of one ops service and their lifecycle.

    Servicers use :attr:`signals`, :attr:`feedback` (fill subscriptions), :attr:`queries`, :attr:`controls` and
    :attr:`auth`; nothing else. The domain objects (:attr:`registry`, :attr:`measurement`, :attr:`allocator`,
    :attr:`canaries`, :attr:`risk`) are public for health and for embedding ops in one process (tests,
    backtests), not for servicers.

    ``clock`` is the time every part reads (simulated in a backtest); ``link_factory`` builds the engine link
    with :class:`~ops_server.engine_link.EngineLink`'s arguments (a backtest passes an in-process link).
    """

    def __init__(
        self,
        config: OpsConfig,
        *,
        tracing: Tracing | None = None,
        clock: Clock = REAL_CLOCK,
        link_factory: Callable[..., EngineLink] = EngineLink,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = OpsMetrics()
        self.tracing = tracing or Tracing("ops", config.span_file, enabled=config.tracing)
        state_dir = Path(config.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        check_deployment(config)  # several workers need PostgreSQL; each keeps its own documents in its own schema
        # The config files first: one that does not validate stops ops before it opens its store and audit log.
        registry = working_registry(config, state_dir)
        unplaced = sorted(set(config.shard_map) - set(registry.strategies()))
        if unplaced:  # a misspelled name would leave the strategy it meant to the hash, silently
            raise ConfigError(
                f"shard_map names strategies the registry does not have: {', '.join(unplaced)} "
                f"(known: {', '.join(sorted(registry.strategies()))})",
                {"strategies": ", ".join(unplaced)},
                code="UNKNOWN_STRATEGY",
            )
        self.auth = StrategyAuthenticator({name: (s.token, s.models) for name, s in config.strategies.items()})
        policy = CapitalPolicy.load(config.capital_policy_path, known_strategies=registry.strategies())
        allocator = CapitalAllocator(policy, sample_seconds=config.sample_interval_seconds)
        limits = RiskLimits.load(
            config.risk_limits_path, known_models=registry.model_ids(), known_instruments=registry.instruments()
        )
        store = open_store(worker_database_url(config), state_dir / "state.db")
        self.events = EventHub(state_dir / "audit.jsonl", clock=clock)
        risk = RiskRails(limits, clock.monotonic, self._on_risk_event, wall_clock=clock.time)
        canaries = CanaryManager(
            registry,
            self._on_canary_event,
            clock.now,
            sample_seconds=config.sample_interval_seconds,
            window_samples=config.canary_window_samples,
        )
        measurement = Measurement(
            config.sample_interval_seconds, config.stats_bar_seconds, min_bars=config.stats_min_bars
        )
        self.tracker = tracker = OrderTracker(
            state_dir / "journal.bin",
            dedup_window=config.dedup_window,
            history=config.order_history,
            archive_retention=config.order_archive,
            journal_fsync=config.journal_fsync,
        )
        if (archive := tracker.archive) is not None:  # read at each scrape: nothing on the signal path
            self.metrics.archived.labels("order").set_function(lambda: archive.archived_orders)
            self.metrics.archived.labels("fill").set_function(lambda: archive.archived_fills)
            self.metrics.archive_failed_batches.set_function(lambda: archive.failed_batches)
        exposure = ExposureView(
            registry,
            allocator,
            measurement,
            tracker,
            config.shadow_capital_usd,
            clock,
            live_venue=config.live_venue,
            paper_venue=config.paper_venue,
        )
        cursor = ReportCursor()
        self.link = link = link_factory(
            config.engine_address,
            config.engine_token,
            self._on_reports,
            exposure.on_quotes,
            cursor,
            on_connected=self._on_engine_connected,
            tls=config.engine_tls,
            clock=clock,
        )
        self.metrics.engine_connected.set_function(lambda: 1.0 if link.connected else 0.0)  # at each scrape
        self.engine_gate = EngineGate(link, self.metrics, clock=clock.monotonic)
        self.parts = parts = OpsParts(
            config=config,
            registry=registry,
            measurement=measurement,
            exposure=exposure,
            tracker=tracker,
            live_sink=LiveOrderSink(config.live_venue, config.account),
            paper_sink=PaperOrderSink(config.paper_venue),
            link=link,
            allocator=allocator,
            risk=risk,
            canaries=canaries,
            state=OpsState(store, allocator, risk, canaries, measurement, state_dir / "state.json", clock=clock),
            events=self.events,
            metrics=self.metrics,
            tracing=self.tracing,
            clock=clock,
        )
        for route in registry.routes():  # every configured model's series exist at zero before its first signal
            self.metrics.model(route.model_id)
        for venue in (parts.live_sink.venue, parts.paper_sink.venue):
            self.metrics.venue_orders(venue)
        router = SignalRouter(registry, exposure, config.signal_id_max_length)
        self.signals = SignalPath(parts, router=router, gate=self.engine_gate)
        self.feedback = ExecutionFeedback(parts, cursor=cursor)
        self.state = parts.state
        self.compaction = JournalCompaction(store, tracker, measurement, cursor, config.journal_segment_bytes)
        self.periodic = PeriodicDecisions(parts, signals=self.signals)
        self.queries = OpsQueries(parts, periodic=self.periodic)
        self.controls = OpsControls(parts, periodic=self.periodic, queries=self.queries)
        self.registry, self.measurement, self.allocator, self.canaries = registry, measurement, allocator, canaries
        self.risk, self.exposure = risk, exposure
        self._tasks: list[asyncio.Task[None]] = []
        self._recover()

    def _recover(self) -> None:
        """Restore the saved state, replay the journal, then the trading day (which needs the replayed books)."""
        self.state.restore()
        replayed = self.tracker.replay(self.feedback.replay_report, self.compaction.restore())
        self.state.restore_trading_day()
        if replayed:
            self.events.publish("RECOVERED", f"replayed {replayed} journal records", records=replayed)
        self.periodic.update_allocation_metrics()
        for strategy in self.canaries.runs:  # the canaries' weights as restored, before any canary event
            self.periodic.update_weight_metrics(strategy)

    @property
    def engine_connected(self) -> bool:
        """True while the order stream to the engine is up."""
        return self.link.connected

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        cfg = self.config
        self._tasks = [
            self._every("ops-sampler", cfg.sample_interval_seconds, self.periodic.sample),
            self._every("ops-reconcile", RECONCILE_INTERVAL_SECONDS, self.feedback.close_gaps),
            self._every("ops-canary", cfg.canary_interval_seconds, self.periodic.evaluate_canaries),
            self._every("ops-journal", cfg.sample_interval_seconds, self.compaction.maybe_checkpoint),
            self._every("ops-state", STATE_SAVE_SECONDS, self.state.save),  # what a kill -9 can lose: 10 s of it
        ]
        if cfg.ops_workers == 1:  # several workers: the elected leader runs the cycles (ops_server.coordination)
            self._tasks.append(
                self._every("ops-allocator", cfg.allocation_interval_seconds, self.periodic.run_allocation)
            )

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.link.stop()
        self.state.close()  # stop() may run twice; the first one saved the final state
        self.tracker.close()
        self.events.close()
        self.tracing.force_flush()

    def _every(self, name: str, seconds: float, action: Callable[[], object]) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    result = action()
                    if isinstance(result, Awaitable):
                        await result
                except Exception:
                    log.exception("[OPS] periodic task %s failed", name)

        return asyncio.create_task(loop(), name=name)

    # -- wiring callbacks ------------------------------------------------------------------

    def _on_reports(self, reports: Sequence[engine_pb2.ExecutionReport]) -> None:
        self.feedback.on_reports(reports)

    def _on_engine_connected(self) -> None:
        cfg = self.config
        problem = venue_problem(self.link.venue_kinds, cfg.live_venue, cfg.paper_venue)
        self.signals.set_venue_problem(problem)
        if problem is not None:
            log.error("[OPS] the engine's venues do not fit ops' config: %s; no order is sent until fixed", problem)
        self.feedback.on_connected(resend=problem is None)

    def _on_canary_event(self, event: CanaryEvent) -> None:
        self.periodic.on_canary_event(event)

    def _on_risk_event(self, event: RiskEvent) -> None:
        if event.kind == "REJECTED":
            self.metrics.risk_rejections.labels(event.rail, event.model_id or "global").inc()
        record = event.to_dict()
        attributes = {k: v for k, v in record.items() if k not in ("kind", "message", "details", "at")}
        attributes.update({f"detail.{k}": v for k, v in event.details.items()})
        self.events.publish(f"RISK_{event.kind}", event.message, **attributes)
        if event.kind != "REJECTED":
            self.state.save()
