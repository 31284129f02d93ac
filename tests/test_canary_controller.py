"""Tests for the canary controller: checks, guards, the confirmation gate, operator calls and persistence."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from nautilus_mesh.errors import ValidationError
from ops_server.canary import (
    CanaryConfig,
    CanaryController,
    CanaryEvent,
    CanaryReason,
    CanaryState,
    CheckOutcome,
    GuardSnapshot,
)
from ops_server.performance import SECONDS_PER_YEAR

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
OK = GuardSnapshot()
BLOCK = 40
DWELL = 600.0
# These tests feed one return per second and judge them as 1-second bars with a tolerance of 0.1 per bar.
PER_BAR_TOLERANCE_ANNUAL = 0.1 * math.sqrt(SECONDS_PER_YEAR)


def make_config(**overrides: object) -> CanaryConfig:
    base: dict[str, object] = {
        "bar_seconds": 1.0,
        "sharpe_tolerance_annual": PER_BAR_TOLERANCE_ANNUAL,
        "min_dwell_seconds": DWELL,
        "min_observations": BLOCK,
        "shadow_min_dwell_seconds": DWELL,
        "shadow_min_observations": BLOCK,
        "max_daily_loss": 5000.0,
        "max_risk_breaches": 3,
    }
    base.update(overrides)
    return CanaryConfig.from_dict(base)


def make_controller(**overrides: object) -> CanaryController:
    return CanaryController("trend", "momentum_v2", "momentum_v1", make_config(**overrides), T0)


class Feed:
    """Paired canary/stable returns that grow in blocks, with a clock that moves one dwell per block."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.canary: list[float] = []
        self.stable: list[float] = []
        self.now = T0

    def good(self, n: int = BLOCK) -> None:
        """The canary trades like the stable model (tiny tracking noise); both earn a clear edge."""
        for _ in range(n):
            s = self.rng.gauss(0.005, 0.01)
            self.stable.append(s)
            self.canary.append(s + self.rng.gauss(0.0, 0.0005))

    def bad(self, n: int = BLOCK) -> None:
        """The canary follows the stable model but loses 1.2% a period against it."""
        for _ in range(n):
            s = self.rng.gauss(0.005, 0.01)
            self.stable.append(s)
            self.canary.append(s - 0.012 + self.rng.gauss(0.0, 0.0005))

    def coin(self, n: int = BLOCK) -> None:
        """The canary earns the stable block's returns in reverse order: equal Sharpe, little correlation."""
        block = [self.rng.gauss(0.0, 0.01) for _ in range(n)]
        self.stable.extend(block)
        self.canary.extend(reversed(block))

    def tick(self, ctl: CanaryController, guards: GuardSnapshot = OK, seconds: float = DWELL) -> list[CanaryEvent]:
        self.now += timedelta(seconds=seconds)
        return ctl.evaluate(self.now, self.canary, self.stable, guards)

    def step(self, ctl: CanaryController, kind: Callable[[int], None] | None = None) -> list[CanaryEvent]:
        (kind or self.good)(BLOCK)
        return self.tick(ctl)


def drive_to_waiting(feed: Feed) -> CanaryController:
    """A controller on schedule [5, 50, 100] with the gate on, held at 50% in WAITING_CONFIRMATION."""
    ctl = make_controller(schedule=[5, 50, 100], require_confirmation=True)
    for _ in range(3):
        feed.step(ctl)
    assert ctl.state is CanaryState.WAITING_CONFIRMATION
    return ctl


# ------------------------------------------------------------------------------------------ the happy path


def test_evaluate_when_all_checks_pass_without_gate_steps_through_schedule_to_promoted() -> None:
    ctl = make_controller()
    feed = Feed()
    seen: list[float] = []

    for _ in range(5):
        events = feed.step(ctl)
        assert len(events) == 1
        assert events[0].reason in (CanaryReason.SHADOW_PASSED, CanaryReason.CHECK_PASSED)
        seen.append(ctl.weights()["momentum_v2"])

    assert seen == [0.05, 0.10, 0.25, 0.50, 1.0]
    assert ctl.state is CanaryState.PROMOTED
    assert ctl.weights() == {"momentum_v2": 1.0, "momentum_v1": 0.0}
    assert ctl.status().failed_checks == 0


