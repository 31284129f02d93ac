"""Measurement on hand-computed fills and marks."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

from ops_server import wire
from ops_server.measurement import Measurement, PositionState
from ops_server.model_registry import ModelRoute, RoutingMode

D = Decimal


def test_position_when_adding_reducing_and_flipping_tracks_average_cost_and_realized_pnl() -> None:
    p = PositionState()
    assert p.apply(D(10), D(100), D(1)) == 0
    assert p.apply(D(10), D(110), D(1)) == 0
    assert (p.quantity, p.avg_cost) == (D(20), D(105))
    assert p.apply(D(-5), D(120), D(1)) == D(75)  # 5 x (120 - 105)
    assert (p.quantity, p.avg_cost) == (D(15), D(105))
    assert p.apply(D(-20), D(100), D(2)) == D(-75)  # closes 15 x (100 - 105), opens 5 short at 100
    assert (p.quantity, p.avg_cost, p.realized, p.fees) == (D(-5), D(100), D(0), D(5))
    assert p.unrealized(D(90)) == D(50)  # short 5 from 100, marked at 90


def test_measurement_when_sampled_gives_equity_returns_sharpe_drawdown_and_hit_rate() -> None:
    m = Measurement(periods_per_year=4)
    capital = {"m1": D(1000)}
    m.set_mark("X", D(100))
    m.apply_fill("m1", "X", D(1), D(100), D(0), reference_mid=D("99.5"))
    marks = [D(100), D(110), D(105), D(120)]  # equity 0, 10, 5, 20
    for i, mark in enumerate(marks):
        m.set_mark("X", mark)
        m.sample(float(i), capital)
    perf = m.performance("m1")
    returns = [0.01, -0.005, 0.015]
    assert m.returns("m1") == returns
    sr = statistics.mean(returns) / statistics.stdev(returns)
    assert math.isclose(perf.sharpe, sr * math.sqrt(4), rel_tol=1e-12)
    assert perf.equity == D(20) and perf.unrealized == D(20) and perf.realized == D(0)
    assert perf.slippage == D("0.5")  # bought 1 at 100 with the mid at 99.5
    assert perf.max_drawdown == 5.0  # 10 -> 5
    assert math.isclose(perf.hit_rate, 2 / 3)
    assert perf.observations == 3 and perf.fills == 1


def test_measurement_when_model_has_no_capital_base_records_no_returns() -> None:
    m = Measurement(periods_per_year=1)
    m.apply_fill("m1", "X", D(1), D(100), D(0))
    m.set_mark("X", D(101))
    m.sample(0.0, {})
    m.set_mark("X", D(102))
    assert m.sample(1.0, {}) == {}
    assert m.returns("m1") == []
    assert m.equity("m1") == D(2)


def test_gross_exposure_when_models_hold_long_and_short_sums_absolute_notional() -> None:
    m = Measurement(periods_per_year=1)
    m.set_mark("X", D(50))
    m.apply_fill("a", "X", D(2), D(40), D(0))
    m.apply_fill("b", "X", D(-3), D(60), D(0))
    assert m.exposure("a") == D(100) and m.exposure("b") == D(150)
    assert m.gross_exposure() == D(250)
    assert m.gross_exposure(["a"]) == D(100)


def test_position_answer_when_average_cost_has_many_decimals_shows_it_to_the_tick() -> None:
    p = PositionState()
    p.apply(D(1), D("100.01"), D(0))
    p.apply(D(2), D("100.02"), D(0))  # avg 100.0166666... to 28 significant digits
    route = ModelRoute("m", "s", "1", frozenset({"BTC-USD"}), 1.0, RoutingMode.LIVE, True)
    assert wire.position(route, "BTC-USD", p, D("100.03"), D("0.01")).avg_cost == "100.02"
    assert wire.position(route, "BTC-USD", p, D("100.03"), D("0.001")).avg_cost == "100.017"
    assert len(wire.position(route, "BTC-USD", p, None).avg_cost) > 20  # no tick known: the exact figure
