"""Measurement on hand-computed fills and marks."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pydantic
import pytest

from ops_server import wire
from ops_server.config import OpsConfig
from ops_server.measurement import Measurement, PositionState, drawdown_of_pnl_curve
from ops_server.model_registry import ModelRoute, RoutingMode
from ops_server.performance import SECONDS_PER_YEAR

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
    quarter = SECONDS_PER_YEAR / 4
    m = Measurement(sample_seconds=quarter, bar_seconds=quarter)  # one sample per bar, four bars a year
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
    assert math.isclose(perf.sharpe_annual, sr * math.sqrt(4), rel_tol=1e-12)
    assert perf.equity == D(20) and perf.unrealized == D(20) and perf.realized == D(0)
    assert perf.slippage == D("0.5")  # bought 1 at 100 with the mid at 99.5
    assert perf.max_drawdown_usd == D(5)  # PnL 10 -> 5
    # Equity 1000 + PnL: 1000, 1010, 1005, 1020; the fall from 1010 to 1005 is 5/1010 of the peak.
    assert math.isclose(perf.max_drawdown_ratio, 5 / 1010, rel_tol=1e-12)
    assert perf.drawdown_ratio == 0.0 and perf.drawdown_usd == D(0)  # back above the peak
    assert math.isclose(perf.hit_rate, 2 / 3)
    assert perf.observations == 3 and perf.fills == 1


def test_measurement_when_model_has_no_capital_base_records_no_returns() -> None:
    m = Measurement(sample_seconds=1.0)
    m.apply_fill("m1", "X", D(1), D(100), D(0))
    m.set_mark("X", D(101))
    m.sample(0.0, {})
    m.set_mark("X", D(102))
    assert m.sample(1.0, {}) == {}
    assert m.returns("m1") == []
    assert m.equity("m1") == D(2)


def test_gross_exposure_when_models_hold_long_and_short_sums_absolute_notional() -> None:
    m = Measurement(sample_seconds=1.0)
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
    # A tick that is not a power of ten: the nearest whole multiple of it (100.0166... is 100.0 at 0.5, 100 at 5).
    assert wire.position(route, "BTC-USD", p, D("100.03"), D("0.5")).avg_cost == "100"
    q = PositionState()
    for price in ("100.5", "101", "101"):
        q.apply(D(1), D(price), D(0))  # avg 100.8333...
    assert wire.position(route, "BTC-USD", q, D("101"), D("0.5")).avg_cost == "101"
    assert wire.position(route, "BTC-USD", q, D("101"), D("0.25")).avg_cost == "100.75"
    assert wire.position(route, "BTC-USD", q, D("101"), D("5")).avg_cost == "100"


def test_sharpe_when_sampled_every_second_is_annualised_from_one_minute_bars() -> None:
    m = Measurement(sample_seconds=1.0, bar_seconds=60.0)
    capital = {"m1": D(1000)}
    m.set_mark("X", D(100))
    m.apply_fill("m1", "X", D(1), D(100), D(0))
    pnl = D(0)
    m.sample(0.0, capital)
    for second in range(1, 181):  # three minutes: +0.02 USD a second, -1.00 USD on every 7th second
        pnl += D("-1.00") if second % 7 == 0 else D("0.02")
        m.set_mark("X", D(100) + pnl)
        m.sample(float(second), capital)
    returns = m.returns("m1")
    bars = [math.fsum(returns[i : i + 60]) for i in range(0, 180, 60)]
    expected = statistics.mean(bars) / statistics.stdev(bars) * math.sqrt(SECONDS_PER_YEAR / 60)
    perf = m.performance("m1")
    assert perf.observations == 3  # bars, not samples
    assert math.isclose(perf.sharpe_annual, expected, rel_tol=1e-9)


def test_drawdown_when_allocation_is_cut_changes_no_drawdown_figure() -> None:
    m = Measurement(sample_seconds=1.0, bar_seconds=1.0)
    m.set_mark("X", D(100))
    m.apply_fill("m1", "X", D(10), D(100), D(0))
    for t, mark, base in [(0, 100, 1000), (1, 110, 1000), (2, 105, 1000)]:  # PnL 0, +100, +50 on a 1000 base
        m.set_mark("X", D(mark))
        m.sample(float(t), {"m1": D(base)})
    before = m.performance("m1")
    # The allocator cuts the model's capital to a tenth; the market does not move.
    m.sample(3.0, {"m1": D(100)})
    after = m.performance("m1")
    assert (after.drawdown_ratio, after.max_drawdown_ratio) == (before.drawdown_ratio, before.max_drawdown_ratio)
    assert (after.drawdown_usd, after.max_drawdown_usd) == (before.drawdown_usd, before.max_drawdown_usd)
    assert m.drawdown_ratio("m1") == before.drawdown_ratio
    # Equity 1000 -> 1100 -> 1050: 50/1100 of the peak, 50 USD.
    assert math.isclose(before.drawdown_ratio, 50 / 1100, rel_tol=1e-12)
    assert before.drawdown_usd == D(50)


def test_drawdown_when_equity_falls_exactly_a_fifth_is_exactly_a_fifth() -> None:
    m = Measurement(sample_seconds=1.0, bar_seconds=1.0)
    m.apply_fill("m1", "X", D(10), D(100), D(0))
    for t, mark in enumerate((100, 80)):  # PnL 0 -> -200 on a 1000 base
        m.set_mark("X", D(mark))
        m.sample(float(t), {"m1": D(1000)})
    assert m.drawdown_ratio("m1") == 0.2  # not 0.19999999999999996: a limit of 0.2 is reached
    assert m.performance("m1").max_drawdown_ratio == 0.2


def test_drawdown_when_equity_falls_across_a_restart_counts_the_fall() -> None:
    def measured() -> Measurement:
        m = Measurement(sample_seconds=1.0, bar_seconds=1.0)
        m.apply_fill("m1", "X", D(10), D(100), D(0))
        return m

    before = measured()
    before.set_mark("X", D(100))
    before.sample(0.0, {"m1": D(1000)})
    before.set_mark("X", D(110))
    before.sample(1.0, {"m1": D(1000)})  # PnL +100: index 1.1, the peak
    saved = before.drawdown_state()

    after = measured()  # positions rebuilt from the journal, the drawdown memory from the state store
    after.restore_drawdown_state(saved)
    after.set_mark("X", D(80))
    returns = after.sample(2.0, {"m1": D(1000)})  # PnL -200 at the first sample after the restart
    assert returns == {}, "no return over the restart: the interval is not one sample long"
    assert math.isclose(after.drawdown_ratio("m1"), 1 - 800 / 1100, rel_tol=1e-12)  # as without the restart
    assert after.drawdown_usd("m1") == D(300)
    assert saved["m1"]["last_pnl"] == "100"


def test_drawdown_when_fees_are_paid_before_the_first_sample_counts_them_from_pnl_0() -> None:
    m = Measurement(sample_seconds=1.0, bar_seconds=1.0)
    m.set_mark("X", D(100))
    m.apply_fill("m1", "X", D(10), D(100), D(10))  # 10 USD of fees before the book's first sample
    assert m.sample(0.0, {"m1": D(1000)}) == {}  # no return on a first sample
    assert m.drawdown_ratio("m1") == 0.01 and m.drawdown_usd("m1") == D(10)


def test_drawdown_of_a_pnl_curve_when_it_only_falls_is_measured_from_zero() -> None:
    assert drawdown_of_pnl_curve([-10.0, -50.0]) == 50.0  # PnL starts at 0 (statistics.md)
    assert drawdown_of_pnl_curve([20.0, 5.0, 30.0, 25.0]) == 15.0
    assert drawdown_of_pnl_curve([]) == 0.0


def _alternating(min_bars: int, samples: int) -> Measurement:
    """A model whose PnL moves +2, -1, +2, -1... over a 1000 base, sampled once a second into one-second bars."""
    m = Measurement(sample_seconds=1.0, bar_seconds=1.0, min_bars=min_bars)
    m.apply_fill("m1", "X", D(1), D(100), D(0))
    mark = D(100)
    for second in range(samples):
        mark += D(2) if second % 2 else D(-1)
        m.set_mark("X", mark)
        m.sample(float(second), {"m1": D(1000)})
    return m


def test_sharpe_when_fewer_bars_than_min_bars_is_not_reported() -> None:
    m = _alternating(min_bars=5, samples=5)  # 5 samples: 4 returns, 4 bars
    perf = m.performance("m1")
    assert (perf.observations, perf.min_bars, perf.sharpe_annual) == (4, 5, 0.0)
    assert m.annual_sharpe(m.returns("m1")) == 0.0
    stats = wire.model_stats(
        ModelRoute("m1", "s", "1", frozenset({"X"}), 1.0, RoutingMode.LIVE, True), perf, m.bar_seconds
    )
    assert (stats.sharpe, stats.observations, stats.min_bars) == (0.0, 4, 5)


def test_sharpe_when_min_bars_reached_is_reported_annualised() -> None:
    m = _alternating(min_bars=5, samples=6)  # 5 bars
    perf = m.performance("m1")
    bars = m.returns("m1")
    expected = statistics.mean(bars) / statistics.stdev(bars) * math.sqrt(SECONDS_PER_YEAR)
    assert perf.observations == 5 and math.isclose(perf.sharpe_annual, expected, rel_tol=1e-9)
    assert m.annual_sharpe(bars) == perf.sharpe_annual


def test_min_bars_when_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="min_bars"):
        Measurement(sample_seconds=1.0, min_bars=1)


def test_ops_config_when_stats_min_bars_omitted_defaults_to_30_and_refuses_one() -> None:
    base = {
        "engine_address": "127.0.0.1:1",
        "registry_path": "r.json",
        "capital_policy_path": "p.json",
        "risk_limits_path": "l.json",
    }
    assert OpsConfig.model_validate(base).stats_min_bars == 30
    with pytest.raises(pydantic.ValidationError):
        OpsConfig.model_validate({**base, "stats_min_bars": 1})


def test_a_bar_whose_pnl_did_not_change_is_a_zero_bar_neither_hit_nor_miss() -> None:
    """Marks 100 -> 100.1 -> 100.3 -> 100 leave the bar's PnL where it was: its return is exactly 0, though each
    sample's return, rounded to a float, is not a round number (their float sum is about 1e-20)."""
    m = Measurement(sample_seconds=1.0, bar_seconds=3.0, min_bars=2)
    capital = {"m": Decimal(1000)}
    m.set_mark("X", Decimal(100))
    m.apply_fill("m", "X", Decimal("0.3"), Decimal(100), Decimal(0))
    m.sample(0.0, capital)
    for t, mark in enumerate(["100.1", "100.3", "100", "100.5", "100.8", "101"], start=1):
        m.set_mark("X", Decimal(mark))
        m.sample(float(t), capital)
    returns = m.returns("m")
    assert math.fsum(returns[:3]) != 0  # the rounding residue the bar must not keep
    assert m.bar_returns(returns) == [0.0, pytest.approx(0.0003, rel=1e-12)]
    assert m.performance("m").hit_rate == 1.0  # the only non-zero bar is a gain


