"""Tests for the ops-side pre-trade risk rails, trading states, PnL breaches and the kill switch."""

from __future__ import annotations

import copy
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import ConfigError, RiskRejectedError, ValidationError
from ops_server.risk import (
    OrderIntent,
    RiskContext,
    RiskEvent,
    RiskLimits,
    RiskRails,
    Side,
    TradingState,
)

MODEL = "momentum_v1"
OTHER = "meanrev_v2"

LIMITS: dict[str, Any] = {
    "global": {
        "max_gross_exposure": "5000000",
        "stale_mark_seconds": 10,
        "allowed_instruments": ["BTC-USD", "ETH-USD"],
    },
    "default_model": {
        "max_order_notional": "250000",
        "max_position_qty": {"*": "100", "BTC-USD": "10"},
        "order_rate_per_second": 50,
        "order_burst": 100,
        "max_daily_loss": "20000",
        "max_drawdown_ratio": 0.2,
        "breach_state": "HALTED",
    },
    "models": {MODEL: {"max_order_notional": "100000"}},
}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits_dict(**changes: Any) -> dict[str, Any]:
    """A deep copy of LIMITS; ``section__key=value`` replaces one entry."""
    data = copy.deepcopy(LIMITS)
    for path, value in changes.items():
        section, key = path.split("__", 1)
        data[section][key] = value
    return data


def make_rails(data: dict[str, Any] | None = None) -> tuple[RiskRails, FakeClock, list[RiskEvent]]:
    clock = FakeClock()
    events: list[RiskEvent] = []
    rails = RiskRails(
        RiskLimits.from_dict(data or LIMITS), clock=clock, on_event=events.append, wall_clock=lambda: 42.0
    )
    return rails, clock, events


def buy(qty: str = "1", price: str = "100", *, symbol: str = "ETH-USD", model: str = MODEL) -> OrderIntent:
    return OrderIntent(model, symbol, Side.BUY, Decimal(qty), Decimal(price))


def sell(qty: str = "1", price: str = "100", *, symbol: str = "ETH-USD", model: str = MODEL) -> OrderIntent:
    return OrderIntent(model, symbol, Side.SELL, Decimal(qty), Decimal(price))


def cancel(*, model: str = MODEL) -> OrderIntent:
    return OrderIntent(model, "ETH-USD", Side.BUY, Decimal("0"), Decimal("0"), is_cancel=True)


def ctx(
    position: str = "0",
    open_qty: str = "0",
    quota: str = "1000000",
    gross: str = "0",
    mark_age: float | None = 0.5,
) -> RiskContext:
    return RiskContext(Decimal(position), Decimal(open_qty), Decimal(quota), Decimal(gross), mark_age)


def rejected(rails: RiskRails, intent: OrderIntent, context: RiskContext) -> RiskRejectedError:
    with pytest.raises(RiskRejectedError) as info:
        rails.check(intent, context)
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "risk_limits.json"
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------- quota


def test_quota_when_signal_needs_1000_with_500_available_rejects_invalid_quote() -> None:
    rails, _, events = make_rails()

    err = rejected(rails, buy("10", "100.00"), ctx(quota="500.00"))

    assert err.code == "INVALID_QUOTE"
    assert err.rail == "quota"
    assert err.kind == "risk_rejected"
    assert err.details == {"requested": "1000", "available": "500"}
    assert rails.rejections == {("quota", MODEL): 1}
    assert [(e.kind, e.model_id, e.rail, e.code, dict(e.details)) for e in events] == [
        ("REJECTED", MODEL, "quota", "INVALID_QUOTE", {"requested": "1000", "available": "500"})
    ]


def test_quota_when_notional_equals_available_passes() -> None:
    rails, _, events = make_rails()

    rails.check(buy("5", "100"), ctx(quota="500"))

    assert events == []
    assert rails.rejections == {}


def test_denial_when_rejected_logs_risk_line(caplog: pytest.LogCaptureFixture) -> None:
    rails, _, _ = make_rails()

    with caplog.at_level(logging.INFO, logger="ops_server.risk"):
        rejected(rails, buy("10", "100"), ctx(quota="500"))

    assert f"[RISK] denied model={MODEL} rail=quota code=INVALID_QUOTE" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1000.00", "1000"), ("1E+3", "1000"), ("0.000", "0"), ("-0", "0"), ("12.3400", "12.34"), ("1E-7", "0.0000001")],
)
def test_fmt_when_given_trailing_zeros_or_exponent_returns_plain_number(value: str, expected: str) -> None:
    assert fmt(Decimal(value)) == expected


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12))
def test_fmt_when_round_tripped_keeps_the_value(value: Decimal) -> None:
    text = fmt(value)
    assert "E" not in text and Decimal(text) == value