def test_evaluate_when_new_canary_starts_in_shadow_with_zero_weight() -> None:
    ctl = make_controller()

    assert ctl.state is CanaryState.SHADOW
    assert ctl.weights() == {"momentum_v2": 0.0, "momentum_v1": 1.0}
    assert ctl.status().step_index == -1


def test_evaluate_when_dwell_not_reached_runs_no_check() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.good(BLOCK * 3)

    events = feed.tick(ctl, seconds=DWELL - 1)

    assert events == []
    assert ctl.state is CanaryState.SHADOW
    assert ctl.status().last_check is None


def test_evaluate_when_too_few_observations_runs_no_check() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.good(BLOCK - 1)

    events = feed.tick(ctl, seconds=DWELL * 10)

    assert events == []
    assert ctl.status().last_check is None


def test_evaluate_when_step_passes_compares_only_returns_since_step_start() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.step(ctl)  # shadow -> 5% on the first block

    feed.good(BLOCK + 7)
    feed.tick(ctl)

    last = ctl.status().last_check
    assert last is not None
    assert last.comparison.n == BLOCK + 7
    assert last.step_percent == 5.0
    assert ctl.step_percent == 10.0


def test_evaluate_when_check_passes_event_carries_statistics() -> None:
    ctl = make_controller()
    feed = Feed()

    (event,) = feed.step(ctl)

    assert event.from_state is CanaryState.SHADOW
    assert event.to_state is CanaryState.STEPPING
    assert (event.step_percent_before, event.step_percent_after) == (0.0, 5.0)
    assert {"diff", "se", "z", "psr", "min_trl", "n"} <= set(event.statistics)
    assert event.statistics["n"] == BLOCK
    assert event.statistics["se"] > 0


# ------------------------------------------------------------------------------------------ guards


def test_evaluate_when_drawdown_over_guard_at_step_10_rolls_back_at_once() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.step(ctl)
    feed.step(ctl)
    assert ctl.step_percent == 10.0

    # One second later, no new observations: guards do not wait for a dwell.
    events = feed.tick(ctl, GuardSnapshot(drawdown_ratio=0.15), seconds=1)

    assert [e.reason for e in events] == [CanaryReason.GUARD_DRAWDOWN]
    assert events[0].step_percent_before == 10.0
    assert ctl.state is CanaryState.ROLLED_BACK
    assert ctl.status().failed_checks == 0
    assert ctl.weights() == {"momentum_v2": 0.0, "momentum_v1": 1.0}
    assert events[0].statistics["drawdown_ratio"] == 0.15


@pytest.mark.parametrize(
    ("guards", "reason"),
    [
        (GuardSnapshot(daily_loss=5000.01), CanaryReason.GUARD_DAILY_LOSS),
        (GuardSnapshot(risk_breaches=4), CanaryReason.GUARD_RISK_BREACHES),
        (GuardSnapshot(error_rate=0.06), CanaryReason.GUARD_ERROR_RATE),
    ],
)
def test_evaluate_when_guard_exceeded_rolls_back_with_its_reason(guards: GuardSnapshot, reason: CanaryReason) -> None:
    ctl = make_controller()
    feed = Feed()
    feed.step(ctl)

    events = feed.tick(ctl, guards, seconds=1)

    assert [e.reason for e in events] == [reason]
    assert ctl.state is CanaryState.ROLLED_BACK


def test_evaluate_when_guard_exactly_at_limit_does_not_roll_back() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.step(ctl)

    events = feed.tick(ctl, GuardSnapshot(drawdown_ratio=0.10, daily_loss=5000.0, risk_breaches=3, error_rate=0.05), 1)

    assert events == []
    assert ctl.state is CanaryState.STEPPING


def test_evaluate_when_guard_disabled_ignores_that_measurement() -> None:
    ctl = make_controller(max_daily_loss=None)
    feed = Feed()

    events = feed.tick(ctl, GuardSnapshot(daily_loss=1e9), seconds=1)

    assert events == []
    assert ctl.state is CanaryState.SHADOW


