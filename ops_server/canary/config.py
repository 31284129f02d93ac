"""The rollout policy of a canary.

:class:`CanaryConfig` is the step schedule, the dwell and observation minimums, the check thresholds and the hard
guard limits of one canary, read from the registry's ``canary`` block with :meth:`CanaryConfig.from_dict` and
validated field by field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import pydantic

from nautilus_mesh.config import validate_config
from nautilus_mesh.errors import ConfigError

__all__ = ["CanaryBlock", "CanaryConfig"]


def _fmt_schedule(schedule: Sequence[object]) -> str:
    return "[" + ", ".join(f"{p:g}" if isinstance(p, int | float) else repr(p) for p in schedule) + "]"


def _schedule_error(schedule: Sequence[object], problem: str) -> ConfigError:
    shown = _fmt_schedule(schedule)
    return ConfigError(
        f"canary schedule {shown} {problem}", {"field": "schedule", "schedule": shown}, code="CANARY_SCHEDULE_INVALID"
    )


class CanaryConfig(pydantic.BaseModel):
    """Rollout policy of one canary (the registry's ``canary`` block less ``model_id``); every field is validated.

    Every Sharpe quantity here is annualised (``..._annual``): the controller sums the sampled returns into bars of
    ``bar_seconds`` and converts each threshold to that bar with ``sqrt(bars per year)``, so the policy means the
    same at any sampling rate. Observation counts are bars. A guard set to ``None`` is disabled. Types are strict:
    ``true`` is not a number and ``30.0`` is not a count.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    schedule: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0)
    """Live canary weights in percent; strictly increasing, each in (0, 100], ending at 100."""
    min_dwell_seconds: float = pydantic.Field(3600.0, ge=0, allow_inf_nan=False)
    """Minimum time at a live step before its first check, and between two checks at the same step, seconds."""
    bar_seconds: float = pydantic.Field(60.0, gt=0, allow_inf_nan=False)
    """Horizon the sampled returns are summed to before any statistic, seconds (rounded to whole samples)."""
    min_observations: int = pydantic.Field(30, ge=3)
    """Minimum paired bars at a live step before its first check, and new ones between checks (count of bars)."""
    shadow_min_dwell_seconds: float = pydantic.Field(3600.0, ge=0, allow_inf_nan=False)
    """Like ``min_dwell_seconds`` but for the shadow phase before the first live step, seconds."""
    shadow_min_observations: int = pydantic.Field(30, ge=3)
    """Like ``min_observations`` but for the shadow phase (count of bars)."""
    sharpe_tolerance_annual: float = pydantic.Field(1.0, ge=0, allow_inf_nan=False)
    """How much lower the canary's Sharpe ratio may be than the stable model's and still pass, annualised
    (Sharpe units per sqrt(year)); converted per bar as ``tolerance / sqrt(bars per year)``."""
    z_crit: float = pydantic.Field(1.645, gt=0, allow_inf_nan=False)
    """One-sided critical value of the checks (1.645 is 95%)."""
    max_failed_checks: int = pydantic.Field(2, ge=1)
    """Failed checks over the canary's life that roll it back (count)."""
    max_inconclusive: int = pydantic.Field(3, ge=1)
    """Inconclusive checks at one step (since it began or was resumed) that pause it (count)."""
    psr_benchmark_sharpe_annual: float = pydantic.Field(0.0, allow_inf_nan=False)
    """Benchmark Sharpe ratio of the PSR, DSR and minimum track record length before 100%, annualised."""
    psr_threshold: float = pydantic.Field(0.95, gt=0, lt=1)
    """Minimum probabilistic (and deflated) Sharpe ratio of the canary before the step to 100% (probability)."""
    psr_confidence: float = pydantic.Field(0.95, gt=0, lt=1)
    """Confidence of the minimum track record length required before the step to 100% (probability)."""
    require_confirmation: bool = False
    """Hold before 100% in WAITING_CONFIRMATION until an operator confirms."""
    max_drawdown_ratio: float | None = pydantic.Field(0.10, gt=0, le=1)
    """Guard: canary drawdown as a fraction of its peak equity (capital base + PnL, allocation changes are not
    gains or losses), in (0, 1]; more rolls back at once."""
    max_daily_loss: float | None = pydantic.Field(None, gt=0, allow_inf_nan=False)
    """Guard: canary loss today in USD; more rolls back at once."""
    max_risk_breaches: int | None = pydantic.Field(None, ge=0)
    """Guard: the canary model's own breaches of capital rails since its current step began (count); more rolls
    back at once."""
    max_error_rate: float | None = pydantic.Field(0.05, ge=0, le=1)
    """Guard: the canary's rejected decisions that were not risk denials, over its decisions since its current step
    began, a fraction in [0, 1]; more rolls back at once."""
    backtest_report: str | None = None
    """The canary model's backtest report (the ``report.json`` of ``nautilus-mesh backtest``), absolute or relative
    to ops' working directory; ``nautilus-mesh canary status`` shows it beside the live statistics. None: none."""
    backtest_min_sharpe_annual: float | None = pydantic.Field(None, allow_inf_nan=False)
    """Threshold on the report: the canary model's backtest Sharpe ratio must be at least this, annualised (Sharpe
    units per sqrt(year)). None: not checked."""
    backtest_max_drawdown_ratio: float | None = pydantic.Field(None, gt=0, le=1)
    """Threshold on the report: the canary model's backtest maximum drawdown must be at most this, a fraction of peak
    equity in (0, 1]. None: not checked."""
    require_backtest: bool = False
    """Hold the canary in SHADOW (no check runs; an operator promotion is refused with ``BACKTEST_REQUIRED``) while
    its backtest report is missing, lacks the canary model or fails the thresholds above."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        # Old keys had another unit: refusing them beats silently reading a per-sample number as an annual one.
        renamed = {
            "tolerance": "sharpe_tolerance_annual (annualised Sharpe; the old key was per sample)",
            "max_drawdown": "max_drawdown_ratio (a fraction of peak equity)",
        }
        if isinstance(data, Mapping):
            for old, new in renamed.items():
                if old in data:
                    raise ConfigError(
                        f"canary config: {old!r} was renamed to {new}", {"field": old}, code="CONFIG_KEY_RENAMED"
                    )
        return data

    @pydantic.field_validator("schedule", mode="before")
    @classmethod
    def _schedule_numbers(cls, value: object) -> tuple[float, ...]:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"canary schedule must be a list of percents, got {value!r}", {"field": "schedule"})
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in value):
            raise _schedule_error(value, "must contain only numbers")
        return tuple(float(p) for p in value)

    @pydantic.field_validator("schedule")
    @classmethod
    def _schedule_steps(cls, schedule: tuple[float, ...]) -> tuple[float, ...]:
        if not schedule:
            raise _schedule_error(schedule, "must not be empty")
        if not all(math.isfinite(p) and 0 < p <= 100 for p in schedule):
            raise _schedule_error(schedule, "every step must be a percent in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(schedule)):
            raise _schedule_error(schedule, "must be strictly increasing")
        if schedule[-1] != 100:
            raise _schedule_error(schedule, "must end at 100")
        return schedule

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CanaryConfig:
        """Build a config from a JSON-like mapping; missing keys take the defaults.

        Raises:
            ConfigError: An unknown key, a value of the wrong type, or a value out of range (the field is named).
        """
        return validate_config(cls, dict(data), source="canary config")

    def to_dict(self) -> dict[str, object]:
        """Return the JSON-able form that :meth:`from_dict` reads back."""
        return self.model_dump(mode="json")


class CanaryBlock(CanaryConfig):
    """The registry's ``canary`` block of a strategy: the canary model and its rollout policy."""

    model_id: str = pydantic.Field(min_length=1)
    """The new model to roll out; one of the strategy's models."""

    def config(self) -> CanaryConfig:
        """The rollout policy alone."""
        return CanaryConfig.model_validate(self.model_dump(exclude={"model_id"}))
