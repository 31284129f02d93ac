"""The canary controller: moves a new model from shadow trading to 100% of its strategy's flow, or rolls it back.

A canary starts in SHADOW (paper-traded on the same data as the stable model, weight 0) and steps through a
schedule of live weights such as 5%, 10%, 25%, 50%, 100%. The controller is pure domain logic: the caller feeds
it the clock, the paired return series and a guard snapshot, and publishes the events and weights it returns.
The rollout policy (:class:`CanaryConfig`) and the guard measurements (:class:`GuardSnapshot`) are defined in
:mod:`ops_server.canary_config` and re-exported here; this module holds the states, checks, events and the controller.

State machine::

    SHADOW --pass--> STEPPING(5%) --pass--> ... --pass--> PROMOTED(100%)
       |                 |                    \\--pass, gate on--> WAITING_CONFIRMATION --confirm--> PROMOTED
       |                 |
       +--------+--------+-- any non-terminal state: guard trip / failed-check limit --> ROLLED_BACK
                |
                +-- inconclusive limit / operator pause --> PAUSED --resume--> (state it was paused from)

Decision rule at each check (Sharpe difference ``diff = SR_canary - SR_stable`` with its Jobson-Korkie/Memmel
standard error ``se``, both per period):

- FAILED when the canary is clearly worse: ``diff < -tolerance`` *and* ``diff / se < -z_crit``.
- PASSED when the canary is not worse than the stable model by more than the tolerance with confidence: the lower
  confidence bound ``diff - z_crit * se >= -tolerance`` (a non-inferiority test).
- INCONCLUSIVE otherwise (the sample cannot yet tell). The two rules cannot both hold.

Before the step to 100% a PASSED check must also clear the track-record gate: the canary's probabilistic Sharpe
ratio against 0 is at least ``psr_threshold`` and its live track record is at least the minimum track record length
(at ``psr_confidence``); otherwise the check is INCONCLUSIVE.

Observations: the caller passes the *full* canary and stable return series, aligned on the same timestamps, from
the controller's ``started_at`` on (index 0 is the first period after it). The series only grow. The controller
remembers how many observations it had seen when the current step began and compares only that tail, so every
step is judged on returns earned at that step's weight. Operator transitions use the count seen at the last
:meth:`CanaryController.evaluate` call.

Cadence and counting: the first check at a step waits for the dwell and the minimum observations; later checks at
the same step wait for another dwell and as many *new* observations, and each uses every return since the step
began, so a step that is inconclusive gains power over time. Failed checks count over the canary's whole life
(evidence against a model does not expire with a step); inconclusive checks count per step and restart on resume.
Operator calls bypass checks and the track-record gate; an operator promotion to 100% counts as the confirmation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from nautilus_mesh.errors import ValidationError
from ops_server.canary_config import CanaryConfig, GuardSnapshot
from ops_server.canary_stats import (
    SharpeComparison,
    describe_returns,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_difference_test,
)

__all__ = [
    "CanaryConfig",
    "CanaryController",
    "CanaryEvent",
    "CanaryReason",
    "CanaryState",
    "CanaryStatus",
    "CheckOutcome",
    "CheckResult",
    "GuardSnapshot",
]

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1

_T = TypeVar("_T")


class CanaryState(StrEnum):
    """Where a canary is in its rollout."""

    SHADOW = "SHADOW"
    STEPPING = "STEPPING"
    WAITING_CONFIRMATION = "WAITING_CONFIRMATION"
    PAUSED = "PAUSED"
    PROMOTED = "PROMOTED"
    ROLLED_BACK = "ROLLED_BACK"

    @property
    def terminal(self) -> bool:
        """True for PROMOTED and ROLLED_BACK: nothing moves the canary any more."""
        return self in (CanaryState.PROMOTED, CanaryState.ROLLED_BACK)


class CheckOutcome(StrEnum):
    """Result of one canary-versus-stable comparison."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    INCONCLUSIVE = "INCONCLUSIVE"