def test_evaluate_when_guard_trips_in_shadow_rolls_back() -> None:
    ctl = make_controller()
    feed = Feed()

    events = feed.tick(ctl, GuardSnapshot(error_rate=0.5), seconds=1)

    assert events[0].from_state is CanaryState.SHADOW
    assert ctl.state is CanaryState.ROLLED_BACK


def test_evaluate_when_guard_trips_while_paused_rolls_back() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.step(ctl)
    ctl.pause(feed.now, "investigating fills")

    events = feed.tick(ctl, GuardSnapshot(drawdown_ratio=0.5), seconds=1)

    assert [e.reason for e in events] == [CanaryReason.GUARD_DRAWDOWN]
    assert ctl.state is CanaryState.ROLLED_BACK


def test_evaluate_when_two_guards_trip_reports_first_and_mentions_both() -> None:
    ctl = make_controller()
    feed = Feed()

    (event,) = feed.tick(ctl, GuardSnapshot(drawdown_ratio=0.2, error_rate=0.2), seconds=1)

    assert event.reason is CanaryReason.GUARD_DRAWDOWN
    assert "drawdown" in event.message
    assert "error rate" in event.message


def test_guard_snapshot_when_value_not_finite_raises_value_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        GuardSnapshot(drawdown_ratio=float("nan"))


# ------------------------------------------------------------------------------------------ confirmation gate


def test_evaluate_when_confirmation_required_holds_at_50_in_waiting() -> None:
    ctl = make_controller(require_confirmation=True)
    feed = Feed()
    for _ in range(4):
        feed.step(ctl)
    assert ctl.step_percent == 50.0

    (event,) = feed.step(ctl)
    held = [feed.step(ctl) for _ in range(3)]

    assert event.to_state is CanaryState.WAITING_CONFIRMATION
    assert event.reason is CanaryReason.CHECK_PASSED
    assert held == [[], [], []]
    assert ctl.state is CanaryState.WAITING_CONFIRMATION
    assert ctl.weights()["momentum_v2"] == 0.5


@pytest.mark.parametrize(
    ("action", "to_state", "reason", "weight"),
    [
        ("rollback", CanaryState.ROLLED_BACK, CanaryReason.MANUAL_ROLLBACK, 0.0),
        ("confirm", CanaryState.PROMOTED, CanaryReason.CONFIRMED, 1.0),
    ],
)
def test_operator_when_waiting_confirmation_rolls_back_to_0_or_confirms_to_100(
    action: str, to_state: CanaryState, reason: CanaryReason, weight: float
) -> None:
    feed = Feed()
    ctl = drive_to_waiting(feed)

    (event,) = getattr(ctl, action)(feed.now, "decided by the desk")

    assert event.from_state is CanaryState.WAITING_CONFIRMATION
    assert event.to_state is to_state and ctl.state is to_state
    assert event.reason is reason
    assert (event.step_percent_before, event.step_percent_after) == (50.0, weight * 100)
    assert ctl.weights()["momentum_v2"] == weight


def test_confirm_when_given_in_advance_lets_the_gate_pass() -> None:
    ctl = make_controller(schedule=[5, 50, 100], require_confirmation=True)
    feed = Feed()
    feed.step(ctl)

    (advance,) = ctl.confirm(feed.now, "approved ahead of the weekend")
    feed.step(ctl)
    (final,) = feed.step(ctl)

    assert advance.from_state is advance.to_state is CanaryState.STEPPING
    assert ctl.status().confirmed
    assert final.to_state is CanaryState.PROMOTED
    assert ctl.weights()["momentum_v2"] == 1.0


