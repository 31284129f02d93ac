"""The canary's hard guards: what is measured (``GuardSnapshot``) and which limits it trips.

A tripped guard rolls the canary back at once, whatever its checks say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ops_server.canary.config import CanaryConfig
from ops_server.canary.events import CanaryReason

__all__ = ["GuardSnapshot", "tripped_guards"]


@dataclass(frozen=True)
class GuardSnapshot:
    """The canary's hard-guard measurements at one instant (from measurement and risk rails).

    Raises:
        ValueError: A non-finite value, or a negative drawdown, breach count or error rate.
    """

    drawdown_ratio: float = 0.0
    """Fall of the canary's equity from its peak, a fraction of the peak (0.12 is 12% below the peak)."""
    daily_loss: float = 0.0
    """Canary loss today in USD as a positive amount; a day in profit may be passed as 0 or negative."""
    risk_breaches: int = 0
    """The canary model's own breaches of capital rails since its current step began (count)."""
    error_rate: float = 0.0
    """Fraction of the canary's signals/orders that errored, in [0, 1]."""

    def __post_init__(self) -> None:
        values = (self.drawdown_ratio, self.daily_loss, float(self.risk_breaches), self.error_rate)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"guard values must be finite: {self!r}")
        if self.drawdown_ratio < 0 or self.risk_breaches < 0 or self.error_rate < 0:
            raise ValueError(f"drawdown, risk_breaches and error_rate must be >= 0: {self!r}")

    def statistics(self) -> dict[str, float]:
        """The guard values as a flat float mapping for events."""
        return {
            "drawdown_ratio": self.drawdown_ratio,
            "daily_loss": self.daily_loss,
            "risk_breaches": float(self.risk_breaches),
            "error_rate": self.error_rate,
        }


def tripped_guards(guards: GuardSnapshot, cfg: CanaryConfig) -> list[tuple[CanaryReason, str]]:
    """The hard guards the snapshot trips under ``cfg``, each with its reason and a sentence; [] when none."""
    checks: list[tuple[CanaryReason, float, float | None, str]] = [
        (
            CanaryReason.GUARD_DRAWDOWN,
            guards.drawdown_ratio,
            cfg.max_drawdown_ratio,
            "drawdown {:.2%} of peak equity over limit {:.2%}",
        ),
        (CanaryReason.GUARD_DAILY_LOSS, guards.daily_loss, cfg.max_daily_loss, "daily loss {:.2f} over {:.2f} USD"),
        (
            CanaryReason.GUARD_RISK_BREACHES,
            guards.risk_breaches,
            cfg.max_risk_breaches,
            "{:g} risk breaches over {:g}",
        ),
        (
            CanaryReason.GUARD_ERROR_RATE,
            guards.error_rate,
            cfg.max_error_rate,
            "error rate {:.2%} over limit {:.2%}",
        ),
    ]
    return [
        (reason, text.format(value, limit))
        for reason, value, limit, text in checks
        if limit is not None and value > limit
    ]