# ------------------------------------------------------------------------------------------------ trading states


def test_reducing_when_order_reduces_exposure_passes_and_increasing_is_denied() -> None:
    rails, _, events = make_rails()
    rails.set_state(MODEL, TradingState.REDUCING, "drawdown review")

    rails.check(sell("3"), ctx(position="5"))  # 5 -> 2
    err = rejected(rails, buy("1"), ctx(position="5"))  # 5 -> 6

    assert err.code == "REDUCE_ONLY"
    assert err.rail == "trading_state"
    assert err.details["scope"] == "model"
    assert rails.state(MODEL) is TradingState.REDUCING
    assert [e.kind for e in events] == ["STATE_CHANGED", "REJECTED"]


def test_reducing_when_order_would_flip_past_flat_is_denied() -> None:
    rails, _, _ = make_rails()
    rails.set_state(MODEL, TradingState.REDUCING, "review")

    err = rejected(rails, sell("8"), ctx(position="5"))  # 5 -> -3 opens a new short

    assert err.code == "REDUCE_ONLY"


def test_reducing_when_open_orders_count_toward_exposure_uses_position_plus_open() -> None:
    rails, _, _ = make_rails()
    rails.set_state(MODEL, TradingState.REDUCING, "review")

    # Flat position but a resting buy of 4: selling 4 reduces the would-be exposure.
    rails.check(sell("4"), ctx(position="0", open_qty="4"))
    err = rejected(rails, sell("1"), ctx(position="0", open_qty="0"))

    assert err.code == "REDUCE_ONLY"


def test_halted_when_order_reduces_or_increases_denies_both_and_lets_cancels_through() -> None:
    rails, _, events = make_rails()
    rails.set_state(MODEL, TradingState.HALTED, "manual")

    reducing = rejected(rails, sell("3"), ctx(position="5"))
    increasing = rejected(rails, buy("1"), ctx(position="5"))
    rails.check(cancel(), ctx(position="5"))

    assert (reducing.code, increasing.code) == ("TRADING_HALTED", "TRADING_HALTED")
    assert rails.rejections == {("trading_state", MODEL): 2}
    assert [e.kind for e in events] == ["STATE_CHANGED", "REJECTED", "REJECTED"]


def test_global_reducing_when_model_halted_refuses_every_order_trading_halted() -> None:
    """The model's effective state is HALTED (the stricter of the two): HALTED comes before REDUCING, in either
    scope, so an order that would not reduce is refused for the halt, not as reduce-only."""
    rails, _, _ = make_rails()
    rails.set_state(None, TradingState.REDUCING, "end of day")
    rails.set_state(MODEL, TradingState.HALTED, "manual")
    for intent, context in ((buy("1"), ctx()), (sell("8"), ctx(position="5")), (sell("5"), ctx(position="5"))):
        error = rejected(rails, intent, context)
        assert (error.code, error.details) == ("TRADING_HALTED", {"scope": "model", "state": "HALTED"})


def test_global_halted_when_model_active_overrides_model() -> None:
    rails, _, _ = make_rails()
    rails.set_state(None, TradingState.HALTED, "venue outage")

    err = rejected(rails, buy(), ctx())

    assert rails.model_state(MODEL) is TradingState.ACTIVE
    assert rails.state(MODEL) is TradingState.HALTED
    assert err.code == "TRADING_HALTED"
    assert err.details["scope"] == "global"


def test_global_reducing_when_model_halted_effective_state_is_halted() -> None:
    rails, _, _ = make_rails()
    rails.set_state(None, TradingState.REDUCING, "end of day")
    rails.set_state(MODEL, TradingState.HALTED, "manual")

    err = rejected(rails, sell("1"), ctx(position="5"))  # passes global REDUCING, fails model HALTED

    assert rails.state(MODEL) is TradingState.HALTED
    assert rails.state(OTHER) is TradingState.REDUCING
    assert (err.code, err.details["scope"]) == ("TRADING_HALTED", "model")


def test_set_state_when_called_returns_and_emits_state_changed_event() -> None:
    rails, _, events = make_rails()

    event = rails.set_state(MODEL, TradingState.REDUCING, "ops ticket 42")

    assert events == [event]
    assert (event.kind, event.model_id, event.state_before, event.state_after) == (
        "STATE_CHANGED",
        MODEL,
        TradingState.ACTIVE,
        TradingState.REDUCING,
    )
    assert event.details == {"reason": "ops ticket 42"}
    assert event.at == 42.0
    assert event.to_dict()["state_after"] == "REDUCING"


