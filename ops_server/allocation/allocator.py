"""Capital allocation across strategies from their recent risk-adjusted returns.

Each cycle scores every enabled strategy by its per-period Sharpe ratio shrunk toward zero
(``SR * n / (n + n0)``, so a short track record earns less trust), floors the scores at zero,
normalises them to target weights, projects the targets exactly onto the policy's bounded simplex
``{w : sum w = 1, min_i <= w_i <= max_i}``, caps the L1 turnover by moving only part way from the
previous weights, and skips changes smaller than the deadband. Nothing changes inside the cooldown
unless an operator forces a cycle, which the policy may forbid. See DESIGN.md section 5.

The policy (:class:`CapitalPolicy`) is in :mod:`ops_server.allocation.config`, the weight arithmetic in
:mod:`ops_server.allocation.weights`; this module holds the decisions and the allocator. Pure domain code: no
gRPC. The standalone what-if CLI is ``python -m ops_server.allocation``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from enum import StrEnum
from typing import Any

from nautilus_mesh.errors import ConfigError, NotFoundError, PermissionDeniedError, ValidationError
from ops_server.allocation.config import CapitalPolicy
from ops_server.allocation.weights import (
    cap_turnover,
    l1_distance,
    project_bounded_simplex,
    shrunk_score,
    target_weights_from_scores,
)
from ops_server.canary.stats import deflated_sharpe_ratio
from ops_server.performance import SECONDS_PER_YEAR, aggregate_returns, describe_returns, samples_per_bar, sharpe_ratio

log = logging.getLogger(__name__)

__all__ = ["AllocationDecision", "AllocationReason", "CapitalAllocator"]

_CENTS = Decimal("0.01")
_WEIGHT_QUANTUM = Decimal("1e-12")
DEADBAND_TOLERANCE = 1e-12
"""A change within this of the deadband (L1, fractions) counts as equal to it: targets are normalised one float
division each, so a move that is exactly the deadband can measure a unit in the last place short of it."""


def _allocation_usd(total_capital: Decimal, weight: float) -> Decimal:
    """``total_capital * weight`` rounded down to cents, the weight first rounded to 12 decimals so that float noise
    (0.19999999999999998) does not cost a cent."""
    amount = total_capital * Decimal(repr(weight)).quantize(_WEIGHT_QUANTUM)
    return amount.quantize(_CENTS, rounding=ROUND_DOWN)


def _allocations_usd(total_capital: Decimal, weights: Mapping[str, float]) -> dict[str, Decimal]:
    """Every strategy's :func:`_allocation_usd`, never adding up to more than ``total_capital``: rounding a weight to
    12 decimals may round it up, which above ~1e10 USD can outweigh the cents rounded down; what they exceed the total
    by is taken from the largest allocations, a cent at a time."""
    amounts = {name: _allocation_usd(total_capital, weight) for name, weight in weights.items()}
    excess = sum(amounts.values(), Decimal(0)) - total_capital
    while excess > 0:
        largest = max(amounts, key=amounts.__getitem__)
        cut = min(excess, amounts[largest]).quantize(_CENTS, rounding=ROUND_UP)
        amounts[largest] -= cut
        excess -= cut
    return amounts


_SNAPSHOT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------------
# Decisions and the allocator
# ---------------------------------------------------------------------------------------------------------------------


class AllocationReason(StrEnum):
    """Why a cycle ended the way it did."""

    APPLIED = "APPLIED"
    """New weights were applied by a scheduled cycle."""
    COOLDOWN = "COOLDOWN"
    """Too soon after the last applied allocation; nothing was computed or changed."""
    DEADBAND = "DEADBAND"
    """The change would have been smaller than the deadband; weights unchanged."""
    FORCED = "FORCED"
    """New weights were applied by an operator-forced cycle."""
    KEPT = "KEPT"
    """No strategy had enough observations or a positive score; weights unchanged."""


@dataclass(frozen=True)
class AllocationDecision:
    """The outcome of one allocation cycle: publish as an event, audit, log."""

    reason: AllocationReason
    """Why the weights changed or did not."""
    at: float
    """Cycle time, epoch seconds."""
    previous_weights: dict[str, float]
    """Weights before the cycle, per strategy."""
    new_weights: dict[str, float]
    """Weights after the cycle (equal to ``previous_weights`` unless APPLIED or FORCED)."""
    scores: dict[str, float]
    """Shrunk, floored Sharpe score of each strategy that was scored (per bar, see ``CapitalPolicy.bar_seconds``)."""
    sharpe: dict[str, float]
    """Raw Sharpe ratio per bar (per sample without ``bar_seconds``) of each scored strategy (the score's input)."""
    observations: dict[str, int]
    """Returns used per strategy (at most the lookback); empty for COOLDOWN."""
    turnover: float
    """L1 distance between previous and new weights."""
    forced: bool
    """Whether an operator forced the cycle (it may still end DEADBAND or KEPT)."""
    message: str
    """Human-readable summary, e.g. ``Sharpe scores momentum=0.41 meanrev=0.10; turnover capped 0.62->0.50``."""
    sharpe_annual: dict[str, float] | None = None
    """Sharpe ratio of each scored strategy annualised with the real sampling interval (Sharpe per sqrt(year))."""
    dsr: dict[str, float] | None = None
    """Deflated Sharpe ratio of each scored strategy, the trials being the strategies scored (probability)."""

    @property
    def changed(self) -> bool:
        """Whether the cycle applied new weights."""
        return self.reason in (AllocationReason.APPLIED, AllocationReason.FORCED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record for the audit log and events."""
        return {
            "reason": str(self.reason),
            "at": self.at,
            "previous_weights": dict(self.previous_weights),
            "new_weights": dict(self.new_weights),
            "scores": dict(self.scores),
            "sharpe": dict(self.sharpe),
            "sharpe_annual": dict(self.sharpe_annual or {}),
            "dsr": dict(self.dsr or {}),
            "observations": dict(self.observations),
            "turnover": self.turnover,
            "forced": self.forced,
            "message": self.message,
        }


def fmt_score(x: float) -> str:
    """A score or Sharpe ratio for people: two decimals, or scientific when it is tiny."""
    # Per-second Sharpe ratios are tiny; two decimals would print them all as 0.00.
    return f"{x:.2f}" if x == 0.0 or abs(x) >= 0.01 else f"{x:.2e}"


class CapitalAllocator:
    """Holds the current strategy weights and runs allocation cycles against a :class:`CapitalPolicy`.

    Thread-safe: cycles, policy changes and restores are serialised by a lock.

    Args:
        policy: The validated capital policy.
        initial_weights: Starting weights per strategy (e.g. from the store); projected onto the policy's
            bounds. Defaults to equal weights projected onto the bounds.
        last_applied_at: Epoch seconds of the last applied allocation (None: the cooldown does not apply).
        sample_seconds: Interval between two returns of the series it scores, seconds (for annualised reporting).
    """

    def __init__(
        self,
        policy: CapitalPolicy,
        initial_weights: Mapping[str, float] | None = None,
        last_applied_at: float | None = None,
        *,
        sample_seconds: float = 1.0,
    ) -> None:
        self._policy = policy
        self.sample_seconds = sample_seconds
        names = list(policy.strategies)
        start = initial_weights if initial_weights is not None else {n: 1.0 / len(names) for n in names}
        self._set_weights(_conform(start, policy))
        self._last_applied_at = _optional_time(last_applied_at)
        self._dsr: dict[str, float] = {}

    @property
    def policy(self) -> CapitalPolicy:
        """The policy in force."""
        return self._policy

    @property
    def weights(self) -> dict[str, float]:
        """A copy of the current weights, in policy order; they add up to 1."""
        return dict(self._weights)

    def enabled(self, strategy: str) -> bool:
        """Whether the policy names ``strategy`` (one it leaves out has no capital)."""
        return strategy in self._weights

    @property
    def last_applied_at(self) -> float | None:
        """Epoch seconds of the last APPLIED or FORCED cycle, if any."""
        return self._last_applied_at

    def allocation_usd(self, strategy: str) -> Decimal:
        """Capital allocated to ``strategy``: ``total_capital * weight``, rounded down to cents.

        The weight is first rounded to 12 decimals (float noise does not cost a cent); the allocations never add up to
        more than the total capital (above ~1e10 USD, where a weight rounded up could outweigh the cents rounded
        down, the excess is taken from the largest allocations).

        Raises:
            NotFoundError: If the strategy is not enabled in the policy (code ``UNKNOWN_STRATEGY``).
        """
        if strategy not in self._weights:
            raise NotFoundError(
                "UNKNOWN_STRATEGY", f"strategy {strategy!r} is not in the capital policy", {"strategy": strategy}
            )
        return self._amounts[strategy]

    def allocations_usd(self) -> dict[str, Decimal]:
        """:meth:`allocation_usd` for every strategy, in policy order."""
        return {name: self.allocation_usd(name) for name in self._weights}

    def set_policy(self, policy: CapitalPolicy) -> None:
        """Switch to a new policy, keeping the weights but projecting them onto the new bounds.

        Strategies no longer in the policy are dropped and new ones start from 0 before the projection,
        so the result is the feasible weight vector closest to the old one. The cooldown clock is kept.
        """
        before = dict(self._weights)
        self._policy = policy
        self._set_weights(_conform(before, policy))
        log.info(
            "[ALLOCATOR] policy updated: %d strategies, weights %s -> %s",
            len(policy.strategies),
            _weights_text(before),
            _weights_text(self._weights),
        )

    def snapshot(self) -> dict[str, Any]:
        """The allocator's state as a JSON-ready dict, for :meth:`restore` after a restart."""
        return {
            "version": _SNAPSHOT_VERSION,
            "weights": dict(self._weights),
            "last_applied_at": self._last_applied_at,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot`; the weights are projected onto the current policy's bounds.

        Raises:
            ConfigError: If the state has the wrong shape or version.
        """
        if not isinstance(state, Mapping) or state.get("version") != _SNAPSHOT_VERSION:
            raise ConfigError(f"allocator state must be a snapshot of version {_SNAPSHOT_VERSION}")
        weights = state.get("weights")
        if not isinstance(weights, Mapping):
            raise ConfigError("allocator state has no weights object")
        last = state.get("last_applied_at")
        if last is not None and (isinstance(last, bool) or not isinstance(last, (int, float))):
            raise ConfigError(f"allocator state last_applied_at must be a number or null, got {last!r}")
        self._set_weights(_conform(weights, self._policy))
        self._last_applied_at = _optional_time(last)

    def run_cycle(self, returns: Mapping[str, Sequence[float]], now: float, forced: bool = False) -> AllocationDecision:
        """Run one allocation cycle.

        Args:
            returns: Per-period returns per strategy, oldest first; only the last ``lookback`` are used.
                Strategies not in the policy are ignored; a missing strategy has no observations.
            now: The cycle time, epoch seconds.
            forced: An operator-triggered cycle: skips the cooldown (but not the turnover cap or deadband).

        Returns:
            The decision; the allocator's weights are updated when its reason is APPLIED or FORCED.

        Raises:
            PermissionDeniedError: ``forced`` while the policy disables manual allocation
                (code ``MANUAL_ALLOCATION_DISABLED``).
            ValidationError: A strategy's returns window (its last ``lookback``) holds a NaN or infinity, or returns so
                large their sums overflow (code ``INVALID_RETURNS``).
        """
        if not math.isfinite(now):
            raise ValueError(f"cycle time must be finite, got {now!r}")
        policy = self._policy
        self._dsr = {}
        if forced and not policy.allow_manual:
            log.warning("[ALLOCATOR] forced allocation refused: manual allocation is disabled by the policy")
            raise PermissionDeniedError(
                "MANUAL_ALLOCATION_DISABLED",
                "manual allocation is disabled by the capital policy (allow_manual is false)",
            )
        previous = dict(self._weights)

        if not forced and self._last_applied_at is not None:
            elapsed = now - self._last_applied_at
            if elapsed < policy.cooldown_seconds:
                message = (
                    f"cooldown: {elapsed:.0f}s of {policy.cooldown_seconds:.0f}s elapsed since the last allocation"
                )
                return self._decide(AllocationReason.COOLDOWN, now, previous, previous, {}, {}, {}, forced, message)

        names = list(policy.strategies)
        observations: dict[str, int] = {}
        sharpe: dict[str, float] = {}
        scores: dict[str, float] = {}
        windows: dict[str, list[float]] = {}
        fixed: list[str] = []
        k = self._samples_per_bar()
        for name in names:
            window = list(returns.get(name, ()))[-policy.lookback :]
            observations[name] = len(window)
            try:
                if not all(map(math.isfinite, window)):
                    raise ValueError("a return is NaN or infinite")
                if len(window) < policy.min_observations:
                    fixed.append(name)
                    continue
                window = aggregate_returns(window[len(window) % k :], k)  # the most recent whole bars
                sr = sharpe_ratio(window)
            except (ValueError, OverflowError) as exc:
                raise ValidationError(
                    "INVALID_RETURNS", f"returns of strategy {name!r}: {exc}", {"strategy": name}
                ) from exc
            sharpe[name] = sr
            scores[name] = shrunk_score(sr, len(window), policy.shrinkage_n0)
            windows[name] = window
        # Several strategies scored at once are several trials: each Sharpe ratio is deflated by their number.
        for name, window in windows.items():
            if len(window) < 2:  # a flat series (Sharpe 0); its moments, and so a deflated ratio, are undefined
                continue
            m = describe_returns(window)
            self._dsr[name] = deflated_sharpe_ratio(m.sharpe, m.n, len(windows), m.skew, m.kurtosis)

        notes = [f"Sharpe scores {' '.join(f'{n}={fmt_score(s)}' for n, s in scores.items())}" if scores else ""]
        if fixed:
            notes.append("kept " + " ".join(f"{n} ({observations[n]}<{policy.min_observations} obs)" for n in fixed))
        if not scores or math.fsum(scores.values()) <= 0.0:
            why = "no strategy has enough observations" if not scores else "all scores are zero"
            message = "; ".join(n for n in [*notes, f"{why}, weights kept"] if n)
            return self._decide(
                AllocationReason.KEPT, now, previous, previous, scores, sharpe, observations, forced, message
            )

        # Fixed strategies keep their weight; the scored ones share the rest within their bounds. The
        # current weights are feasible, so the rest lies between the scored strategies' bound sums.
        free = [n for n in names if n not in fixed]
        remaining = 1.0 - math.fsum(previous[n] for n in fixed)
        projected = target_weights_from_scores(
            [scores[n] for n in free], [policy.strategies[n] for n in free], total=remaining
        )
        target = dict(previous)
        target.update(zip(free, projected, strict=True))

        before = [previous[n] for n in names]
        wanted = [target[n] for n in names]
        wanted_turnover = l1_distance(wanted, before)
        capped = cap_turnover(before, wanted, policy.turnover_cap)
        turnover = l1_distance(capped, before)
        if wanted_turnover > policy.turnover_cap:
            notes.append(f"turnover capped {wanted_turnover:.2f}->{policy.turnover_cap:.2f}")
            # A capped move is turnover_cap long by construction; measured back it may come out a hair short
            # (0.049999...), which a deadband equal to the cap would refuse on every cycle.
            turnover = policy.turnover_cap
        new = dict(zip(names, capped, strict=True))

        if turnover < policy.deadband - DEADBAND_TOLERANCE:
            notes.append(f"change {turnover:.4f} below deadband {policy.deadband:.4f}, weights kept")
            message = "; ".join(n for n in notes if n)
            return self._decide(
                AllocationReason.DEADBAND, now, previous, previous, scores, sharpe, observations, forced, message
            )

        self._set_weights(new)
        self._last_applied_at = now
        reason = AllocationReason.FORCED if forced else AllocationReason.APPLIED
        message = "; ".join(n for n in notes if n)
        return self._decide(
            reason, now, previous, new, scores, sharpe, observations, forced, message, turnover=turnover
        )

    def _set_weights(self, weights: dict[str, float]) -> None:
        self._weights = weights
        self._amounts = _allocations_usd(self._policy.total_capital, weights)  # read on every signal

    def _samples_per_bar(self) -> int:
        bar = self._policy.bar_seconds
        return 1 if bar is None else samples_per_bar(bar, self.sample_seconds)

    def _decide(
        self,
        reason: AllocationReason,
        now: float,
        previous: dict[str, float],
        new: dict[str, float],
        scores: dict[str, float],
        sharpe: dict[str, float],
        observations: dict[str, int],
        forced: bool,
        message: str,
        *,
        turnover: float = 0.0,
    ) -> AllocationDecision:
        annual = math.sqrt(SECONDS_PER_YEAR / (self._samples_per_bar() * self.sample_seconds))
        decision = AllocationDecision(
            reason=reason,
            at=now,
            previous_weights=dict(previous),
            new_weights=dict(new),
            scores=scores,
            sharpe=sharpe,
            observations=observations,
            turnover=turnover,
            forced=forced,
            message=message,
            sharpe_annual={name: sr * annual for name, sr in sharpe.items()},
            dsr=dict(self._dsr),
        )
        log.info(
            "[ALLOCATOR] %s weights %s -> %s: %s",
            reason,
            _weights_text(previous),
            _weights_text(new),
            message,
        )
        return decision


def _weights_text(weights: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{n}={w:.4f}" for n, w in weights.items()) + "}"


def _optional_time(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"last_applied_at must be finite, got {value!r}")
    return number


def _conform(weights: Mapping[str, float], policy: CapitalPolicy) -> dict[str, float]:
    """Make ``weights`` feasible for ``policy``: drop unknown strategies, add missing ones at 0, project."""
    names = list(policy.strategies)
    dropped = sorted(set(weights) - set(names))
    if dropped:
        log.warning("[ALLOCATOR] dropping weights of strategies not in the policy: %s", ", ".join(dropped))
    raw: list[float] = []
    for name in names:
        value = weights.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"weight of strategy {name!r} must be a finite non-negative number, got {value!r}")
        raw.append(float(value))
    bounds = [policy.strategies[n] for n in names]
    projected = project_bounded_simplex(raw, [b.min_fraction for b in bounds], [b.max_fraction for b in bounds])
    return dict(zip(names, projected, strict=True))
