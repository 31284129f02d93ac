"""Risk rails, trading states and the kill switch against a running mesh (flat market: exact numbers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.status import from_rpc_error
from ops_server.config import StrategyAccess
from tests.conftest import (
    ADMIN_META,
    DEMO,
    ENGINE_TOKEN,
    MOMENTUM_META,
    Mesh,
    flat_instruments,
    flat_venues,
    order_command,
    running_mesh,
    wait_until,
    write_json,
)


def signal(signal_id: str, target: float, instrument: str = "BTC-USD") -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id="momentum_v1", instrument=instrument, target=target)


async def set_model_state(admin: admin_pb2_grpc.OpsAdminServiceStub, state: common_pb2.TradingState.ValueType) -> None:
    """Set momentum_v1's trading state as an operator."""
    request = admin_pb2.SetTradingStateRequest(model_id="momentum_v1", state=state, reason="test")
    await admin.SetTradingState(request, metadata=ADMIN_META)


async def buy_15_btc(mesh: Mesh, stub: object) -> None:
    response = await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("q-1", 0.75)), metadata=MOMENTUM_META)  # type: ignore[attr-defined]
    assert response.decision.quantity == "15"
    core = mesh.ops.core
    await wait_until(lambda: core.queries.position("momentum_v1", "BTC-USD") == Decimal(15))


async def long_10_then_flip_in_reducing(mesh: Mesh, stub: object, admin: object, prefix: str) -> grpc.aio.AioRpcError:
    """Buy 10 BTC, move momentum_v1 to REDUCING, then signal short 5 (a flip); returns the flip's refusal."""
    core = mesh.ops.core
    request = ops_pb2.SubmitSignalRequest(signal=signal(f"{prefix}-1", 0.5))
    await stub.SubmitSignal(request, metadata=MOMENTUM_META)  # type: ignore[attr-defined]
    await wait_until(lambda: core.queries.position("momentum_v1", "BTC-USD") == Decimal(10))
    await set_model_state(admin, common_pb2.TRADING_STATE_REDUCING)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        flip = ops_pb2.SubmitSignalRequest(signal=signal(f"{prefix}-2", -0.25))
        await stub.SubmitSignal(flip, metadata=MOMENTUM_META)  # type: ignore[attr-defined]
    return caught.value


async def test_quota_when_1000_needed_and_500_available_is_rejected_in_stream_and_unary(small_mesh: Mesh) -> None:
    async with small_mesh.channel() as channel:
        stub = small_mesh.ops_stub(channel)
        await buy_15_btc(small_mesh, stub)  # uses 1500 of the 2000 quota

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal("q-2", 0.5, "ETH-USD")), metadata=MOMENTUM_META
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = from_rpc_error(caught.value)
        assert detail is not None
        assert (detail.kind, detail.code) == ("risk_rejected", "INVALID_QUOTE")
        assert dict(detail.details) == {"requested": "1000", "available": "500"}

        call = stub.StreamSignals(
            iter([ops_pb2.StreamSignalsRequest(signals=[signal("q-3", 0.5, "ETH-USD")])]), metadata=MOMENTUM_META
        )
        decisions = [d async for frame in call for d in frame.decisions]
        assert len(decisions) == 1
        assert decisions[0].status == ops_pb2.DECISION_STATUS_REJECTED
        assert decisions[0].error.code == "INVALID_QUOTE"
        assert dict(decisions[0].error.details) == {"requested": "1000", "available": "500"}
    core = small_mesh.ops.core
    assert (
        core.metrics.registry.get_sample_value("risk_rejections_total", {"rail": "quota", "model": "momentum_v1"}) == 2
    )
    assert any(
        e.kind == "RISK_REJECTED" and e.attributes.get("code") == "INVALID_QUOTE" for e in core.queries.recent_events()
    )


async def test_reducing_state_when_set_by_operator_passes_reductions_and_denies_increases(small_mesh: Mesh) -> None:
    async with small_mesh.stubs() as (stub, admin):
        await buy_15_btc(small_mesh, stub)
        await set_model_state(admin, common_pb2.TRADING_STATE_REDUCING)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("r-up", 0.9)), metadata=MOMENTUM_META)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert from_rpc_error(caught.value).code == "REDUCE_ONLY"  # type: ignore[union-attr]
        down = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("r-down", 0.25)), metadata=MOMENTUM_META
        )
        assert down.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
        assert down.decision.side == common_pb2.SIDE_SELL

        await set_model_state(admin, common_pb2.TRADING_STATE_HALTED)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("h-down", 0.0)), metadata=MOMENTUM_META)
        assert from_rpc_error(caught.value).code == "TRADING_HALTED"  # type: ignore[union-attr]
        state = await stub.GetTradingState(ops_pb2.GetTradingStateRequest(), metadata=MOMENTUM_META)
        assert state.models["momentum_v1"] == common_pb2.TRADING_STATE_HALTED
        assert state.global_state == common_pb2.TRADING_STATE_ACTIVE


