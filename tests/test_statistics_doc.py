"""The worked example of docs/statistics.md, recomputed with the mesh's own statistics."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from ops_server.canary import stats
from ops_server.measurement import Measurement
from ops_server.performance import (
    aggregate_returns,
    annual_to_bar_sharpe,
    bar_to_annual_sharpe,
    bars_per_year,
    samples_per_bar,
)

DOC = (Path(__file__).resolve().parent.parent / "docs" / "statistics.md").read_text()
STABLE_BARS = [0.004, -0.003, 0.002, 0.001, -0.002, 0.003, -0.001, 0.002]
CANARY_BARS = [0.005, -0.0025, 0.0015, 0.002, -0.002, 0.0035, 0.0, 0.0015]


def samples(bars: list[float]) -> list[float]:
    return [x for b in bars for x in (round(b - 0.001, 6), 0.001)]


def shown(value: float, text: str) -> None:
    """The doc shows ``text`` and it is ``value`` to the digits written."""
    assert text in DOC, f"{text!r} is not in docs/statistics.md"
    digits = len(text.split(".")[1]) if "." in text else 0
    assert value == pytest.approx(float(text.replace(",", "")), abs=0.6 * 10**-digits)


def test_worked_example_when_recomputed_matches_every_number_in_the_doc() -> None:
    k = samples_per_bar(60, 30)
    stable = aggregate_returns(samples(STABLE_BARS), k)
    canary = aggregate_returns(samples(CANARY_BARS), k)
    assert k == 2 and stable == pytest.approx(STABLE_BARS) and canary == pytest.approx(CANARY_BARS)
    shown(bars_per_year(60), "525,600")
    shown(math.sqrt(bars_per_year(60)), "724.98")
    ms, mc = stats.describe_returns(stable), stats.describe_returns(canary)
    for value, text in [
        (ms.mean, "0.00075"),
        (mc.mean, "0.001125"),
        (ms.stdev, "0.0024928"),
        (mc.stdev, "0.0025600"),
        (ms.sharpe, "0.30086"),
        (mc.sharpe, "0.43945"),
        (bar_to_annual_sharpe(ms.sharpe, 60), "218.12"),
        (bar_to_annual_sharpe(mc.sharpe, 60), "318.60"),
        (ms.skew, "-0.28836"),
        (ms.kurtosis, "1.71819"),
        (mc.skew, "-0.06571"),
        (mc.kurtosis, "2.00543"),
    ]:
        shown(value, text)
    test = stats.sharpe_difference_test(canary, stable)
    shown(test.diff, "0.13859")
    shown(test.rho, "0.96817")
    shown(test.se, "0.10096")
    shown(test.z, "1.3728")
    tolerance = annual_to_bar_sharpe(1.0, 60)
    shown(tolerance, "0.0013793")
    shown(test.lower_bound(1.645), "-0.027480")
    assert test.lower_bound(1.645) < -tolerance and test.z > -1.645  # INCONCLUSIVE
    shown(stats.probabilistic_sharpe_ratio(mc.sharpe, 0.0, mc.n, mc.skew, mc.kurtosis), "0.86867")
    shown(stats.min_track_record_length(mc.sharpe, 0.0, 0.95, mc.skew, mc.kurtosis), "16.094")
    variance = (1 - mc.skew * mc.sharpe + (mc.kurtosis - 1) / 4 * mc.sharpe**2) / (mc.n - 1)
    shown(variance, "0.15392")
    shown(stats.expected_max_sharpe(2, variance), "0.20391")
    shown(stats.deflated_sharpe_ratio(mc.sharpe, mc.n, 2, mc.skew, mc.kurtosis), "0.72587")


def test_worked_drawdown_when_recomputed_matches_the_doc() -> None:
    m = Measurement(sample_seconds=30.0, bar_seconds=60.0)
    m.set_mark("X", Decimal(100))
    m.apply_fill("m", "X", Decimal(1), Decimal(100), Decimal(0))
    for t, pnl, base in [(0, 0, 1000), (1, 100, 1000), (2, 50, 1000)]:
        m.set_mark("X", Decimal(100 + pnl))
        m.sample(float(t), {"m": Decimal(base)})
    shown(m.drawdown_ratio("m"), "0.045455")
    assert m.drawdown_usd("m") == Decimal(50)
    m.sample(3.0, {"m": Decimal(100)})  # the allocation is cut; PnL still +50
    shown(m.drawdown_ratio("m"), "0.045455")
    m.set_mark("X", Decimal(140))
    m.sample(4.0, {"m": Decimal(100)})
    shown(float(m.book("m").equity_index), "0.98")
    shown(m.drawdown_ratio("m"), "0.10909")
    assert m.drawdown_usd("m") == Decimal(60)
