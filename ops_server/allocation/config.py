"""The capital policy: how capital is split across strategies, and the checks that keep it feasible.

:class:`CapitalPolicy` holds the total capital, the enabled strategies with their :class:`StrategyBounds` and the
knobs of the allocation cycle (cooldown, lookback, shrinkage, turnover cap, deadband). It is read from JSON with
:meth:`CapitalPolicy.from_dict` or :meth:`CapitalPolicy.load`, and every field is validated, including that the
bounds can add up to the whole capital. :mod:`ops_server.allocation.allocator` runs allocation cycles against it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import pydantic

from nautilus_mesh.config import validate_config
from nautilus_mesh.decimals import MAX_INTEGER_DIGITS
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file

MAX_LOOKBACK = 10_000
"""The most strategy returns a policy may score (count): ops keeps each strategy's last 10,000
(``ops_server.measurement.DEFAULT_HISTORY``), so a longer lookback could never be filled."""

__all__ = ["CapitalPolicy", "StrategyBounds", "check_feasible"]

# Sums of float weights are compared with this slack: bounds such as 0.1 + 0.2 + 0.7 do not add to
# exactly 1.0 in binary floating point, and refusing them would be absurd.
_SUM_TOLERANCE = 1e-9


class StrategyBounds(pydantic.BaseModel):
    """Fraction of total capital one strategy may hold."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    min_fraction: float = pydantic.Field(0.0, ge=0, le=1)
    """Lower bound, a fraction of total capital in [0, 1]."""
    max_fraction: float = pydantic.Field(1.0, ge=0, le=1)
    """Upper bound, a fraction of total capital in [min_fraction, 1]."""

    def __init__(self, min_fraction: float = 0.0, max_fraction: float = 1.0, **extra: Any) -> None:
        super().__init__(min_fraction=min_fraction, max_fraction=max_fraction, **extra)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> StrategyBounds:
        if self.min_fraction > self.max_fraction:
            raise ConfigError(
                f"bounds must satisfy 0 <= min_fraction <= max_fraction <= 1, got min {self.min_fraction} "
                f"max {self.max_fraction}",
                {"min_fraction": self.min_fraction, "max_fraction": self.max_fraction},
            )
        return self


def check_feasible(lower: Sequence[float], upper: Sequence[float], total: float) -> None:
    """Raise ConfigError unless bounds ``lower``/``upper`` (fractions) admit weights summing to ``total``."""
    low, high = math.fsum(lower), math.fsum(upper)
    if low > total + _SUM_TOLERANCE:
        raise ConfigError(
            f"infeasible bounds: the minimum fractions add up to {low:.6g} > {total:.6g}",
            {"sum_min_fraction": low, "total": total},
            code="INFEASIBLE_BOUNDS",
        )
    if high < total - _SUM_TOLERANCE:
        raise ConfigError(
            f"infeasible bounds: the maximum fractions add up to {high:.6g} < {total:.6g}",
            {"sum_max_fraction": high, "total": total},
            code="INFEASIBLE_BOUNDS",
        )


