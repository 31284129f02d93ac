"""Tests for the per-period canary statistics (PSR, minimum track record length, Jobson-Korkie/Memmel)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops_server.canary import CanaryConfig
from ops_server.canary.checks import CheckInputs, CheckOutcome, run_check
from ops_server.canary.stats import (
    deflated_sharpe_ratio,
    describe_returns,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_difference_test,
)

finite_returns = st.floats(min_value=-0.2, max_value=0.2, allow_nan=False, allow_infinity=False)
# Returns to six decimals in [-0.2, 0.2]: a reference computed from raw products does not underflow on them.
decimal_returns = st.integers(-200_000, 200_000).map(lambda i: i / 1e6)


# ------------------------------------------------------------------------------------------ pinned numbers


def test_psr_when_sr_0_1_n_252_normal_returns_0_9430() -> None:
    # Phi(0.1 * sqrt(251) / sqrt(1 + 2/4 * 0.01)) = Phi(1.58035...) = 0.94299
    psr = probabilistic_sharpe_ratio(0.1, 0.0, 252)

    assert round(psr, 4) == 0.9430


def test_min_track_record_length_when_sr_0_1_normal_95pct_returns_273_rounded_up() -> None:
    # 1 + 1.005 * (1.644854 / 0.1)^2 = 272.907...
    mintrl = min_track_record_length(0.1, 0.0, 0.95)

    assert mintrl == pytest.approx(272.907, abs=1e-3)
    assert math.ceil(mintrl) == 273


def test_psr_when_negative_skew_and_fat_tails_returns_lower_probability() -> None:
    normal = probabilistic_sharpe_ratio(0.1, 0.0, 252)
    skewed = probabilistic_sharpe_ratio(0.1, 0.0, 252, skew=-1.0, kurtosis=6.0)

    # 1 + 0.1 + 5/4 * 0.01 = 1.1125 > 1.005, so the Sharpe estimate is noisier and the probability lower.
    assert skewed < normal
    assert skewed == pytest.approx(0.5 * (1 + math.erf(0.1 * math.sqrt(251) / math.sqrt(1.1125) / math.sqrt(2))))


def test_memmel_se_when_hand_computed_three_point_example_returns_one() -> None:
    # canary [1, 2, 3]%: mean 2, sd 1 -> SR 2.  stable [0, 2, 1]%: mean 1, sd 1 -> SR 1.
    # deviations (-1, 0, 1) and (-1, 1, 0): cov = 1/2 -> rho = 0.5.
    # var = (1/3)(2 - 2*0.5 + 0.5*(4 + 1 - 2*2*1*0.25)) = (1/3)(1 + 2) = 1 -> se 1, diff 1, z 1.
    result = sharpe_difference_test([0.01, 0.02, 0.03], [0.0, 0.02, 0.01])

    assert result.sr_canary == pytest.approx(2.0)
    assert result.sr_stable == pytest.approx(1.0)
    assert result.rho == pytest.approx(0.5)
    assert result.se == pytest.approx(1.0)
    assert result.diff == pytest.approx(1.0)
    assert result.z == pytest.approx(1.0)
    assert result.n == 3
    assert result.lower_bound(1.645) == pytest.approx(1.0 - 1.645)
    assert result.upper_bound(1.645) == pytest.approx(1.0 + 1.645)


def test_describe_returns_when_symmetric_three_points_returns_zero_skew_and_kurtosis_1_5() -> None:
    moments = describe_returns([-1.0, 0.0, 1.0])

    # m2 = 2/3, m4 = 2/3 -> kurtosis = (2/3) / (2/3)^2 = 1.5; sample sd = 1.
    assert moments.mean == 0.0
    assert moments.stdev == pytest.approx(1.0)
    assert moments.skew == 0.0
    assert moments.kurtosis == pytest.approx(1.5)
    assert not moments.flat


# ------------------------------------------------------------------------------------------ degenerate input


def test_sharpe_difference_when_lengths_differ_raises_value_error() -> None:
    with pytest.raises(ValueError, match="equal length"):
        sharpe_difference_test([0.01, 0.02, 0.03], [0.01, 0.02])


def test_sharpe_difference_when_fewer_than_three_observations_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        sharpe_difference_test([0.01, 0.02], [0.02, 0.01])


def test_sharpe_difference_when_a_return_is_nan_raises_value_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        sharpe_difference_test([0.01, math.nan, 0.03], [0.02, 0.01, 0.0])


def test_sharpe_difference_when_canary_is_flat_returns_infinite_se_and_zero_z() -> None:
    result = sharpe_difference_test([0.001, 0.001, 0.001, 0.001], [0.01, -0.02, 0.015, 0.0])

    assert result.se == math.inf
    assert result.z == 0.0
    assert result.sr_canary == 0.0
    assert result.lower_bound(1.645) == -math.inf


def test_sharpe_difference_when_series_identical_returns_zero_se_and_zero_diff() -> None:
    series = [0.01, -0.02, 0.015, 0.0, 0.004]

    result = sharpe_difference_test(series, list(series))

    assert result.diff == 0.0
    assert result.se == 0.0  # exactly: 1 - rho is a sum of zeros, not 1 minus a product sum
    assert result.z == 0.0
    assert result.rho == 1.0


@given(st.lists(finite_returns, min_size=3, max_size=60))
def test_sharpe_difference_when_any_series_is_compared_with_itself_has_no_standard_error(series: list[float]) -> None:
    result = sharpe_difference_test(series, list(series))
    assert result.se in (0.0, math.inf)  # infinite only for a flat series
    assert result.diff == 0.0 and result.z == 0.0


@given(st.lists(st.tuples(decimal_returns, decimal_returns), min_size=3, max_size=60))
def test_sharpe_difference_when_any_pair_is_given_matches_memmels_variance_as_published(
    pairs: list[tuple[float, float]],
) -> None:
    canary, stable = [c for c, _ in pairs], [s for _, s in pairs]
    result = sharpe_difference_test(canary, stable)
    if math.isinf(result.se):
        return  # a flat series
    n, sr1, sr2 = len(pairs), result.sr_canary, result.sr_stable
    mc, ms = math.fsum(canary) / n, math.fsum(stable) / n
    cov = math.fsum((c - mc) * (s - ms) for c, s in pairs) / (n - 1)
    sc = math.sqrt(math.fsum((c - mc) ** 2 for c in canary) / (n - 1))
    ss = math.sqrt(math.fsum((s - ms) ** 2 for s in stable) / (n - 1))
    rho = max(-1.0, min(1.0, cov / (sc * ss)))
    variance = (2 - 2 * rho + 0.5 * (sr1 * sr1 + sr2 * sr2 - 2 * sr1 * sr2 * rho * rho)) / n  # statistics.md
    assert result.rho == pytest.approx(rho, abs=1e-9)
    assert result.se == pytest.approx(math.sqrt(max(variance, 0.0)), rel=1e-6, abs=1e-7)


def test_describe_returns_when_constant_series_returns_flat_with_zero_sharpe() -> None:
    moments = describe_returns([0.01] * 50)

    assert moments.flat
    assert moments.sharpe == 0.0
    assert moments.kurtosis == 3.0


def test_psr_when_fewer_than_two_observations_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1)


def test_psr_when_moments_impossible_raises_value_error() -> None:
    # kurtosis < 1 is impossible for any distribution; with SR 1 the variance factor goes negative.
    with pytest.raises(ValueError, match="inconsistent"):
        probabilistic_sharpe_ratio(1.0, 0.0, 100, skew=2.0, kurtosis=0.0)


def test_min_track_record_length_when_sr_not_above_benchmark_returns_inf() -> None:
    assert min_track_record_length(0.05, 0.05) == math.inf
    assert min_track_record_length(-0.1, 0.0) == math.inf


def test_min_track_record_length_when_confidence_out_of_range_raises_value_error() -> None:
    with pytest.raises(ValueError, match="confidence"):
        min_track_record_length(0.1, 0.0, confidence=1.0)


# ------------------------------------------------------------------------------------------ properties


@given(
    sr=st.floats(min_value=0.01, max_value=1.0),
    confidence=st.floats(min_value=0.6, max_value=0.99),
    skew=st.floats(min_value=-1.0, max_value=1.0),
    excess=st.floats(min_value=0.0, max_value=5.0),
)
def test_psr_when_n_is_min_track_record_length_reaches_the_confidence(
    sr: float, confidence: float, skew: float, excess: float
) -> None:
    kurtosis = 1.0 + skew * skew + excess
    mintrl = min_track_record_length(sr, 0.0, confidence, skew, kurtosis)
    n = max(2, math.ceil(mintrl))

    psr = probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurtosis)

    assert psr >= confidence - 1e-9


@given(sr=st.floats(min_value=-1.0, max_value=1.0), n=st.integers(min_value=2, max_value=5000))
def test_psr_when_any_input_returns_probability_monotone_in_n(sr: float, n: int) -> None:
    shorter = probabilistic_sharpe_ratio(sr, 0.0, n)
    longer = probabilistic_sharpe_ratio(sr, 0.0, n + 10)

    assert 0.0 <= shorter <= 1.0
    if sr > 0:
        assert longer >= shorter
    elif sr < 0:
        assert longer <= shorter


@given(st.lists(st.tuples(decimal_returns, decimal_returns), min_size=3, max_size=60))
def test_sharpe_difference_when_sides_swapped_returns_negated_diff_and_same_se(
    pairs: list[tuple[float, float]],
) -> None:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]

    forward = sharpe_difference_test(a, b)
    backward = sharpe_difference_test(b, a)

    assert backward.diff == pytest.approx(-forward.diff)
    assert backward.se == pytest.approx(forward.se) or forward.se == backward.se == math.inf
    assert forward.se >= 0.0
    assert -1.0 <= forward.rho <= 1.0


def test_deflated_sharpe_when_paper_example_returns_0_9004() -> None:
    """Bailey & Lopez de Prado (2014), section 4: annual SR 2.5 on 1250 daily returns, skew -3, kurtosis 10,
    100 trials whose annualised Sharpe estimates have variance 0.5."""
    sr_daily, variance_daily = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, variance_daily) * math.sqrt(250) == pytest.approx(1.7894, abs=1e-4)
    dsr = deflated_sharpe_ratio(sr_daily, 1250, 100, -3.0, 10.0, sr_variance=variance_daily)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_deflated_sharpe_when_one_trial_equals_the_psr() -> None:
    assert deflated_sharpe_ratio(0.1, 200, 1, -0.5, 4.0) == probabilistic_sharpe_ratio(0.1, 0.0, 200, -0.5, 4.0)


def test_check_when_the_canary_trades_exactly_as_the_stable_model_at_zero_tolerance_passes() -> None:
    series = [0.0012, -0.0031, 0.0007, 0.0025, -0.0004, 0.0019, -0.0011, 0.0003]
    config = CanaryConfig.from_dict({"sharpe_tolerance_annual": 0.0, "bar_seconds": 1})
    inputs = CheckInputs(datetime(2026, 1, 5, tzinfo=UTC), 5.0, series, list(series), 0, 0, 1, 1.0, 1, False)
    result = run_check(config, inputs)
    assert result.comparison.se == 0.0 and result.comparison.rho == 1.0
    assert result.outcome is CheckOutcome.PASSED  # lower bound 0 >= -0: not worse, with certainty
