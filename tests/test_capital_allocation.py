"""Capital policy validation, the weight arithmetic and allocation cycles."""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nautilus_mesh.errors import ConfigError, NotFoundError, PermissionDeniedError, ValidationError
from ops_server.allocation import AllocationReason, CapitalAllocator, CapitalPolicy, StrategyBounds
from ops_server.allocation.__main__ import main
from ops_server.allocation.config import MAX_LOOKBACK
from ops_server.allocation.weights import (
    cap_turnover,
    l1_distance,
    project_bounded_simplex,
    shrunk_score,
    target_weights_from_scores,
)
from ops_server.canary.stats import deflated_sharpe_ratio, describe_returns
from ops_server.measurement import DEFAULT_HISTORY

HOUR = 3600.0
T0 = 1_700_000_000.0
NAMES = ("momentum", "meanrev", "carry")


def policy_dict(**overrides: Any) -> dict[str, Any]:
    """A permissive three-strategy policy: small min_observations, no shrinkage, a wide turnover cap."""
    d: dict[str, Any] = {
        "total_capital": "1000000",
        "cooldown_seconds": 86400,
        "lookback": 500,
        "min_observations": 10,
        "shrinkage_n0": 0,
        "turnover_cap": 2.0,
        "deadband": 0.01,
        "allow_manual": True,
        "strategies": {name: {"min_fraction": 0.0, "max_fraction": 1.0} for name in NAMES},
    }
    d.update(overrides)
    return d


def make_policy(**overrides: Any) -> CapitalPolicy:
    return CapitalPolicy.from_dict(policy_dict(**overrides))


def alternating(high: float, low: float, n: int) -> list[float]:
    """A return series alternating between two values: mean (high+low)/2, Sharpe fixed by the spread."""
    return [high if i % 2 == 0 else low for i in range(n)]


# Per-period Sharpe about 0.99 (momentum), 0.49 (meanrev) and 0.33 (carry).
RETURNS = {
    "momentum": alternating(0.02, 0.0, 40),
    "meanrev": alternating(0.03, -0.01, 40),
    "carry": alternating(0.04, -0.02, 40),
}


# ---------------------------------------------------------------------------------------------------------------------
# Scoring, projection, turnover
# ---------------------------------------------------------------------------------------------------------------------


def test_target_weights_from_scores_when_sharpe_1_half_half_no_bounds_returns_half_quarter_quarter() -> None:
    scores = [shrunk_score(sharpe, n=100, n0=0) for sharpe in (1.0, 0.5, 0.5)]
    weights = target_weights_from_scores(scores, [StrategyBounds()] * 3)
    assert weights == pytest.approx([0.5, 0.25, 0.25])


def test_shrunk_score_when_prior_given_shrinks_toward_zero_and_floors_negatives() -> None:
    assert shrunk_score(1.0, n=50, n0=50) == pytest.approx(0.5)
    assert shrunk_score(-0.7, n=500, n0=0) == 0.0
    assert shrunk_score(0.8, n=0, n0=0) == 0.0


def test_target_weights_from_scores_when_all_zero_raises_value_error() -> None:
    with pytest.raises(ValueError, match="all scores are zero"):
        target_weights_from_scores([0.0, 0.0], [StrategyBounds()] * 2)


def test_project_bounded_simplex_when_target_above_max_projects_not_rescales() -> None:
    # A rescale would give [0.5, 0.2.., 0.1..]; the projection shifts every free weight by the same theta.
    weights = project_bounded_simplex([0.7, 0.2, 0.1], [0.1] * 3, [0.5] * 3)
    assert weights == pytest.approx([0.5, 0.3, 0.2])


def test_project_bounded_simplex_when_negative_targets_clips_at_lower_bound() -> None:
    assert project_bounded_simplex([5.0, -3.0, 0.1], [0.0] * 3, [1.0] * 3) == pytest.approx([1.0, 0.0, 0.0])


