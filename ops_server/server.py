"""Runs the ops service: ``python -m ops_server --config config/demo/ops.json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.serving import ServiceHost, service_main
from ops_server.admin import OpsAdminService
from ops_server.config import OpsConfig, load_ops_config
from ops_server.coordination import Coordinator
from ops_server.core import OpsCore
from ops_server.health import ops_health
from ops_server.intake import IntakeRate, StrategyIntake
from ops_server.service import OpsService
from ops_server.sharding import ShardMap

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["OpsAdminService"].full_name,
)


class OpsServer(ServiceHost):
    """The ops gRPC server, its core and its /metrics endpoint."""

    def __init__(self, config: OpsConfig) -> None:
        super().__init__(config)
        self.config = config
        self.core = core = OpsCore(config)
        self.tracing = core.tracing
        self.shards = shards = ShardMap.from_config(config, core.registry.strategies())
        self.coordinator: Coordinator | None = None
        if shards.sharded:  # several workers: leader election, shared rails and exposure through PostgreSQL
            self.coordinator = Coordinator(core.parts, shards, periodic=core.periodic, controls=core.controls)
        else:
            core.metrics.allocator_leader.set(1)  # a single ops runs its own allocation cycles
        self.service = OpsService(
            auth=core.auth,
            signals=core.signals,
            fills=core.feedback,
            queries=core.queries,
            max_signals_per_frame=config.max_signals_per_frame,
            admin_token=config.admin_token,
            intake=StrategyIntake(
                config.intake_signals_per_second,
                config.intake_burst,
                core.metrics,
                {
                    name: IntakeRate(access.intake_signals_per_second, access.intake_burst)
                    for name, access in config.strategies.items()
                    if access.intake_signals_per_second is not None or access.intake_burst is not None
                },
            ),
            stream_max_pending_answers=config.stream_max_pending_answers,
            stream_backlog_share=config.stream_backlog_share,
            metrics=core.metrics,
            shards=shards,
        )
        self.health = ops_health(core)
        self.admin = OpsAdminService(
            controls=core.controls,
            queries=core.queries,
            admin_token=config.admin_token,
            health=self.health,
            coordinator=self.coordinator,
        )

    async def start(self) -> None:
        await self.core.start()
        if self.coordinator is not None:
            await self.coordinator.start()

        def register(server: grpc.aio.Server) -> None:
            ops_pb2_grpc.add_OpsServiceServicer_to_server(self.service, server)
            admin_pb2_grpc.add_OpsAdminServiceServicer_to_server(self.admin, server)

        running = await self.serve(register, SERVICE_NAMES, self.core.metrics.registry, self.core.tracing)
        await self.health.start(running.health)  # per-dependency health: engine_link, marks, store

    async def stop_health_updates(self) -> None:
        await self.health.stop()

    async def stop_parts(self) -> None:
        """The coordination first (a leader gives up its lock), then the core, which persists."""
        if self.coordinator is not None:
            await self.coordinator.stop()
        await self.core.stop()


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(
        argv,
        prog="python -m ops_server",
        description="Run the nautilus-mesh ops service.",
        load=load_ops_config,
        build=OpsServer,
        label="OPS",
        state_dir=lambda config: config.state_dir,
    )
