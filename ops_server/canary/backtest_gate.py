"""The bridge from backtests to the canary: a canary model's backtest report, judged against its canary block.

The registry's canary block may name a report (``backtest_report``: the ``report.json`` that ``nautilus-mesh
backtest`` writes) and thresholds on it (``backtest_min_sharpe_annual``, ``backtest_max_drawdown_ratio``). The
verdict is shown by ``GetCanaryStatus`` beside the live statistics; with ``require_backtest`` a verdict of MISSING
or FAILED holds the canary in SHADOW (see :class:`~ops_server.canary.manager.CanaryManager`).

Only the report's documented fields are read (``models.<model_id>.sharpe_annual``, ``.max_drawdown_ratio``,
``.pnl_usd``), so ops needs nothing of the backtest runner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ops_server.canary.config import CanaryConfig

__all__ = ["BacktestStatus", "BacktestVerdict", "judge_backtest"]


class BacktestStatus(Enum):
    """What the canary's backtest report says."""

    NONE = "NONE"
    """The canary block names no report."""
    MISSING = "MISSING"
    """A report is named but cannot be read, or does not hold the canary model."""
    PASSED = "PASSED"
    """The report holds the canary model and meets every threshold set."""
    FAILED = "FAILED"
    """The report misses a threshold."""


@dataclass(frozen=True)
class BacktestVerdict:
    """A canary's backtest report as judged against its canary block."""

    status: BacktestStatus
    report: str = ""
    """The report's path as configured."""
    required: bool = False
    """True when the policy holds the canary in SHADOW unless the status is PASSED (``require_backtest``)."""
    sharpe_annual: float | None = None
    """The canary model's backtest Sharpe ratio, annualised."""
    max_drawdown_ratio: float | None = None
    """The canary model's backtest maximum drawdown, a fraction of peak equity."""
    pnl_usd: str = ""
    """The canary model's backtest PnL, USD (decimal string)."""
    note: str = ""

    @property
    def blocks_promotion(self) -> bool:
        """True when the policy asks for a backtest and this one does not allow leaving SHADOW."""
        return self.required and self.status is not BacktestStatus.PASSED


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def judge_backtest(config: CanaryConfig, model_id: str) -> BacktestVerdict:
    """Read the canary block's backtest report and judge ``model_id``'s figures against its thresholds."""
    required = config.require_backtest
    if config.backtest_report is None:
        status = BacktestStatus.MISSING if required else BacktestStatus.NONE
        return BacktestVerdict(status, required=required, note="no backtest report is configured")
    path = config.backtest_report
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        figures = report["models"][model_id]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"no model {model_id} in it" if isinstance(exc, KeyError | TypeError) else "cannot be read"
        return BacktestVerdict(BacktestStatus.MISSING, path, required, note=f"backtest report {path}: {reason}")
    if not isinstance(figures, dict):
        return BacktestVerdict(BacktestStatus.MISSING, path, required, note=f"backtest report {path}: malformed")
    sharpe, drawdown = _number(figures.get("sharpe_annual")), _number(figures.get("max_drawdown_ratio"))
    misses = []
    if config.backtest_min_sharpe_annual is not None and (sharpe is None or sharpe < config.backtest_min_sharpe_annual):
        misses.append(f"Sharpe {sharpe}/yr < {config.backtest_min_sharpe_annual:g}/yr")
    if config.backtest_max_drawdown_ratio is not None and (
        drawdown is None or drawdown > config.backtest_max_drawdown_ratio
    ):
        misses.append(f"max drawdown {drawdown} > {config.backtest_max_drawdown_ratio:g}")
    status = BacktestStatus.FAILED if misses else BacktestStatus.PASSED
    note = "; ".join(misses) if misses else "meets the canary block's backtest thresholds"
    return BacktestVerdict(status, path, required, sharpe, drawdown, str(figures.get("pnl_usd", "")), note)