def test_project_bounded_simplex_when_total_below_one_sums_to_total() -> None:
    weights = project_bounded_simplex([0.4, 0.4], [0.1, 0.1], [0.5, 0.5], total=0.6)
    assert weights == pytest.approx([0.3, 0.3])


def test_project_bounded_simplex_when_bounds_infeasible_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="infeasible") as excinfo:
        project_bounded_simplex([0.5, 0.5], [0.0, 0.0], [0.3, 0.3])
    assert excinfo.value.code == "INFEASIBLE_BOUNDS"


def test_cap_turnover_when_move_exceeds_cap_moves_part_way() -> None:
    capped = cap_turnover([0.5, 0.5, 0.0], [0.2, 0.3, 0.5], 0.2)
    assert capped == pytest.approx([0.44, 0.46, 0.10])
    assert l1_distance(capped, [0.5, 0.5, 0.0]) == pytest.approx(0.2)


def test_cap_turnover_when_move_within_cap_returns_target() -> None:
    assert cap_turnover([0.5, 0.5], [0.4, 0.6], 0.5) == [0.4, 0.6]


def _reference_projection(t: list[float], lo: list[float], hi: list[float]) -> list[float]:
    """Bisection on theta: slow but obviously right, to check the closed-form sweep against."""
    a, b = min(t) - max(hi) - 1.0, max(t) - min(lo) + 1.0
    for _ in range(200):
        mid = (a + b) / 2
        if math.fsum(min(u, max(l_, x - mid)) for x, l_, u in zip(t, lo, hi, strict=True)) > 1.0:
            a = mid
        else:
            b = mid
    return [min(u, max(l_, x - a)) for x, l_, u in zip(t, lo, hi, strict=True)]


Problem = tuple[list[float], list[float], list[float]]
"""Targets, lower bounds and upper bounds of a projection onto the bounded simplex."""


@st.composite
def feasible_problems(draw: st.DrawFn) -> Problem:
    n = draw(st.integers(min_value=1, max_value=8))
    unit = st.floats(min_value=0.0, max_value=1.0)
    scale = draw(unit)
    lower = [draw(unit) * scale / n for _ in range(n)]
    upper = [1.0 if draw(st.booleans()) else lo + draw(unit) * (1.0 - lo) for lo in lower]
    assume(math.fsum(upper) >= 1.0)
    targets = [draw(st.floats(min_value=-2.0, max_value=2.0)) for _ in range(n)]
    return targets, lower, upper


