"""The canary's vocabulary: states, check outcomes, reasons, check results, events and the status view.

Also the JSON forms these take in snapshots and audit records (non-finite numbers as strings, aware datetimes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from ops_server.canary.stats import SharpeComparison
from ops_server.performance import SECONDS_PER_YEAR

__all__ = [
    "CanaryEvent",
    "CanaryReason",
    "CanaryState",
    "CanaryStatus",
    "CheckOutcome",
    "CheckResult",
]

log = logging.getLogger(__name__)

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
    """Minimum track record length (bars) at ``psr_confidence``; ``inf`` without a Sharpe above the benchmark."""
    track_n: int
    """Bars in the canary's track record (since its first live step, or the shadow window before)."""
    note: str
    """Why the outcome was reached, in words."""
    dsr: float = 0.0
    """Deflated Sharpe ratio of the canary over its track record (probability; the PSR when one trial)."""
    bar_seconds: float = 0.0
    """Length of the bars the statistics ran on, seconds (0 in records written before bars existed)."""

    def annual(self, sharpe_per_bar: float) -> float:
        """A per-bar Sharpe figure of this check expressed per year (unchanged when ``bar_seconds`` is 0)."""
        if self.bar_seconds <= 0:
            return sharpe_per_bar
        return sharpe_per_bar * math.sqrt(SECONDS_PER_YEAR / self.bar_seconds)

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
            "dsr": self.dsr,
            "min_trl": self.min_trl,
            "track_n": float(self.track_n),
            "bar_seconds": self.bar_seconds,
            "diff_annual": self.annual(c.diff),
            "sr_canary_annual": self.annual(c.sr_canary),
            "sr_stable_annual": self.annual(c.sr_stable),
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
            "statistics": {k: enc_float(v) for k, v in self.statistics.items()},
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
    trials: int = 1
    """Strategy versions tried: the number of trials of the deflated Sharpe ratio (count)."""


# ------------------------------------------------------------------------------------------- JSON forms


def require_aware(moment: datetime, name: str) -> None:
    # Naive and aware datetimes cannot be subtracted; demanding aware ones keeps snapshots unambiguous too.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


def fmt_count(value: float) -> str:
    return "inf" if math.isinf(value) else str(math.ceil(value))


def enc_float(value: float) -> float | str:
    # JSON has no inf/nan; strings round-trip through float().
    return value if math.isfinite(value) else str(value)


def dec_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def get_typed(data: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = data[key]
    # bool passes isinstance(..., int); a persisted true is never a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def get_datetime(data: Mapping[str, object], key: str) -> datetime:
    moment = datetime.fromisoformat(get_typed(data, key, str))
    require_aware(moment, key)
    return moment


def check_to_dict(check: CheckResult) -> dict[str, object]:
    c = check.comparison
    return {
        "at": check.at.isoformat(),
        "outcome": str(check.outcome),
        "step_percent": check.step_percent,
        "diff": enc_float(c.diff),
        "se": enc_float(c.se),
        "z": enc_float(c.z),
        "rho": enc_float(c.rho),
        "n": c.n,
        "sr_canary": enc_float(c.sr_canary),
        "sr_stable": enc_float(c.sr_stable),
        "psr": enc_float(check.psr),
        "min_trl": enc_float(check.min_trl),
        "track_n": check.track_n,
        "dsr": enc_float(check.dsr),
        "bar_seconds": enc_float(check.bar_seconds),
        "note": check.note,
    }


def check_from_dict(raw: object) -> CheckResult:
    if not isinstance(raw, Mapping):
        raise TypeError("last_check must be a mapping")
    comparison = SharpeComparison(
        diff=dec_float(raw["diff"]),
        se=dec_float(raw["se"]),
        z=dec_float(raw["z"]),
        rho=dec_float(raw["rho"]),
        n=get_typed(raw, "n", int),
        sr_canary=dec_float(raw["sr_canary"]),
        sr_stable=dec_float(raw["sr_stable"]),
    )
    return CheckResult(
        at=get_datetime(raw, "at"),
        outcome=CheckOutcome(get_typed(raw, "outcome", str)),
        step_percent=dec_float(raw["step_percent"]),
        comparison=comparison,
        psr=dec_float(raw["psr"]),
        min_trl=dec_float(raw["min_trl"]),
        track_n=get_typed(raw, "track_n", int),
        note=get_typed(raw, "note", str),
        dsr=dec_float(raw["dsr"]) if "dsr" in raw else 0.0,
        bar_seconds=dec_float(raw["bar_seconds"]) if "bar_seconds" in raw else 0.0,
    )


def log_event(event: CanaryEvent) -> None:
    """The ``[CANARY]`` log line of an event."""
    model, pct, why = event.model_id, event.step_percent_after, f"{event.reason}: {event.message}"
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