def test_set_state_when_model_id_empty_raises_validation_error() -> None:
    rails, _, events = make_rails()

    with pytest.raises(ValidationError):
        rails.set_state("", TradingState.HALTED, "typo")

    assert events == []


# --------------------------------------------------------------------------------------------------- other rails


def test_cancel_when_every_rail_would_fail_passes_and_takes_no_token() -> None:
    rails, _, events = make_rails(limits_dict(default_model__order_burst=1))
    rails.engage_kill_switch("test")
    bad = RiskContext(Decimal("999"), Decimal("0"), Decimal("0"), Decimal("99999999"), None)

    rails.check(OrderIntent(MODEL, "DOGE-USD", Side.BUY, Decimal("1"), Decimal("1"), is_cancel=True), bad)
    rails.release_kill_switch("test")
    rails.check(buy(), ctx())  # the single token is still there

    assert rails.rejections == {}
    assert [e.kind for e in events] == ["KILL_SWITCH_ENGAGED", "KILL_SWITCH_RELEASED"]


def test_allow_list_when_symbol_not_listed_rejects_instrument_not_allowed() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, buy(symbol="DOGE-USD"), ctx())

    assert (err.code, err.rail, err.details) == ("INSTRUMENT_NOT_ALLOWED", "instrument", {"symbol": "DOGE-USD"})


def test_allow_list_when_key_missing_allows_every_symbol() -> None:
    data = limits_dict()
    del data["global"]["allowed_instruments"]
    rails, _, _ = make_rails(data)

    rails.check(buy(symbol="DOGE-USD"), ctx())

    assert rails.limits.allowed_instruments is None
    assert rails.rejections == {}


def test_allow_list_when_explicit_empty_list_allows_nothing() -> None:
    rails, _, _ = make_rails(limits_dict(global__allowed_instruments=[]))

    err = rejected(rails, buy(), ctx())

    assert err.code == "INSTRUMENT_NOT_ALLOWED"


def test_stale_mark_when_mark_older_than_limit_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, buy(), ctx(mark_age=10.5))
    rails.check(buy(), ctx(mark_age=10.0))  # exactly at the limit is fresh enough

    assert (err.code, err.rail) == ("STALE_MARK", "stale_mark")
    assert err.details == {"mark_age_seconds": "10.5", "max_age_seconds": "10"}


def test_stale_mark_when_no_mark_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, sell("1"), ctx(position="5", mark_age=None))

    assert err.code == "STALE_MARK"
    assert err.details["mark_age_seconds"] == "none"


def test_max_order_notional_when_model_override_exceeded_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, buy("2", "60000", symbol="BTC-USD"), ctx())
    rails.check(buy("2", "60000", symbol="BTC-USD", model=OTHER), ctx())  # default 250000 applies to OTHER

    assert (err.code, err.rail) == ("MAX_ORDER_NOTIONAL", "max_order_notional")
    assert err.details == {"requested": "120000", "limit": "100000"}


def test_max_order_notional_when_order_reduces_still_applies() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, sell("5", "60000", symbol="BTC-USD"), ctx(position="8"))

    assert err.code == "MAX_ORDER_NOTIONAL"


def test_max_position_when_projection_exceeds_symbol_limit_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, buy("3", symbol="BTC-USD"), ctx(position="6", open_qty="2"))  # 6 + 2 + 3 = 11 > 10

    assert (err.code, err.rail) == ("MAX_POSITION", "max_position")
    assert err.details == {"symbol": "BTC-USD", "projected": "11", "limit": "10"}


def test_max_position_when_short_exceeds_wildcard_limit_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, sell("101"), ctx())

    assert err.details == {"symbol": "ETH-USD", "projected": "-101", "limit": "100"}


def test_gross_exposure_when_cap_would_be_exceeded_rejects() -> None:
    rails, _, _ = make_rails()

    err = rejected(rails, buy("2"), ctx(gross="4999900"))  # 4999900 + 200 > 5000000

    assert (err.code, err.rail) == ("GROSS_EXPOSURE", "gross_exposure")
    assert err.details == {"current": "4999900", "requested": "200", "limit": "5000000"}


def test_reducing_order_when_over_quota_position_and_gross_passes() -> None:
    rails, _, _ = make_rails()

    # Long 12 BTC (over the 10 limit), no quota left, gross above the cap: selling 4 still passes.
    rails.check(sell("4", "20000", symbol="BTC-USD"), ctx(position="12", quota="0", gross="6000000"))

    assert rails.rejections == {}


