"""Ops' restartable state: what a crash can lose (at most one save interval), and the trading day across midnight and
restarts."""

from __future__ import annotations

import calendar
from decimal import Decimal
from pathlib import Path

import pytest

import ops_server.core
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.errors import ValidationError
from nautilus_mesh.store import SqliteStore
from ops_server.measurement import Measurement
from ops_server.ops_state import OpsState
from ops_server.server import OpsServer
from tests.conftest import ops_config, running_mesh, wait_until


async def test_the_day_roll_is_saved_at_once_so_a_crash_after_midnight_keeps_the_days_start(tmp_path: Path) -> None:
    """The roll moved the day in memory only: a kill -9 after midnight restarted on yesterday's saved day and began
    a new one from the equity then, forgetting the losses taken since midnight."""
    async with running_mesh(tmp_path) as mesh:
        state = mesh.ops.core.state
        today = state.trading_day
        state.trading_day = (2000, 1, 1)  # as if the process had been running since before midnight
        await wait_until(lambda: state.trading_day == today)  # the sampler rolled the day
        saved = state.store.get("trading_day")
        assert saved is not None and tuple(saved["day"]) == today


async def test_the_state_is_saved_on_a_timer_so_a_crash_loses_at_most_one_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves happened only on decisions: a kill -9 lost every canary observation and drawdown maximum since."""
    monkeypatch.setattr(ops_server.core, "STATE_SAVE_SECONDS", 0.2)
    async with running_mesh(tmp_path) as mesh:
        store = mesh.ops.core.state.store
        store.put_many({"drawdown": {"stale": True}})
        await wait_until(lambda: store.get("drawdown") != {"stale": True}, within=5)


def test_a_day_started_before_the_open_positions_had_marks_starts_again_when_they_have_them(tmp_path: Path) -> None:
    """A restart on a new day took the day's start equity before any quote: open positions counted at nothing, so
    the first marks showed yesterday's unrealized loss as today's (and could trip the daily-loss limit)."""
    measurement = Measurement(1.0)
    measurement.apply_fill("m", "X", Decimal(2), Decimal(110), Decimal(0))  # 20 USD under water at 100
    restarted = Measurement(1.0)
    restarted.restore_positions(measurement.positions_state())  # the journal's positions, no quote yet
    store = SqliteStore(tmp_path / "state.db")
    store.put_many({"trading_day": {"day": [2000, 1, 1], "day_start_equity": {"m": "0"}}})
    state = OpsState(store, None, None, None, restarted, tmp_path / "state.json")  # type: ignore[arg-type]
    state.restore_trading_day()  # a new day
    restarted.marks.clear()  # no quote since the restart
    assert not state.roll_day(state_now(state))  # no mark yet: nothing to start again from
    restarted.set_mark("X", Decimal(100))
    assert state.roll_day(state_now(state))
    assert restarted.daily_pnl("m") == 0  # yesterday's loss is not today's
    store.close()


def state_now(state: OpsState) -> float:
    """An instant of the state's trading day."""
    year, month, day = state.trading_day
    return float(calendar.timegm((year, month, day, 12, 0, 0)))


async def test_kill_switch_when_the_state_cannot_be_saved_still_cancels_resting_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It saved before cancelling: with the state store down, the engage call failed and nothing was cancelled."""
    async with running_mesh(tmp_path) as mesh:
        core = mesh.ops.core
        await wait_until(lambda: core.link.connected)

        def store_down() -> None:
            raise OSError("state store unreachable")

        monkeypatch.setattr(core.parts.state, "save", store_down)
        canceled, resting = await core.controls.engage_kill_switch("test: store down")
        monkeypatch.undo()  # the store is back before ops stops (its stop saves the final state)
        assert core.risk.kill_switch_engaged and resting == 0 and canceled >= 0


async def test_a_promoted_canary_comes_back_finished_after_a_restart(tmp_path: Path) -> None:
    """Its model is the stable one after promotion, so the registry starts no run for it: its status vanished and
    controls answered NO_CANARY instead of CANARY_FINISHED (a rolled-back one came back)."""
    async with running_mesh(tmp_path) as mesh:
        mesh.ops.core.controls.operate_canary("momentum", "promote", "test", to_full=True)
        await mesh.ops.stop(grace=0.2)
        mesh.ops = OpsServer(ops_config(tmp_path, mesh.engine.port))
        await mesh.ops.start()
        core = mesh.ops.core
        (status,) = core.queries.canary_statuses("momentum")
        assert status.state == ops_pb2.CANARY_STATE_PROMOTED
        with pytest.raises(ValidationError) as refused:
            core.controls.operate_canary("momentum", "pause", "test")
        assert refused.value.code == "CANARY_FINISHED"


def test_a_book_priced_at_midnight_keeps_its_days_start_when_another_is_priced_later(tmp_path: Path) -> None:
    """Only the book whose positions had no mark at midnight starts its day again once priced: the day restarted for
    every book, wiping the loss a priced book took since midnight."""
    before = Measurement(1.0)
    before.apply_fill("A", "X", Decimal(10), Decimal(100), Decimal(0))  # A: long 10 X
    before.apply_fill("B", "Y", Decimal(1), Decimal(50), Decimal(0))  # B: long 1 Y, whose quotes are down
    measurement = Measurement(1.0)
    measurement.restore_positions(before.positions_state())
    measurement.set_mark("X", Decimal(100))
    store = SqliteStore(tmp_path / "state.db")
    state = OpsState(store, None, None, None, measurement, tmp_path / "state.json")  # type: ignore[arg-type]
    state.trading_day = (2024, 1, 1)
    midnight = float(calendar.timegm((2024, 1, 2, 0, 0, 0)))
    assert state.roll_day(midnight + 1)
    measurement.set_mark("X", Decimal(50))  # A loses 500 USD after midnight
    measurement.set_mark("Y", Decimal(40))  # Y's first quote: B's day starts now, from this mark
    assert state.roll_day(midnight + 300)
    assert measurement.daily_pnl("A") == Decimal(-500)  # since midnight
    assert measurement.daily_pnl("B") == 0
    assert not state.roll_day(midnight + 301)  # nothing left to start again
    store.close()
