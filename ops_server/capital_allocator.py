"""Capital allocation across strategies from their recent risk-adjusted returns.

Each cycle scores every enabled strategy by its per-period Sharpe ratio shrunk toward zero
(``SR * n / (n + n0)``, so a short track record earns less trust), floors the scores at zero,
normalises them to target weights, projects the targets exactly onto the policy's bounded simplex
``{w : sum w = 1, min_i <= w_i <= max_i}``, caps the L1 turnover by moving only part way from the
previous weights, and skips changes smaller than the deadband. Nothing changes inside the cooldown
unless an operator forces a cycle, which the policy may forbid. See DESIGN.md section 5.

The policy a cycle runs against (:class:`CapitalPolicy`, :class:`StrategyBounds`) is defined in
:mod:`ops_server.capital_policy` and re-exported here; this module holds the weight arithmetic, the decisions and
the allocator.

Pure domain code: no gRPC. The ops service wires :class:`CapitalAllocator` to ``TriggerAllocation``
and ``GetAllocations``, publishes each :class:`AllocationDecision` as an event and audits it, and
persists :meth:`CapitalAllocator.snapshot`.

Standalone use (one cycle on a returns file)::

    python -m ops_server.capital_allocator --returns returns.csv --policy capital_policy.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from nautilus_mesh.errors import ConfigError, MeshError, NotFoundError, PermissionDeniedError, ValidationError
from nautilus_mesh.files import load_json_file
from ops_server.capital_policy import CapitalPolicy, StrategyBounds, _check_feasible
from ops_server.performance import sharpe_ratio

log = logging.getLogger(__name__)

__all__ = [
    "AllocationDecision",
    "AllocationReason",
    "CapitalAllocator",
    "CapitalPolicy",
    "StrategyBounds",
    "cap_turnover",
    "l1_distance",
    "main",
    "project_bounded_simplex",
    "shrunk_score",
    "target_weights_from_scores",
]

_CENTS = Decimal("0.01")
_WEIGHT_QUANTUM = Decimal("1e-12")
_SNAPSHOT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------------
# Weight arithmetic
# ---------------------------------------------------------------------------------------------------------------------


def l1_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Sum of absolute differences of two equally long vectors (the turnover between two weight vectors)."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} != {len(b)}")
    return math.fsum(abs(x - y) for x, y in zip(a, b, strict=True))


def project_bounded_simplex(
    targets: Sequence[float], lower: Sequence[float], upper: Sequence[float], *, total: float = 1.0
) -> list[float]:
    """Exact Euclidean projection onto ``{w : sum w = total, lower <= w <= upper}``.

    The solution is ``w_i = clip(t_i - theta, l_i, u_i)`` for the one ``theta`` where the weights add up
    to ``total``. ``f(theta) = sum clip(t_i - theta, l_i, u_i)`` is continuous, non-increasing and
    piecewise linear with breakpoints ``t_i - u_i`` (below it ``w_i`` sits at its upper bound) and
    ``t_i - l_i`` (above it, at its lower bound). Sweeping the sorted breakpoints while keeping the sums
    of the clipped and free coordinates finds the segment containing the root, where
    ``f(theta) = c - m * theta`` is solved in closed form: ``theta = (c - total) / m``. O(n log n), exact
    up to float rounding; no bisection.

    Args:
        targets: Any finite real vector (need not be non-negative nor sum to anything).
        lower: Lower bounds, one per target.
        upper: Upper bounds, one per target, each >= its lower bound.
        total: The sum the result must have (1 for the full simplex; less when some weights are fixed).

    Returns:
        The projected weights, in input order.

    Raises:
        ValueError: On mismatched lengths or a non-finite value.
        ConfigError: If a lower bound exceeds its upper bound or ``sum(lower) > total > sum(upper)``
            (code ``INFEASIBLE_BOUNDS``).
    """
    n = len(targets)
    if len(lower) != n or len(upper) != n:
        raise ValueError(f"targets, lower and upper differ in length: {n}, {len(lower)}, {len(upper)}")
    if not all(math.isfinite(x) for x in (*targets, *lower, *upper, total)):
        raise ValueError("projection inputs must be finite")
    for i in range(n):
        if lower[i] > upper[i]:
            raise ConfigError(
                f"infeasible bounds: lower {lower[i]} > upper {upper[i]} at index {i}", code="INFEASIBLE_BOUNDS"
            )
    _check_feasible(lower, upper, total)
    if n == 0:
        return []

    # Event kind 0: coordinate i leaves its upper bound and becomes free; kind 1: it reaches its lower
    # bound. Sorting kind 0 first at equal values keeps a coordinate with l_i == u_i consistent.
    events = sorted(
        [(targets[i] - upper[i], 0, i) for i in range(n)] + [(targets[i] - lower[i], 1, i) for i in range(n)]
    )
    clipped_sum = math.fsum(upper)  # sum of the coordinates sitting at a bound (all at upper at theta = -inf)
    free_target_sum = 0.0  # sum of t_i over the free coordinates
    free_count = 0
    theta = events[-1][0]  # past the last breakpoint every coordinate sits at its lower bound
    for breakpoint, kind, i in events:
        # On the segment ending at this breakpoint f(theta) = clipped_sum + free_target_sum - free_count * theta.
        if clipped_sum + free_target_sum - free_count * breakpoint <= total:
            # f(left end) >= total >= f(breakpoint): the root is on this segment. With no free coordinate
            # f is flat here, and equal to total because of the check on the previous segment.
            theta = (clipped_sum + free_target_sum - total) / free_count if free_count else breakpoint
            break
        if kind == 0:
            clipped_sum -= upper[i]
            free_target_sum += targets[i]
            free_count += 1
        else:
            free_target_sum -= targets[i]
            free_count -= 1
            clipped_sum += lower[i]
    return [float(min(upper[i], max(lower[i], targets[i] - theta))) for i in range(n)]


def cap_turnover(previous: Sequence[float], target: Sequence[float], cap: float) -> list[float]:
    """Limit the L1 move from ``previous`` toward ``target`` to ``cap``.

    If ``L1(target - previous) > cap`` the result is ``previous + (cap / L1) * (target - previous)``, a
    point on the segment between two feasible weight vectors and therefore feasible itself; otherwise
    ``target`` unchanged.

    Raises:
        ValueError: On mismatched lengths or a cap that is not positive.
    """
    if not cap > 0:
        raise ValueError(f"turnover cap must be positive, got {cap!r}")
    distance = l1_distance(target, previous)
    if distance <= cap:
        return list(target)
    step = cap / distance
    return [p + step * (t - p) for p, t in zip(previous, target, strict=True)]


def shrunk_score(sharpe: float, n: int, n0: float) -> float:
    """Allocation score: ``sharpe * n / (n + n0)``, floored at zero.

    Shrinking toward zero makes a short track record earn less capital than a long one with the same
    Sharpe ratio; the floor keeps losing strategies at their minimum weight instead of going negative.
    """
    if n <= 0 or sharpe <= 0.0:
        return 0.0
    return sharpe * n / (n + n0)


def target_weights_from_scores(
    scores: Sequence[float], bounds: Sequence[StrategyBounds], *, total: float = 1.0
) -> list[float]:
    """Normalise non-negative scores to weights adding up to ``total``, then project them onto the bounds.

    Args:
        scores: One non-negative score per strategy (see :func:`shrunk_score`); not all zero.
        bounds: One :class:`StrategyBounds` per strategy.
        total: The sum the weights must have.

    Raises:
        ValueError: On mismatched lengths, a negative or non-finite score, or all scores zero.
        ConfigError: If the bounds cannot add up to ``total``.
    """
    if len(scores) != len(bounds):
        raise ValueError(f"scores and bounds differ in length: {len(scores)} != {len(bounds)}")
    if any(not math.isfinite(s) or s < 0.0 for s in scores):
        raise ValueError(f"scores must be finite and non-negative, got {list(scores)}")
    score_sum = math.fsum(scores)
    if score_sum <= 0.0:
        raise ValueError("all scores are zero: there is nothing to allocate by")
    targets = [total * s / score_sum for s in scores]
    return project_bounded_simplex(
        targets, [b.min_fraction for b in bounds], [b.max_fraction for b in bounds], total=total
    )


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
    """Shrunk, floored per-period Sharpe score of each strategy that was scored."""
    sharpe: dict[str, float]
    """Raw per-period Sharpe ratio of each scored strategy (for reporting)."""
    observations: dict[str, int]
    """Returns used per strategy (at most the lookback); empty for COOLDOWN."""
    turnover: float
    """L1 distance between previous and new weights."""
    forced: bool
    """Whether an operator forced the cycle (it may still end DEADBAND or KEPT)."""
    message: str
    """Human-readable summary, e.g. ``Sharpe scores momentum=0.41 meanrev=0.10; turnover capped 0.62->0.50``."""

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
            "observations": dict(self.observations),
            "turnover": self.turnover,
            "forced": self.forced,
            "message": self.message,
        }


def _fmt(x: float) -> str:
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
    """

    def __init__(
        self,
        policy: CapitalPolicy,
        initial_weights: Mapping[str, float] | None = None,
        last_applied_at: float | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._policy = policy
        names = list(policy.strategies)
        start = initial_weights if initial_weights is not None else {n: 1.0 / len(names) for n in names}
        self._weights = _conform(start, policy)
        self._last_applied_at = _optional_time(last_applied_at)

    @property
    def policy(self) -> CapitalPolicy:
        """The policy in force."""
        return self._policy

    @property
    def weights(self) -> dict[str, float]:
        """A copy of the current weights, in policy order; they add up to 1."""
        with self._lock:
            return dict(self._weights)

    @property
    def last_applied_at(self) -> float | None:
        """Epoch seconds of the last APPLIED or FORCED cycle, if any."""
        return self._last_applied_at

    def allocation_usd(self, strategy: str) -> Decimal:
        """Capital allocated to ``strategy``: ``total_capital * weight``, rounded down to cents.

        The weight is first rounded to 12 decimals; rounding the amount down then means the
        allocations never add up to more than the total capital.

        Raises:
            NotFoundError: If the strategy is not enabled in the policy (code ``UNKNOWN_STRATEGY``).
        """
        with self._lock:
            if strategy not in self._weights:
                raise NotFoundError(
                    "UNKNOWN_STRATEGY", f"strategy {strategy!r} is not in the capital policy", {"strategy": strategy}
                )
            # Round the weight first so float noise (0.19999999999999998) does not cost a cent.
            weight = Decimal(repr(self._weights[strategy])).quantize(_WEIGHT_QUANTUM)
            amount = self._policy.total_capital * weight
        return amount.quantize(_CENTS, rounding=ROUND_DOWN)

    def allocations_usd(self) -> dict[str, Decimal]:
        """:meth:`allocation_usd` for every strategy, in policy order."""
        with self._lock:
            return {name: self.allocation_usd(name) for name in self._weights}

    def set_policy(self, policy: CapitalPolicy) -> None:
        """Switch to a new policy, keeping the weights but projecting them onto the new bounds.

        Strategies no longer in the policy are dropped and new ones start from 0 before the projection,
        so the result is the feasible weight vector closest to the old one. The cooldown clock is kept.
        """
        with self._lock:
            before = dict(self._weights)
            self._policy = policy
            self._weights = _conform(before, policy)
            log.info(
                "[ALLOCATOR] policy updated: %d strategies, weights %s -> %s",
                len(policy.strategies),
                _weights_text(before),
                _weights_text(self._weights),
            )

    def snapshot(self) -> dict[str, Any]:
        """The allocator's state as a JSON-ready dict, for :meth:`restore` after a restart."""
        with self._lock:
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
        with self._lock:
            self._weights = _conform(weights, self._policy)
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
            ValidationError: A return series holds a NaN or infinity (code ``INVALID_RETURNS``).
        """
        if not math.isfinite(now):
            raise ValueError(f"cycle time must be finite, got {now!r}")
        with self._lock:
            policy = self._policy
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
            fixed: list[str] = []
            for name in names:
                window = list(returns.get(name, ()))[-policy.lookback :]
                observations[name] = len(window)
                if len(window) < policy.min_observations:
                    fixed.append(name)
                    continue
                try:
                    sr = sharpe_ratio(window)
                except ValueError as exc:
                    raise ValidationError(
                        "INVALID_RETURNS", f"returns of strategy {name!r}: {exc}", {"strategy": name}
                    ) from exc
                sharpe[name] = sr
                scores[name] = shrunk_score(sr, len(window), policy.shrinkage_n0)

            notes = [f"Sharpe scores {' '.join(f'{n}={_fmt(s)}' for n, s in scores.items())}" if scores else ""]
            if fixed:
                notes.append(
                    "kept " + " ".join(f"{n} ({observations[n]}<{policy.min_observations} obs)" for n in fixed)
                )
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
            new = dict(zip(names, capped, strict=True))

            if turnover < policy.deadband:
                notes.append(f"change {turnover:.4f} below deadband {policy.deadband:.4f}, weights kept")
                message = "; ".join(n for n in notes if n)
                return self._decide(
                    AllocationReason.DEADBAND, now, previous, previous, scores, sharpe, observations, forced, message
                )

            self._weights = new
            self._last_applied_at = now
            reason = AllocationReason.FORCED if forced else AllocationReason.APPLIED
            message = "; ".join(n for n in notes if n)
            return self._decide(
                reason, now, previous, new, scores, sharpe, observations, forced, message, turnover=turnover
            )

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


# ---------------------------------------------------------------------------------------------------------------------
# Standalone CLI
# ---------------------------------------------------------------------------------------------------------------------


def _read_returns(path: Path) -> dict[str, list[float]]:
    """Read returns from JSON (``{"strategy": [r, ...]}``) or CSV (header = strategy names, one row per period).

    In a CSV an empty cell is a missing observation, so strategies with shorter histories can share a file.
    """
    if path.suffix.lower() == ".json":
        data = load_json_file(path)
        out: dict[str, list[float]] = {}
        for name, series in data.items():
            if not isinstance(series, list) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in series
            ):
                raise ConfigError(f"{path}: returns of {name!r} must be a list of numbers")
            out[name] = [float(v) for v in series]
        return out
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ConfigError(f"cannot read returns file {path}: {exc.strerror}") from exc
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ConfigError(f"{path}: expected a header row of strategy names")
    header = [cell.strip() for cell in rows[0]]
    if any(not name for name in header) or len(set(header)) != len(header):
        raise ConfigError(f"{path}: header names must be non-empty and distinct, got {header}")
    columns: dict[str, list[float]] = {name: [] for name in header}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ConfigError(f"{path}: line {lineno} has {len(row)} cells, the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            text = cell.strip()
            if not text:
                continue
            try:
                columns[name].append(float(text))
            except ValueError as exc:
                raise ConfigError(f"{path}: line {lineno}, column {name!r}: not a number: {text!r}") from exc
    return columns


def _read_previous(value: str) -> dict[str, float]:
    """``--previous`` is inline JSON or a path to a JSON file, mapping strategy to weight."""
    try:
        data = load_json_file(value) if Path(value).is_file() else json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--previous is neither a JSON object nor a JSON file: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--previous must be a JSON object of strategy -> weight")
    return data


def _render(decision: AllocationDecision, allocator: CapitalAllocator, previous_usd: Mapping[str, Decimal]) -> str:
    policy = allocator.policy
    header = ("strategy", "obs", "sharpe/yr", "score", "before", "after", "before USD", "after USD")
    rows: list[tuple[str, ...]] = []
    for name in policy.strategies:
        sr = decision.sharpe.get(name)
        rows.append(
            (
                name,
                str(decision.observations.get(name, 0)),
                "-" if sr is None else f"{sr * math.sqrt(policy.periods_per_year):.2f}",
                "-" if name not in decision.scores else _fmt(decision.scores[name]),
                f"{decision.previous_weights[name]:.4f}",
                f"{decision.new_weights[name]:.4f}",
                f"{previous_usd[name]:,.2f}",
                f"{allocator.allocation_usd(name):,.2f}",
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"reason:   {decision.reason}{' (forced)' if decision.forced else ''}")
    lines.append(f"turnover: {decision.turnover:.4f}")
    lines.append(f"message:  {decision.message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one allocation cycle on a returns file and print the decision.

    Returns:
        0 on success, 2 on bad input (the reason is printed on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m ops_server.capital_allocator",
        description="Run one capital allocation cycle on a returns file and print the decision.",
    )
    parser.add_argument("--returns", required=True, type=Path, help="CSV (header = strategies) or JSON returns file")
    parser.add_argument("--policy", required=True, type=Path, help="capital policy JSON file")
    parser.add_argument("--previous", help="previous weights: inline JSON object or a JSON file")
    parser.add_argument("--forced", action="store_true", help="run as an operator-forced cycle")
    parser.add_argument("--now", type=float, default=0.0, help="cycle time, epoch seconds (default 0)")
    args = parser.parse_args(argv)
    try:
        policy = CapitalPolicy.load(args.policy)
        returns = _read_returns(args.returns)
        previous = _read_previous(args.previous) if args.previous else None
        allocator = CapitalAllocator(policy, previous)
        previous_usd = allocator.allocations_usd()
        decision = allocator.run_cycle(returns, now=args.now, forced=args.forced)
    except MeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(_render(decision, allocator, previous_usd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