def test_rejections_when_several_rails_fire_count_by_rail_and_model() -> None:
    rails, _, _ = make_rails()

    rejected(rails, buy(symbol="DOGE-USD"), ctx())
    rejected(rails, buy(symbol="DOGE-USD", model=OTHER), ctx())
    rejected(rails, buy(symbol="DOGE-USD"), ctx())
    rejected(rails, buy(), ctx(mark_age=None))

    assert rails.rejections == {("instrument", MODEL): 2, ("instrument", OTHER): 1, ("stale_mark", MODEL): 1}


def test_on_event_when_callback_raises_denial_is_still_raised_and_counted() -> None:
    def broken(_: RiskEvent) -> None:
        raise RuntimeError("audit sink down")

    rails = RiskRails(RiskLimits.from_dict(LIMITS), clock=FakeClock(), on_event=broken)

    err = rejected(rails, buy(symbol="DOGE-USD"), ctx())

    assert err.code == "INSTRUMENT_NOT_ALLOWED"
    assert rails.rejections == {("instrument", MODEL): 1}


# -------------------------------------------------------------------------------------------------------- rate


def test_rate_when_burst_exhausted_denies_then_accepts_after_refill() -> None:
    rails, clock, _ = make_rails(limits_dict(default_model__order_rate_per_second=2, default_model__order_burst=3))

    for _ in range(3):
        rails.check(buy(), ctx())
    err = rejected(rails, buy(), ctx())
    clock.now += 0.25  # half a token
    still = rejected(rails, buy(), ctx())
    clock.now += 0.25  # one full token
    rails.check(buy(), ctx())

    assert (err.code, err.rail) == ("RATE_LIMITED", "order_rate")
    assert err.details == {"rate_per_second": "2", "burst": "3"}
    assert still.code == "RATE_LIMITED"
    assert rails.rejections == {("order_rate", MODEL): 2}


def test_rate_when_other_rail_denies_no_token_is_taken() -> None:
    rails, _, _ = make_rails(limits_dict(default_model__order_burst=1))

    rejected(rails, buy(), ctx(quota="0"))
    rejected(rails, buy(), ctx(mark_age=None))
    rails.check(buy(), ctx())

    assert rails.rejections == {("quota", MODEL): 1, ("stale_mark", MODEL): 1}


def test_rate_when_models_differ_buckets_are_separate() -> None:
    rails, _, _ = make_rails(limits_dict(default_model__order_burst=1))

    rails.check(buy(), ctx())
    rails.check(buy(model=OTHER), ctx())
    err = rejected(rails, buy(), ctx())

    assert err.code == "RATE_LIMITED"


def test_rate_when_idle_for_long_refills_only_up_to_burst() -> None:
    rails, clock, _ = make_rails(limits_dict(default_model__order_rate_per_second=1, default_model__order_burst=2))
    rails.check(buy(), ctx())
    clock.now += 3600

    rails.check(buy(), ctx())
    rails.check(buy(), ctx())
    err = rejected(rails, buy(), ctx())

    assert err.code == "RATE_LIMITED"


# ------------------------------------------------------------------------------------------------- PnL breaches


def test_update_pnl_when_drawdown_breached_moves_model_to_breach_state_and_emits_event() -> None:
    data = limits_dict()
    data["models"][MODEL]["breach_state"] = "REDUCING"
    rails, _, events = make_rails(data)

    event = rails.update_pnl(MODEL, Decimal("-100"), 0.25)

    assert event is not None and events == [event]
    assert (event.kind, event.model_id, event.rail, event.code) == ("LIMIT_BREACHED", MODEL, "drawdown", "MAX_DRAWDOWN")
    assert (event.state_before, event.state_after) == (TradingState.ACTIVE, TradingState.REDUCING)
    assert event.details == {"drawdown_ratio": "0.25", "max_drawdown_ratio": "0.2", "breached": "drawdown"}
    assert rails.state(MODEL) is TradingState.REDUCING
    assert rails.state(OTHER) is TradingState.ACTIVE


def test_update_pnl_when_daily_loss_breached_moves_model_to_halted_and_emits_event() -> None:
    rails, _, events = make_rails()

    event = rails.update_pnl(MODEL, Decimal("-20000.00"), 0.05)

    assert event is not None and events == [event]
    assert (event.rail, event.code, event.state_after) == ("daily_loss", "MAX_DAILY_LOSS", TradingState.HALTED)
    assert event.details == {"daily_pnl": "-20000", "max_daily_loss": "20000", "breached": "daily_loss"}
    assert rails.state(MODEL) is TradingState.HALTED
    assert rejected(rails, buy(), ctx()).code == "TRADING_HALTED"