def test_evaluate_when_track_record_too_weak_before_100_is_inconclusive() -> None:
    # Identical zero-mean series: the comparison passes (no difference, no error) but PSR(0) is 0.5.
    ctl = make_controller(schedule=[50, 100])
    feed = Feed()
    flat_edge = [0.01, -0.01] * (BLOCK // 2)
    feed.stable.extend(flat_edge)
    feed.canary.extend(flat_edge)
    feed.tick(ctl)
    assert ctl.step_percent == 50.0

    feed.stable.extend(flat_edge)
    feed.canary.extend(flat_edge)
    (event,) = feed.tick(ctl)

    last = ctl.status().last_check
    assert last is not None
    assert last.outcome is CheckOutcome.INCONCLUSIVE
    assert event.reason is CanaryReason.CHECK_INCONCLUSIVE
    assert "track record" in event.message
    assert event.statistics["psr"] == pytest.approx(0.5)
    assert ctl.state is CanaryState.STEPPING


# ------------------------------------------------------------------------------------------ failed / inconclusive


def test_evaluate_when_checks_fail_repeatedly_rolls_back_at_threshold() -> None:
    ctl = make_controller(max_failed_checks=2)
    feed = Feed()
    feed.step(ctl)

    (first,) = feed.step(ctl, feed.bad)
    assert first.reason is CanaryReason.CHECK_FAILED
    assert ctl.state is CanaryState.STEPPING
    assert ctl.status().failed_checks == 1
    assert ctl.step_percent == 5.0

    (second,) = feed.step(ctl, feed.bad)

    assert second.reason is CanaryReason.FAILED_CHECKS
    assert second.to_state is CanaryState.ROLLED_BACK
    assert second.statistics["z"] < -1.645
    assert ctl.status().failed_checks == 2
    assert ctl.weights()["momentum_v2"] == 0.0


def test_evaluate_when_too_many_inconclusive_pauses_and_keeps_weight() -> None:
    ctl = make_controller(max_inconclusive=2)
    feed = Feed()
    feed.step(ctl)

    (first,) = feed.step(ctl, feed.coin)
    (second,) = feed.step(ctl, feed.coin)
    after_pause = feed.step(ctl)

    assert first.reason is CanaryReason.CHECK_INCONCLUSIVE
    assert second.reason is CanaryReason.INCONCLUSIVE_LIMIT
    assert second.to_state is CanaryState.PAUSED
    assert after_pause == []
    assert ctl.state is CanaryState.PAUSED
    assert ctl.weights()["momentum_v2"] == 0.05
    assert ctl.status().paused_from is CanaryState.STEPPING


def test_resume_when_paused_by_inconclusive_limit_resets_count_and_needs_fresh_dwell() -> None:
    ctl = make_controller(max_inconclusive=1)
    feed = Feed()
    feed.step(ctl)
    feed.step(ctl, feed.coin)
    assert ctl.state is CanaryState.PAUSED
    feed.good()

    (event,) = ctl.resume(feed.now, "more data is in")
    too_soon = feed.tick(ctl, seconds=DWELL - 1)

    assert event.to_state is CanaryState.STEPPING
    assert ctl.status().inconclusive_checks == 0
    assert too_soon == []


def test_evaluate_when_inconclusive_in_shadow_holds_shadow() -> None:
    ctl = make_controller()
    feed = Feed()

    (event,) = feed.step(ctl, feed.coin)

    assert event.reason is CanaryReason.CHECK_INCONCLUSIVE
    assert ctl.state is CanaryState.SHADOW
    assert ctl.status().inconclusive_checks == 1


# ------------------------------------------------------------------------------------------ operator calls


def _shadow(feed: Feed) -> CanaryController:
    return make_controller(schedule=[5, 50, 100], require_confirmation=True)


def _stepping(feed: Feed) -> CanaryController:
    ctl = _shadow(feed)
    feed.step(ctl)
    return ctl


def _paused(feed: Feed) -> CanaryController:
    ctl = _stepping(feed)
    ctl.pause(feed.now, "desk review")
    return ctl


def _paused_waiting(feed: Feed) -> CanaryController:
    ctl = drive_to_waiting(feed)
    ctl.pause(feed.now, "desk review")
    return ctl


BUILDERS: dict[str, Callable[[Feed], CanaryController]] = {
    "shadow": _shadow,
    "stepping": _stepping,
    "waiting": drive_to_waiting,
    "paused": _paused,
    "paused_waiting": _paused_waiting,
}


@pytest.mark.parametrize(
    ("where", "state", "percent"),
    [
        ("shadow", CanaryState.STEPPING, 5.0),
        ("stepping", CanaryState.STEPPING, 50.0),
        ("waiting", CanaryState.PROMOTED, 100.0),
        ("paused", CanaryState.STEPPING, 50.0),
        ("paused_waiting", CanaryState.PROMOTED, 100.0),
    ],
)
def test_promote_when_in_any_live_state_moves_one_step(where: str, state: CanaryState, percent: float) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)

    (event,) = ctl.promote(feed.now, "operator call")

    assert event.reason is CanaryReason.MANUAL_PROMOTE
    assert ctl.state is state
    assert ctl.step_percent == percent


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_promote_to_full_when_in_any_live_state_promotes(where: str) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)

    (event,) = ctl.promote(feed.now, "ship it", to_full=True)

    assert event.to_state is CanaryState.PROMOTED
    assert "ship it" in event.message
    assert ctl.weights()["momentum_v2"] == 1.0


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_rollback_when_in_any_live_state_rolls_back(where: str) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)

    (event,) = ctl.rollback(feed.now, "operator call")

    assert event.reason is CanaryReason.MANUAL_ROLLBACK
    assert ctl.state is CanaryState.ROLLED_BACK
    assert ctl.weights()["momentum_v2"] == 0.0


