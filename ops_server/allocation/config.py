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
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file

__all__ = ["CapitalPolicy", "StrategyBounds", "check_feasible"]

# Sums of float weights are compared with this slack: bounds such as 0.1 + 0.2 + 0.7 do not add to
# exactly 1.0 in binary floating point, and refusing them would be absurd.
_SUM_TOLERANCE = 1e-9


@dataclass(frozen=True)
class StrategyBounds:
    """Fraction of total capital one strategy may hold."""

    min_fraction: float = 0.0
    """Lower bound, in [0, 1]."""
    max_fraction: float = 1.0
    """Upper bound, in [min_fraction, 1]."""

    def __post_init__(self) -> None:
        lo, hi = self.min_fraction, self.max_fraction
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"bounds must be finite numbers, got min {lo!r} max {hi!r}")
        if lo < 0.0 or hi > 1.0 or lo > hi:
            raise ConfigError(
                f"bounds must satisfy 0 <= min_fraction <= max_fraction <= 1, got min {lo} max {hi}",
                {"min_fraction": lo, "max_fraction": hi},
            )


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


@dataclass(frozen=True)
class CapitalPolicy:
    """How capital is split across strategies. Construct with :meth:`from_dict` or :meth:`load`.

    Direct construction validates ranges and feasibility too (``__post_init__``); only the JSON-shape
    checks and the ``known_strategies`` check live in :meth:`from_dict`.
    """

    total_capital: Decimal
    """Capital shared by all strategies, > 0."""
    strategies: Mapping[str, StrategyBounds] = field(hash=False)
    """The enabled strategies (in this order in decisions and reports) with their bounds."""
    cooldown_seconds: float = 86_400.0
    """Minimum time between two applied (non-forced) allocations."""
    lookback: int = 500
    """Number of most recent returns scored per strategy, >= 2."""
    min_observations: int = 30
    """A strategy with fewer returns than this keeps its current weight, <= lookback."""
    shrinkage_n0: float = 50.0
    """Shrinkage prior: the Sharpe ratio is multiplied by n / (n + n0)."""
    turnover_cap: float = 0.5
    """Largest L1 change of the weight vector in one cycle, in (0, 2]."""
    deadband: float = 0.01
    """L1 change below which a cycle is skipped, in [0, turnover_cap]."""
    allow_manual: bool = True
    """Whether an operator may force a cycle (bypassing the cooldown)."""
    periods_per_year: float = 31_536_000.0
    """Sampling periods per year of the return series, for annualised reporting only."""

    def __post_init__(self) -> None:
        # A frozen dataclass holding a caller's dict is not frozen at all: keep a read-only copy.
        object.__setattr__(self, "strategies", MappingProxyType(dict(self.strategies)))
        if not isinstance(self.total_capital, Decimal) or not self.total_capital.is_finite() or self.total_capital <= 0:
            raise ConfigError(f"total_capital must be a positive decimal amount, got {self.total_capital!s}")
        if not self.strategies:
            raise ConfigError("strategies must name at least one enabled strategy")
        for name, bounds in self.strategies.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"strategy names must be non-empty strings, got {name!r}")
            if not isinstance(bounds, StrategyBounds):
                raise ConfigError(f"strategy {name!r}: bounds must be a StrategyBounds")
        check_feasible(
            [b.min_fraction for b in self.strategies.values()], [b.max_fraction for b in self.strategies.values()], 1.0
        )
        _require(math.isfinite(self.cooldown_seconds) and self.cooldown_seconds >= 0, "cooldown_seconds", ">= 0")
        _require(self.lookback >= 2, "lookback", ">= 2")
        _require(self.min_observations >= 0, "min_observations", ">= 0")
        if self.min_observations > self.lookback:
            raise ConfigError(
                f"min_observations ({self.min_observations}) must not exceed lookback ({self.lookback}): "
                "no strategy could ever be scored"
            )
        _require(math.isfinite(self.shrinkage_n0) and self.shrinkage_n0 >= 0, "shrinkage_n0", ">= 0")
        _require(0 < self.turnover_cap <= 2, "turnover_cap", "in (0, 2]")
        _require(math.isfinite(self.deadband) and self.deadband >= 0, "deadband", ">= 0")
        if self.deadband > self.turnover_cap:
            # A capped move has L1 = turnover_cap, so a larger deadband would block every change forever.
            raise ConfigError(f"deadband ({self.deadband}) must not exceed turnover_cap ({self.turnover_cap})")
        _require(math.isfinite(self.periods_per_year) and self.periods_per_year > 0, "periods_per_year", "> 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], known_strategies: Collection[str] | None = None) -> CapitalPolicy:
        """Build and validate a policy from its JSON shape.

        Args:
            d: The policy object, e.g. ``{"total_capital": "1000000", "strategies": {"momentum":
                {"min_fraction": 0.1, "max_fraction": 0.7}}, "cooldown_seconds": 86400, ...}``.
                ``total_capital`` and ``strategies`` are required; the other keys default to the field defaults.
            known_strategies: If given, every strategy must be one of these (e.g. the model registry's).

        Raises:
            ConfigError: On a missing, unknown, mistyped or out-of-range key, an unknown strategy or
                infeasible bounds. The message names the key.
        """
        if not isinstance(d, Mapping):
            raise ConfigError("capital policy must be a JSON object")
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ConfigError(f"unknown capital policy key(s): {', '.join(unknown)}", {"keys": ",".join(unknown)})
        for required in ("total_capital", "strategies"):
            if required not in d:
                raise ConfigError(f"capital policy is missing {required!r}")

        raw_strategies = d["strategies"]
        if not isinstance(raw_strategies, Mapping) or not raw_strategies:
            raise ConfigError("strategies must be a non-empty object of strategy name -> bounds")
        strategies: dict[str, StrategyBounds] = {}
        for name, raw in raw_strategies.items():
            if known_strategies is not None and name not in known_strategies:
                raise ConfigError(
                    f"unknown strategy {name!r} in capital policy (known: {', '.join(sorted(known_strategies))})",
                    {"strategy": name},
                    code="UNKNOWN_STRATEGY",
                )
            strategies[name] = _parse_bounds(name, raw)

        kwargs: dict[str, Any] = {"total_capital": _parse_money(d["total_capital"]), "strategies": strategies}
        for key in ("cooldown_seconds", "shrinkage_n0", "turnover_cap", "deadband", "periods_per_year"):
            if key in d:
                kwargs[key] = _parse_number(key, d[key])
        for key in ("lookback", "min_observations"):
            if key in d:
                kwargs[key] = _parse_int(key, d[key])
        if "allow_manual" in d:
            if not isinstance(d["allow_manual"], bool):
                raise ConfigError(f"allow_manual must be true or false, got {d['allow_manual']!r}")
            kwargs["allow_manual"] = d["allow_manual"]
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike[str], known_strategies: Collection[str] | None = None) -> CapitalPolicy:
        """Read and validate a policy JSON file.

        Raises:
            ConfigError: If the file is missing or invalid; the message starts with the path.
        """
        data = load_json_file(path)
        try:
            return cls.from_dict(data, known_strategies)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", exc.details, code=exc.code) from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape accepted by :meth:`from_dict` (``total_capital`` as a decimal string)."""
        return {
            "total_capital": str(self.total_capital),
            "cooldown_seconds": self.cooldown_seconds,
            "lookback": self.lookback,
            "min_observations": self.min_observations,
            "shrinkage_n0": self.shrinkage_n0,
            "turnover_cap": self.turnover_cap,
            "deadband": self.deadband,
            "allow_manual": self.allow_manual,
            "periods_per_year": self.periods_per_year,
            "strategies": {
                name: {"min_fraction": b.min_fraction, "max_fraction": b.max_fraction}
                for name, b in self.strategies.items()
            },
        }