async def test_kill_switch_when_engaged_cancels_resting_orders_and_denies_signals_until_released(
    small_mesh: Mesh,
) -> None:
    # Resting orders at the engine, from an engine session that stays open.
    outbox: asyncio.Queue[engine_pb2.StreamOrdersRequest | None] = asyncio.Queue()

    async def commands() -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
        while (frame := await outbox.get()) is not None:
            yield frame

    manager = small_mesh.engine.core.manager
    async with grpc.aio.insecure_channel(small_mesh.engine_address) as engine_channel:
        engine = engine_pb2_grpc.EngineServiceStub(engine_channel)
        call = engine.StreamOrders(commands(), metadata=(("x-engine-token", ENGINE_TOKEN),))
        for i, price in enumerate(("99.50", "99.40", "99.30")):
            await outbox.put(engine_pb2.StreamOrdersRequest(commands=[order_command(f"rest-{i}", "1", price)]))
        await wait_until(lambda: len(manager.open_orders()) == 3)

        async with small_mesh.stubs() as (stub, admin):
            engaged = await admin.EngageKillSwitch(
                admin_pb2.EngageKillSwitchRequest(reason="test"), metadata=ADMIN_META
            )
            assert engaged.canceled_count == 3
            assert engaged.resting_remaining == 0 and engaged.cancels_confirmed
            assert manager.open_orders() == []

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("k-1", 0.1)), metadata=MOMENTUM_META)
            assert from_rpc_error(caught.value).code == "TRADING_HALTED"  # type: ignore[union-attr]
            state = await stub.GetTradingState(ops_pb2.GetTradingStateRequest(), metadata=MOMENTUM_META)
            assert state.kill_switch_engaged and state.global_state == common_pb2.TRADING_STATE_HALTED

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.ReleaseKillSwitch(admin_pb2.ReleaseKillSwitchRequest(reason=""), metadata=ADMIN_META)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await admin.ReleaseKillSwitch(admin_pb2.ReleaseKillSwitchRequest(reason="all clear"), metadata=ADMIN_META)
            accepted = await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal("k-2", 0.1)), metadata=MOMENTUM_META
            )
            assert accepted.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
        await outbox.put(None)
        call.cancel()
    kinds = [e.kind for e in small_mesh.ops.core.queries.recent_events()]
    assert {"KILL_SWITCH", "RISK_KILL_SWITCH_ENGAGED", "RISK_KILL_SWITCH_RELEASED"} <= set(kinds)


async def test_reload_when_risk_file_is_malformed_keeps_previous_limits(small_mesh: Mesh) -> None:
    path = small_mesh.ops.config.risk_limits_path
    assert path is not None
    async with small_mesh.stubs() as (stub, admin):
        before = await stub.GetRiskLimits(ops_pb2.GetRiskLimitsRequest(), metadata=MOMENTUM_META)
        reload = admin_pb2.ReloadConfigRequest(target=admin_pb2.CONFIG_TARGET_RISK_LIMITS)
        for bad in ('{"global": ', '{"global": {"max_gross_exposure": "-5"}}'):
            path.write_text(bad)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.ReloadConfig(reload, metadata=ADMIN_META)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            after = await stub.GetRiskLimits(ops_pb2.GetRiskLimitsRequest(), metadata=MOMENTUM_META)
            assert after.limits == before.limits

        good = json.loads((DEMO / "risk_limits.json").read_text())
        good["global"]["max_gross_exposure"] = "1234567"
        path.write_text(json.dumps(good))
        response = await admin.ReloadConfig(reload, metadata=ADMIN_META)
        assert "reloaded" in response.message
        after = await stub.GetRiskLimits(ops_pb2.GetRiskLimitsRequest(), metadata=MOMENTUM_META)
        assert after.limits["global"]["max_gross_exposure"] == "1234567"