@pytest.mark.parametrize(("where", "percent"), [("shadow", 0.0), ("stepping", 5.0), ("waiting", 50.0)])
def test_pause_when_not_paused_pauses_at_current_weight(where: str, percent: float) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)
    before = ctl.state

    (event,) = ctl.pause(feed.now, "operator call")
    (back,) = ctl.resume(feed.now, "done")

    assert event.to_state is CanaryState.PAUSED
    assert event.step_percent_after == percent
    assert back.to_state is before
    assert ctl.step_percent == percent


@pytest.mark.parametrize("where", ["paused", "paused_waiting"])
def test_pause_when_already_paused_is_a_no_op(where: str) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)

    assert ctl.pause(feed.now, "again") == []
    assert ctl.state is CanaryState.PAUSED


@pytest.mark.parametrize("where", ["shadow", "stepping", "waiting"])
def test_resume_when_not_paused_is_a_no_op(where: str) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)
    before = ctl.state

    assert ctl.resume(feed.now, "nothing to resume") == []
    assert ctl.state is before


@pytest.mark.parametrize(
    ("where", "state"),
    [
        ("shadow", CanaryState.SHADOW),
        ("stepping", CanaryState.STEPPING),
        ("waiting", CanaryState.PROMOTED),
        ("paused", CanaryState.PAUSED),
        ("paused_waiting", CanaryState.PROMOTED),
    ],
)
def test_confirm_when_in_any_live_state_confirms(where: str, state: CanaryState) -> None:
    feed = Feed()
    ctl = BUILDERS[where](feed)

    (event,) = ctl.confirm(feed.now, "desk head")

    assert event.reason is CanaryReason.CONFIRMED
    assert ctl.state is state
    assert ctl.status().confirmed


@pytest.mark.parametrize("final", ["rollback", "promote"])
@pytest.mark.parametrize("action", ["promote", "rollback", "pause", "resume", "confirm"])
def test_operator_call_when_finished_raises_canary_finished(final: str, action: str) -> None:
    feed = Feed()
    ctl = _stepping(feed)
    if final == "rollback":
        ctl.rollback(feed.now, "done")
    else:
        ctl.promote(feed.now, "done", to_full=True)

    with pytest.raises(ValidationError) as info:
        getattr(ctl, action)(feed.now, "too late")

    assert info.value.code == "CANARY_FINISHED"
    assert info.value.details["state"] == str(ctl.state)


def test_operator_call_when_reason_blank_raises_validation_error() -> None:
    ctl = make_controller()

    with pytest.raises(ValidationError) as info:
        ctl.pause(T0, "  ")

    assert info.value.code == "CANARY_REASON_REQUIRED"
    assert ctl.state is CanaryState.SHADOW


def test_evaluate_when_finished_returns_no_events() -> None:
    ctl = make_controller()
    feed = Feed()
    ctl.rollback(T0, "bad idea")

    assert feed.step(ctl) == []
    assert feed.tick(ctl, GuardSnapshot(drawdown_ratio=0.9)) == []


# ------------------------------------------------------------------------------------------ input checks


