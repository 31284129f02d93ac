"""Periodic decisions inside a running mesh: strategy returns by the weights of their time, canary guard counts."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2
from ops_server.canary.events import CanaryEvent, CanaryReason, CanaryState
from ops_server.risk import TradingState
from tests.conftest import (
    ADMIN_META,
    MOMENTUM_META,
    Mesh,
    wait_until,
)


async def promote(admin: admin_pb2_grpc.OpsAdminServiceStub) -> None:
    await admin.PromoteCanary(
        admin_pb2.PromoteCanaryRequest(strategy_id="momentum", reason="test"), metadata=ADMIN_META
    )


async def submit(stub: object, signal_id: str, model: str, target: float, instrument: str = "BTC-USD") -> None:
    signal = ops_pb2.Signal(signal_id=signal_id, model_id=model, instrument=instrument, target=target)
    with contextlib.suppress(grpc.aio.AioRpcError):  # a denial answers with an error status; counted either way
        await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal), metadata=MOMENTUM_META)  # type: ignore[attr-defined]


async def test_strategy_returns_when_weights_change_combine_each_sample_with_the_weights_of_its_time(
    small_mesh: Mesh,
) -> None:
    periodic = small_mesh.ops.core.periodic
    async with small_mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        await promote(admin)  # momentum_v2 live at 5%: weights 0.05 / 0.95
        periodic.record_strategy_returns({"momentum_v1": 0.01, "momentum_v2": 0.03})
        await promote(admin)  # 10%: weights 0.10 / 0.90
        periodic.record_strategy_returns({"momentum_v1": 0.01, "momentum_v2": 0.03})
    first, second = periodic.strategy_returns()["momentum"]
    assert first == pytest.approx(0.95 * 0.01 + 0.05 * 0.03)  # the weights when it was sampled, not today's
    assert second == pytest.approx(0.90 * 0.01 + 0.10 * 0.03)


async def test_canary_guards_when_others_breach_or_rails_are_not_capital_count_only_own_capital_breaches_of_the_step(
    small_mesh: Mesh,
) -> None:
    core = small_mesh.ops.core
    async with small_mesh.stubs() as (stub, admin):
        for _ in range(4):
            await promote(admin)  # 5, 10, 25, 50 %: momentum_v2's quota is 1000
        assert core.canaries.runs["momentum"].controller.step_percent == 50.0
        # The stable model's quota breach is not the canary's.
        await submit(stub, "v1-a", "momentum_v1", 0.75)
        await wait_until(lambda: core.queries.position("momentum_v1", "BTC-USD") > 0)
        await submit(stub, "v1-b", "momentum_v1", 0.5, "ETH-USD")
        # The canary's own quota breach is: 750 of 1000 used, then 500 more asked.
        await submit(stub, "v2-a", "momentum_v2", 0.75)
        await wait_until(lambda: core.queries.position("momentum_v2", "BTC-USD") > 0)
        await submit(stub, "v2-b", "momentum_v2", 0.5, "ETH-USD")
        # A trading-state denial is no capital breach.
        await admin.SetTradingState(
            admin_pb2.SetTradingStateRequest(
                model_id="momentum_v2", state=common_pb2.TRADING_STATE_HALTED, reason="test"
            ),
            metadata=ADMIN_META,
        )
        await submit(stub, "v2-c", "momentum_v2", 0.0)

        guards = core.periodic.canary_guards("momentum_v2")
        assert guards.risk_breaches == 1
        assert guards.error_rate == 0.0  # risk denials are not errors counted a second time

        await admin.SetTradingState(
            admin_pb2.SetTradingStateRequest(
                model_id="momentum_v2", state=common_pb2.TRADING_STATE_ACTIVE, reason="test"
            ),
            metadata=ADMIN_META,
        )
        await promote(admin)
    assert core.canaries.runs["momentum"].controller.step_percent == 100.0
    # A new step starts with no breach counted.
    assert core.periodic.canary_guards("momentum_v2").risk_breaches == 0
    assert core.queries.position("momentum_v2", "BTC-USD") == Decimal("7.5")


async def test_canary_error_rate_when_a_clipped_flip_is_accepted_counts_the_other_rejection_as_an_error(
    small_mesh: Mesh,
) -> None:
    """The error rate is REJECTED decisions that a rail did not refuse, over the decisions: an ACCEPTED flip whose
    opening part was refused is no rejected decision, so it does not hide a real error (it was subtracted from
    them)."""
    core = small_mesh.ops.core
    async with small_mesh.stubs() as (stub, admin):
        for _ in range(4):
            await promote(admin)  # 5, 10, 25, 50 %: momentum_v2 trades live, a quota of 1000
        await submit(stub, "v2-long", "momentum_v2", 0.5)
        await wait_until(lambda: core.queries.position("momentum_v2", "BTC-USD") > 0)
        await admin.SetTradingState(
            admin_pb2.SetTradingStateRequest(
                model_id="momentum_v2", state=common_pb2.TRADING_STATE_REDUCING, reason="test"
            ),
            metadata=ADMIN_META,
        )
        await submit(stub, "v2-flip", "momentum_v2", -0.5)  # ACCEPTED, the opening part refused
        await submit(stub, "v2-unknown", "momentum_v2", 0.1, "DOGE-USD")  # REJECTED UNKNOWN_INSTRUMENT: an error
        flip = core.tracker.previous_decision("momentum_v2", "v2-flip")
        assert flip is not None and flip.status == ops_pb2.DECISION_STATUS_ACCEPTED
        assert flip.error.code == "REDUCE_ONLY_OPENING_REFUSED"
        # Three decisions since the 50% step began (the long, the flip, the unknown instrument), one of them an error.
        assert core.periodic.canary_guards("momentum_v2").error_rate == pytest.approx(1 / 3)


async def test_canary_metrics_at_start_show_the_weights_and_every_transition_at_zero(small_mesh: Mesh) -> None:
    """Before any canary event: the weights are exported, and each state's transition counter exists at 0 (a counter
    first seen at 1 is no increase to Prometheus' ``increase()``: the CanaryRolledBack alert would miss it)."""
    core = small_mesh.ops.core
    registry = core.metrics.registry
    assert "momentum" in core.canaries.runs
    for route in core.registry.models_of("momentum"):
        labels = {"strategy": "momentum", "model": route.model_id}
        assert registry.get_sample_value("canary_weight", labels) == route.weight
    for state in CanaryState:
        labels = {"strategy": "momentum", "state": state.value}
        assert registry.get_sample_value("canary_transitions_total", labels) == 0.0, state