def test_update_pnl_when_both_limits_breached_reports_both() -> None:
    rails, _, _ = make_rails()

    event = rails.update_pnl(MODEL, Decimal("-50000"), 0.5)

    assert event is not None
    assert event.rail == "daily_loss"
    assert event.details["breached"] == "daily_loss,drawdown"


def test_update_pnl_when_within_limits_returns_none_and_keeps_state() -> None:
    rails, _, events = make_rails()

    assert rails.update_pnl(MODEL, Decimal("-19999.99"), 0.19) is None
    assert rails.update_pnl(MODEL, Decimal("50000"), 0.0) is None
    assert events == []
    assert rails.state(MODEL) is TradingState.ACTIVE


def test_update_pnl_when_model_already_stricter_never_loosens_and_emits_nothing() -> None:
    data = limits_dict()
    data["default_model"]["breach_state"] = "REDUCING"
    rails, _, events = make_rails(data)
    rails.set_state(MODEL, TradingState.HALTED, "manual")

    event = rails.update_pnl(MODEL, Decimal("-30000"), 0.3)

    assert event is None
    assert rails.state(MODEL) is TradingState.HALTED
    assert [e.kind for e in events] == ["STATE_CHANGED"]


def test_update_pnl_when_breach_persists_emits_only_once() -> None:
    rails, _, events = make_rails()

    first = rails.update_pnl(MODEL, Decimal("-30000"), 0.0)
    second = rails.update_pnl(MODEL, Decimal("-31000"), 0.0)

    assert first is not None and second is None
    assert len(events) == 1


def test_update_pnl_when_value_not_finite_raises_value_error() -> None:
    rails, _, _ = make_rails()

    with pytest.raises(ValueError, match="finite"):
        rails.update_pnl(MODEL, Decimal("0"), float("nan"))

    assert rails.state(MODEL) is TradingState.ACTIVE


# -------------------------------------------------------------------------------------------------- kill switch


def test_kill_switch_when_engaged_halts_everything_but_cancels_and_emits_event() -> None:
    rails, _, events = make_rails()
    rails.set_state(OTHER, TradingState.REDUCING, "review")

    event = rails.engage_kill_switch("runaway model")

    assert rails.kill_switch_engaged is True
    assert rails.global_state is TradingState.HALTED
    assert (event.kind, event.model_id, event.state_before, event.state_after) == (
        "KILL_SWITCH_ENGAGED",
        "",
        TradingState.ACTIVE,
        TradingState.HALTED,
    )
    assert events[-1] == event
    assert rejected(rails, sell("1"), ctx(position="5")).code == "TRADING_HALTED"
    rails.check(cancel(), ctx())


def test_kill_switch_when_released_restores_global_active_and_keeps_model_states() -> None:
    rails, _, events = make_rails()
    rails.set_state(OTHER, TradingState.REDUCING, "review")
    rails.engage_kill_switch("runaway model")

    event = rails.release_kill_switch("fixed")

    assert rails.kill_switch_engaged is False
    assert rails.global_state is TradingState.ACTIVE
    assert rails.state(OTHER) is TradingState.REDUCING
    assert (event.kind, event.state_before, event.state_after) == (
        "KILL_SWITCH_RELEASED",
        TradingState.HALTED,
        TradingState.ACTIVE,
    )
    assert [e.kind for e in events] == ["STATE_CHANGED", "KILL_SWITCH_ENGAGED", "KILL_SWITCH_RELEASED"]
    rails.check(buy(), ctx())


def test_kill_switch_when_engaged_set_state_cannot_loosen_global() -> None:
    rails, _, _ = make_rails()
    rails.engage_kill_switch("runaway model")

    with pytest.raises(ValidationError) as info:
        rails.set_state(None, TradingState.ACTIVE, "oops")

    assert info.value.code == "KILL_SWITCH_ENGAGED"
    assert rails.global_state is TradingState.HALTED


def test_kill_switch_when_not_engaged_release_is_refused_and_global_halt_stays() -> None:
    rails, _, _ = make_rails()
    rails.set_state(None, TradingState.HALTED, "maintenance")

    with pytest.raises(ValidationError) as info:
        rails.release_kill_switch("wrong button")

    assert info.value.code == "KILL_SWITCH_NOT_ENGAGED"
    assert rails.global_state is TradingState.HALTED