def test_bars_whose_pnl_never_changes_are_a_flat_series_with_sharpe_0() -> None:
    m = Measurement(sample_seconds=1.0, bar_seconds=3.0, min_bars=30)
    capital = {"m": Decimal(1000)}
    m.set_mark("X", Decimal(100))
    m.apply_fill("m", "X", Decimal("0.3"), Decimal(100), Decimal(0))
    m.sample(0.0, capital)
    t = 0
    for step in range(200):  # the mark wanders inside each bar and is back at 100 at its end
        for mark in (Decimal(100) + Decimal(step % 47 + 1) / 10, Decimal(100) + Decimal(step % 13 + 1) / 10, 100):
            t += 1
            m.set_mark("X", Decimal(mark))
            m.sample(float(t), capital)
    perf = m.performance("m")
    assert perf.observations == 200
    assert perf.sharpe_annual == 0.0
    assert perf.hit_rate == 0.0


def test_a_round_trip_closed_in_parts_realizes_exactly_what_its_fills_paid_and_received() -> None:
    """Bought 1 at 100 and 2 at 101 (average 100.666..., no finite decimal), sold 3 at 101 or 1 then 2 at 102."""
    whole = PositionState()
    for qty, price in (("1", "100"), ("2", "101"), ("-3", "101")):
        whole.apply(Decimal(qty), Decimal(price), Decimal(0))
    assert whole.realized == Decimal(1)
    parts = PositionState()
    for qty, price in (("1", "100"), ("2", "101"), ("-1", "102"), ("-2", "102")):
        parts.apply(Decimal(qty), Decimal(price), Decimal(0))
    assert parts.realized == Decimal(4)
    short = PositionState()
    for qty, price in (("-1", "100"), ("-2", "101"), ("3", "99")):
        short.apply(Decimal(qty), Decimal(price), Decimal(0))
    assert short.realized == Decimal(5)
    assert (parts.quantity, parts.cost, parts.avg_cost) == (Decimal(0), Decimal(0), Decimal(0))


