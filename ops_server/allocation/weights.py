"""Weight arithmetic of the capital allocator: scores, the exact bounded-simplex projection, turnover cap.

Pure functions on plain sequences of floats; :mod:`ops_server.allocation.allocator` runs them in a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nautilus_mesh.errors import ConfigError
from ops_server.allocation.config import StrategyBounds, check_feasible

__all__ = ["cap_turnover", "l1_distance", "project_bounded_simplex", "shrunk_score", "target_weights_from_scores"]


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
    check_feasible(lower, upper, total)
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