async def test_reload_when_an_override_names_an_unknown_model_or_instrument_is_refused(small_mesh: Mesh) -> None:
    """A misspelled model id or symbol would leave the model on the default limits without a word: refused, and the
    limits in force stay."""
    path = small_mesh.ops.config.risk_limits_path
    assert path is not None
    async with small_mesh.stubs() as (stub, admin):
        before = await stub.GetRiskLimits(ops_pb2.GetRiskLimitsRequest(), metadata=MOMENTUM_META)
        reload = admin_pb2.ReloadConfigRequest(target=admin_pb2.CONFIG_TARGET_RISK_LIMITS)
        typo_model = json.loads((DEMO / "risk_limits.json").read_text())
        typo_model["models"] = {"momentum-v1": {"max_order_notional": "10"}}
        typo_symbol = json.loads((DEMO / "risk_limits.json").read_text())
        typo_symbol["default_model"]["max_position_qty"] = {"*": "100000", "BTC_USD": "20"}
        for bad, code, words in (
            (typo_model, "UNKNOWN_MODEL", "models.momentum-v1: unknown model 'momentum-v1'"),
            (typo_symbol, "UNKNOWN_INSTRUMENT", "default_model.max_position_qty.BTC_USD: unknown instrument"),
        ):
            path.write_text(json.dumps(bad))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.ReloadConfig(reload, metadata=ADMIN_META)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            error = from_rpc_error(caught.value)
            assert error is not None and error.code == code, error
            assert words in (caught.value.details() or "")
            after = await stub.GetRiskLimits(ops_pb2.GetRiskLimitsRequest(), metadata=MOMENTUM_META)
            assert after.limits == before.limits


async def test_admin_when_token_missing_or_wrong_is_refused(small_mesh: Mesh) -> None:
    async with small_mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        request = admin_pb2.SetTradingStateRequest(state=common_pb2.TRADING_STATE_HALTED, reason="x")
        for metadata in ((), (("x-ops-token", "wrong"),), MOMENTUM_META):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.SetTradingState(request, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert small_mesh.ops.core.queries.trading_state().value == "ACTIVE"


async def test_admin_when_no_admin_token_configured_is_closed(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, ops={"admin_token": ""}) as mesh, mesh.channel() as channel:
        admin = admin_pb2_grpc.OpsAdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.TriggerAllocation(admin_pb2.TriggerAllocationRequest(reason="x"), metadata=ADMIN_META)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "DOOR_DISABLED" in (caught.value.details() or "")


async def test_signals_when_no_strategy_token_configured_the_door_is_closed(tmp_path: Path) -> None:
    closed = {"momentum": StrategyAccess(token="", models=("momentum_v1", "momentum_v2"))}
    async with running_mesh(tmp_path, ops={"strategies": closed}) as mesh, mesh.channel() as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        request = ops_pb2.SubmitSignalRequest(
            signal=ops_pb2.Signal(signal_id="s-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitSignal(request, metadata=MOMENTUM_META)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "DOOR_DISABLED" in (caught.value.details() or "")


async def test_reducing_when_long_10_signals_short_5_sends_the_reducing_10_and_refuses_the_opening_5(
    small_mesh: Mesh,
) -> None:
    core = small_mesh.ops.core
    async with small_mesh.stubs() as (stub, admin):
        long = await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("f-1", 0.5)), metadata=MOMENTUM_META)
        assert long.decision.quantity == "10"
        await wait_until(lambda: core.queries.position("momentum_v1", "BTC-USD") == Decimal(10))
        await set_model_state(admin, common_pb2.TRADING_STATE_REDUCING)
        flip = await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal("f-2", -0.25)), metadata=MOMENTUM_META)
    decision = flip.decision
    assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert (decision.side, decision.quantity) == (common_pb2.SIDE_SELL, "10")
    assert decision.error.code == "REDUCE_ONLY_OPENING_REFUSED"
    assert dict(decision.error.details) == {"requested": "15", "accepted": "10", "refused": "5", "net_position": "10"}
    # The refused opening part is counted and audited as any rail's refusal (it was a log line only).
    assert core.risk.rejections.get(("trading_state", "momentum_v1")) == 1
    await wait_until(lambda: core.queries.position("momentum_v1", "BTC-USD") == Decimal(0))