def test_positions_restored_from_a_snapshot_without_cost_take_the_cost_their_average_stood_for() -> None:
    m = Measurement(1.0)
    m.apply_fill("m", "X", Decimal(2), Decimal(100), Decimal(0))
    saved = m.positions_state()
    del saved["m"]["positions"]["X"]["cost"]  # type: ignore[index]
    restored = Measurement(1.0)
    restored.restore_positions(saved)
    assert restored.book("m").positions["X"].cost == Decimal(200)
    restored.apply_fill("m", "X", Decimal(-2), Decimal(101), Decimal(0))
    assert restored.book("m").positions["X"].realized == Decimal(2)


def test_a_model_gone_live_later_counts_as_pnl_0_before_its_first_sample_in_the_summed_curve() -> None:
    """The strategy's max_drawdown_usd reads this curve: a fall of 50 USD before the second model's first sample
    stays in it."""
    m = Measurement(1.0)
    capital = {"a": Decimal(1000)}
    m.set_mark("X", Decimal(100))
    m.apply_fill("a", "X", Decimal(10), Decimal(100), Decimal(0))
    for t, mark in enumerate(("100", "110", "105"), start=1):  # PnL 0, +100, +50
        m.set_mark("X", Decimal(mark))
        m.sample(float(t), capital)
    capital["b"] = Decimal(1000)
    m.sample(4.0, capital)
    assert m.combined_equity(["a", "b"]) == [0.0, 100.0, 50.0, 50.0]
    assert drawdown_of_pnl_curve(m.combined_equity(["a", "b"])) == 50.0