def test_evaluate_when_series_lengths_differ_raises_value_error() -> None:
    ctl = make_controller()

    with pytest.raises(ValueError, match="equal length"):
        ctl.evaluate(T0, [0.01, 0.02], [0.01], OK)


def test_evaluate_when_series_shrinks_raises_value_error() -> None:
    ctl = make_controller()
    feed = Feed()
    feed.good(10)
    feed.tick(ctl, seconds=1)

    with pytest.raises(ValueError, match="shrank"):
        ctl.evaluate(feed.now, feed.canary[:5], feed.stable[:5], OK)


def test_controller_when_time_is_naive_raises_value_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CanaryController("trend", "a", "b", make_config(), datetime(2025, 1, 6))


def test_controller_when_canary_is_stable_model_raises_value_error() -> None:
    with pytest.raises(ValueError, match="differ"):
        CanaryController("trend", "a", "a", make_config(), T0)


# ------------------------------------------------------------------------------------------ logs and persistence


def test_transitions_when_logged_use_canary_prefix_and_percent(caplog: pytest.LogCaptureFixture) -> None:
    ctl = make_controller()
    feed = Feed()
    caplog.set_level(logging.INFO, logger="ops_server.canary")

    feed.step(ctl)
    feed.step(ctl)
    feed.step(ctl)
    ctl.pause(feed.now, "lunch")
    ctl.resume(feed.now, "back")
    ctl.rollback(feed.now, "enough")

    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("[CANARY] Model momentum_v2 promoted to 25.0%") for m in messages)
    assert any(m.startswith("[CANARY] Model momentum_v2 paused at 25.0%") for m in messages)
    assert any(m.startswith("[CANARY] Model momentum_v2 resumed at 25.0%") for m in messages)
    assert any(m.startswith("[CANARY] Model momentum_v2 rolled back") for m in messages)
    assert all(m.startswith("[CANARY] ") for m in messages)


def test_restore_when_snapshot_round_trips_through_json_continues_identically() -> None:
    ctl = make_controller(max_failed_checks=3)
    feed = Feed()
    feed.step(ctl)
    feed.step(ctl)
    feed.step(ctl, feed.bad)
    assert ctl.status().failed_checks == 1

    copy = CanaryController.restore(json.loads(json.dumps(ctl.snapshot())))

    assert copy.status() == ctl.status()
    feed.good()
    feed.now += timedelta(seconds=DWELL)
    original_events = ctl.evaluate(feed.now, feed.canary, feed.stable, OK)
    copied_events = copy.evaluate(feed.now, feed.canary, feed.stable, OK)
    assert [e.to_dict() for e in copied_events] == [e.to_dict() for e in original_events]
    assert copy.weights() == ctl.weights()


def test_restore_when_snapshot_has_infinite_statistics_round_trips() -> None:
    # A flat canary gives se = inf; JSON cannot hold inf, so the snapshot writes it as a string.
    ctl = make_controller()
    feed = Feed()
    rng = random.Random(3)
    feed.stable.extend(rng.gauss(0.0, 0.01) for _ in range(BLOCK))
    feed.canary.extend([0.0] * BLOCK)
    feed.tick(ctl)

    text = json.dumps(ctl.snapshot(), allow_nan=False)
    copy = CanaryController.restore(json.loads(text))

    last = copy.status().last_check
    assert last is not None
    assert last.comparison.se == float("inf")
    assert last.outcome is CheckOutcome.INCONCLUSIVE


def test_restore_when_snapshot_malformed_raises_snapshot_invalid() -> None:
    data = make_controller().snapshot()
    data["step_index"] = "two"

    with pytest.raises(ValidationError) as info:
        CanaryController.restore(data)

    assert info.value.code == "CANARY_SNAPSHOT_INVALID"


def test_event_to_dict_when_serialised_is_plain_json() -> None:
    ctl = make_controller()
    feed = Feed()

    (event,) = feed.step(ctl)
    data = json.loads(json.dumps(event.to_dict(), allow_nan=False))

    assert data["reason"] == "SHADOW_PASSED"
    assert data["to_state"] == "STEPPING"
    assert data["step_percent_after"] == 5.0
    assert data["model_id"] == "momentum_v2"
