"""Canary return series live in bounded memory: samples no check reads are dropped, the statistics stay exact."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from ops_server.canary import CanaryConfig, CanaryController, CanaryState, GuardSnapshot
from ops_server.canary.manager import CanaryRun
from ops_server.canary.return_window import ReturnWindow
from ops_server.performance import SECONDS_PER_YEAR

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
SIGMA = 1e-4


def test_window_when_sliced_by_absolute_index_returns_the_held_tail() -> None:
    window = ReturnWindow(limit=1000)
    window.extend(float(i) for i in range(50))
    window.forget_before(20)

    assert len(window) == 50 and window.oldest == 20
    assert window[30:] == [float(i) for i in range(30, 50)]
    assert window[5:] == [float(i) for i in range(20, 50)]  # from the oldest held sample
    assert window[25:27] == [25.0, 26.0] and window[-1] == 49.0 and window[20] == 20.0
    with pytest.raises(IndexError):
        window[19]


def test_window_when_past_its_limit_reads_only_the_last_limit_samples_and_holds_at_most_a_tenth_more() -> None:
    window = ReturnWindow(limit=100)
    for i in range(10_000):
        window.append(float(i))
        assert len(window._values) <= 110

    assert len(window) == 10_000 and window.oldest == 9_900
    assert window[0:] == [float(i) for i in range(9_900, 10_000)]
    assert window.held == window[0:]


def test_window_when_restored_from_its_saved_form_reads_the_same() -> None:
    window = ReturnWindow(limit=100)
    window.extend(float(i) for i in range(345))
    restored = ReturnWindow(window.held, window.oldest, limit=100)

    assert len(restored) == len(window) and restored[0:] == window[0:] and restored[300:] == window[300:]


def _mean(sharpe_annual: float, sample: float) -> float:
    return sharpe_annual * SIGMA * math.sqrt(sample) / math.sqrt(SECONDS_PER_YEAR / sample)


def test_canary_run_when_unread_samples_are_dropped_judges_exactly_as_with_the_full_series() -> None:
    """A canary walked through shadow, steps and promotion twice: once with the full lists, once with bounded
    windows trimmed after every evaluation. Every event and every statistic is the same."""
    rng = random.Random(5)
    sample = 10.0
    full = CanaryController("trend", "v2", "v1", CanaryConfig(), T0, sample_seconds=sample, trials=2)
    bounded = CanaryRun(CanaryController("trend", "v2", "v1", CanaryConfig(), T0, sample_seconds=sample, trials=2))
    canary: list[float] = []
    stable: list[float] = []
    edge = _mean(120.0, sample)
    now = T0
    events = 0
    while full.state is not CanaryState.PROMOTED and now < T0 + timedelta(days=2):
        for _ in range(180):
            common = rng.gauss(_mean(2.0, sample), SIGMA * math.sqrt(sample))
            c = common + edge + rng.gauss(0.0, 0.1 * SIGMA * math.sqrt(sample))
            stable.append(common)
            canary.append(c)
            bounded.stable_returns.append(common)
            bounded.canary_returns.append(c)
        now += timedelta(minutes=30)
        expected = full.evaluate(now, canary, stable, GuardSnapshot())
        got = bounded.controller.evaluate(now, bounded.canary_returns, bounded.stable_returns, GuardSnapshot())
        bounded.forget_unread()
        assert [(e.reason, e.to_state, e.statistics) for e in got] == [
            (e.reason, e.to_state, e.statistics) for e in expected
        ]
        events += len(got)
    assert full.state is CanaryState.PROMOTED and bounded.controller.state is CanaryState.PROMOTED
    assert events >= 5
    # Only the live track record is held, not the shadow phase before it.
    assert bounded.canary_returns.oldest > 0 and len(bounded.canary_returns.held) < len(canary)
