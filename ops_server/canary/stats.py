"""Per-bar statistics the canary controller uses to judge a canary against the stable model.

Every number here is *per period* of the series it is given: the Sharpe ratio is ``mean / stdev`` of those returns.
The controller gives them returns summed into bars (:func:`ops_server.performance.aggregate_returns`) and converts
its annualised thresholds to that bar, so a tolerance means the same at any sampling rate.

- :func:`~ops_server.performance.describe_returns` (re-exported): sample moments of one return series, with the
  one flat-series rule of :mod:`ops_server.performance`.
- :func:`probabilistic_sharpe_ratio`: Bailey & Lopez de Prado (2012), the probability that the true Sharpe ratio
  exceeds a benchmark given the observed one, its length and the shape of the returns.
- :func:`min_track_record_length`: the number of observations needed for that probability to reach a confidence.
- :func:`deflated_sharpe_ratio`: Bailey & Lopez de Prado (2014), the PSR against the Sharpe ratio the best of
  several trials would reach by luck (:func:`expected_max_sharpe`).
- :func:`sharpe_difference_test`: Jobson-Korkie test of the difference of two Sharpe ratios on paired returns,
  with Memmel's (2003) correction of the variance.

The module is self-contained on purpose (no numpy/scipy): the normal CDF and quantile come from
:class:`statistics.NormalDist` and sums use :func:`math.fsum` for accuracy on long series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from ops_server.performance import ReturnMoments, describe_returns

__all__ = [
    "EULER_GAMMA",
    "ReturnMoments",
    "SharpeComparison",
    "deflated_sharpe_ratio",
    "describe_returns",
    "expected_max_sharpe",
    "min_track_record_length",
    "probabilistic_sharpe_ratio",
    "sharpe_difference_test",
]

_NORMAL = NormalDist()

# Moment combinations below this are rounding noise around zero, not genuinely inconsistent moments.
_DENOMINATOR_EPS = 1e-12


@dataclass(frozen=True)
class SharpeComparison:
    """Result of :func:`sharpe_difference_test` on paired canary/stable returns.

    When either series is flat the Sharpe difference has no usable standard error: ``se`` is ``inf``, ``rho`` is
    0.0 and ``z`` is 0.0, so any decision built on the confidence interval is inconclusive.
    """

    diff: float
    """``sr_canary - sr_stable`` (per period)."""
    se: float
    """Standard error of ``diff`` (Jobson-Korkie with Memmel's correction); ``inf`` when undefined."""
    z: float
    """``diff / se``; 0.0 when ``se`` is infinite or both are zero, +-inf when only ``se`` is zero."""
    rho: float
    """Pearson correlation of the paired returns."""
    n: int
    """Number of paired observations."""
    sr_canary: float
    """Per-period Sharpe ratio of the canary."""
    sr_stable: float
    """Per-period Sharpe ratio of the stable model."""

    def lower_bound(self, z_crit: float) -> float:
        """Lower confidence bound ``diff - z_crit * se`` of the Sharpe difference."""
        return self.diff - z_crit * self.se

    def upper_bound(self, z_crit: float) -> float:
        """Upper confidence bound ``diff + z_crit * se`` of the Sharpe difference."""
        return self.diff + z_crit * self.se


def _sharpe_variance_factor(sr: float, skew: float, kurtosis: float) -> float:
    """Return ``1 - g3 SR + (g4 - 1)/4 SR^2``, the non-normality factor of the Sharpe ratio's variance.

    For any real distribution ``kurtosis >= 1 + skew**2``, which makes the factor ``>= (1 - skew SR / 2)**2 >= 0``.
    A clearly negative value therefore means the caller passed inconsistent moments.
    """
    if not (math.isfinite(sr) and math.isfinite(skew) and math.isfinite(kurtosis)):
        raise ValueError("sharpe ratio, skew and kurtosis must be finite")
    factor = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if factor < -_DENOMINATOR_EPS:
        raise ValueError(f"inconsistent moments: skew={skew}, kurtosis={kurtosis} give a negative variance")
    return max(factor, 0.0)


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (Bailey & Lopez de Prado).

    ``PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))``.

    Args:
        sr: Observed per-period Sharpe ratio.
        sr_benchmark: Benchmark per-period Sharpe ratio ``SR*`` (0.0 asks "is there any edge at all").
        n: Number of observations behind ``sr``; at least 2.
        skew: Skewness of the returns (0 for normal).
        kurtosis: Kurtosis of the returns, not excess (3 for normal).

    Returns:
        A probability in [0, 1]. When the variance factor is zero (a degenerate two-point distribution) the limit
        is returned: 1.0 above the benchmark, 0.0 below, 0.5 on it.

    Raises:
        ValueError: ``n < 2``, a non-finite input, or moments no distribution can have.
    """
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    if not math.isfinite(sr_benchmark):
        raise ValueError("sr_benchmark must be finite")
    factor = _sharpe_variance_factor(sr, skew, kurtosis)
    edge = sr - sr_benchmark
    if factor == 0.0:
        return 1.0 if edge > 0 else 0.0 if edge < 0 else 0.5
    return _NORMAL.cdf(edge * math.sqrt(n - 1) / math.sqrt(factor))


def min_track_record_length(
    sr: float, sr_benchmark: float, confidence: float = 0.95, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Minimum number of observations for ``PSR(sr_benchmark) >= confidence`` (Bailey & Lopez de Prado).

    ``MinTRL = 1 + (1 - g3 SR + (g4 - 1)/4 SR^2) (z_alpha / (SR - SR*))^2`` with ``z_alpha = Phi^-1(confidence)``.
    The result is fractional; a caller counting observations rounds it up.

    Args:
        sr: Observed per-period Sharpe ratio.
        sr_benchmark: Benchmark per-period Sharpe ratio.
        confidence: Target probability in (0, 1).
        skew: Skewness of the returns.
        kurtosis: Kurtosis of the returns, not excess.

    Returns:
        The length in observations, or ``inf`` when ``sr <= sr_benchmark`` (no track record is long enough).

    Raises:
        ValueError: ``confidence`` outside (0, 1), a non-finite input, or inconsistent moments.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not math.isfinite(sr_benchmark):
        raise ValueError("sr_benchmark must be finite")
    factor = _sharpe_variance_factor(sr, skew, kurtosis)
    edge = sr - sr_benchmark
    if edge <= 0.0:
        return math.inf
    z_alpha = _NORMAL.inv_cdf(confidence)
    return 1.0 + factor * (z_alpha / edge) ** 2


def sharpe_difference_test(canary: Sequence[float], stable: Sequence[float]) -> SharpeComparison:
    """Test the Sharpe difference of two return series observed on the same timestamps.

    Jobson-Korkie statistic with Memmel's correction of its variance:
    ``Var(SR_c - SR_s) = (1/n) (2 - 2 rho + 0.5 (SR_c^2 + SR_s^2 - 2 SR_c SR_s rho^2))``.
    Pairing matters: a canary that trades like the stable model (high ``rho``) can be judged on far fewer
    observations than two independent series would need.

    Args:
        canary: Canary per-period returns.
        stable: Stable model per-period returns, element ``i`` on the same timestamp as ``canary[i]``.

    Returns:
        The difference, its standard error, z, correlation and the two Sharpe ratios. See
        :class:`SharpeComparison` for the flat-series convention.

    Raises:
        ValueError: Lengths differ, fewer than 3 paired observations, or a non-finite return.
    """
    n = len(canary)
    if len(stable) != n:
        raise ValueError(f"paired returns must have equal length, got canary={n} stable={len(stable)}")
    if n < 3:
        raise ValueError(f"need at least 3 paired returns, got {n}")
    mc = describe_returns(canary)
    ms = describe_returns(stable)
    diff = mc.sharpe - ms.sharpe
    if mc.flat or ms.flat:
        return SharpeComparison(diff=diff, se=math.inf, z=0.0, rho=0.0, n=n, sr_canary=mc.sharpe, sr_stable=ms.sharpe)
    # Correlate standardised deviations so tiny returns cannot underflow the covariance. Pearson's rho of standardised
    # series is 1 - sum((a - b)^2) / (2 (n - 1)); taken that way, 1 - rho is exactly 0 for identical series (as a
    # product sum rounds to 0.9999999999999999, leaving a standard error of ~1e-9 where there is none) and keeps its
    # digits when rho is near 1.
    dc = [(c - mc.mean) / mc.stdev for c in canary]
    ds = [(s - ms.mean) / ms.stdev for s in stable]
    apart = math.fsum((a - b) * (a - b) for a, b in zip(dc, ds, strict=True)) / (2.0 * (n - 1))
    apart = min(2.0, apart)  # 1 - rho; rounding could push it a hair past 2 for opposite series
    rho = 1.0 - apart
    sr1, sr2 = mc.sharpe, ms.sharpe
    # Memmel's variance (statistics.md), its terms rearranged to keep 1 - rho whole:
    # 2 - 2 rho = 2 (1 - rho); SR_c^2 + SR_s^2 - 2 SR_c SR_s rho^2 = (SR_c - SR_s)^2 + 2 SR_c SR_s (1 - rho)(1 + rho).
    variance = (2.0 * apart + 0.5 * (sr1 - sr2) ** 2 + sr1 * sr2 * apart * (1.0 + rho)) / n
    se = math.sqrt(max(variance, 0.0))
    # se == 0 only for identical series: no sampling error, so any difference is certain (and none is zero).
    z = diff / se if se > 0.0 else 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return SharpeComparison(diff=diff, se=se, z=z, rho=rho, n=n, sr_canary=sr1, sr_stable=sr2)


EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant of the expected maximum of ``N`` normal draws."""


