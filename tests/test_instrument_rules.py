"""Orders are sized by the instrument rules (lot, minimum quantity) of the venue they go to, as the engine lists them
at the last connect: a paper venue with a lot of its own sizes SHADOW orders, and an engine restarted with a new lot
sizes the next live order."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from engine_server.server import EngineServer
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import MOMENTUM_META, engine_config, flat_instruments, running_mesh, wait_until


def signal(signal_id: str, target: float, model: str) -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id=model, instrument="BTC-USD", target=target, confidence=1.0)


def coarse(lot: str) -> list[dict[str, object]]:
    return [dict(i, lot_size=lot, min_qty=lot) for i in flat_instruments()]


async def test_a_shadow_order_is_sized_by_the_paper_venues_own_lot(tmp_path: Path) -> None:
    venues = [
        {"name": "sim", "adapter": "sim", "seed": 1, "instruments": flat_instruments()},  # lot 0.01
        {"name": "paper", "adapter": "paper", "follows": "sim", "instruments": coarse("0.1")},
    ]
    async with running_mesh(tmp_path, engine={"venues": venues}) as mesh:
        core = mesh.ops.core
        route = core.registry.route("momentum_v2")
        assert route.mode.value == "SHADOW"
        await wait_until(lambda: core.exposure.mark("BTC-USD") is not None)
        principal = core.auth.authenticate(MOMENTUM_META)
        target = 0.03705
        desired = Decimal(repr(target)) * core.exposure.quota(route) / Decimal(100)  # flat mark 100
        assert desired % Decimal("0.1") != 0  # a multiple of the live lot, not of the paper lot

        (decision,) = core.signals.handle_frame([signal("paper-lot-1", target, "momentum_v2")], principal)

        assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED, decision
        expected = (desired / Decimal("0.1")).to_integral_value(ROUND_DOWN) * Decimal("0.1")
        assert Decimal(decision.quantity) == expected
        order = core.tracker.orders[decision.client_order_id]
        await wait_until(lambda: order.status == engine_pb2.ORDER_STATUS_FILLED)  # the paper venue takes it


async def test_an_engine_restarted_with_a_new_lot_sizes_the_next_live_order_by_it(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        core = mesh.ops.core
        route = core.registry.route("momentum_v1")
        principal = core.auth.authenticate(MOMENTUM_META)
        port = mesh.engine.port
        await mesh.engine.stop(grace=0.2)
        await wait_until(lambda: not core.link.available)
        venues = [
            {"name": "sim", "adapter": "sim", "seed": 1, "instruments": coarse("0.1")},
            {"name": "paper", "adapter": "paper", "follows": "sim"},
        ]
        mesh.engine = EngineServer(
            engine_config(tmp_path, port=port, venues=venues, journal_path=tmp_path / "engine2" / "journal.bin")
        )
        await mesh.engine.start()
        await wait_until(lambda: core.link.available and core.exposure.mark("BTC-USD") is not None)
        assert core.exposure.rules(route, "BTC-USD").lot_size == Decimal("0.1")
        target = 0.00057
        desired = Decimal(repr(target)) * core.exposure.quota(route) / Decimal(100)
        assert desired % Decimal("0.1") != 0

        (decision,) = core.signals.handle_frame([signal("new-lot-1", target, "momentum_v1")], principal)

        assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED, decision
        assert Decimal(decision.quantity) % Decimal("0.1") == 0
        order = core.tracker.orders[decision.client_order_id]
        await wait_until(lambda: order.status == engine_pb2.ORDER_STATUS_FILLED)  # the venue takes it