# ---------------------------------------------------------------------------------------------- limits and reload


def test_from_dict_when_example_shape_resolves_model_overrides() -> None:
    limits = RiskLimits.from_dict(LIMITS)

    assert limits.max_gross_exposure == Decimal("5000000")
    assert limits.stale_mark_seconds == 10.0
    assert limits.allowed_instruments == frozenset({"BTC-USD", "ETH-USD"})
    assert limits.for_model(MODEL).max_order_notional == Decimal("100000")
    assert limits.for_model(MODEL).max_daily_loss == Decimal("20000")
    assert limits.for_model(OTHER).max_order_notional == Decimal("250000")
    assert limits.for_model(OTHER).position_limit("BTC-USD") == Decimal("10")
    assert limits.for_model(OTHER).position_limit("ETH-USD") == Decimal("100")
    assert limits.for_model(OTHER).breach_state is TradingState.HALTED


def test_from_dict_when_position_override_given_merges_over_default_map() -> None:
    data = limits_dict()
    data["models"][MODEL]["max_position_qty"] = {"ETH-USD": "5"}

    limits = RiskLimits.from_dict(data)

    assert limits.for_model(MODEL).position_limit("ETH-USD") == Decimal("5")
    assert limits.for_model(MODEL).position_limit("BTC-USD") == Decimal("10")
    assert limits.for_model(MODEL).position_limit("SOL-USD") == Decimal("100")


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("global.max_gross_exposure", "-1", "global.max_gross_exposure: Input should be greater than or equal to 0"),
        ("global.max_gross_exposure", "lots", "global.max_gross_exposure: Value error, must be a number"),
        ("global.max_gross_exposure", "NaN", "must be a finite number"),
        ("global.stale_mark_seconds", 0, "global.stale_mark_seconds: Input should be greater than 0"),
        ("global.stale_mark_seconds", True, "global.stale_mark_seconds: Input should be a valid number"),
        ("global.allowed_instruments", "BTC-USD", "global.allowed_instruments: Input should be a valid list"),
        ("global.leverage", 3, "global.leverage: Extra inputs are not permitted"),
        (
            "default_model.max_order_notional",
            "-5",
            "max_order_notional: Input should be greater than or equal to 0",
        ),
        ("default_model.max_position_qty", {"BTC-USD": "1"}, 'must have a "*" entry'),
        ("default_model.order_burst", 1.5, "default_model.order_burst: Input should be a valid integer"),
        (
            "default_model.order_rate_per_second",
            0,
            "order_rate_per_second: Input should be greater than 0",
        ),
        (
            "default_model.max_drawdown_ratio",
            1.5,
            "default_model.max_drawdown_ratio: Input should be less than or equal to 1",
        ),
        ("default_model.max_daily_loss", None, "default_model.max_daily_loss: Value error, must be a number"),
        ("default_model.breach_state", "ACTIVE", "breach_state: Value error, must be one of REDUCING, HALTED"),
        ("default_model.breach_state", "PAUSED", "breach_state: Value error, must be one of REDUCING, HALTED"),
        ("models.momentum_v1.max_position_qty", {"BTC-USD": "-2"}, "models.momentum_v1.max_position_qty.BTC-USD"),
        ("models.momentum_v1.max_notional", "1", "models.momentum_v1.max_notional: Extra inputs are not permitted"),
        ("models.momentum_v1.breach_state", "halted", "models.momentum_v1.breach_state: Value error, must be one of"),
        ("risk", {}, "risk: Extra inputs are not permitted"),
    ],
)
def test_from_dict_when_value_invalid_raises_config_error_naming_field(path: str, value: Any, fragment: str) -> None:
    data = _set(copy.deepcopy(LIMITS), path, value)

    with pytest.raises(ConfigError) as info:
        RiskLimits.from_dict(data)

    assert fragment in info.value.message
    assert info.value.message.startswith("risk limits: ")
    assert info.value.kind == "config_invalid"


def test_from_dict_when_required_key_missing_raises_config_error() -> None:
    data = limits_dict()
    del data["default_model"]["max_daily_loss"]

    with pytest.raises(ConfigError, match=r"default_model\.max_daily_loss: Field required"):
        RiskLimits.from_dict(data)


