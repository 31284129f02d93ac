"""Performance statistics on per-period return series.

Shared by measurement (per-model Sharpe, drawdown), the capital allocator (scores) and the
canary controller (Sharpe comparison, probabilistic Sharpe ratio). Pure functions on plain
``Sequence[float]`` with no numpy, so any part of the mesh can use them without new dependencies.

Conventions:
    - Returns are simple per-period returns (``0.01`` is +1 %), not percentages or log returns.
    - Sharpe ratios are per period (no risk-free rate: the series are already excess returns of a
      model's quota); :func:`annualized_sharpe` scales by ``sqrt(periods_per_year)``.
    - Higher moments use the population (biased) moment estimators, the ones in the probabilistic
      Sharpe ratio formula: ``skew = m3 / m2**1.5``, ``kurtosis = m4 / m2**2`` (normal = 3).
    - A NaN or infinite input raises ``ValueError``: a statistic silently computed on a NaN would
      poison every decision downstream.
    - One rule for a flat series, used by every statistic here and by the canary's tests: a series whose
      sample standard deviation is at most ``FLAT_RELATIVE_STDEV`` times its largest absolute value is flat
      (the residual variance of a constant float series is rounding noise). A flat series has Sharpe 0,
      skew 0 and kurtosis 3: it carries no evidence either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "FLAT_RELATIVE_STDEV",
    "SECONDS_PER_YEAR",
    "ReturnMoments",
    "aggregate_returns",
    "annual_to_bar_sharpe",
    "annualized_sharpe",
    "bar_to_annual_sharpe",
    "bars_per_year",
    "describe_returns",
    "exact_sum",
    "hit_rate",
    "is_flat",
    "kurtosis",
    "max_drawdown",
    "mean",
    "returns_from_equity",
    "rounding_of",
    "samples_per_bar",
    "sharpe_ratio",
    "skewness",
    "stdev",
]


SECONDS_PER_YEAR = 365 * 24 * 3600
"""Seconds in the year every annualised figure refers to (365 days of 86,400 s: markets that never close)."""


def samples_per_bar(bar_seconds: float, sample_seconds: float) -> int:
    """How many consecutive samples make one bar: ``round(bar_seconds / sample_seconds)``, at least 1 (halves to
    even, as Python's ``round``: 2.5 gives 2, 3.5 gives 4).

    The effective bar is ``samples_per_bar * sample_seconds`` seconds; :func:`bars_per_year` takes that length.

    Raises:
        ValueError: A length that is not a positive finite number of seconds.
    """
    for name, value in (("bar_seconds", bar_seconds), ("sample_seconds", sample_seconds)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return max(1, round(bar_seconds / sample_seconds))


def bars_per_year(bar_seconds: float) -> float:
    """Bars of ``bar_seconds`` seconds in a year: ``SECONDS_PER_YEAR / bar_seconds``.

    Raises:
        ValueError: A length that is not a positive finite number of seconds.
    """
    if not math.isfinite(bar_seconds) or bar_seconds <= 0:
        raise ValueError(f"bar_seconds must be a positive finite number of seconds, got {bar_seconds!r}")
    return SECONDS_PER_YEAR / bar_seconds


def annual_to_bar_sharpe(sharpe_annual: float, bar_seconds: float) -> float:
    """An annualised Sharpe ratio expressed per bar: ``sharpe_annual / sqrt(bars_per_year(bar_seconds))``."""
    return sharpe_annual / math.sqrt(bars_per_year(bar_seconds))


def bar_to_annual_sharpe(sharpe_bar: float, bar_seconds: float) -> float:
    """A per-bar Sharpe ratio expressed per year: ``sharpe_bar * sqrt(bars_per_year(bar_seconds))``."""
    return sharpe_bar * math.sqrt(bars_per_year(bar_seconds))


def aggregate_returns(returns: Sequence[float], samples: int) -> list[float]:
    """Sum consecutive, non-overlapping groups of ``samples`` returns into one return per bar.

    The mesh's returns are PnL changes over the capital base (``dPnL / base``), which add up: the sum over a bar is
    the bar's PnL over the base. Each return is that quotient rounded to a float, so a bar whose PnL did not change
    sums to rounding noise (``1e-20``) instead of 0: a sum within :func:`rounding_of` its returns is 0, as the exact
    sum is (a flat bar, no hit and no miss). Bars are counted from the first return; an incomplete last bar is left
    out (it would mix a shorter horizon into the series). ``samples == 1`` returns the series unchanged.

    Raises:
        ValueError: ``samples < 1`` or a non-finite return.
    """
    if samples < 1:
        raise ValueError(f"samples per bar must be at least 1, got {samples}")
    values = _finite(returns, "returns")
    if samples == 1:
        return values
    full = len(values) - len(values) % samples
    return [exact_sum(values[i : i + samples]) for i in range(0, full, samples)]


ROUNDING = 2.0**-52
"""Relative error of a return rounded to a float (2^-53), with a factor of two for the quotient it was rounded from
(unitless)."""


def rounding_of(terms: Sequence[float]) -> float:
    """How far the sum of ``terms`` may be from the exact sum of the values they were rounded from: ``2^-52`` of the
    sum of their magnitudes."""
    return ROUNDING * math.fsum(abs(t) for t in terms)


def exact_sum(terms: Sequence[float]) -> float:
    """The sum of rounded values, 0 when it is within their rounding of 0 (values that cancel exactly, rounded one by
    one, leave a residue of about 1e-16 of their size)."""
    total = math.fsum(terms)
    return 0.0 if abs(total) <= rounding_of(terms) else total


def _finite(values: Sequence[float], name: str) -> list[float]:
    """Return ``values`` as a list of floats, raising ValueError on a NaN or infinity."""
    out = [float(v) for v in values]
    for index, value in enumerate(out):
        if not math.isfinite(value):
            raise ValueError(f"{name}[{index}] is not finite: {value!r}")
    return out


def _central_moments(values: list[float]) -> tuple[float, float, float]:
    """Population central moments m2, m3, m4 of a non-empty, finite list."""
    mu = math.fsum(values) / len(values)
    deviations = [v - mu for v in values]
    n = len(values)
    m2 = math.fsum(d * d for d in deviations) / n
    m3 = math.fsum(d * d * d for d in deviations) / n
    m4 = math.fsum(d**4 for d in deviations) / n
    return m2, m3, m4


FLAT_RELATIVE_STDEV = 1e-12
"""A series whose sample stdev is at most this fraction of its largest absolute value is flat (unitless)."""


def _sample_stdev(values: list[float]) -> float:
    mu = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mu) ** 2 for v in values) / (len(values) - 1))


def is_flat(returns: Sequence[float]) -> bool:
    """True for a series with no usable variance (fewer than 2 values, constant, or constant but for rounding).

    Raises:
        ValueError: On a non-finite value.
    """
    values = _finite(returns, "returns")
    if len(values) < 2:
        return True
    scale = max(abs(v) for v in values)
    return scale == 0.0 or max(values) == min(values) or _sample_stdev(values) <= FLAT_RELATIVE_STDEV * scale


@dataclass(frozen=True)
class ReturnMoments:
    """Sample moments of one per-period return series (see the flat-series rule in the module docstring)."""

    n: int
    """Number of observations."""
    mean: float
    """Arithmetic mean per period."""
    stdev: float
    """Sample standard deviation (divisor ``n - 1``); 0.0 when flat."""
    sharpe: float
    """Per-period Sharpe ratio ``mean / stdev``; 0.0 when flat."""
    skew: float
    """Skewness ``m3 / m2**1.5`` from population central moments (as in Bailey & Lopez de Prado); 0 if flat."""
    kurtosis: float
    """Kurtosis ``m4 / m2**2`` (not excess: 3.0 for a normal distribution, and when flat)."""
    flat: bool
    """True when the series has no usable variance."""


def describe_returns(returns: Sequence[float]) -> ReturnMoments:
    """The sample moments of a per-period return series.

    Raises:
        ValueError: Fewer than two observations or a non-finite value.
    """
    values = _finite(returns, "returns")
    n = len(values)
    if n < 2:
        raise ValueError(f"need at least 2 returns, got {n}")
    mu = math.fsum(values) / n
    if is_flat(values):
        return ReturnMoments(n=n, mean=mu, stdev=0.0, sharpe=0.0, skew=0.0, kurtosis=3.0, flat=True)
    deviations = [v - mu for v in values]
    m2 = math.fsum(d * d for d in deviations) / n
    stdev = math.sqrt(m2 * n / (n - 1))
    # Standardise before the higher powers: d**4 of tiny returns underflows, (d / sigma)**4 does not.
    sigma = math.sqrt(m2)
    standard = [d / sigma for d in deviations]
    return ReturnMoments(
        n=n,
        mean=mu,
        stdev=stdev,
        sharpe=mu / stdev,
        skew=math.fsum(x**3 for x in standard) / n,
        kurtosis=math.fsum(x**4 for x in standard) / n,
        flat=False,
    )


def mean(returns: Sequence[float]) -> float:
    """Arithmetic mean.

    Args:
        returns: Per-period returns.

    Returns:
        The mean (computed with ``math.fsum`` for accuracy).

    Raises:
        ValueError: On an empty series or a non-finite value.
    """
    values = _finite(returns, "returns")
    if not values:
        raise ValueError("mean of an empty series")
    return math.fsum(values) / len(values)


def stdev(returns: Sequence[float]) -> float:
    """Sample standard deviation (``ddof=1``).

    Raises:
        ValueError: With fewer than 2 observations or a non-finite value.
    """
    values = _finite(returns, "returns")
    if len(values) < 2:
        raise ValueError(f"sample standard deviation needs at least 2 observations, got {len(values)}")
    if is_flat(values):
        return 0.0
    return _sample_stdev(values)


def sharpe_ratio(returns: Sequence[float]) -> float:
    """Per-period Sharpe ratio: mean / sample standard deviation.

    Returns:
        ``0.0`` with fewer than 2 observations or zero variance (no evidence either way), else the ratio.

    Raises:
        ValueError: On a non-finite value.
    """
    values = _finite(returns, "returns")
    if is_flat(values):
        return 0.0
    return mean(values) / _sample_stdev(values)


def annualized_sharpe(returns: Sequence[float], periods_per_year: float) -> float:
    """Sharpe ratio scaled to a year: ``sharpe_ratio(returns) * sqrt(periods_per_year)``.

    Args:
        returns: Per-period returns.
        periods_per_year: Sampling periods per year (252 for daily bars, 31_536_000 for seconds).

    Raises:
        ValueError: If ``periods_per_year`` is not a positive finite number, or on a non-finite return.
    """
    if not math.isfinite(periods_per_year) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive finite number, got {periods_per_year!r}")
    return sharpe_ratio(returns) * math.sqrt(periods_per_year)


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest peak-to-trough fall of an equity curve, as a positive fraction of the peak.

    Args:
        equity: Equity values in time order; the first must be positive so every running peak is.

    Returns:
        ``0.0`` for a monotonically non-decreasing curve (or fewer than 2 points); ``0.25`` for a fall
        from 100 to 75. Can exceed 1 if equity goes negative.

    Raises:
        ValueError: On a non-finite value or a non-positive first value (a fraction of a
            non-positive peak means nothing).
    """
    values = _finite(equity, "equity")
    if not values:
        return 0.0
    if values[0] <= 0.0:
        raise ValueError(f"equity must start positive to measure drawdown as a fraction, got {values[0]!r}")
    peak = values[0]
    worst = 0.0
    for value in values:
        if value > peak:
            peak = value
        else:
            worst = max(worst, (peak - value) / peak)
    return worst


def hit_rate(returns: Sequence[float]) -> float:
    """Fraction of the non-zero returns that are positive.

    Flat periods (return exactly 0, e.g. no position) are neither hits nor misses.

    Returns:
        A fraction in [0, 1]; ``0.0`` when no return is non-zero.

    Raises:
        ValueError: On a non-finite value.
    """
    values = _finite(returns, "returns")
    nonzero = [v for v in values if v != 0.0]
    if not nonzero:
        return 0.0
    return sum(1 for v in nonzero if v > 0.0) / len(nonzero)


def returns_from_equity(equity: Sequence[float]) -> list[float]:
    """Simple per-period returns ``e[i] / e[i-1] - 1`` of an equity curve.

    Returns:
        One return fewer than equity points (empty for fewer than 2 points).

    Raises:
        ValueError: On a non-finite value or a zero equity value that a later return divides by.
    """
    values = _finite(equity, "equity")
    out: list[float] = []
    for index in range(1, len(values)):
        previous = values[index - 1]
        if previous == 0.0:
            raise ValueError(f"equity[{index - 1}] is zero: the return after it is undefined")
        out.append(values[index] / previous - 1.0)
    return out


def skewness(returns: Sequence[float]) -> float:
    """Population skewness ``m3 / m2**1.5``.

    Returns:
        The skewness; ``0.0`` for a series with zero variance or no observations (treated as symmetric).

    Raises:
        ValueError: On a non-finite value.
    """
    return _standardised_moment(returns, 0.0, lambda m2, m3, _: m3 / math.pow(m2, 1.5))


def kurtosis(returns: Sequence[float]) -> float:
    """Population (non-excess) kurtosis ``m4 / m2**2``; a normal distribution has 3.

    Returns:
        The kurtosis; ``3.0`` for a series with zero variance or no observations, so that formulas such
        as the probabilistic Sharpe ratio treat a degenerate series as normal instead of dividing by zero.

    Raises:
        ValueError: On a non-finite value.
    """
    return _standardised_moment(returns, 3.0, lambda m2, _, m4: m4 / (m2 * m2))


def _standardised_moment(
    returns: Sequence[float], degenerate: float, ratio: Callable[[float, float, float], float]
) -> float:
    """``ratio(m2, m3, m4)`` of the central moments, or ``degenerate`` for fewer than two values or zero variance."""
    values = _finite(returns, "returns")
    if len(values) < 2 or is_flat(values):
        return degenerate
    m2, m3, m4 = _central_moments(values)
    return degenerate if m2 == 0.0 else ratio(m2, m3, m4)
