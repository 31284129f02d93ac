"""The rollout policy of a canary.

:class:`CanaryConfig` is the step schedule, the dwell and observation minimums, the check thresholds and the hard
guard limits of one canary, read from the registry's ``canary`` block with :meth:`CanaryConfig.from_dict` and
validated field by field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nautilus_mesh.errors import ConfigError

__all__ = ["CanaryConfig"]


def _fmt_schedule(schedule: Sequence[object]) -> str:
    return "[" + ", ".join(f"{p:g}" if isinstance(p, int | float) else repr(p) for p in schedule) + "]"


@dataclass(frozen=True)
class CanaryConfig:
    """Rollout policy of one canary. Built from JSON with :meth:`from_dict`; every field is validated.

    Sharpe quantities (``tolerance``) are per period of the return series the caller samples, not annualised.
    A guard set to ``None`` is disabled.
    """

    schedule: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0)
    """Live canary weights in percent; strictly increasing, each in (0, 100], ending at 100."""
    min_dwell_seconds: float = 3600.0
    """Minimum time at a live step before its first check, and between two checks at the same step."""
    min_observations: int = 30
    """Minimum paired observations at a live step before its first check, and new ones between checks (>= 3)."""
    shadow_min_dwell_seconds: float = 3600.0
    """Like ``min_dwell_seconds`` but for the shadow phase before the first live step."""
    shadow_min_observations: int = 30
    """Like ``min_observations`` but for the shadow phase (>= 3)."""
    tolerance: float = 0.1
    """How much worse (per-period Sharpe difference) the canary may be and still pass."""
    z_crit: float = 1.645
    """One-sided critical value of the checks (1.645 is 95%)."""
    max_failed_checks: int = 2
    """Failed checks over the canary's life that roll it back."""
    max_inconclusive: int = 3
    """Inconclusive checks at one step (since it began or was resumed) that pause it."""
    psr_threshold: float = 0.95
    """Minimum probabilistic Sharpe ratio (against 0) of the canary before the step to 100%."""
    psr_confidence: float = 0.95
    """Confidence of the minimum track record length required before the step to 100%."""
    require_confirmation: bool = False
    """Hold before 100% in WAITING_CONFIRMATION until an operator confirms."""
    max_drawdown: float | None = 0.10
    """Guard: canary drawdown from peak as a fraction in (0, 1]; more rolls back at once."""
    max_daily_loss: float | None = None
    """Guard: canary loss today in USD; more rolls back at once."""
    max_risk_breaches: int | None = None
    """Guard: risk-rail breaches by the canary; more rolls back at once."""
    max_error_rate: float | None = 0.05
    """Guard: fraction of the canary's signals/orders that errored, in [0, 1]; more rolls back at once."""

    def __post_init__(self) -> None:
        self._validate_schedule()
        _require(math.isfinite(self.min_dwell_seconds) and self.min_dwell_seconds >= 0, "min_dwell_seconds", ">= 0")
        _require(
            math.isfinite(self.shadow_min_dwell_seconds) and self.shadow_min_dwell_seconds >= 0,
            "shadow_min_dwell_seconds",
            ">= 0",
        )
        _require(self.min_observations >= 3, "min_observations", ">= 3")
        _require(self.shadow_min_observations >= 3, "shadow_min_observations", ">= 3")
        _require(math.isfinite(self.tolerance) and self.tolerance >= 0, "tolerance", "finite and >= 0")
        _require(math.isfinite(self.z_crit) and self.z_crit > 0, "z_crit", "finite and > 0")
        _require(self.max_failed_checks >= 1, "max_failed_checks", ">= 1")
        _require(self.max_inconclusive >= 1, "max_inconclusive", ">= 1")
        _require(0 < self.psr_threshold < 1, "psr_threshold", "in (0, 1)")
        _require(0 < self.psr_confidence < 1, "psr_confidence", "in (0, 1)")
        if self.max_drawdown is not None:
            _require(0 < self.max_drawdown <= 1, "max_drawdown", "a fraction in (0, 1]")
        if self.max_daily_loss is not None:
            _require(math.isfinite(self.max_daily_loss) and self.max_daily_loss > 0, "max_daily_loss", "> 0 USD")
        if self.max_risk_breaches is not None:
            _require(self.max_risk_breaches >= 0, "max_risk_breaches", ">= 0")
        if self.max_error_rate is not None:
            _require(0 <= self.max_error_rate <= 1, "max_error_rate", "a fraction in [0, 1]")

    def _validate_schedule(self) -> None:
        schedule = self.schedule
        shown = _fmt_schedule(schedule)
        problem = ""
        if not schedule:
            problem = "must not be empty"
        elif not all(isinstance(p, int | float) and math.isfinite(p) and 0 < p <= 100 for p in schedule):
            problem = "every step must be a percent in (0, 100]"
        elif any(b <= a for a, b in itertools.pairwise(schedule)):
            problem = "must be strictly increasing"
        elif schedule[-1] != 100:
            problem = "must end at 100"
        if problem:
            raise ConfigError(
                f"canary schedule {shown} {problem}",
                {"field": "schedule", "schedule": shown},
                code="CANARY_SCHEDULE_INVALID",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CanaryConfig:
        """Build a config from a JSON-like mapping; missing keys take the defaults.

        Raises:
            ConfigError: An unknown key, a value of the wrong type, or a value out of range.
        """
        unknown = sorted(set(data) - set(_FIELD_KINDS))
        if unknown:
            raise ConfigError(f"unknown canary config keys: {', '.join(unknown)}", {"keys": ", ".join(unknown)})
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _parse_field(name, _FIELD_KINDS[name], value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, object]:
        """Return the JSON-able form that :meth:`from_dict` reads back."""
        out: dict[str, object] = {name: getattr(self, name) for name in _FIELD_KINDS}
        out["schedule"] = list(self.schedule)
        return out


_FIELD_KINDS: dict[str, str] = {
    "schedule": "schedule",
    "min_dwell_seconds": "float",
    "min_observations": "int",
    "shadow_min_dwell_seconds": "float",
    "shadow_min_observations": "int",
    "tolerance": "float",
    "z_crit": "float",
    "max_failed_checks": "int",
    "max_inconclusive": "int",
    "psr_threshold": "float",
    "psr_confidence": "float",
    "require_confirmation": "bool",
    "max_drawdown": "float?",
    "max_daily_loss": "float?",
    "max_risk_breaches": "int?",
    "max_error_rate": "float?",
}


def _require(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"canary config {name} must be {rule}", {"field": name})


def _parse_field(name: str, kind: str, value: object) -> object:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    # bool is an int subclass in Python; a JSON true where a number belongs is a typo, not 1.
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "schedule":
        if not isinstance(value, list | tuple):
            raise ConfigError(f"canary schedule must be a list of percents, got {value!r}", {"field": name})
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in value):
            raise ConfigError(
                f"canary schedule {_fmt_schedule(value)} must contain only numbers",
                {"field": name, "schedule": _fmt_schedule(value)},
                code="CANARY_SCHEDULE_INVALID",
            )
        return tuple(float(p) for p in value)
    if kind == "float" and is_number:
        return float(value)  # type: ignore[arg-type]
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    raise ConfigError(f"canary config {name} must be {kind}, got {value!r}", {"field": name})