def _require(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}", {"key": key})


def _parse_money(value: object) -> Decimal:
    # Floats are refused: money is exact on the wire and in ledgers (DESIGN.md section 3).
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ConfigError(f'total_capital must be a decimal string such as "1000000", got {value!r}')
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ConfigError(f"total_capital is not a decimal number: {value!r}") from exc
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"total_capital must be a positive amount, got {value!r}")
    return amount


def _parse_number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}", {"key": key})
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be finite, got {value!r}", {"key": key})
    if number < 0:
        raise ConfigError(f"{key} must not be negative, got {value!r}", {"key": key})
    return number


def _parse_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be a whole number, got {value!r}", {"key": key})
    if value < 0:
        raise ConfigError(f"{key} must not be negative, got {value!r}", {"key": key})
    return value


def _parse_bounds(name: str, raw: object) -> StrategyBounds:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"strategy names must be non-empty strings, got {name!r}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"strategy {name!r}: expected an object with min_fraction/max_fraction, got {raw!r}")
    unknown = sorted(set(raw) - {"min_fraction", "max_fraction"})
    if unknown:
        raise ConfigError(f"strategy {name!r}: unknown key(s) {', '.join(unknown)}", {"strategy": name})
    try:
        lo = _parse_number(f"strategies.{name}.min_fraction", raw.get("min_fraction", 0.0))
        hi = _parse_number(f"strategies.{name}.max_fraction", raw.get("max_fraction", 1.0))
        return StrategyBounds(lo, hi)
    except ConfigError as exc:
        if exc.message.startswith("strategies."):
            raise
        raise ConfigError(f"strategy {name!r}: {exc.message}", exc.details, code=exc.code) from exc