async def test_canary_transitions_total_when_a_check_holds_the_canary_counts_nothing(small_mesh: Mesh) -> None:
    """A check that leaves the canary in its state and step is audited but is no transition; a move is one."""
    core = small_mesh.ops.core
    counter = core.metrics.canary_transitions

    def event(from_state: CanaryState, to_state: CanaryState, before: float, after: float) -> CanaryEvent:
        return CanaryEvent(
            at=datetime.now(UTC),
            strategy="momentum",
            model_id="momentum_v2",
            from_state=from_state,
            to_state=to_state,
            step_percent_before=before,
            step_percent_after=after,
            reason=CanaryReason.CHECK_INCONCLUSIVE,
            message="test",
        )

    core.periodic.on_canary_event(event(CanaryState.SHADOW, CanaryState.SHADOW, 0.0, 0.0))
    assert counter.labels("momentum", "SHADOW")._value.get() == 0
    core.periodic.on_canary_event(event(CanaryState.STEPPING, CanaryState.STEPPING, 5.0, 10.0))  # a step up
    core.periodic.on_canary_event(event(CanaryState.STEPPING, CanaryState.PAUSED, 10.0, 10.0))
    assert counter.labels("momentum", "STEPPING")._value.get() == 1
    assert counter.labels("momentum", "PAUSED")._value.get() == 1


async def test_kill_switch_engaged_when_an_operator_halts_instead_stays_0(small_mesh: Mesh) -> None:
    """``kill_switch_engaged`` tells the kill switch apart from a global HALTED set by SetTradingState (both read 2 in
    ``trading_state``): the KillSwitchEngaged alert's remedy, releasing it, is refused for the latter."""
    core = small_mesh.ops.core
    registry = core.metrics.registry

    def exported() -> tuple[float | None, float | None]:
        core.periodic.sample()
        return (
            registry.get_sample_value("kill_switch_engaged", {}),
            registry.get_sample_value("trading_state", {"scope": "global", "model": ""}),
        )

    assert exported() == (0.0, 0.0)
    core.risk.engage_kill_switch("test")
    assert exported() == (1.0, 2.0)
    core.risk.release_kill_switch("test")
    assert exported() == (0.0, 0.0)
    core.risk.set_state(None, TradingState.HALTED, "operator halt")
    assert exported() == (0.0, 2.0)
