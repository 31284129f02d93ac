"""Runs the ops service: ``python -m ops_server --config config/demo/ops.json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.serving import RunningServer, service_main, start_server
from nautilus_mesh.telemetry import MetricsServer
from ops_server.admin import OpsAdminService
from ops_server.config import OpsConfig, load_ops_config
from ops_server.core import OpsCore
from ops_server.health import ops_health
from ops_server.service import OpsService

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["OpsAdminService"].full_name,
)


class OpsServer:
    """The ops gRPC server, its core and its /metrics endpoint."""

    def __init__(self, config: OpsConfig) -> None:
        self.config = config
        self.core = core = OpsCore(config)
        self.service = OpsService(
            auth=core.auth,
            signals=core.signals,
            fills=core.feedback,
            queries=core.queries,
            max_signals_per_frame=config.max_signals_per_frame,
            admin_token=config.admin_token,
        )
        self.health = ops_health(core)
        self.admin = OpsAdminService(
            controls=core.controls, queries=core.queries, admin_token=config.admin_token, health=self.health
        )
        self.grpc: RunningServer | None = None
        self.metrics: MetricsServer | None = None

    @property
    def port(self) -> int:
        assert self.grpc is not None
        return self.grpc.port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> None:
        await self.core.start()

        def register(server: grpc.aio.Server) -> None:
            ops_pb2_grpc.add_OpsServiceServicer_to_server(self.service, server)
            admin_pb2_grpc.add_OpsAdminServiceServicer_to_server(self.admin, server)

        self.grpc = await start_server(
            register,
            SERVICE_NAMES,
            self.config.host,
            self.config.port,
            self.config.tls,
            registry=self.core.metrics.registry,
        )
        await self.health.start(self.grpc.health)  # per-dependency health: engine_link, marks, store
        if self.config.metrics_port is not None:
            self.metrics = MetricsServer(self.core.metrics.registry, self.config.metrics_host, self.config.metrics_port)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful: NOT_SERVING, let streams drain for ``grace`` seconds, stop, then persist."""
        await self.health.stop()
        if self.grpc is not None:
            await self.grpc.stop(grace)
        await self.core.stop()
        if self.metrics is not None:
            self.metrics.close()
        self.core.tracing.shutdown()


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