@settings(max_examples=300, deadline=None)
@given(feasible_problems())
def test_project_bounded_simplex_when_feasible_bounds_sums_to_one_and_respects_bounds(problem: Problem) -> None:
    targets, lower, upper = problem
    weights = project_bounded_simplex(targets, lower, upper)
    assert abs(math.fsum(weights) - 1.0) <= 1e-9
    for w, lo, hi in zip(weights, lower, upper, strict=True):
        assert lo <= w <= hi
    # The closed form agrees with a bisection reference, so it is the Euclidean projection.
    assert weights == pytest.approx(_reference_projection(targets, lower, upper), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(feasible_problems())
def test_project_bounded_simplex_when_targets_already_feasible_returns_targets(problem: Problem) -> None:
    targets, lower, upper = problem
    feasible = project_bounded_simplex(targets, lower, upper)
    assert project_bounded_simplex(feasible, lower, upper) == pytest.approx(feasible, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Policy validation
# ---------------------------------------------------------------------------------------------------------------------


def test_capital_policy_when_three_strategies_min_point_four_raises_config_error() -> None:
    strategies = {name: {"min_fraction": 0.4, "max_fraction": 1.0} for name in NAMES}
    with pytest.raises(ConfigError, match=r"infeasible bounds: the minimum fractions add up to 1\.2"):
        CapitalPolicy.from_dict(policy_dict(strategies=strategies))


def test_capital_policy_when_unknown_strategy_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'carry'") as excinfo:
        CapitalPolicy.from_dict(policy_dict(), known_strategies={"momentum", "meanrev"})
    assert excinfo.value.code == "UNKNOWN_STRATEGY"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"cooldown_seconds": -1}, "cooldown_seconds: Input should be greater than or equal to 0"),
        ({"shrinkage_n0": -5}, "shrinkage_n0: Input should be greater than or equal to 0"),
        ({"deadband": -0.01}, "deadband: Input should be greater than or equal to 0"),
        ({"min_observations": -1}, "min_observations: Input should be greater than or equal to 0"),
        ({"lookback": 1}, "lookback: Input should be greater than or equal to 2"),
        ({"lookback": 20, "min_observations": 30}, "must not exceed lookback"),
        ({"turnover_cap": 0}, "turnover_cap: Input should be greater than 0"),
        ({"turnover_cap": 2.5}, "turnover_cap: Input should be less than or equal to 2"),
        ({"turnover_cap": 0.1, "deadband": 0.2}, "deadband .* must not exceed turnover_cap"),
        ({"periods_per_year": 252}, "periods_per_year was removed"),
        ({"total_capital": "-5"}, "total_capital must be a positive amount"),
        ({"total_capital": "lots"}, "not a decimal number"),
        ({"total_capital": 1e6}, "total_capital must be a decimal string"),
        ({"allow_manual": "yes"}, "allow_manual: Input should be a valid boolean"),
        ({"lookback": 10.5}, "lookback: Input should be a valid integer"),
        ({"turnover_capp": 0.5}, "turnover_capp: Extra inputs are not permitted"),
        ({"strategies": {}}, "strategies: Dictionary should have at least 1 item"),
        (
            {"strategies": {"momentum": {"min_fraction": -0.1}}},
            r"strategies\.momentum\.min_fraction: Input should be greater than or equal to 0",
        ),
        ({"strategies": {"momentum": {"min_fraction": 0.6, "max_fraction": 0.5}}}, "min_fraction <= max_fraction"),
        (
            {"strategies": {"momentum": {"max_fraction": 1.5}}},
            r"strategies\.momentum\.max_fraction: Input should be less than or equal to 1",
        ),
        ({"strategies": {"a": {"max_fraction": 0.3}, "b": {"max_fraction": 0.3}}}, "maximum fractions add up to 0.6"),
        (
            {"strategies": {"momentum": {"weight": 0.5}}},
            r"strategies\.momentum\.weight: Extra inputs are not permitted",
        ),
    ],
)
def test_capital_policy_when_value_invalid_raises_config_error_naming_it(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CapitalPolicy.from_dict(policy_dict(**overrides))


def test_capital_policy_when_required_key_missing_raises_config_error() -> None:
    d = policy_dict()
    del d["total_capital"]
    with pytest.raises(ConfigError, match="total_capital: Field required"):
        CapitalPolicy.from_dict(d)


def test_capital_policy_when_round_tripped_through_dict_is_equal() -> None:
    policy = CapitalPolicy.from_dict(
        policy_dict(strategies={"momentum": {"min_fraction": 0.1, "max_fraction": 0.7}, "meanrev": {}})
    )
    assert CapitalPolicy.from_dict(policy.to_dict()) == policy
    assert policy.total_capital == Decimal("1000000")
    assert policy.strategies["meanrev"] == StrategyBounds(0.0, 1.0)


def test_capital_policy_load_when_file_invalid_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "capital.json"
    path.write_text(json.dumps(policy_dict(cooldown_seconds=-3)), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"capital\.json: cooldown_seconds: Input should be greater than or equal to 0"
    ):
        CapitalPolicy.load(path)
    path.write_text(json.dumps(policy_dict()), encoding="utf-8")
    assert CapitalPolicy.load(path).cooldown_seconds == 86400


# ---------------------------------------------------------------------------------------------------------------------
# Allocation cycles
# ---------------------------------------------------------------------------------------------------------------------


def test_allocator_when_no_initial_weights_starts_from_projected_equal_weights() -> None:
    strategies = {"momentum": {"min_fraction": 0.5}, "meanrev": {}, "carry": {}}
    allocator = CapitalAllocator(make_policy(strategies=strategies))
    assert list(allocator.weights.values()) == pytest.approx([0.5, 0.25, 0.25])


def test_run_cycle_when_scores_differ_applies_sharpe_proportional_weights() -> None:
    allocator = CapitalAllocator(make_policy())
    decision = allocator.run_cycle(RETURNS, now=T0)
    assert decision.reason is AllocationReason.APPLIED
    sharpe = decision.sharpe
    total = sum(sharpe.values())
    assert decision.new_weights == pytest.approx({n: sharpe[n] / total for n in NAMES})
    assert allocator.weights == decision.new_weights
    assert decision.previous_weights == pytest.approx({n: 1 / 3 for n in NAMES})
    assert allocator.last_applied_at == T0
    assert decision.message.startswith("Sharpe scores momentum=0.99 meanrev=0.49 carry=0.33")


def test_run_cycle_when_inside_cooldown_keeps_weights_and_applies_after_it() -> None:
    allocator = CapitalAllocator(make_policy(), last_applied_at=T0)
    before = allocator.weights

    early = allocator.run_cycle(RETURNS, now=T0 + 23 * HOUR)
    assert early.reason is AllocationReason.COOLDOWN
    assert early.new_weights == before
    assert allocator.weights == before
    assert allocator.last_applied_at == T0

    due = allocator.run_cycle(RETURNS, now=T0 + 24 * HOUR)
    assert due.reason is AllocationReason.APPLIED
    assert allocator.weights["momentum"] > before["momentum"]
    assert allocator.last_applied_at == T0 + 24 * HOUR


def test_run_cycle_when_forced_inside_cooldown_applies_as_forced() -> None:
    allocator = CapitalAllocator(make_policy(), last_applied_at=T0)
    decision = allocator.run_cycle(RETURNS, now=T0 + HOUR, forced=True)
    assert decision.reason is AllocationReason.FORCED
    assert decision.forced
    assert allocator.weights["momentum"] > 1 / 3
    assert allocator.last_applied_at == T0 + HOUR


def test_run_cycle_when_forced_and_manual_disabled_raises_permission_denied() -> None:
    allocator = CapitalAllocator(make_policy(allow_manual=False), last_applied_at=T0)
    before = allocator.weights
    with pytest.raises(PermissionDeniedError) as excinfo:
        allocator.run_cycle(RETURNS, now=T0 + HOUR, forced=True)
    assert excinfo.value.code == "MANUAL_ALLOCATION_DISABLED"
    assert excinfo.value.kind == "permission_denied"
    assert allocator.weights == before


def test_run_cycle_when_change_below_deadband_keeps_weights() -> None:
    reference = CapitalAllocator(make_policy())
    target = reference.run_cycle(RETURNS, now=T0).new_weights
    # Start 0.01 in L1 away from the target; the deadband is 0.05.
    near = {"momentum": target["momentum"] + 0.005, "meanrev": target["meanrev"] - 0.005, "carry": target["carry"]}
    allocator = CapitalAllocator(make_policy(deadband=0.05), initial_weights=near)
    decision = allocator.run_cycle(RETURNS, now=T0)
    assert decision.reason is AllocationReason.DEADBAND
    assert decision.new_weights == decision.previous_weights
    assert allocator.weights == pytest.approx(near)
    assert allocator.last_applied_at is None
    assert "below deadband" in decision.message


def test_run_cycle_when_strategy_below_min_observations_keeps_its_weight() -> None:
    returns = dict(RETURNS, carry=alternating(0.04, -0.02, 5))
    allocator = CapitalAllocator(make_policy(min_observations=10))
    decision = allocator.run_cycle(returns, now=T0)
    assert decision.reason is AllocationReason.APPLIED
    assert decision.new_weights["carry"] == pytest.approx(1 / 3)
    assert "carry" not in decision.scores
    # The scored strategies share the remaining 2/3 by score.
    share = decision.sharpe["momentum"] / (decision.sharpe["momentum"] + decision.sharpe["meanrev"])
    assert decision.new_weights["momentum"] == pytest.approx(2 / 3 * share)
    assert "kept carry (5<10 obs)" in decision.message


def test_run_cycle_when_fixed_strategy_leaves_others_within_bounds() -> None:
    strategies = {"momentum": {"max_fraction": 0.4}, "meanrev": {"max_fraction": 0.4}, "carry": {}}
    allocator = CapitalAllocator(
        make_policy(strategies=strategies), initial_weights={"momentum": 0.3, "meanrev": 0.3, "carry": 0.4}
    )
    returns = dict(RETURNS, carry=[0.01])
    decision = allocator.run_cycle(returns, now=T0)
    assert decision.new_weights["carry"] == pytest.approx(0.4)
    assert decision.new_weights["momentum"] == pytest.approx(0.4)
    assert decision.new_weights["meanrev"] == pytest.approx(0.2)


def test_run_cycle_when_all_scores_zero_keeps_weights() -> None:
    losing = {name: alternating(-0.02, 0.01, 40) for name in NAMES}
    allocator = CapitalAllocator(make_policy(), initial_weights={"momentum": 0.6, "meanrev": 0.3, "carry": 0.1})
    decision = allocator.run_cycle(losing, now=T0)
    assert decision.reason is AllocationReason.KEPT
    assert decision.scores == {"momentum": 0.0, "meanrev": 0.0, "carry": 0.0}
    assert allocator.weights == pytest.approx({"momentum": 0.6, "meanrev": 0.3, "carry": 0.1})
    assert "all scores are zero" in decision.message


def test_run_cycle_when_no_strategy_has_enough_observations_keeps_weights() -> None:
    allocator = CapitalAllocator(make_policy(min_observations=100))
    decision = allocator.run_cycle(RETURNS, now=T0)
    assert decision.reason is AllocationReason.KEPT
    assert decision.scores == {}
    assert decision.observations == {"momentum": 40, "meanrev": 40, "carry": 40}


def test_run_cycle_when_turnover_capped_moves_part_way_and_says_so() -> None:
    allocator = CapitalAllocator(make_policy(turnover_cap=0.1))
    decision = allocator.run_cycle(RETURNS, now=T0)
    assert decision.reason is AllocationReason.APPLIED
    assert decision.turnover == pytest.approx(0.1)
    assert l1_distance(list(decision.new_weights.values()), list(decision.previous_weights.values())) == (
        pytest.approx(0.1)
    )
    assert "turnover capped" in decision.message and "->0.10" in decision.message


def test_run_cycle_when_lookback_shorter_than_history_uses_latest_returns() -> None:
    # Old history is all losses; only the last 20 (profitable) returns count.
    returns = {name: [-0.05] * 100 + alternating(0.02, 0.0, 20) for name in NAMES}
    allocator = CapitalAllocator(make_policy(lookback=20))
    decision = allocator.run_cycle(returns, now=T0)
    assert decision.observations == {"momentum": 20, "meanrev": 20, "carry": 20}
    assert all(score > 0 for score in decision.scores.values())


def test_run_cycle_when_returns_not_finite_raises_validation_error() -> None:
    allocator = CapitalAllocator(make_policy())
    bad = dict(RETURNS, meanrev=[*RETURNS["meanrev"], math.nan])
    with pytest.raises(ValidationError, match="meanrev") as excinfo:
        allocator.run_cycle(bad, now=T0)
    assert excinfo.value.code == "INVALID_RETURNS"


@pytest.mark.parametrize(
    ("where", "value"),
    [("under min_observations", math.nan), ("in the partial bar left out", math.inf), ("overflowing", 1e308)],
)
def test_run_cycle_when_any_return_of_the_window_is_unusable_raises_validation_error(where: str, value: float) -> None:
    allocator = CapitalAllocator(make_policy(bar_seconds=2), sample_seconds=1)
    bad = {
        "under min_observations": dict(RETURNS, carry=[0.01, value]),  # 2 < min_observations: never scored
        "in the partial bar left out": dict(RETURNS, carry=[value, *RETURNS["carry"][:38]]),  # 39 returns: 1st left out
        "overflowing": dict(RETURNS, carry=[value, value, *RETURNS["carry"][2:]]),  # finite, but its sums overflow
    }[where]
    with pytest.raises(ValidationError, match="carry") as excinfo:
        allocator.run_cycle(bad, now=T0)
    assert excinfo.value.code == "INVALID_RETURNS"


def test_run_cycle_when_a_scored_strategy_has_under_two_bars_scores_it_flat() -> None:
    # 30 one-second samples reach min_observations, but with 60 s bars they make no whole bar: a flat series,
    # Sharpe 0, as statistics.md's rule for fewer than two values says (not a failed cycle).
    allocator = CapitalAllocator(make_policy(bar_seconds=60, min_observations=30), sample_seconds=1)
    decision = allocator.run_cycle({name: alternating(0.01, -0.005, 30) for name in NAMES}, now=T0)
    assert decision.reason is AllocationReason.KEPT
    assert decision.sharpe == {name: 0.0 for name in NAMES} and decision.scores == {name: 0.0 for name in NAMES}


def test_run_cycle_when_deadband_equals_turnover_cap_applies_a_capped_move() -> None:
    policy = make_policy(turnover_cap=0.05, deadband=0.05, min_observations=2, cooldown_seconds=0)
    allocator = CapitalAllocator(policy, initial_weights={"momentum": 0.24, "meanrev": 0.44, "carry": 0.32})
    returns = {
        "momentum": [0.01, 0.03] * 10,
        "meanrev": [0.0, 0.001] * 10,
        "carry": [-0.01, 0.0] * 10,
    }
    decision = allocator.run_cycle(returns, now=T0)
    assert decision.reason is AllocationReason.APPLIED, decision.message
    assert decision.turnover == pytest.approx(0.05)
    assert l1_distance(list(decision.new_weights.values()), list(decision.previous_weights.values())) == (
        pytest.approx(0.05)
    )


def test_run_cycle_when_change_is_exactly_the_deadband_applies_it() -> None:
    """Four strategies at 0.25, one losing: its target is 0 and the others share 1, a change of exactly 0.5 (the sum of
    the others' gains is 0.25, and 0.25 leaves the loser). Normalised one float division each, the targets measure
    0.49999999999999994 from the weights; a change equal to the deadband is not below it."""
    names = ("a", "b", "c", "d")
    policy = CapitalPolicy.from_dict(
        {
            "total_capital": "1000000",
            "strategies": {name: {} for name in names},
            "lookback": 4,
            "min_observations": 2,
            "shrinkage_n0": 0,
            "turnover_cap": 2,
            "deadband": 0.5,
        }
    )
    returns = {
        "a": [0.01, 0.03, 0.01, 0.03],
        "b": [0.001, 0.03, 0.01, 0.03],
        "c": [0.008, 0.02, 0.01, 0.03],
        "d": [-0.01, 0.0, -0.01, 0.0],
    }
    allocator = CapitalAllocator(policy)
    decision = allocator.run_cycle(returns, now=T0)
    wanted = target_weights_from_scores([decision.scores[n] for n in names], list(policy.strategies.values()))
    assert l1_distance(wanted, [0.25] * 4) < 0.5  # the float measure of the move: a unit in the last place short
    assert decision.reason is AllocationReason.APPLIED, decision.message
    assert allocator.weights["d"] == 0.0 and math.fsum(allocator.weights.values()) == pytest.approx(1.0)


def test_allocations_usd_when_weights_round_up_at_a_large_total_never_exceed_it() -> None:
    weights = {"momentum": 0.2500000000006, "meanrev": 0.2500000000006, "carry": 0.4999999999988}
    allocator = CapitalAllocator(make_policy(total_capital="1000000000000"), initial_weights=weights)
    amounts = allocator.allocations_usd()
    assert sum(amounts.values()) == Decimal("1000000000000")  # 1.00 over before: each weight rounded up
    assert amounts["carry"] == Decimal("499999999998.00") and amounts["momentum"] == Decimal("250000000001.00")
    assert all(allocator.allocation_usd(name) == amount for name, amount in amounts.items())


def test_run_cycle_when_decision_made_logs_allocator_line(caplog: pytest.LogCaptureFixture) -> None:
    allocator = CapitalAllocator(make_policy(), last_applied_at=T0)
    with caplog.at_level(logging.INFO, logger="ops_server.allocation"):
        allocator.run_cycle(RETURNS, now=T0 + HOUR)
        allocator.run_cycle(RETURNS, now=T0 + 25 * HOUR)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("[ALLOCATOR] COOLDOWN")
    assert messages[1].startswith("[ALLOCATOR] APPLIED")


def test_allocation_usd_when_weight_fractional_rounds_down_to_cents() -> None:
    allocator = CapitalAllocator(make_policy(total_capital="1000"))
    assert allocator.allocation_usd("momentum") == Decimal("333.33")
    assert sum(allocator.allocations_usd().values()) <= Decimal("1000")
    with pytest.raises(NotFoundError):
        allocator.allocation_usd("nope")


def test_allocation_usd_when_weight_has_float_noise_does_not_lose_a_cent() -> None:
    # Projecting [0.2, 0.5, 0.3] yields 0.19999999999999998 for the first weight.
    allocator = CapitalAllocator(make_policy(), initial_weights={"momentum": 0.2, "meanrev": 0.5, "carry": 0.3})
    assert allocator.allocations_usd() == {
        "momentum": Decimal("200000.00"),
        "meanrev": Decimal("500000.00"),
        "carry": Decimal("300000.00"),
    }


def test_capital_policy_when_caller_dict_mutated_policy_unchanged() -> None:
    strategies = {"momentum": StrategyBounds(), "meanrev": StrategyBounds()}
    policy = CapitalPolicy(total_capital=Decimal("100"), strategies=strategies)
    strategies["carry"] = StrategyBounds()
    assert list(policy.strategies) == ["momentum", "meanrev"]
    with pytest.raises(TypeError):
        policy.strategies["carry"] = StrategyBounds()  # type: ignore[index]


def test_set_policy_when_bounds_tighten_reprojects_weights() -> None:
    allocator = CapitalAllocator(make_policy(), initial_weights={"momentum": 0.8, "meanrev": 0.1, "carry": 0.1})
    tighter = {"momentum": {"max_fraction": 0.5}, "meanrev": {}, "carry": {}}
    allocator.set_policy(make_policy(strategies=tighter))
    assert allocator.weights == pytest.approx({"momentum": 0.5, "meanrev": 0.25, "carry": 0.25})


def test_snapshot_when_restored_into_new_allocator_keeps_weights_and_cooldown() -> None:
    allocator = CapitalAllocator(make_policy())
    allocator.run_cycle(RETURNS, now=T0)
    state = json.loads(json.dumps(allocator.snapshot()))
    restored = CapitalAllocator(make_policy())
    restored.restore(state)
    assert restored.weights == pytest.approx(allocator.weights)
    assert restored.last_applied_at == T0
    assert restored.run_cycle(RETURNS, now=T0 + HOUR).reason is AllocationReason.COOLDOWN


def test_restore_when_state_malformed_raises_config_error() -> None:
    allocator = CapitalAllocator(make_policy())
    with pytest.raises(ConfigError, match="version"):
        allocator.restore({"weights": {}})
    with pytest.raises(ConfigError, match="non-negative"):
        allocator.restore({"version": 1, "weights": {"momentum": -1.0}, "last_applied_at": None})


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    returns_path = tmp_path / "returns.csv"
    rows = [",".join(NAMES)] + [
        ",".join(str(RETURNS[name][i]) for name in NAMES) for i in range(len(RETURNS["momentum"]))
    ]
    returns_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    policy_path = tmp_path / "capital.json"
    policy_path.write_text(json.dumps(policy_dict()), encoding="utf-8")
    return returns_path, policy_path


def test_main_when_csv_and_policy_given_prints_decision_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    returns_path, policy_path = _write_inputs(tmp_path)
    previous = json.dumps({"momentum": 0.2, "meanrev": 0.4, "carry": 0.4})
    code = main(["--returns", str(returns_path), "--policy", str(policy_path), "--previous", previous])
    out = capsys.readouterr().out
    assert code == 0
    assert "reason:   APPLIED" in out
    assert "Sharpe scores momentum=0.99" in out
    momentum_line = next(line for line in out.splitlines() if line.startswith("momentum"))
    assert "0.2000" in momentum_line and "200,000.00" in momentum_line


def test_main_when_json_returns_and_forced_prints_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, policy_path = _write_inputs(tmp_path)
    returns_path = tmp_path / "returns.json"
    returns_path.write_text(json.dumps(RETURNS), encoding="utf-8")
    assert main(["--returns", str(returns_path), "--policy", str(policy_path), "--forced"]) == 0
    assert "reason:   FORCED (forced)" in capsys.readouterr().out


def test_main_when_csv_has_bad_cell_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    returns_path, policy_path = _write_inputs(tmp_path)
    returns_path.write_text("momentum,meanrev,carry\n0.01,abc,0.02\n", encoding="utf-8")
    assert main(["--returns", str(returns_path), "--policy", str(policy_path)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'meanrev'" in err and "not a number" in err


def test_main_when_policy_invalid_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    returns_path, policy_path = _write_inputs(tmp_path)
    policy_path.write_text(json.dumps(policy_dict(turnover_cap=5)), encoding="utf-8")
    assert main(["--returns", str(returns_path), "--policy", str(policy_path)]) == 2
    assert "turnover_cap: Input should be less than or equal to 2" in capsys.readouterr().err


def test_main_when_sample_seconds_given_prints_annualised_sharpe_and_deflated_sharpe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    returns_path, policy_path = _write_inputs(tmp_path)
    code = main(["--returns", str(returns_path), "--policy", str(policy_path), "--sample-seconds", "86400"])
    out = capsys.readouterr().out
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:4] == ["strategy", "obs", "sharpe/yr", "DSR"]
    momentum = describe_returns(RETURNS["momentum"])
    row = next(line for line in out.splitlines() if line.startswith("momentum")).split()
    assert float(row[2]) == pytest.approx(momentum.sharpe * math.sqrt(365), abs=0.006)  # daily samples
    expected = deflated_sharpe_ratio(momentum.sharpe, momentum.n, 3, momentum.skew, momentum.kurtosis)
    assert float(row[3]) == pytest.approx(expected, abs=6e-5)  # three strategies scored: three trials


def test_cycle_when_policy_has_bar_seconds_scores_sharpe_of_the_summed_bars() -> None:
    allocator = CapitalAllocator(make_policy(bar_seconds=2.0, shrinkage_n0=0), sample_seconds=1.0)
    decision = allocator.run_cycle(RETURNS, now=0.0, forced=True)
    series = RETURNS["momentum"][len(RETURNS["momentum"]) % 2 :]
    bars = [series[i] + series[i + 1] for i in range(0, len(series), 2)]
    moments = describe_returns(bars)
    assert decision.sharpe["momentum"] == pytest.approx(moments.sharpe, rel=1e-12)
    assert decision.sharpe_annual is not None
    assert decision.sharpe_annual["momentum"] == pytest.approx(moments.sharpe * math.sqrt(31_536_000 / 2), rel=1e-12)


def test_capital_policy_when_lookback_exceeds_the_returns_ops_keeps_raises_config_error() -> None:
    assert MAX_LOOKBACK == DEFAULT_HISTORY  # the returns kept per strategy: a longer lookback could never be filled
    with pytest.raises(ConfigError, match="lookback: Input should be less than or equal to 10000"):
        CapitalPolicy.from_dict(policy_dict(lookback=20_000, min_observations=15_000))
    assert CapitalPolicy.from_dict(policy_dict(lookback=10_000, min_observations=10_000)).lookback == 10_000
