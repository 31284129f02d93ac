"""The canary controller: moves a new model from shadow trading to 100% of its strategy's flow, or rolls it back.

A canary starts in SHADOW (paper-traded on the same data as the stable model, weight 0) and steps through a
schedule of live weights such as 5%, 10%, 25%, 50%, 100%. The controller is pure domain logic: the caller feeds
it the clock, the paired return series and a guard snapshot (:mod:`ops_server.canary.guards`), and publishes the
events and weights it returns; the rollout policy is :class:`CanaryConfig` (:mod:`ops_server.canary.config`).

State machine::

    SHADOW --pass--> STEPPING(5%) --pass--> ... --pass--> PROMOTED(100%)
       |                 |                    \\--pass, gate on--> WAITING_CONFIRMATION --confirm--> PROMOTED
       |                 |
       +--------+--------+-- any non-terminal state: guard trip / failed-check limit --> ROLLED_BACK
                |
                +-- inconclusive limit / operator pause --> PAUSED --resume--> (state it was paused from)

Units: returns sampled every ``sample_seconds`` are summed into bars of ``config.bar_seconds`` (from the step's first
return); annualised thresholds are divided by ``sqrt(bars per year)`` per bar (``tol``, ``SR*``); counts are bars.

Decision rule at each check (Sharpe difference ``diff = SR_canary - SR_stable`` per bar, with its
Jobson-Korkie/Memmel standard error ``se``):

- FAILED when the canary is clearly worse: ``diff < -tol`` *and* ``diff / se < -z_crit``.
- PASSED when the canary is not worse than the stable model by more than the tolerance with confidence: the lower
  confidence bound ``diff - z_crit * se >= -tol`` (a non-inferiority test).
- INCONCLUSIVE otherwise (the sample cannot yet tell). The two rules cannot both hold.

Before the step to 100% a PASSED check must also clear the track-record gate: the canary's probabilistic Sharpe
ratio against ``SR*`` and its deflated Sharpe ratio (``trials`` = the strategy's models in the registry) are at least
``psr_threshold``, and its live track record is at least the minimum track record length (at ``psr_confidence``);
otherwise the check is INCONCLUSIVE.

Observations: the caller passes the *full* canary and stable return series, aligned on the same timestamps, from
the controller's ``started_at`` on (index 0 is the first period after it); they only grow. The controller remembers
how many observations it had seen when the current step began and compares only that tail, so every step is judged
on returns earned at that step's weight. Operator transitions use the count seen at the last ``evaluate`` call.

Cadence and counting: the first check at a step waits for the dwell and the minimum observations; later checks at
the same step wait for another dwell and as many *new* observations, and each uses every return since the step
began, so an inconclusive step gains power over time. Failed checks count over the canary's whole life (evidence
against a model does not expire with a step); inconclusive checks count per step and restart on resume. Operator
calls bypass checks and the track-record gate; an operator promotion to 100% counts as the confirmation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from nautilus_mesh.errors import ValidationError
from ops_server.canary.checks import CheckInputs, run_check
from ops_server.canary.config import CanaryConfig
from ops_server.canary.events import (
    CanaryEvent,
    CanaryReason,
    CanaryState,
    CanaryStatus,
    CheckOutcome,
    CheckResult,
    check_from_dict,
    check_to_dict,
    get_datetime,
    get_typed,
    log_event,
    require_aware,
)
from ops_server.canary.guards import GuardSnapshot, tripped_guards
from ops_server.performance import samples_per_bar

__all__ = ["CanaryController"]

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class CanaryController:
    """Drives one canary model of one strategy through shadow, the step schedule and promotion or rollback.

    Args:
        strategy: The strategy whose routing weights the canary shares.
        canary_model: The new model.
        stable_model: The model it is compared with and takes flow from.
        config: The rollout policy.
        started_at: When shadow trading began (timezone-aware).
        sample_seconds: Interval between two returns of the series passed to :meth:`evaluate`, seconds.
        trials: Strategy versions tried so far (the deflated Sharpe ratio's number of trials), at least 1.

    Raises:
        ValueError: The two models are the same, ``started_at`` is naive, or ``sample_seconds``/``trials`` out of
            range.
    """

    def __init__(
        self,
        strategy: str,
        canary_model: str,
        stable_model: str,
        config: CanaryConfig,
        started_at: datetime,
        *,
        sample_seconds: float = 1.0,
        trials: int = 1,
    ) -> None:
        if canary_model == stable_model:
            raise ValueError(f"canary and stable model must differ, both are {canary_model!r}")
        require_aware(started_at, "started_at")
        if trials < 1:
            raise ValueError(f"trials must be at least 1, got {trials}")
        self.sample_seconds = sample_seconds
        self.samples_per_bar = samples_per_bar(config.bar_seconds, sample_seconds)
        self.bar_seconds = self.samples_per_bar * sample_seconds
        """The effective bar, seconds: a whole number of samples."""
        self.trials = trials
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
            trials=self.trials,
        )

    # -------------------------------------------------------------------------------------------- evaluation

    def evaluate(
        self,
        now: datetime,
        canary_returns: Sequence[float],
        stable_returns: Sequence[float],
        guards: GuardSnapshot,
        *,
        checks: bool = True,
    ) -> list[CanaryEvent]:
        """Apply the hard guards, then run a check if one is due, and move the canary accordingly.

        Args:
            now: The current time (timezone-aware).
            canary_returns: All canary per-period returns since ``started_at`` (paper returns while in shadow).
            stable_returns: The stable model's returns on the same timestamps; same length.
            guards: The canary's current guard measurements.
            checks: False applies the guards only (a canary held in SHADOW until its backtest report passes).

        Returns:
            The events this call produced (empty when nothing was due or the canary is finished).

        Raises:
            ValueError: The series differ in length or are shorter than at a previous call.
        """
        require_aware(now, "now")
        total = len(canary_returns)
        if len(stable_returns) != total:
            raise ValueError(f"paired returns must have equal length, got canary={total} stable={len(stable_returns)}")
        if total < self._seen_obs:
            raise ValueError(f"return series shrank from {self._seen_obs} to {total}; pass the full series")
        self._seen_obs = total
        if self._state.terminal:
            return []

        tripped = tripped_guards(guards, self.config)
        if tripped:
            reason, _ = tripped[0]
            message = "; ".join(text for _, text in tripped)
            return [self._move(now, CanaryState.ROLLED_BACK, -1, reason, message, guards.statistics())]

        if not checks or self._state in (CanaryState.PAUSED, CanaryState.WAITING_CONFIRMATION):
            return []
        if not self._check_due(now, total):
            return []

        result = self._run_check(now, canary_returns, stable_returns)
        self._last_check = result
        self._check_clock_at = now
        self._check_clock_obs = total
        return [self._apply_check(now, result)]

    def _check_due(self, now: datetime, total: int) -> bool:
        cfg = self.config
        in_shadow = self._state is CanaryState.SHADOW
        dwell = cfg.shadow_min_dwell_seconds if in_shadow else cfg.min_dwell_seconds
        needed = cfg.shadow_min_observations if in_shadow else cfg.min_observations
        waited = (now - self._check_clock_at).total_seconds()
        return waited >= dwell and total - self._check_clock_obs >= needed * self.samples_per_bar

    def _run_check(self, now: datetime, canary: Sequence[float], stable: Sequence[float]) -> CheckResult:
        # The track record is the canary's live history; before any live step only its shadow window exists.
        start = self._step_start_obs
        track_start = self._live_start_obs if self._live_start_obs is not None else start
        return run_check(
            self.config,
            CheckInputs(
                at=now,
                step_percent=self.step_percent,
                canary=canary,
                stable=stable,
                step_start=start,
                track_start=track_start,
                samples_per_bar=self.samples_per_bar,
                bar_seconds=self.bar_seconds,
                trials=self.trials,
                gate_applies=self._next_index() == len(self.config.schedule) - 1,
            ),
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
        require_aware(now, "now")
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
        log_event(event)
        return event

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
            "sample_seconds": self.sample_seconds,
            "trials": self.trials,
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
            "last_check": None if self._last_check is None else check_to_dict(self._last_check),
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
                get_typed(data, "strategy", str),
                get_typed(data, "canary_model", str),
                get_typed(data, "stable_model", str),
                config,
                get_datetime(data, "started_at"),
                sample_seconds=float(get_typed(data, "sample_seconds", float)) if "sample_seconds" in data else 1.0,
                trials=get_typed(data, "trials", int) if "trials" in data else 1,
            )
            ctl._state = CanaryState(get_typed(data, "state", str))
            paused_from = data.get("paused_from")
            ctl._paused_from = None if paused_from is None else CanaryState(str(paused_from))
            ctl._step_index = get_typed(data, "step_index", int)
            if not -1 <= ctl._step_index < len(config.schedule):
                raise ValueError(f"step_index {ctl._step_index} outside the schedule")
            ctl._step_started_at = get_datetime(data, "step_started_at")
            ctl._step_start_obs = get_typed(data, "step_start_obs", int)
            live_start = data.get("live_start_obs")
            ctl._live_start_obs = None if live_start is None else get_typed(data, "live_start_obs", int)
            ctl._check_clock_at = get_datetime(data, "check_clock_at")
            ctl._check_clock_obs = get_typed(data, "check_clock_obs", int)
            ctl._seen_obs = get_typed(data, "seen_obs", int)
            ctl._failed_checks = get_typed(data, "failed_checks", int)
            ctl._inconclusive_checks = get_typed(data, "inconclusive_checks", int)
            ctl._confirmed = get_typed(data, "confirmed", bool)
            last = data.get("last_check")
            ctl._last_check = None if last is None else check_from_dict(last)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("CANARY_SNAPSHOT_INVALID", f"invalid canary snapshot: {exc}") from exc
        return ctl
