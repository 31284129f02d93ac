"""Runs the engine service: ``python -m engine_server --config config/demo/engine.json``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2

from engine_server.config import EngineConfig, load_engine_config
from engine_server.engine_core import EngineCore
from engine_server.health import EngineHealth
from engine_server.market_data import MarketDataService
from engine_server.metrics import EngineMetrics
from engine_server.order_manager import OrderManager
from engine_server.service import EngineService
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues import build_venues
from engine_server.venues.paper import PaperVenueConfig
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.serving import ServiceHost, service_main
from nautilus_mesh.tasks import cancel_and_wait
from nautilus_mesh.telemetry import Tracing

log = logging.getLogger(__name__)

VENUE_HEALTH_PREFIX = "nautilus.engine.v1.venue."
HEALTH_REFRESH_SECONDS = 1.0
"""How often the venues' health services and the ``component_up`` gauges are refreshed, seconds."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SERVICE_NAMES = (
    engine_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name,
    engine_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name,
)


SIZE_RAILS = ("max_order_qty", "max_order_qty_by_symbol", "max_order_notional")
"""The rails that bound an order's size; a paper venue inherits them from the live venue it follows."""


LEDGER_SETTINGS = {
    "journal_fsync",
    "dedupe_window",
    "journal_segment_bytes",
    "snapshot_every_bytes",
    "execution_retention",
}
"""The engine config fields that are execution ledger settings of the same name."""


def rails_settings(config: EngineConfig, name: str) -> VenueRailsConfig:
    """The rails of venue ``name``: its own, and for a paper venue the size rails of the venue it follows where it
    sets none (a shadow order is held to the same sizes as the live one it stands for)."""
    own = config.rails.get(name, VenueRailsConfig())
    spec = next((v for v in config.venues if v.name == name), None)
    if not isinstance(spec, PaperVenueConfig) or spec.follows not in config.rails:
        return own
    followed = config.rails[spec.follows]
    inherited = {
        key: getattr(followed, key)
        for key in SIZE_RAILS
        if key not in own.model_fields_set and key in followed.model_fields_set
    }
    return own.model_copy(update=inherited)


def build_manager(config: EngineConfig, metrics: EngineMetrics, clock: Clock = REAL_CLOCK) -> OrderManager:
    """Venues, their rails and the execution ledger, from the config."""
    venues = build_venues(config.venues, clock=clock.time_ns)  # the config checked its rails' venue names
    metrics.bind_venues(venues)

    def on_reject(venue: str, rail: str) -> None:
        metrics.venue_rejections.labels(venue, rail).inc()

    def on_snapshot(seq: int) -> None:
        metrics.journal_snapshots.inc()
        metrics.journal_snapshot_seq.set(seq)

    rails = {name: VenueRails(rails_settings(config, name), venue=name, on_reject=on_reject) for name in venues}
    manager = OrderManager(
        venues,
        rails,
        config.journal_path,
        clock.time_ns,
        **config.model_dump(include=LEDGER_SETTINGS),
        retention=config.order_retention,
        history_limit=config.report_history,
        on_snapshot=on_snapshot,
    )
    metrics.journal_snapshot_seq.set(manager.snapshot_seq)
    metrics.journal_replayed_records.set(manager.replayed_records)
    metrics.last_seq.set(manager.last_seq)  # as replayed: a restart does not show the sequence back at 0
    metrics.orders_in_memory.set(manager.orders_in_memory)
    metrics.journal_bytes.set_function(lambda: manager.journal_bytes)
    return manager


class EngineServer(ServiceHost):
    """The engine gRPC server, its core and its /metrics endpoint."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.config = config
        self.metrics = EngineMetrics()
        self.tracing = tracing = Tracing("engine", config.span_file, enabled=config.tracing)
        self.core = EngineCore(
            build_manager(config, self.metrics),
            self.metrics,
            tracing,
            tick_interval=config.tick_interval_ms / 1000,
            session_queue_size=config.session_queue_size,
        )
        self._health_task: asyncio.Task[None] | None = None
        self._health = EngineHealth(self.core)

    async def start(self) -> None:
        await self.core.start(group_commit=True)
        engine = EngineService(
            self.core,
            self.config.ops_token,
            max_commands_per_frame=self.config.max_commands_per_frame,
            health=self._health,
        )
        market = MarketDataService(self.core)

        def register(server: grpc.aio.Server) -> None:
            engine_pb2_grpc.add_EngineServiceServicer_to_server(engine, server)
            engine_pb2_grpc.add_MarketDataServiceServicer_to_server(market, server)

        await self.serve(register, SERVICE_NAMES, self.metrics.registry, self.tracing)
        await self.update_venue_health()
        self._health_task = asyncio.create_task(self._venue_health_loop(), name="engine-venue-health")

    async def update_venue_health(self) -> None:
        """Each venue is a health service of its own: ``nautilus.engine.v1.venue.<name>``; and every health check's
        ``component_up`` gauge follows its check (not only when ``GetHealth`` is called)."""
        assert self.grpc is not None
        for name, venue in self.core.manager.venues.items():
            status = SERVING if venue.status().connected else NOT_SERVING
            await self.grpc.health.set(f"{VENUE_HEALTH_PREFIX}{name}", status)
        self._health.checks()  # sets component_up{component} for each check

    async def _venue_health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_SECONDS)
            await self.update_venue_health()

    async def stop_health_updates(self) -> None:
        await cancel_and_wait(self._health_task)

    async def stop_parts(self) -> None:
        await self.core.stop()


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(
        argv,
        prog="python -m engine_server",
        description="Run the nautilus-mesh engine.",
        load=load_engine_config,
        build=EngineServer,
        label="ENGINE",
        state_dir=lambda config: None if config.journal_path is None else config.journal_path.parent,
    )