def test_load_when_file_valid_returns_limits(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(LIMITS))

    assert RiskLimits.load(path) == RiskLimits.from_dict(LIMITS)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"global": {', "invalid JSON"),
        (json.dumps(limits_dict(default_model__max_daily_loss="-1")), "default_model.max_daily_loss"),
        (
            json.dumps(limits_dict(default_model__max_leverage=3)),
            "max_leverage: Extra inputs are not permitted",
        ),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_reload_when_file_malformed_refuses_and_keeps_previous_limits(tmp_path: Path, text: str, fragment: str) -> None:
    rails, _, events = make_rails()
    before = rails.limits

    with pytest.raises(ConfigError) as info:
        rails.reload(write(tmp_path, text))

    assert fragment in info.value.message
    assert rails.limits is before
    assert events == []
    assert rejected(rails, buy("2", "60000", symbol="BTC-USD"), ctx()).code == "MAX_ORDER_NOTIONAL"


def test_reload_when_file_missing_refuses_and_keeps_previous_limits(tmp_path: Path) -> None:
    rails, _, _ = make_rails()
    before = rails.limits

    with pytest.raises(ConfigError, match="not found"):
        rails.reload(tmp_path / "nope.json")

    assert rails.limits is before


def test_reload_when_valid_applies_new_limits_and_keeps_states_and_buckets(tmp_path: Path) -> None:
    rails, _, events = make_rails(limits_dict(default_model__order_burst=2))
    rails.set_state(OTHER, TradingState.REDUCING, "review")
    rails.check(buy(), ctx())
    rails.check(buy(), ctx())  # bucket now empty
    new = limits_dict(default_model__order_burst=2)
    new["models"][MODEL]["max_order_notional"] = "200000"
    path = write(tmp_path, json.dumps(new))

    returned = rails.reload(path)

    assert returned is rails.limits
    assert rails.limits.for_model(MODEL).max_order_notional == Decimal("200000")
    assert rails.state(OTHER) is TradingState.REDUCING
    assert rejected(rails, buy(), ctx()).code == "RATE_LIMITED"  # the empty bucket survived the reload
    assert events[-2].kind == "LIMITS_RELOADED"


def test_reload_when_burst_shrinks_caps_saved_tokens(tmp_path: Path) -> None:
    rails, _, _ = make_rails()
    rails.check(buy(), ctx())  # bucket created with 100 tokens, 99 left
    rails.reload(write(tmp_path, json.dumps(limits_dict(default_model__order_burst=1))))

    rails.check(buy(), ctx())
    err = rejected(rails, buy(), ctx())

    assert err.code == "RATE_LIMITED"


# ----------------------------------------------------------------------------------------- snapshot and restore


def test_snapshot_when_restored_into_new_rails_reproduces_states() -> None:
    rails, _, _ = make_rails()
    rails.set_state(MODEL, TradingState.REDUCING, "review")
    rails.set_state(OTHER, TradingState.HALTED, "breach")
    rails.engage_kill_switch("incident")
    saved = json.loads(json.dumps(rails.snapshot()))
    fresh, _, events = make_rails()

    fresh.restore(saved)

    assert saved == {
        "version": 1,
        "global_state": "HALTED",
        "kill_switch_engaged": True,
        "models": {OTHER: "HALTED", MODEL: "REDUCING"},
    }
    assert fresh.kill_switch_engaged is True
    assert fresh.model_state(MODEL) is TradingState.REDUCING
    assert fresh.model_state(OTHER) is TradingState.HALTED
    assert events == []


@pytest.mark.parametrize(
    "snapshot",
    [
        {"version": 2, "global_state": "ACTIVE", "kill_switch_engaged": False, "models": {}},
        {"version": 1, "global_state": "PAUSED", "kill_switch_engaged": False, "models": {}},
        {"version": 1, "global_state": "ACTIVE", "kill_switch_engaged": True, "models": {}},
        {"version": 1, "global_state": "ACTIVE", "kill_switch_engaged": False, "models": {"m": "NOPE"}},
        {"version": 1, "global_state": "ACTIVE", "kill_switch_engaged": "no", "models": {}},
    ],
)
def test_restore_when_snapshot_malformed_raises_config_error_and_keeps_states(snapshot: dict[str, Any]) -> None:
    rails, _, _ = make_rails()
    rails.set_state(MODEL, TradingState.REDUCING, "review")

    with pytest.raises(ConfigError):
        rails.restore(snapshot)

    assert rails.model_state(MODEL) is TradingState.REDUCING
    assert rails.global_state is TradingState.ACTIVE


# ------------------------------------------------------------------------------------------------------- intents


@pytest.mark.parametrize(
    ("side", "qty", "price"),
    [("HOLD", "1", "1"), ("BUY", "0", "1"), ("SELL", "-1", "1"), ("BUY", "1", "0"), ("BUY", "NaN", "1")],
)
def test_order_intent_when_fields_invalid_raises_validation_error(side: str, qty: str, price: str) -> None:
    with pytest.raises(ValidationError) as info:
        OrderIntent(MODEL, "ETH-USD", side, Decimal(qty), Decimal(price))  # type: ignore[arg-type]

    assert info.value.kind == "validation_failed"


def test_order_intent_when_side_is_string_converts_to_enum() -> None:
    intent = OrderIntent(MODEL, "ETH-USD", "SELL", Decimal("2"), Decimal("10"))  # type: ignore[arg-type]

    assert intent.side is Side.SELL
    assert intent.signed_quantity == Decimal("-2")
    assert intent.notional == Decimal("20")


def test_quota_when_order_flips_position_needs_quota_only_for_the_opening_part() -> None:
    rails = RiskRails(RiskLimits.from_dict(_flip_limits()), clock=lambda: 0.0)
    # Long 5 at 100 (500 used of a 1000 quota, 500 available); selling 10 closes 5 and opens 5 short.
    ctx = RiskContext(
        position_qty=Decimal(5),
        open_order_qty=Decimal(0),
        available_quota=Decimal(500),
        gross_exposure=Decimal(500),
        mark_age_seconds=0.0,
    )
    rails.check(OrderIntent("m1", "BTC-USD", Side.SELL, Decimal(10), Decimal(100)), ctx)
    # Selling 16 opens 11 short: 1100 needed, 500 available plus the 500 the close releases.
    with pytest.raises(RiskRejectedError) as caught:
        rails.check(OrderIntent("m1", "BTC-USD", Side.SELL, Decimal(16), Decimal(100)), ctx)
    assert caught.value.code == "INVALID_QUOTE"
    assert caught.value.details == {"requested": "1100", "available": "1000"}


def test_quota_when_the_model_is_over_its_quota_a_flip_frees_only_what_the_close_gives_back() -> None:
    rails = RiskRails(RiskLimits.from_dict(_flip_limits()), clock=lambda: 0.0)
    # Long 5 at 100 on a quota cut to 100: 500 used, 400 over. Closing the 5 gives back 500, of which 100 is quota.
    over = RiskContext(
        position_qty=Decimal(5),
        open_order_qty=Decimal(0),
        available_quota=Decimal(-400),
        gross_exposure=Decimal(500),
        mark_age_seconds=0.0,
    )
    rails.check(OrderIntent("m1", "BTC-USD", Side.SELL, Decimal(6), Decimal(100)), over)  # opens 100: the quota
    with pytest.raises(RiskRejectedError) as caught:
        rails.check(OrderIntent("m1", "BTC-USD", Side.SELL, Decimal(8), Decimal(100)), over)  # opens 300
    assert caught.value.code == "INVALID_QUOTE"
    assert caught.value.details == {"requested": "300", "available": "100"}


def test_gross_exposure_when_a_resting_order_closes_nothing_filled_counts_the_whole_order() -> None:
    limits = _flip_limits()
    limits["global"] = {**limits["global"], "max_gross_exposure": "5000"}  # type: ignore[dict-item]
    rails = RiskRails(RiskLimits.from_dict(limits), clock=lambda: 0.0)
    # Other models hold 5000 (the cap); this one is flat with a resting SELL 10, which the gross figure never
    # counted: a BUY 15 at 100 would add 1500 of filled exposure, not 500.
    resting = RiskContext(
        position_qty=Decimal(0),
        open_order_qty=Decimal(-10),
        available_quota=Decimal(10_000),
        gross_exposure=Decimal(5000),
        mark_age_seconds=0.0,
    )
    with pytest.raises(RiskRejectedError) as caught:
        rails.check(OrderIntent("m1", "BTC-USD", Side.BUY, Decimal(15), Decimal(100)), resting)
    assert caught.value.code == "GROSS_EXPOSURE"
    assert caught.value.details == {"current": "5000", "requested": "1500", "limit": "5000"}


def _flip_limits() -> dict[str, object]:
    return {
        "global": {"max_gross_exposure": "1000000", "stale_mark_seconds": 10},
        "default_model": {
            "max_order_notional": "1000000",
            "max_position_qty": {"*": "1000"},
            "order_rate_per_second": 100,
            "order_burst": 100,
            "max_daily_loss": "1000",
            "max_drawdown_ratio": 0.5,
            "breach_state": "HALTED",
        },
        "models": {},
    }