class CanaryReason(StrEnum):
    """Stable reason codes carried by every :class:`CanaryEvent`."""

    SHADOW_PASSED = "SHADOW_PASSED"
    CHECK_PASSED = "CHECK_PASSED"
    CHECK_FAILED = "CHECK_FAILED"
    CHECK_INCONCLUSIVE = "CHECK_INCONCLUSIVE"
    FAILED_CHECKS = "FAILED_CHECKS"
    INCONCLUSIVE_LIMIT = "INCONCLUSIVE_LIMIT"
    GUARD_DRAWDOWN = "GUARD_DRAWDOWN"
    GUARD_DAILY_LOSS = "GUARD_DAILY_LOSS"
    GUARD_RISK_BREACHES = "GUARD_RISK_BREACHES"
    GUARD_ERROR_RATE = "GUARD_ERROR_RATE"
    MANUAL_PROMOTE = "MANUAL_PROMOTE"
    MANUAL_ROLLBACK = "MANUAL_ROLLBACK"
    MANUAL_PAUSE = "MANUAL_PAUSE"
    MANUAL_RESUME = "MANUAL_RESUME"
    CONFIRMED = "CONFIRMED"


@dataclass(frozen=True)
class CheckResult:
    """One comparison of the canary against the stable model."""

    at: datetime
    """When the check ran."""
    outcome: CheckOutcome
    """The decision (after the track-record gate when it applied)."""
    step_percent: float
    """Canary weight in percent while the compared returns were earned (0 in shadow)."""
    comparison: SharpeComparison
    """Sharpe difference test on the returns since the step began."""
    psr: float
    """Probabilistic Sharpe ratio of the canary against 0 over its track record."""
    min_trl: float
    """Minimum track record length (observations) at ``psr_confidence``; ``inf`` without a positive Sharpe."""
    track_n: int
    """Observations in the canary's track record (since its first live step, or the shadow window before)."""
    note: str
    """Why the outcome was reached, in words."""

    def statistics(self) -> dict[str, float]:
        """The numbers behind the decision as a flat float mapping (diff, se, z, rho, n, psr, min_trl, ...)."""
        c = self.comparison
        return {
            "diff": c.diff,
            "se": c.se,
            "z": c.z,
            "rho": c.rho,
            "n": float(c.n),
            "sr_canary": c.sr_canary,
            "sr_stable": c.sr_stable,
            "psr": self.psr,
            "min_trl": self.min_trl,
            "track_n": float(self.track_n),
        }


@dataclass(frozen=True)
class CanaryEvent:
    """A decision of the controller: a transition, or a check that held the canary where it was."""

    at: datetime
    strategy: str
    model_id: str
    """The canary model."""
    from_state: CanaryState
    to_state: CanaryState
    step_percent_before: float
    """Canary live weight in percent before the event (0 in shadow)."""
    step_percent_after: float
    """Canary live weight in percent after the event (0 when rolled back)."""
    reason: CanaryReason
    message: str
    statistics: Mapping[str, float] = field(default_factory=dict)
    """Check statistics (diff, se, z, psr, min_trl, n, ...) when a check ran; guard values on a guard trip."""

    def to_dict(self) -> dict[str, object]:
        """JSON-able form for audit logs and event streams (non-finite numbers as strings)."""
        return {
            "at": self.at.isoformat(),
            "strategy": self.strategy,
            "model_id": self.model_id,
            "from_state": str(self.from_state),
            "to_state": str(self.to_state),
            "step_percent_before": self.step_percent_before,
            "step_percent_after": self.step_percent_after,
            "reason": str(self.reason),
            "message": self.message,
            "statistics": {k: _enc_float(v) for k, v in self.statistics.items()},
        }


@dataclass(frozen=True)
class CanaryStatus:
    """Read-only view of a controller, for status RPCs and dashboards."""

    strategy: str
    canary_model: str
    stable_model: str
    state: CanaryState
    paused_from: CanaryState | None
    """The state a PAUSED canary resumes to; None unless PAUSED."""
    step_index: int
    """Index into the schedule; -1 in shadow and after a rollback."""
    step_percent: float
    weights: dict[str, float]
    failed_checks: int
    inconclusive_checks: int
    confirmed: bool
    """An operator has confirmed the step to 100% (in advance or while waiting)."""
    started_at: datetime
    step_started_at: datetime
    last_check: CheckResult | None


