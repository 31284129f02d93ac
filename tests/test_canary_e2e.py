"""Canary routing inside a running mesh: shadow on the paper venue, operator controls, automatic steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from tests.conftest import ADMIN_META, MOMENTUM_META, Mesh, wait_until


def signal(signal_id: str, model: str, target: float) -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id=model, instrument="BTC-USD", target=target)


def engine_orders_by_venue(mesh: Mesh, model_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for report in mesh.engine.core.manager.list_executions(0, 5000):
        if report.model_id == model_id and report.exec_type.value in ("FILL", "PARTIAL_FILL", "REJECTED", "CANCELED"):
            counts[report.venue] = counts.get(report.venue, 0) + 1
    return counts


async def models(stub: object) -> dict[str, ops_pb2.ModelInfo]:
    response = await stub.ListModels(ops_pb2.ListModelsRequest(strategy_id="momentum"), metadata=MOMENTUM_META)  # type: ignore[attr-defined]
    return {m.model_id: m for m in response.models}


async def test_shadow_model_when_signalling_trades_only_on_paper_and_is_measured(mesh: Mesh) -> None:
    core = mesh.ops.core
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        status = await stub.GetCanaryStatus(ops_pb2.GetCanaryStatusRequest(), metadata=MOMENTUM_META)
        assert [c.state for c in status.canaries] == [ops_pb2.CANARY_STATE_SHADOW]
        shadow = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("sh-1", "momentum_v2", 0.3)), metadata=MOMENTUM_META
        )
        live = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("sh-2", "momentum_v1", 0.3)), metadata=MOMENTUM_META
        )
    assert shadow.decision.mode == ops_pb2.ROUTING_MODE_SHADOW
    assert shadow.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert live.decision.mode == ops_pb2.ROUTING_MODE_LIVE
    await wait_until(lambda: core.queries.position("momentum_v2@paper", "BTC-USD") > 0)
    await wait_until(lambda: core.queries.position("momentum_v1@paper", "BTC-USD") > 0)
    # Counted at the engine: the shadow model never reached the live venue, its paper twin neither.
    assert engine_orders_by_venue(mesh, "momentum_v2") == {}
    assert set(engine_orders_by_venue(mesh, "momentum_v2@paper")) == {"paper"}
    assert set(engine_orders_by_venue(mesh, "momentum_v1@paper")) == {"paper"}
    assert set(engine_orders_by_venue(mesh, "momentum_v1")) == {"sim"}
    # Paper fills are measured like live ones, sized on the paper capital, in a book apart from any live one.
    assert core.measurement.book("momentum_v2@paper").fills >= 1
    assert core.queries.position("momentum_v2", "BTC-USD") == 0
    assert (
        core.metrics.registry.get_sample_value("signals_routed_total", {"model": "momentum_v2", "mode": "SHADOW"}) == 1
    )


async def test_operator_controls_when_used_move_weights_for_the_next_signal(mesh: Mesh) -> None:
    core = mesh.ops.core
    async with mesh.stubs() as (stub, admin):
        # Shadow trading first: a paper position that must not leak into the live book.
        await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("op-0", "momentum_v2", -1.0)), metadata=MOMENTUM_META
        )
        await wait_until(lambda: core.queries.position("momentum_v2@paper", "BTC-USD") < 0)
        promoted = await admin.PromoteCanary(
            admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="looks good"), metadata=ADMIN_META
        )
        assert promoted.status.state == ops_pb2.CANARY_STATE_STEPPING and promoted.status.step_percent == 5.0
        routes = await models(stub)
        assert routes["momentum_v2"].routing_weight == pytest.approx(0.05)
        assert routes["momentum_v1"].routing_weight == pytest.approx(0.95)
        assert routes["momentum_v2"].mode == ops_pb2.ROUTING_MODE_LIVE
        assert core.metrics.registry.get_sample_value(
            "canary_weight", {"strategy": "momentum", "model": "momentum_v2"}
        ) == pytest.approx(0.05)
        # The canary's quota is now 5% of the strategy's: its signal goes live, small.
        canary = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("op-1", "momentum_v2", 1.0)), metadata=MOMENTUM_META
        )
        assert canary.decision.mode == ops_pb2.ROUTING_MODE_LIVE
        assert canary.decision.side == common_pb2.SIDE_BUY
        mark = core.queries.mark("BTC-USD")
        assert mark is not None
        allocation = core.queries.allocation_usd("momentum")
        # Sized from a flat live book: the full 5% quota, not offset by the paper short.
        full = allocation * Decimal("0.05") / mark
        assert full * Decimal("0.99") <= Decimal(canary.decision.quantity) <= full * Decimal("1.01")

        paused = await admin.PauseCanary(
            admin_pb2.PauseCanaryRequest(strategy_id="momentum", reason="hold"), metadata=ADMIN_META
        )
        assert paused.status.state == ops_pb2.CANARY_STATE_PAUSED
        rolled = await admin.RollbackCanary(
            admin_pb2.RollbackCanaryRequest(strategy_id="momentum", reason="operator"), metadata=ADMIN_META
        )
        assert rolled.status.state == ops_pb2.CANARY_STATE_ROLLED_BACK
        routes = await models(stub)
        assert routes["momentum_v1"].routing_weight == 1.0 and routes["momentum_v2"].routing_weight == 0.0
        assert Decimal(routes["momentum_v2"].quota_usd) == 0
        # The rolled-back canary's next signal, whatever its target, only unwinds its live position.
        await wait_until(lambda: not core.queries.order(canary.decision.client_order_id).open_quantity)
        held = core.queries.position("momentum_v2", "BTC-USD")
        assert held > 0
        unwind = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("op-2", "momentum_v2", 0.5)), metadata=MOMENTUM_META
        )
        assert unwind.decision.side == common_pb2.SIDE_SELL and Decimal(unwind.decision.quantity) == held
        # A finished canary refuses further controls with a clear code.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.PromoteCanary(
                admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="again"), metadata=ADMIN_META
            )
        assert "CANARY_FINISHED" in (caught.value.details() or "")
    kinds = [(e.kind, e.attributes.get("to_state")) for e in core.queries.recent_events() if e.kind == "CANARY"]
    assert kinds == [("CANARY", "STEPPING"), ("CANARY", "PAUSED"), ("CANARY", "ROLLED_BACK")]


async def test_canary_when_checks_pass_steps_automatically_and_waits_for_confirmation(mesh: Mesh) -> None:
    core = mesh.ops.core
    run = core.canaries.runs["momentum"]
    clock = [datetime.now(UTC)]
    core.canaries.clock = lambda: clock[0]
    good = [0.001, 0.002, -0.0005, 0.0015, 0.001, 0.0025, -0.001, 0.002] * 200  # a steady, positive series
    # Each step needs the demo's 30 new bars of 1 s: 150 samples of the mesh fixture's 0.2 s.
    per_step = run.controller.config.min_observations * 5

    def observe(n: int) -> None:
        start = len(run.canary_returns)
        run.canary_returns.extend(good[start : start + n])
        run.stable_returns.extend(good[start : start + n])

    percents = []
    for _ in range(8):
        clock[0] += timedelta(seconds=60)
        observe(per_step)
        core.periodic.evaluate_canaries()
        percents.append(run.controller.step_percent)
    assert percents[:4] == [5.0, 10.0, 25.0, 50.0]
    # The demo config holds before 100% until an operator confirms.
    assert run.controller.state.value == "WAITING_CONFIRMATION"
    assert core.registry.route("momentum_v2").weight == pytest.approx(0.5)
    async with mesh.channel() as channel:
        status = await mesh.ops_stub(channel).GetCanaryStatus(ops_pb2.GetCanaryStatusRequest(), metadata=MOMENTUM_META)
        (canary,) = status.canaries
        # The deflated Sharpe ratio of the last check, over the registry's two versions of momentum.
        assert canary.trials == 2
        assert 0.0 < canary.deflated_sharpe_ratio <= 1.0
        assert canary.deflated_sharpe_ratio == pytest.approx(canary.last_check.statistics["dsr"])
        assert canary.last_check.statistics["bar_seconds"] == pytest.approx(1.0)
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        confirmed = await admin.ConfirmCanary(
            admin_pb2.ConfirmCanaryRequest(strategy_id="momentum", reason="reviewed"), metadata=ADMIN_META
        )
    assert confirmed.status.state == ops_pb2.CANARY_STATE_PROMOTED
    route = core.registry.route("momentum_v2")
    assert route.weight == 1.0 and route.stable  # the canary is now the stable model
    assert core.registry.route("momentum_v1").weight == 0.0


async def test_canary_when_drawdown_guard_trips_rolls_back_at_once(mesh: Mesh) -> None:
    core = mesh.ops.core
    async with mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        await admin.PromoteCanary(
            admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="go"), metadata=ADMIN_META
        )
        await admin.PromoteCanary(
            admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="go"), metadata=ADMIN_META
        )
    run = core.canaries.runs["momentum"]
    assert run.controller.step_percent == 10.0
    # A canary whose equity is 60% under its peak (the demo guard is 50%), with no failed check.
    book = core.measurement.book("momentum_v2")
    book.peak_index, book.equity_index = Decimal(1), Decimal("0.4")
    events = core.periodic.evaluate_canaries()
    assert [e.reason.value for e in events] == ["GUARD_DRAWDOWN"]
    assert run.controller.state.value == "ROLLED_BACK"
    assert core.registry.route("momentum_v1").weight == 1.0