class CapitalPolicy(pydantic.BaseModel):
    """How capital is split across strategies. Read with :meth:`from_dict` or :meth:`load`; every field is
    validated (strict types: ``true`` is not a number, a float is not money), and so is the feasibility of the
    bounds."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    total_capital: Decimal
    """Capital shared by all strategies, USD, > 0 and below 1e18; a decimal string (or integer) in JSON, never a
    float."""
    strategies: Mapping[str, StrategyBounds] = pydantic.Field(min_length=1)
    """The enabled strategies (in this order in decisions and reports) with their bounds. A strategy of the model
    registry left out has no capital: its LIVE models' quota is 0 (its SHADOW models paper-trade as ever)."""
    cooldown_seconds: float = pydantic.Field(86_400.0, ge=0, allow_inf_nan=False)
    """Minimum time after the last applied allocation, scheduled or forced, before a scheduled cycle may apply new
    weights, seconds (a forced cycle skips it, and restarts it)."""
    lookback: int = pydantic.Field(500, ge=2, le=MAX_LOOKBACK)
    """Number of most recent returns scored per strategy (count, at most 10,000: the strategy returns ops keeps)."""
    min_observations: int = pydantic.Field(30, ge=0)
    """A strategy with fewer returns than this keeps its current weight (count, <= lookback)."""
    shrinkage_n0: float = pydantic.Field(50.0, ge=0, allow_inf_nan=False)
    """Shrinkage prior, in observations: the Sharpe ratio is multiplied by n / (n + n0)."""
    turnover_cap: float = pydantic.Field(0.5, gt=0, le=2)
    """Largest L1 change of the weight vector in one cycle (sum of absolute fraction changes), in (0, 2]."""
    deadband: float = pydantic.Field(0.01, ge=0, allow_inf_nan=False)
    """L1 change below which a cycle is skipped (sum of absolute fraction changes), in [0, turnover_cap]."""
    bar_seconds: float | None = pydantic.Field(None, gt=0, allow_inf_nan=False)
    """Horizon the strategy returns of the lookback are summed to before scoring, seconds (rounded to whole samples
    of ops' ``sample_interval_seconds``); the score's ``n`` and ``shrinkage_n0`` then count bars. None scores each
    sample."""
    allow_manual: bool = True
    """Whether an operator may force a cycle (bypassing the cooldown)."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        # A second, independent sampling rate could disagree with the real one: annualising uses ops' interval.
        if isinstance(data, Mapping) and "periods_per_year" in data:
            raise ConfigError(
                "periods_per_year was removed: Sharpe ratios are annualised with ops' sample_interval_seconds "
                "(the what-if tool takes --sample-seconds)",
                {"field": "periods_per_year"},
                code="CONFIG_KEY_RENAMED",
            )
        return data

    @pydantic.field_validator("total_capital", mode="before")
    @classmethod
    def _money(cls, value: object) -> Decimal:
        # Floats are refused: money is exact on the wire and in ledgers (DESIGN.md section 3).
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise ConfigError(f'total_capital must be a decimal string such as "1000000", got {value!r}')
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise ConfigError(f"total_capital is not a decimal number: {value!r}") from None
        if not amount.is_finite() or amount <= 0:
            raise ConfigError(f"total_capital must be a positive amount, got {value!r}")
        if amount.adjusted() >= MAX_INTEGER_DIGITS:  # the allocations' arithmetic is exact below that
            raise ConfigError(f"total_capital must be below 1e{MAX_INTEGER_DIGITS} USD, got {value!r}")
        return amount

    @pydantic.field_validator("strategies", mode="after")
    @classmethod
    def _read_only(cls, value: Mapping[str, StrategyBounds]) -> Mapping[str, StrategyBounds]:
        # A frozen model holding a caller's dict is not frozen at all: keep a read-only copy.
        if any(not name for name in value):
            raise ConfigError("strategy names must be non-empty strings")
        return MappingProxyType(dict(value))

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> CapitalPolicy:
        bounds = list(self.strategies.values())
        check_feasible([b.min_fraction for b in bounds], [b.max_fraction for b in bounds], 1.0)
        if self.min_observations > self.lookback:
            raise ConfigError(
                f"min_observations ({self.min_observations}) must not exceed lookback ({self.lookback}): "
                "no strategy could ever be scored"
            )
        if self.deadband > self.turnover_cap:
            # A capped move has L1 = turnover_cap, so a larger deadband would block every change forever.
            raise ConfigError(f"deadband ({self.deadband}) must not exceed turnover_cap ({self.turnover_cap})")
        return self

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], known_strategies: Collection[str] | None = None, *, source: str = "capital policy"
    ) -> CapitalPolicy:
        """Build and validate a policy from its JSON shape.

        Args:
            d: The policy object, e.g. ``{"total_capital": "1000000", "strategies": {"momentum":
                {"min_fraction": 0.1, "max_fraction": 0.7}}, "cooldown_seconds": 86400, ...}``.
                ``total_capital`` and ``strategies`` are required; the other keys default to the field defaults.
            known_strategies: If given, every strategy must be one of these (e.g. the model registry's).
            source: Where the policy came from, named first in every error (a file path).

        Raises:
            ConfigError: On a missing, unknown, mistyped or out-of-range key (named with its path), an unknown
                strategy (``UNKNOWN_STRATEGY``) or infeasible bounds.
        """
        try:
            policy = validate_config(cls, d, source=source)
        except ConfigError as exc:
            if exc.message.startswith(f"{source}: "):
                raise
            raise ConfigError(f"{source}: {exc.message}", exc.details, code=exc.code) from None
        if known_strategies is not None:
            for name in policy.strategies:
                if name not in known_strategies:
                    raise ConfigError(
                        f"{source}: unknown strategy {name!r} in capital policy "
                        f"(known: {', '.join(sorted(known_strategies))})",
                        {"strategy": name},
                        code="UNKNOWN_STRATEGY",
                    )
        return policy

    @classmethod
    def load(cls, path: str | os.PathLike[str], known_strategies: Collection[str] | None = None) -> CapitalPolicy:
        """Read and validate a policy JSON file.

        Raises:
            ConfigError: If the file is missing or invalid; the message starts with the path.
        """
        return cls.from_dict(load_json_file(path), known_strategies, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape accepted by :meth:`from_dict` (``total_capital`` as a decimal string)."""
        data = self.model_dump(mode="json", exclude={"strategies"})
        data["total_capital"] = str(self.total_capital)
        data["strategies"] = {name: b.model_dump(mode="json") for name, b in self.strategies.items()}
        return data