class CanaryController:
    """Drives one canary model of one strategy through shadow, the step schedule and promotion or rollback.

    Args:
        strategy: The strategy whose routing weights the canary shares.
        canary_model: The new model.
        stable_model: The model it is compared with and takes flow from.
        config: The rollout policy.
        started_at: When shadow trading began (timezone-aware).

    Raises:
        ValueError: The two models are the same, or ``started_at`` is naive.
    """

    def __init__(
        self, strategy: str, canary_model: str, stable_model: str, config: CanaryConfig, started_at: datetime
    ) -> None:
        if canary_model == stable_model:
            raise ValueError(f"canary and stable model must differ, both are {canary_model!r}")
        _require_aware(started_at, "started_at")
        self.strategy = strategy
        self.canary_model = canary_model
        self.stable_model = stable_model
        self.config = config
        self._started_at = started_at
        self._state = CanaryState.SHADOW
        self._paused_from: CanaryState | None = None
        self._step_index = -1
        self._step_started_at = started_at
        self._step_start_obs = 0
        self._live_start_obs: int | None = None
        # The check clock gates the next check: it restarts at a step change, after each check and on resume.
        self._check_clock_at = started_at
        self._check_clock_obs = 0
        self._seen_obs = 0
        self._failed_checks = 0
        self._inconclusive_checks = 0
        self._confirmed = False
        self._last_check: CheckResult | None = None

    # ----------------------------------------------------------------------------------------------- queries

    @property
    def state(self) -> CanaryState:
        """The current state."""
        return self._state

    @property
    def step_percent(self) -> float:
        """The canary's live weight in percent (0 in shadow and after a rollback)."""
        if self._step_index < 0:
            return 0.0
        return self.config.schedule[self._step_index]

    def weights(self) -> dict[str, float]:
        """Routing weights of the two models; they sum to 1."""
        canary = self.step_percent / 100.0
        return {self.canary_model: canary, self.stable_model: 1.0 - canary}

    def status(self) -> CanaryStatus:
        """A snapshot view of the controller."""
        return CanaryStatus(
            strategy=self.strategy,
            canary_model=self.canary_model,
            stable_model=self.stable_model,
            state=self._state,
            paused_from=self._paused_from,
            step_index=self._step_index,
            step_percent=self.step_percent,
            weights=self.weights(),
            failed_checks=self._failed_checks,
            inconclusive_checks=self._inconclusive_checks,
            confirmed=self._confirmed,
            started_at=self._started_at,
            step_started_at=self._step_started_at,
            last_check=self._last_check,
        )

    # -------------------------------------------------------------------------------------------- evaluation

    def evaluate(
        self,
        now: datetime,
        canary_returns: Sequence[float],
        stable_returns: Sequence[float],
        guards: GuardSnapshot,
    ) -> list[CanaryEvent]:
        """Apply the hard guards, then run a check if one is due, and move the canary accordingly.

        Args:
            now: The current time (timezone-aware).
            canary_returns: All canary per-period returns since ``started_at`` (paper returns while in shadow).
            stable_returns: The stable model's returns on the same timestamps; same length.
            guards: The canary's current guard measurements.

        Returns:
            The events this call produced (empty when nothing was due or the canary is finished).

        Raises:
            ValueError: The series differ in length or are shorter than at a previous call.
        """
        _require_aware(now, "now")
        total = len(canary_returns)
        if len(stable_returns) != total:
            raise ValueError(f"paired returns must have equal length, got canary={total} stable={len(stable_returns)}")
        if total < self._seen_obs:
            raise ValueError(f"return series shrank from {self._seen_obs} to {total}; pass the full series")
        self._seen_obs = total
        if self._state.terminal:
            return []

        tripped = self._tripped_guards(guards)
        if tripped:
            reason, _ = tripped[0]
            message = "; ".join(text for _, text in tripped)
            return [self._move(now, CanaryState.ROLLED_BACK, -1, reason, message, guards.statistics())]

        if self._state in (CanaryState.PAUSED, CanaryState.WAITING_CONFIRMATION):
            return []
        if not self._check_due(now, total):
            return []

        result = self._run_check(now, canary_returns, stable_returns)
        self._last_check = result
        self._check_clock_at = now
        self._check_clock_obs = total
        return [self._apply_check(now, result)]

    def _tripped_guards(self, guards: GuardSnapshot) -> list[tuple[CanaryReason, str]]:
        cfg = self.config
        checks: list[tuple[CanaryReason, float, float | None, str]] = [
            (CanaryReason.GUARD_DRAWDOWN, guards.drawdown, cfg.max_drawdown, "drawdown {:.2%} over limit {:.2%}"),
            (CanaryReason.GUARD_DAILY_LOSS, guards.daily_loss, cfg.max_daily_loss, "daily loss {:.2f} over {:.2f} USD"),
            (
                CanaryReason.GUARD_RISK_BREACHES,
                guards.risk_breaches,
                cfg.max_risk_breaches,
                "{:g} risk breaches over {:g}",
            ),
            (
                CanaryReason.GUARD_ERROR_RATE,
                guards.error_rate,
                cfg.max_error_rate,
                "error rate {:.2%} over limit {:.2%}",
            ),
        ]
        return [
            (reason, text.format(value, limit))
            for reason, value, limit, text in checks
            if limit is not None and value > limit
        ]

    def _check_due(self, now: datetime, total: int) -> bool:
        cfg = self.config
        in_shadow = self._state is CanaryState.SHADOW
        dwell = cfg.shadow_min_dwell_seconds if in_shadow else cfg.min_dwell_seconds
        needed = cfg.shadow_min_observations if in_shadow else cfg.min_observations
        waited = (now - self._check_clock_at).total_seconds()
        return waited >= dwell and total - self._check_clock_obs >= needed

    def _run_check(self, now: datetime, canary: Sequence[float], stable: Sequence[float]) -> CheckResult:
        cfg = self.config
        start = self._step_start_obs
        comparison = sharpe_difference_test(canary[start:], stable[start:])
        # The track record is the canary's live history; before any live step only its shadow window exists.
        track_start = self._live_start_obs if self._live_start_obs is not None else start
        track = describe_returns(canary[track_start:])
        psr = probabilistic_sharpe_ratio(track.sharpe, 0.0, track.n, track.skew, track.kurtosis)
        min_trl = min_track_record_length(track.sharpe, 0.0, cfg.psr_confidence, track.skew, track.kurtosis)

        lower = comparison.lower_bound(cfg.z_crit)
        if comparison.diff < -cfg.tolerance and comparison.z < -cfg.z_crit:
            outcome = CheckOutcome.FAILED
            note = (
                f"canary clearly worse: Sharpe diff {comparison.diff:+.4f} < -{cfg.tolerance:g} "
                f"and z {comparison.z:.2f} < -{cfg.z_crit:g}"
            )
        elif lower >= -cfg.tolerance:
            outcome = CheckOutcome.PASSED
            note = f"canary not worse: lower bound {lower:+.4f} >= -{cfg.tolerance:g}"
            if self._next_index() == len(cfg.schedule) - 1 and not (psr >= cfg.psr_threshold and track.n >= min_trl):
                outcome = CheckOutcome.INCONCLUSIVE
                note = (
                    f"track record not enough for 100%: PSR {psr:.4f} (need {cfg.psr_threshold:g}), "
                    f"{track.n} observations (need {_fmt_count(min_trl)})"
                )
        else:
            outcome = CheckOutcome.INCONCLUSIVE
            note = f"cannot tell yet: lower bound {lower:+.4f} < -{cfg.tolerance:g}, z {comparison.z:.2f}"
        return CheckResult(
            at=now,
            outcome=outcome,
            step_percent=self.step_percent,
            comparison=comparison,
            psr=psr,
            min_trl=min_trl,
            track_n=track.n,
            note=note,
        )

    def _apply_check(self, now: datetime, result: CheckResult) -> CanaryEvent:
        cfg = self.config
        stats = result.statistics()
        if result.outcome is CheckOutcome.PASSED:
            nxt = self._next_index()
            reason = CanaryReason.SHADOW_PASSED if self._state is CanaryState.SHADOW else CanaryReason.CHECK_PASSED
            if nxt < len(cfg.schedule) - 1:
                return self._move(now, CanaryState.STEPPING, nxt, reason, result.note, stats)
            if cfg.require_confirmation and not self._confirmed:
                message = f"{result.note}; waiting for operator confirmation before 100%"
                return self._move(now, CanaryState.WAITING_CONFIRMATION, self._step_index, reason, message, stats)
            return self._move(now, CanaryState.PROMOTED, nxt, reason, result.note, stats)

        if result.outcome is CheckOutcome.FAILED:
            self._failed_checks += 1
            count = f"failed check {self._failed_checks}/{cfg.max_failed_checks}: {result.note}"
            if self._failed_checks >= cfg.max_failed_checks:
                return self._move(now, CanaryState.ROLLED_BACK, -1, CanaryReason.FAILED_CHECKS, count, stats)
            return self._move(now, self._state, self._step_index, CanaryReason.CHECK_FAILED, count, stats)

        self._inconclusive_checks += 1
        count = f"inconclusive check {self._inconclusive_checks}/{cfg.max_inconclusive}: {result.note}"
        if self._inconclusive_checks >= cfg.max_inconclusive:
            self._paused_from = self._state
            return self._move(now, CanaryState.PAUSED, self._step_index, CanaryReason.INCONCLUSIVE_LIMIT, count, stats)
        return self._move(now, self._state, self._step_index, CanaryReason.CHECK_INCONCLUSIVE, count, stats)

    def _next_index(self) -> int:
        return min(self._step_index + 1, len(self.config.schedule) - 1)

    # ------------------------------------------------------------------------------------------- operator

    def promote(self, now: datetime, reason: str, to_full: bool = False) -> list[CanaryEvent]:
        """Move the canary one step up (or straight to 100% with ``to_full``), skipping checks and gates.

        An operator promotion to 100% counts as the confirmation. Works in every non-terminal state.

        Raises:
            ValidationError: ``CANARY_FINISHED`` in a terminal state, ``CANARY_REASON_REQUIRED`` for a blank reason.
        """
        self._require_operable(now, "promote", reason)
        last = len(self.config.schedule) - 1
        target = last if to_full else self._next_index()
        to_state = CanaryState.PROMOTED if target == last else CanaryState.STEPPING
        self._paused_from = None
        message = f"operator promote{' to 100%' if to_full else ''}: {reason}"
        return [self._move(now, to_state, target, CanaryReason.MANUAL_PROMOTE, message)]

    def rollback(self, now: datetime, reason: str) -> list[CanaryEvent]:
        """Roll the canary back to weight 0; final.

        Raises:
            ValidationError: ``CANARY_FINISHED`` in a terminal state, ``CANARY_REASON_REQUIRED`` for a blank reason.
        """
        self._require_operable(now, "rollback", reason)
        message = f"operator rollback: {reason}"
        return [self._move(now, CanaryState.ROLLED_BACK, -1, CanaryReason.MANUAL_ROLLBACK, message)]

    def pause(self, now: datetime, reason: str) -> list[CanaryEvent]:
        """Hold the canary at its current weight; checks stop, guards still apply. No-op (no event) if paused.

        Raises:
            ValidationError: ``CANARY_FINISHED`` in a terminal state, ``CANARY_REASON_REQUIRED`` for a blank reason.
        """
        self._require_operable(now, "pause", reason)
        if self._state is CanaryState.PAUSED:
            return []
        self._paused_from = self._state
        message = f"operator pause: {reason}"
        return [self._move(now, CanaryState.PAUSED, self._step_index, CanaryReason.MANUAL_PAUSE, message)]

    def resume(self, now: datetime, reason: str) -> list[CanaryEvent]:
        """Return a paused canary to the state it was paused from. No-op (no event) unless paused.

        The inconclusive count restarts and the next check needs a fresh dwell and fresh observations.

        Raises:
            ValidationError: ``CANARY_FINISHED`` in a terminal state, ``CANARY_REASON_REQUIRED`` for a blank reason.
        """
        self._require_operable(now, "resume", reason)
        if self._state is not CanaryState.PAUSED:
            return []
        to_state = self._paused_from or CanaryState.STEPPING
        self._paused_from = None
        self._inconclusive_checks = 0
        self._check_clock_at = now
        self._check_clock_obs = self._seen_obs
        message = f"operator resume: {reason}"
        return [self._move(now, to_state, self._step_index, CanaryReason.MANUAL_RESUME, message)]

    def confirm(self, now: datetime, reason: str) -> list[CanaryEvent]:
        """Confirm the step to 100%.

        While WAITING_CONFIRMATION (or PAUSED from it) this promotes to 100% at once. In any other non-terminal
        state it records the confirmation in advance: the gate then lets the canary through when its checks reach
        it (the track-record gate still applies). A repeated advance confirmation is a no-op.

        Raises:
            ValidationError: ``CANARY_FINISHED`` in a terminal state, ``CANARY_REASON_REQUIRED`` for a blank reason.
        """
        self._require_operable(now, "confirm", reason)
        waiting = self._state is CanaryState.WAITING_CONFIRMATION or (
            self._state is CanaryState.PAUSED and self._paused_from is CanaryState.WAITING_CONFIRMATION
        )
        if waiting:
            self._confirmed = True
            self._paused_from = None
            last = len(self.config.schedule) - 1
            message = f"operator confirmed 100%: {reason}"
            return [self._move(now, CanaryState.PROMOTED, last, CanaryReason.CONFIRMED, message)]
        if self._confirmed:
            return []
        self._confirmed = True
        message = f"operator confirmed 100% in advance: {reason}"
        return [self._move(now, self._state, self._step_index, CanaryReason.CONFIRMED, message)]

    def _require_operable(self, now: datetime, action: str, reason: str) -> None:
        _require_aware(now, "now")
        if self._state.terminal:
            raise ValidationError(
                "CANARY_FINISHED",
                f"canary {self.canary_model} is {self._state}; cannot {action}",
                {"model_id": self.canary_model, "state": str(self._state), "action": action},
            )
        if not reason.strip():
            raise ValidationError(
                "CANARY_REASON_REQUIRED", f"a reason is required to {action} a canary", field="reason"
            )

    # ----------------------------------------------------------------------------------------- transitions

    def _move(
        self,
        now: datetime,
        to_state: CanaryState,
        to_index: int,
        reason: CanaryReason,
        message: str,
        statistics: Mapping[str, float] | None = None,
    ) -> CanaryEvent:
        from_state = self._state
        before = self.step_percent
        if to_index != self._step_index:
            self._step_index = to_index
            self._step_started_at = now
            self._step_start_obs = self._seen_obs
            self._check_clock_at = now
            self._check_clock_obs = self._seen_obs
            self._inconclusive_checks = 0
            if to_index >= 0 and self._live_start_obs is None:
                self._live_start_obs = self._seen_obs
        self._state = to_state
        if to_state is not CanaryState.PAUSED:
            self._paused_from = None
        event = CanaryEvent(
            at=now,
            strategy=self.strategy,
            model_id=self.canary_model,
            from_state=from_state,
            to_state=to_state,
            step_percent_before=before,
            step_percent_after=self.step_percent,
            reason=reason,
            message=message,
            statistics=dict(statistics or {}),
        )
        self._log(event)
        return event

    def _log(self, event: CanaryEvent) -> None:
        model, pct, why = self.canary_model, event.step_percent_after, f"{event.reason}: {event.message}"
        if event.to_state is CanaryState.ROLLED_BACK:
            log.warning("[CANARY] Model %s rolled back from %.1f%% (%s)", model, event.step_percent_before, why)
        elif event.step_percent_after > event.step_percent_before:
            log.info("[CANARY] Model %s promoted to %.1f%% (%s)", model, pct, why)
        elif event.to_state is CanaryState.PAUSED and event.from_state is not CanaryState.PAUSED:
            log.info("[CANARY] Model %s paused at %.1f%% (%s)", model, pct, why)
        elif event.reason is CanaryReason.MANUAL_RESUME:
            log.info("[CANARY] Model %s resumed at %.1f%% (%s)", model, pct, why)
        elif event.to_state is CanaryState.WAITING_CONFIRMATION:
            log.info("[CANARY] Model %s waiting for confirmation at %.1f%% (%s)", model, pct, why)
        elif event.reason is CanaryReason.CONFIRMED:
            log.info("[CANARY] Model %s confirmation for 100%% recorded at %.1f%% (%s)", model, pct, why)
        elif event.reason is CanaryReason.CHECK_FAILED:
            log.warning("[CANARY] Model %s held at %.1f%% (%s)", model, pct, why)
        else:
            log.info("[CANARY] Model %s held at %.1f%% (%s)", model, pct, why)

    # ----------------------------------------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, object]:
        """The full controller state as a JSON-able dict (non-finite numbers as strings).

        The config travels with the state: a running canary keeps the policy it started with.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "strategy": self.strategy,
            "canary_model": self.canary_model,
            "stable_model": self.stable_model,
            "config": self.config.to_dict(),
            "state": str(self._state),
            "paused_from": None if self._paused_from is None else str(self._paused_from),
            "step_index": self._step_index,
            "started_at": self._started_at.isoformat(),
            "step_started_at": self._step_started_at.isoformat(),
            "step_start_obs": self._step_start_obs,
            "live_start_obs": self._live_start_obs,
            "check_clock_at": self._check_clock_at.isoformat(),
            "check_clock_obs": self._check_clock_obs,
            "seen_obs": self._seen_obs,
            "failed_checks": self._failed_checks,
            "inconclusive_checks": self._inconclusive_checks,
            "confirmed": self._confirmed,
            "last_check": None if self._last_check is None else _check_to_dict(self._last_check),
        }

    @classmethod
    def restore(cls, data: Mapping[str, object]) -> CanaryController:
        """Rebuild a controller from :meth:`snapshot` output.

        Raises:
            ValidationError: ``CANARY_SNAPSHOT_INVALID`` when the dict is malformed or from another version.
            ConfigError: The embedded config is invalid.
        """
        try:
            if data.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
            config_data = data["config"]
            if not isinstance(config_data, Mapping):
                raise TypeError("config must be a mapping")
            config = CanaryConfig.from_dict(config_data)
            ctl = cls(
                _get(data, "strategy", str),
                _get(data, "canary_model", str),
                _get(data, "stable_model", str),
                config,
                _get_dt(data, "started_at"),
            )
            ctl._state = CanaryState(_get(data, "state", str))
            paused_from = data.get("paused_from")
            ctl._paused_from = None if paused_from is None else CanaryState(str(paused_from))
            ctl._step_index = _get(data, "step_index", int)
            if not -1 <= ctl._step_index < len(config.schedule):
                raise ValueError(f"step_index {ctl._step_index} outside the schedule")
            ctl._step_started_at = _get_dt(data, "step_started_at")
            ctl._step_start_obs = _get(data, "step_start_obs", int)
            live_start = data.get("live_start_obs")
            ctl._live_start_obs = None if live_start is None else _get(data, "live_start_obs", int)
            ctl._check_clock_at = _get_dt(data, "check_clock_at")
            ctl._check_clock_obs = _get(data, "check_clock_obs", int)
            ctl._seen_obs = _get(data, "seen_obs", int)
            ctl._failed_checks = _get(data, "failed_checks", int)
            ctl._inconclusive_checks = _get(data, "inconclusive_checks", int)
            ctl._confirmed = _get(data, "confirmed", bool)
            last = data.get("last_check")
            ctl._last_check = None if last is None else _check_from_dict(last)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("CANARY_SNAPSHOT_INVALID", f"invalid canary snapshot: {exc}") from exc
        return ctl


# ------------------------------------------------------------------------------------------------- helpers


def _require_aware(moment: datetime, name: str) -> None:
    # Naive and aware datetimes cannot be subtracted; demanding aware ones keeps snapshots unambiguous too.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


def _fmt_count(value: float) -> str:
    return "inf" if math.isinf(value) else str(math.ceil(value))


def _enc_float(value: float) -> float | str:
    # JSON has no inf/nan; strings round-trip through float().
    return value if math.isfinite(value) else str(value)


def _dec_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _get(data: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = data[key]
    # bool passes isinstance(..., int); a persisted true is never a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _get_dt(data: Mapping[str, object], key: str) -> datetime:
    moment = datetime.fromisoformat(_get(data, key, str))
    _require_aware(moment, key)
    return moment


def _check_to_dict(check: CheckResult) -> dict[str, object]:
    c = check.comparison
    return {
        "at": check.at.isoformat(),
        "outcome": str(check.outcome),
        "step_percent": check.step_percent,
        "diff": _enc_float(c.diff),
        "se": _enc_float(c.se),
        "z": _enc_float(c.z),
        "rho": _enc_float(c.rho),
        "n": c.n,
        "sr_canary": _enc_float(c.sr_canary),
        "sr_stable": _enc_float(c.sr_stable),
        "psr": _enc_float(check.psr),
        "min_trl": _enc_float(check.min_trl),
        "track_n": check.track_n,
        "note": check.note,
    }


def _check_from_dict(raw: object) -> CheckResult:
    if not isinstance(raw, Mapping):
        raise TypeError("last_check must be a mapping")
    comparison = SharpeComparison(
        diff=_dec_float(raw["diff"]),
        se=_dec_float(raw["se"]),
        z=_dec_float(raw["z"]),
        rho=_dec_float(raw["rho"]),
        n=_get(raw, "n", int),
        sr_canary=_dec_float(raw["sr_canary"]),
        sr_stable=_dec_float(raw["sr_stable"]),
    )
    return CheckResult(
        at=_get_dt(raw, "at"),
        outcome=CheckOutcome(_get(raw, "outcome", str)),
        step_percent=_dec_float(raw["step_percent"]),
        comparison=comparison,
        psr=_dec_float(raw["psr"]),
        min_trl=_dec_float(raw["min_trl"]),
        track_n=_get(raw, "track_n", int),
        note=_get(raw, "note", str),
    )
