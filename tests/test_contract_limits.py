"""Bounds and venue kinds that one side declares and the other reads, instead of numbers written twice."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from clients.sdk import OpsClient
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import ENGINE_TOKEN, MOMENTUM_META, MOMENTUM_TOKEN, running_mesh, wait_until


async def test_stream_limits_when_asked_are_the_configured_frame_bound(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, ops={"max_signals_per_frame": 7}) as mesh:
        async with OpsClient(mesh.ops_address, strategy_token=MOMENTUM_TOKEN) as ops:
            limits = await ops.get_stream_limits()
        assert limits.max_signals_per_frame == 7
        assert limits.max_items_per_response == 7


async def test_engine_frame_bound_when_listed_is_what_ops_batches_to(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, engine={"max_commands_per_frame": 3}) as mesh:
        async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            venues = await stub.ListVenues(engine_pb2.ListVenuesRequest(), metadata=(("x-engine-token", ENGINE_TOKEN),))
        assert venues.max_commands_per_frame == 3
        assert mesh.ops.core.link.max_commands_per_frame == 3
        # A frame of five signals (five live orders plus paper twins) leaves in frames of at most three commands.
        principal = mesh.ops.core.auth.authenticate(MOMENTUM_META)
        signals = [
            ops_pb2.Signal(signal_id=f"cap-{i}", model_id="momentum_v1", instrument=inst, target=0.01 * (i + 1))
            for i, inst in enumerate(["BTC-USD", "ETH-USD"])
        ]
        decisions = mesh.ops.core.signals.handle_frame(signals, principal)
        assert all(d.status == ops_pb2.DECISION_STATUS_ACCEPTED for d in decisions)
        queries = mesh.ops.core.queries
        await wait_until(lambda: all(queries.order(d.client_order_id).acknowledged for d in decisions))


@pytest.mark.parametrize(("setting", "venue"), [("paper_venue", "sim"), ("live_venue", "paper")])
async def test_venue_when_config_names_the_wrong_kind_refuses_every_order(
    tmp_path: Path, setting: str, venue: str
) -> None:
    async with running_mesh(tmp_path, ops={setting: venue}) as mesh:
        principal = mesh.ops.core.auth.authenticate(MOMENTUM_META)
        signal = ops_pb2.Signal(signal_id="kind-1", model_id="momentum_v2", instrument="BTC-USD", target=0.1)
        decision = mesh.ops.core.signals.handle(signal, principal)  # a shadow model: a paper order
        assert decision.status == ops_pb2.DECISION_STATUS_REJECTED
        assert decision.error.code == "VENUE_MISCONFIGURED"
        assert venue in decision.error.message
        assert mesh.ops.core.queries.orders("", 100, "").items == []  # nothing recorded, so nothing sent or re-sent
