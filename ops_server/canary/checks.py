"""One canary check: the statistics on the paired bars and the outcome they give.

:func:`run_check` sums the sampled returns into bars, runs the Sharpe difference test on the current step's bars and
the PSR, DSR and minimum track record length on the canary's track record, converts the config's annualised
thresholds to the bar, and applies the decision rule described in :mod:`ops_server.canary.controller`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ops_server.canary.config import CanaryConfig
from ops_server.canary.events import CheckOutcome, CheckResult, fmt_count
from ops_server.canary.stats import (
    deflated_sharpe_ratio,
    describe_returns,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_difference_test,
)
from ops_server.performance import aggregate_returns, annual_to_bar_sharpe

__all__ = ["CheckInputs", "run_check"]


@dataclass(frozen=True)
class CheckInputs:
    """What one check judges."""

    at: datetime
    """When the check runs."""
    step_percent: float
    """The canary's live weight in percent while the compared returns were earned."""
    canary: Sequence[float]
    """Every canary return since the canary started, one per sample."""
    stable: Sequence[float]
    """The stable model's returns on the same samples."""
    step_start: int
    """Index of the current step's first sample: the comparison uses the samples from here."""
    track_start: int
    """Index of the track record's first sample (the first live step, or the step start before it)."""
    samples_per_bar: int
    """Samples summed into one bar (count)."""
    bar_seconds: float
    """The bar's length, seconds."""
    trials: int
    """Strategy versions tried: the deflated Sharpe ratio's number of trials (count)."""
    gate_applies: bool
    """True when a pass would take the canary to 100%, so the PSR/DSR/MinTRL gate applies."""


def run_check(cfg: CanaryConfig, inputs: CheckInputs) -> CheckResult:
    """Compare the canary with the stable model on the current step's bars and decide PASSED/FAILED/INCONCLUSIVE."""
    k, bar, start = inputs.samples_per_bar, inputs.bar_seconds, inputs.step_start
    comparison = sharpe_difference_test(
        aggregate_returns(inputs.canary[start:], k), aggregate_returns(inputs.stable[start:], k)
    )
    track = describe_returns(aggregate_returns(inputs.canary[inputs.track_start :], k))
    benchmark = annual_to_bar_sharpe(cfg.psr_benchmark_sharpe_annual, bar)
    psr = probabilistic_sharpe_ratio(track.sharpe, benchmark, track.n, track.skew, track.kurtosis)
    dsr = deflated_sharpe_ratio(track.sharpe, track.n, inputs.trials, track.skew, track.kurtosis, benchmark)
    min_trl = min_track_record_length(track.sharpe, benchmark, cfg.psr_confidence, track.skew, track.kurtosis)
    tolerance = annual_to_bar_sharpe(cfg.sharpe_tolerance_annual, bar)
    scale = 1.0 / annual_to_bar_sharpe(1.0, bar)  # per bar -> annual
    annual_tol = cfg.sharpe_tolerance_annual

    lower = comparison.lower_bound(cfg.z_crit)
    if comparison.diff < -tolerance and comparison.z < -cfg.z_crit:
        outcome = CheckOutcome.FAILED
        note = (
            f"canary clearly worse: annual Sharpe diff {comparison.diff * scale:+.3f} < -{annual_tol:g} "
            f"and z {comparison.z:.2f} < -{cfg.z_crit:g}"
        )
    elif lower >= -tolerance:
        outcome = CheckOutcome.PASSED
        note = f"canary not worse: lower bound {lower * scale:+.3f}/yr >= -{annual_tol:g}/yr"
        gate_open = psr >= cfg.psr_threshold and dsr >= cfg.psr_threshold and track.n >= min_trl
        if inputs.gate_applies and not gate_open:
            outcome = CheckOutcome.INCONCLUSIVE
            note = (
                f"track record not enough for 100%: PSR {psr:.4f}, DSR {dsr:.4f} over {inputs.trials} trials "
                f"(need {cfg.psr_threshold:g}), {track.n} bars of {bar:g}s (need {fmt_count(min_trl)})"
            )
    else:
        outcome = CheckOutcome.INCONCLUSIVE
        note = f"cannot tell yet: lower bound {lower * scale:+.3f}/yr < -{annual_tol:g}/yr, z {comparison.z:.2f}"
    return CheckResult(
        at=inputs.at,
        outcome=outcome,
        step_percent=inputs.step_percent,
        comparison=comparison,
        psr=psr,
        min_trl=min_trl,
        track_n=track.n,
        note=note,
        dsr=dsr,
        bar_seconds=bar,
    )