async def test_reducing_when_the_clipped_part_is_under_the_minimum_quantity_nothing_is_sent(tmp_path: Path) -> None:
    """Long 2 with a minimum quantity of 12: a flip to short 10 is clipped to the 2 that close the position, which no
    order may carry, so nothing is sent (NO_ACTION, with the opening part's refusal) instead of an order the venue
    refuses."""
    instruments = flat_instruments()
    instruments[0].update(lot_size="1", min_qty="12")  # BTC-USD
    policy = json.loads((DEMO / "capital_policy.json").read_text())
    policy["total_capital"] = "4000"  # momentum's quota 2000: 20 BTC at 100
    venues = [
        {"name": "sim", "adapter": "sim", "seed": 1, "instruments": instruments},
        {"name": "paper", "adapter": "paper", "follows": "sim"},
    ]
    ops = {"capital_policy_path": write_json(tmp_path / "policy.json", policy)}
    async with running_mesh(tmp_path, engine={"venues": venues}, ops=ops) as mesh:
        core = mesh.ops.core
        async with mesh.stubs() as (stub, admin):
            for signal_id, target, position in (("m-1", 0.75, 15), ("m-2", 0.1, 2)):
                request = ops_pb2.SubmitSignalRequest(signal=signal(signal_id, target))
                answer = await stub.SubmitSignal(request, metadata=MOMENTUM_META)
                assert answer.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED, answer.decision
                await wait_until(lambda p=position: core.queries.position("momentum_v1", "BTC-USD") == Decimal(p))
            await set_model_state(admin, common_pb2.TRADING_STATE_REDUCING)
            flip = await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal("m-3", -0.5)), metadata=MOMENTUM_META
            )
        decision = flip.decision
        assert decision.status == ops_pb2.DECISION_STATUS_NO_ACTION and decision.quantity == ""
        assert decision.error.code == "REDUCE_ONLY_OPENING_REFUSED"
        assert dict(decision.error.details) == {
            "requested": "12",
            "accepted": "2",
            "refused": "10",
            "net_position": "2",
        }
        live = [o for o in core.tracker.orders.values() if o.signal_id == "m-3" and o.model_id == "momentum_v1"]
        assert live == []  # no live order (the stable model's paper twin still trades, as for any decision)
        assert core.risk.rejections.get(("trading_state", "momentum_v1")) == 1
        assert core.queries.position("momentum_v1", "BTC-USD") == Decimal(2)


async def test_reducing_when_a_rail_refuses_the_clipped_part_the_signal_is_refused_and_counted_once(
    tmp_path: Path,
) -> None:
    """The part a clipped flip would send meets the rails; when one refuses it (here the order rate: one token, no
    refill), the decision is that rail's refusal, counted once, and the opening part is not counted besides."""
    limits = json.loads((DEMO / "risk_limits.json").read_text())
    limits["default_model"].update(order_rate_per_second=0.0001, order_burst=1)
    policy = json.loads((DEMO / "capital_policy.json").read_text())
    policy["total_capital"] = "4000"
    ops = {
        "capital_policy_path": write_json(tmp_path / "policy.json", policy),
        "risk_limits_path": write_json(tmp_path / "limits.json", limits),
    }
    async with running_mesh(tmp_path, engine={"venues": flat_venues()}, ops=ops) as mesh:
        core = mesh.ops.core
        async with mesh.stubs() as (stub, admin):
            refused = await long_10_then_flip_in_reducing(mesh, stub, admin, "r")
        error = from_rpc_error(refused)
        assert error is not None and error.code == "RATE_LIMITED"
        assert core.risk.rejections == {("order_rate", "momentum_v1"): 1}


async def test_reducing_when_flip_policy_is_deny_refuses_the_flip_whole(tmp_path: Path) -> None:
    limits = json.loads((DEMO / "risk_limits.json").read_text())
    limits["global"]["reduce_only_flip"] = "deny"
    policy = json.loads((DEMO / "capital_policy.json").read_text())
    policy["total_capital"] = "4000"
    venues = flat_venues()
    async with running_mesh(
        tmp_path,
        engine={"venues": venues},
        ops={
            "capital_policy_path": write_json(tmp_path / "policy.json", policy),
            "risk_limits_path": write_json(tmp_path / "limits.json", limits),
        },
    ) as mesh:
        core = mesh.ops.core
        async with mesh.stubs() as (stub, admin):
            refused = await long_10_then_flip_in_reducing(mesh, stub, admin, "d")
        assert from_rpc_error(refused).code == "REDUCE_ONLY"  # type: ignore[union-attr]
        assert core.queries.position("momentum_v1", "BTC-USD") == Decimal(10)


async def test_ops_when_its_risk_file_overrides_an_unknown_model_refuses_to_start(tmp_path: Path) -> None:
    limits = json.loads((DEMO / "risk_limits.json").read_text())
    limits["models"] = {"Momentum_v1": {"max_order_notional": "10"}}
    with pytest.raises(ConfigError) as caught:
        async with running_mesh(tmp_path, ops={"risk_limits_path": write_json(tmp_path / "limits.json", limits)}):
            pass
    assert caught.value.code == "UNKNOWN_MODEL" and "Momentum_v1" in caught.value.message
