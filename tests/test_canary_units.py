"""The canary judges annualised Sharpe ratios on aggregated bars, so its verdicts hold at any sampling rate."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nautilus_mesh.errors import ConfigError
from ops_server.canary import (
    CanaryConfig,
    CanaryController,
    CanaryReason,
    CanaryState,
    CheckOutcome,
    GuardSnapshot,
)
from ops_server.canary.config import CanaryBlock
from ops_server.performance import SECONDS_PER_YEAR

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
SIGMA = 1e-4  # per-second return volatility; Sharpe ratios do not depend on it


def per_sample_mean(sharpe_annual: float, sample_seconds: float) -> float:
    return sharpe_annual * SIGMA / math.sqrt(SECONDS_PER_YEAR / sample_seconds)


def test_check_when_canary_at_annual_sharpe_minus_100_against_plus_2_fails_its_first_check() -> None:
    rng = random.Random(11)
    n = 86_400  # one day of 1-second samples
    stable = [rng.gauss(per_sample_mean(2.0, 1.0), SIGMA) for _ in range(n)]
    canary = [rng.gauss(per_sample_mean(-100.0, 1.0), SIGMA) for _ in range(n)]
    ctl = CanaryController("trend", "v2", "v1", CanaryConfig(), T0, sample_seconds=1.0)

    (event,) = ctl.evaluate(T0 + timedelta(days=1), canary, stable, GuardSnapshot())

    check = ctl.status().last_check
    assert check is not None and check.outcome is CheckOutcome.FAILED
    assert event.reason is CanaryReason.CHECK_FAILED and ctl.step_percent == 0.0
    assert check.bar_seconds == 60.0 and check.comparison.n == 1440  # one-minute bars
    assert event.statistics["diff_annual"] < -50


@pytest.mark.parametrize(("seed", "stable_sharpe"), [(1, 2.0), (2, -3.0), (3, 0.0)])
def test_check_when_canary_identical_to_stable_never_fails(seed: int, stable_sharpe: float) -> None:
    rng = random.Random(seed)
    ctl = CanaryController("trend", "v2", "v1", CanaryConfig(), T0, sample_seconds=1.0)
    series: list[float] = []
    now = T0
    outcomes = []
    for _ in range(12):
        series.extend(rng.gauss(per_sample_mean(stable_sharpe, 1.0), SIGMA) for _ in range(3600))
        now += timedelta(hours=1)
        for event in ctl.evaluate(now, series, series, GuardSnapshot()):
            outcomes.append(event.reason)
    assert CanaryReason.CHECK_FAILED not in outcomes and CanaryReason.FAILED_CHECKS not in outcomes
    assert ctl.state is not CanaryState.ROLLED_BACK and ctl.status().failed_checks == 0


def test_canary_when_clearly_better_in_demo_market_reaches_100_percent_in_bounded_simulated_time() -> None:
    """Stable at annual Sharpe 2, the canary the same trades plus an edge (annual Sharpe about 120), both sampled
    every 10 s, judged by the default policy (one-hour dwell, one-minute bars, PSR/DSR gate before 100%)."""
    rng = random.Random(5)
    sample = 10.0
    ctl = CanaryController("trend", "v2", "v1", CanaryConfig(), T0, sample_seconds=sample, trials=2)
    canary: list[float] = []
    stable: list[float] = []
    edge = per_sample_mean(120.0, sample) * math.sqrt(sample)
    now = T0
    step = timedelta(minutes=30)
    while ctl.state is not CanaryState.PROMOTED and now < T0 + timedelta(days=2):
        for _ in range(int(step.total_seconds() / sample)):
            common = rng.gauss(per_sample_mean(2.0, sample) * math.sqrt(sample), SIGMA * math.sqrt(sample))
            stable.append(common)
            canary.append(common + edge + rng.gauss(0.0, 0.1 * SIGMA * math.sqrt(sample)))
        now += step
        ctl.evaluate(now, canary, stable, GuardSnapshot())
        assert ctl.state not in (CanaryState.ROLLED_BACK, CanaryState.PAUSED)
    assert ctl.state is CanaryState.PROMOTED
    assert now - T0 <= timedelta(days=2)
    check = ctl.status().last_check
    assert check is not None and check.dsr >= 0.95 and check.psr >= 0.95


def test_config_when_old_per_sample_tolerance_given_is_refused_with_the_new_name() -> None:
    with pytest.raises(ConfigError, match="sharpe_tolerance_annual"):
        CanaryConfig.from_dict({"tolerance": 0.1})


def demo_canary_config() -> CanaryConfig:
    registry = json.loads((Path(__file__).resolve().parent.parent / "config/demo/registry.json").read_text())
    return CanaryBlock.from_dict(registry["strategies"]["momentum"]["canary"]).config()


def test_demo_canary_when_one_bar_short_of_its_minimum_does_not_step() -> None:
    cfg = demo_canary_config()
    # The demo asks for real evidence: 30 bars in shadow and at every live step before a check.
    assert cfg.shadow_min_observations >= 30 and cfg.min_observations >= 30 and cfg.bar_seconds == 1
    ctl = CanaryController("momentum", "momentum_v2", "momentum_v1", cfg, T0, sample_seconds=1.0)
    rng = random.Random(3)
    stable = [rng.gauss(0.0, SIGMA) for _ in range(200)]
    canary = [s + abs(rng.gauss(0.0, SIGMA)) for s in stable]  # better at every sample: it passes once judged
    late = T0 + timedelta(seconds=10 * cfg.shadow_min_dwell_seconds)  # dwell is not what holds it
    shadow = cfg.shadow_min_observations

    assert ctl.evaluate(late, canary[: shadow - 1], stable[: shadow - 1], GuardSnapshot()) == []
    assert ctl.state is CanaryState.SHADOW and ctl.status().last_check is None
    (event,) = ctl.evaluate(late, canary[:shadow], stable[:shadow], GuardSnapshot())
    assert event.reason is CanaryReason.SHADOW_PASSED and ctl.step_percent == cfg.schedule[0]

    # At a live step too: no check until min_observations new bars.
    later = late + timedelta(seconds=10 * cfg.min_dwell_seconds)
    n = shadow + cfg.min_observations
    assert ctl.evaluate(later, canary[: n - 1], stable[: n - 1], GuardSnapshot()) == []
    assert ctl.step_percent == cfg.schedule[0]
    (event,) = ctl.evaluate(later, canary[:n], stable[:n], GuardSnapshot())
    assert event.reason is CanaryReason.CHECK_PASSED and ctl.step_percent == cfg.schedule[1]