def test_sample_when_an_open_position_has_no_mark_skips_the_book_until_it_has_one() -> None:
    """After a restart, before the first quote, an open position has no mark: sampled, it counted at nothing (a fall
    of its whole unrealized PnL, a drawdown kept for good and a false return when the quote came back)."""
    before = Measurement(sample_seconds=1.0, bar_seconds=1.0)
    before.apply_fill("m1", "X", D(80), D(1000), D(0))
    before.set_mark("X", D(1250))
    before.sample(0.0, {"m1": D(100_000)})  # PnL +20,000
    saved = before.drawdown_state()

    after = Measurement(sample_seconds=1.0, bar_seconds=1.0)  # the journal's positions, no quote yet
    after.restore_positions(before.positions_state())
    after.restore_drawdown_state(saved)
    assert not after.book_priced("m1") and after.unpriced_books() == {"m1"}
    assert after.sample(1.0, {"m1": D(100_000)}) == {}
    assert after.drawdown_ratio("m1") == 0.0 and after.drawdown_usd("m1") == 0
    after.set_mark("X", D(1250))  # the first quote: nothing moved
    after.sample(2.0, {"m1": D(100_000)})
    after.sample(3.0, {"m1": D(100_000)})
    assert list(after.book("m1").returns) == [0.0]  # no false return, no drawdown
    assert after.performance("m1").max_drawdown_ratio == 0.0 and after.drawdown_usd("m1") == 0


def test_unrealized_when_the_average_cost_does_not_terminate_is_exact() -> None:
    """Long 3 bought at 100, 101 and 101 cost 302 (an average of 100.666...); at a mark of 101 it is 1 USD up, not the
    0.9999999999999999999999999 the 28-digit average gave. Short the same: 1 USD down."""
    long = PositionState()
    for price in ("100", "101", "101"):
        long.apply(D(1), D(price), D(0))
    assert long.unrealized(D(101)) == D(1)
    short = PositionState()
    for price in ("100", "101", "101"):
        short.apply(D(-1), D(price), D(0))
    assert short.unrealized(D(101)) == D(-1)
    assert short.unrealized(D(100)) == D(2)
