"""Performance statistics against values computed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal

import pytest

from ops_server import performance as perf
from ops_server.allocation.weights import shrunk_score
from ops_server.canary import stats as canary_stats


def test_mean_when_values_given_returns_arithmetic_mean() -> None:
    assert perf.mean([0.01, 0.02, -0.01, 0.03]) == pytest.approx(0.0125)


def test_mean_when_empty_raises_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        perf.mean([])


def test_stdev_when_classic_sample_returns_sqrt_32_over_7() -> None:
    # Mean 5, squared deviations add to 32, ddof=1 divides by 7.
    assert perf.stdev([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7))


def test_stdev_when_one_observation_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        perf.stdev([1.0])


def test_sharpe_ratio_when_one_two_three_returns_two() -> None:
    # Mean 2, sample standard deviation 1.
    assert perf.sharpe_ratio([1.0, 2.0, 3.0]) == pytest.approx(2.0)


def test_sharpe_ratio_when_four_returns_matches_hand_computation() -> None:
    # Mean 0.0125; squared deviations 6.25e-6 + 56.25e-6 + 506.25e-6 + 306.25e-6 = 875e-6; var = 875e-6 / 3.
    expected = 0.0125 / math.sqrt(875e-6 / 3)
    assert perf.sharpe_ratio([0.01, 0.02, -0.01, 0.03]) == pytest.approx(expected)
    assert expected == pytest.approx(0.731925, rel=1e-5)


def test_sharpe_ratio_when_negative_mean_returns_negative() -> None:
    assert perf.sharpe_ratio([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)


@pytest.mark.parametrize("returns", [[], [0.5], [0.1, 0.1, 0.1], [0.0] * 10])
def test_sharpe_ratio_when_too_short_or_zero_variance_returns_zero(returns: list[float]) -> None:
    assert perf.sharpe_ratio(returns) == 0.0


def test_annualized_sharpe_when_daily_returns_scales_by_sqrt_252() -> None:
    assert perf.annualized_sharpe([1.0, 2.0, 3.0], 252) == pytest.approx(2.0 * math.sqrt(252))


def test_annualized_sharpe_when_periods_not_positive_raises_value_error() -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        perf.annualized_sharpe([1.0, 2.0], 0)


def test_max_drawdown_when_two_falls_returns_the_deeper_one() -> None:
    # 120 -> 90 is 25 %; 130 -> 65 is 50 %; the rebound to 70 does not matter.
    assert perf.max_drawdown([100, 120, 90, 130, 65, 70]) == pytest.approx(0.5)


@pytest.mark.parametrize("equity", [[], [100.0], [100, 100, 101, 150]])
def test_max_drawdown_when_monotone_or_short_returns_zero(equity: list[float]) -> None:
    assert perf.max_drawdown(equity) == 0.0


def test_max_drawdown_when_first_value_not_positive_raises_value_error() -> None:
    with pytest.raises(ValueError, match="start positive"):
        perf.max_drawdown([0.0, 1.0])


def test_hit_rate_when_zeros_present_ignores_them() -> None:
    # Non-zero returns: +0.01, -0.02, +0.03 -> 2 hits of 3.
    assert perf.hit_rate([0.01, 0.0, -0.02, 0.03, 0.0]) == pytest.approx(2 / 3)


def test_hit_rate_when_all_zero_returns_zero() -> None:
    assert perf.hit_rate([0.0, 0.0]) == 0.0


def test_returns_from_equity_when_up_then_down_returns_simple_returns() -> None:
    assert perf.returns_from_equity([100, 110, 99]) == pytest.approx([0.1, -0.1])
    assert perf.returns_from_equity([100]) == []


def test_returns_from_equity_when_zero_equity_raises_value_error() -> None:
    with pytest.raises(ValueError, match="zero"):
        perf.returns_from_equity([100, 0, 5])


def test_skewness_when_right_tail_matches_hand_computation() -> None:
    # Mean 4; deviations -3 -2 -1 6; m2 = 50/4 = 12.5; m3 = 180/4 = 45; skew = 45 / 12.5**1.5.
    assert perf.skewness([1, 2, 3, 10]) == pytest.approx(45 / 12.5**1.5)
    assert perf.skewness([1, 2, 3, 10]) == pytest.approx(1.018234, rel=1e-6)


def test_skewness_when_symmetric_returns_zero() -> None:
    assert perf.skewness([1, 2, 3]) == pytest.approx(0.0)
    assert perf.skewness([-2.0, -1.0, 1.0, 2.0]) == pytest.approx(0.0)


def test_kurtosis_when_right_tail_matches_hand_computation() -> None:
    # m4 = (81 + 16 + 1 + 1296) / 4 = 348.5; kurtosis = 348.5 / 12.5**2 = 2.2304.
    assert perf.kurtosis([1, 2, 3, 10]) == pytest.approx(2.2304)


def test_kurtosis_when_two_point_distribution_returns_one() -> None:
    # A symmetric two-point distribution has the smallest possible kurtosis, 1.
    assert perf.kurtosis([-1.0, 1.0, -1.0, 1.0]) == pytest.approx(1.0)
    # [1, 2, 3]: m2 = 2/3, m4 = 2/3 -> (2/3) / (4/9) = 1.5.
    assert perf.kurtosis([1, 2, 3]) == pytest.approx(1.5)


def test_skewness_and_kurtosis_when_constant_returns_normal_values() -> None:
    assert perf.skewness([0.3, 0.3, 0.3]) == 0.0
    assert perf.kurtosis([0.3, 0.3, 0.3]) == 3.0


@pytest.mark.parametrize(
    "fn",
    [
        perf.mean,
        perf.stdev,
        perf.sharpe_ratio,
        perf.max_drawdown,
        perf.hit_rate,
        perf.returns_from_equity,
        perf.skewness,
        perf.kurtosis,
        lambda values: perf.annualized_sharpe(values, 252),
    ],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_statistics_when_non_finite_input_raise_value_error(
    fn: Callable[[Sequence[float]], object], bad: float
) -> None:
    with pytest.raises(ValueError, match="not finite"):
        fn([1.0, 2.0, bad, 3.0])


def test_sharpe_when_series_is_constant_but_for_one_rounding_step_is_flat_everywhere() -> None:
    series = [0.001] * 50
    series[17] = math.nextafter(0.001, 1.0)  # one ulp: rounding noise, not a return stream
    assert perf.is_flat(series)
    assert perf.sharpe_ratio(series) == 0.0
    assert perf.describe_returns(series).flat
    assert canary_stats.sharpe_difference_test(series, [0.002, -0.001] * 25).se == math.inf


def test_allocator_when_one_strategy_is_flat_but_for_rounding_does_not_give_it_the_maximum_weight() -> None:
    flat = [0.001] * 100
    flat[3] = math.nextafter(0.001, 1.0)
    assert shrunk_score(perf.sharpe_ratio(flat), n=100, n0=0) == 0.0


def test_exact_sum_when_weighted_returns_cancel_exactly_is_0_not_their_rounding_residue() -> None:
    """0.75 x 5/13 - 0.25 x 15/13 is exactly 0; the rounded terms leave 5.6e-17 (a strategy whose models offset)."""
    terms = [0.75 * float(Decimal(5) / Decimal(13)), 0.25 * float(-Decimal(15) / Decimal(13))]
    assert math.fsum(terms) != 0
    assert perf.exact_sum(terms) == 0.0
    assert perf.exact_sum([1e-17, 2e-17]) == 3e-17  # small but not a residue: kept