def expected_max_sharpe(trials: int, sr_variance: float) -> float:
    """Expected maximum of ``trials`` Sharpe estimates whose true value is 0 (Bailey & Lopez de Prado 2014).

    ``E[max SR] = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))``, with ``V`` the variance of
    the estimates across trials and ``gamma`` the Euler-Mascheroni constant. One trial has nothing to deflate: 0.

    Raises:
        ValueError: ``trials < 1`` or a negative or non-finite variance.
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if not math.isfinite(sr_variance) or sr_variance < 0:
        raise ValueError(f"sr_variance must be a finite number >= 0, got {sr_variance!r}")
    if trials == 1:
        return 0.0
    first = _NORMAL.inv_cdf(1.0 - 1.0 / trials)
    second = _NORMAL.inv_cdf(1.0 - 1.0 / (trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * first + EULER_GAMMA * second)


def deflated_sharpe_ratio(
    sr: float,
    n: int,
    trials: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    sr_benchmark: float = 0.0,
    sr_variance: float | None = None,
) -> float:
    """Deflated Sharpe ratio (Bailey & Lopez de Prado 2014): the PSR against the Sharpe ratio the best of
    ``trials`` attempts would show by luck alone.

    ``DSR = PSR(SR0)`` with ``SR0 = SR* + E[max SR]`` (:func:`expected_max_sharpe`). The variance of the Sharpe
    estimates across trials defaults to the sampling variance of this estimate,
    ``(1 - g3 SR + (g4 - 1)/4 SR^2) / (n - 1)``: the registry keeps how many versions were tried, not their track
    records, and under the null every trial's estimate has that variance. With one trial DSR equals PSR.

    Args:
        sr: Observed Sharpe ratio per bar.
        n: Bars behind ``sr``; at least 2.
        trials: Strategies or versions tried (the strategy's models in the registry); at least 1.
        skew: Skewness of the returns.
        kurtosis: Kurtosis of the returns, not excess.
        sr_benchmark: Benchmark Sharpe ratio per bar ``SR*``.
        sr_variance: Variance of the trials' Sharpe estimates per bar; ``None`` uses the sampling variance.

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: ``n < 2``, ``trials < 1``, a non-finite input or inconsistent moments.
    """
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    factor = _sharpe_variance_factor(sr, skew, kurtosis)
    variance = factor / (n - 1) if sr_variance is None else sr_variance
    threshold = sr_benchmark + expected_max_sharpe(trials, variance)
    return probabilistic_sharpe_ratio(sr, threshold, n, skew, kurtosis)
