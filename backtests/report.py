"""The backtest report: per-model figures, the canary's comparison of two models, JSON and a readable table.

Every figure comes from the code ops runs live: PnL, fees, slippage against mid and drawdowns from
:class:`~ops_server.measurement.Measurement`, the annualised Sharpe ratio from its bar returns, and ``--compare``
from :func:`ops_server.canary.checks.run_check` (Jobson-Korkie/Memmel Sharpe difference, PSR, DSR, minimum track
record length), the check the canary controller runs before promoting a model. Units are in every field name.

The report holds no wall-clock time and no machine-dependent path, so the same tape, seed and config give a
byte-identical file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from nautilus_mesh.decimals import fmt
from ops_server.canary.checks import CheckInputs, run_check
from ops_server.canary.config import CanaryConfig
from ops_server.performance import annual_to_bar_sharpe

if TYPE_CHECKING:
    from backtests.runner import BacktestSpec, ModelRun
    from ops_server.core import OpsCore
    from strategies.config import BuiltModel

REPORT_SCHEMA = 1
CURVE_POINTS = 400
"""Most points of the equity curve kept in the JSON report (the PNG plots every sample)."""
_CENT = Decimal("0.01")


MIN_PAIRED_BARS = 3
"""The fewest paired bars the Sharpe difference test takes (count); fewer give an INCONCLUSIVE comparison."""


def usd(value: Decimal) -> str:
    """A USD amount rounded to the cent, as a decimal string."""
    return fmt(value.quantize(_CENT, rounding=ROUND_HALF_EVEN))


def _round(value: float, digits: int = 10) -> float:
    return round(value, digits)


def model_report(
    ops: OpsCore,
    run: ModelRun,
    model: BuiltModel,
    decisions: Counter[str],
    rejections: Counter[str],
    turnover_usd: Decimal,
    fills: int,
    spec: BacktestSpec,
    quotes: int,
) -> dict[str, Any]:
    """One model's figures at the end of its run."""
    perf = ops.measurement.performance(model.model_id)
    book = ops.measurement.book(model.model_id)
    capital = run.capital_usd
    bars = ops.measurement.bar_returns(run.returns)
    step = max(1, -(-len(run.curve_s) // CURVE_POINTS))
    return {
        "model_id": model.model_id,
        "instruments": list(model.instruments),
        "quotes_count": quotes,
        "capital_usd": usd(capital),
        "pnl_usd": usd(perf.equity),
        "realized_pnl_usd": usd(perf.realized),
        "unrealized_pnl_usd": usd(perf.unrealized),
        "return_ratio": _round(float(perf.equity / capital)) if capital > 0 else 0.0,
        "sharpe_annual": _round(ops.measurement.annual_sharpe(run.returns)),
        "max_drawdown_ratio": _round(book.max_drawdown_ratio),
        "max_drawdown_usd": usd(book.max_drawdown_usd),
        "turnover_usd": usd(turnover_usd),
        "turnover_ratio": _round(float(turnover_usd / capital)) if capital > 0 else 0.0,
        "fees_usd": usd(perf.fees),
        "slippage_usd": usd(perf.slippage),
        "fills_count": fills,
        "signals_count": sum(decisions.values()),
        "decisions_by_status": dict(sorted(decisions.items())),
        "rejections_by_code": dict(sorted(rejections.items())),
        "samples_count": len(run.curve_s),
        "bars_count": len(bars),
        "equity_curve": {
            "t_s": [_round(t, 3) for t in run.curve_s[::step]],
            "pnl_usd": [_round(v, 2) for v in run.curve_pnl_usd[::step]],
        },
    }


def compare(stable: ModelRun, canary: ModelRun, spec: BacktestSpec, policy: CanaryConfig | None) -> dict[str, Any]:
    """The canary controller's check of ``canary`` against ``stable`` over the whole run (both on the same samples).

    ``policy`` is the strategy's canary block from the registry (defaults when it has none); the bar is the
    backtest's, ``k = max(1, round(bar_seconds / sample_seconds))`` samples long, and the figures are annualised by
    its effective length ``k x sample_seconds`` (seconds), as the controller and the report's Sharpe ratios are.
    """
    samples_per_bar = max(1, round(spec.bar_seconds / spec.sample_seconds))
    bar_seconds = samples_per_bar * spec.sample_seconds  # the effective bar, seconds
    cfg = (policy or CanaryConfig.from_dict({})).model_copy(update={"bar_seconds": bar_seconds})
    n = min(len(stable.returns), len(canary.returns))
    out: dict[str, Any] = {"stable_model": stable.model_id, "canary_model": canary.model_id, "paired_samples": n}
    if n // samples_per_bar < MIN_PAIRED_BARS:
        out["outcome"] = "INCONCLUSIVE"
        out["note"] = f"{n // samples_per_bar} paired bars: at least {MIN_PAIRED_BARS} are needed"
        return out
    result = run_check(
        cfg,
        CheckInputs(
            at=datetime.fromtimestamp(0, UTC),
            step_percent=100.0,
            canary=canary.returns[:n],
            stable=stable.returns[:n],
            step_start=0,
            track_start=0,
            samples_per_bar=samples_per_bar,
            bar_seconds=bar_seconds,
            trials=2,
            gate_applies=True,
        ),
    )
    c = result.comparison
    per_year = 1.0 / annual_to_bar_sharpe(1.0, bar_seconds)
    out.update(
        {
            "outcome": result.outcome.value,
            "note": result.note,
            "paired_bars": c.n,
            "bar_seconds": bar_seconds,
            "sharpe_stable_annual": _round(c.sr_stable * per_year),
            "sharpe_canary_annual": _round(c.sr_canary * per_year),
            "sharpe_diff_annual": _round(c.diff * per_year),
            "sharpe_diff_se_annual": _round(c.se * per_year) if c.se != float("inf") else None,
            "jobson_korkie_z": _round(c.z),
            "returns_correlation": _round(c.rho),
            "psr_canary": _round(result.psr),
            "dsr_canary": _round(result.dsr),
            "min_track_record_bars": _round(result.min_trl, 3) if result.min_trl != float("inf") else None,
            "sharpe_tolerance_annual": cfg.sharpe_tolerance_annual,
            "psr_threshold": cfg.psr_threshold,
        }
    )
    return out


def build_report(
    spec: BacktestSpec, data: Mapping[str, Any], runs: Sequence[ModelRun], comparison: dict[str, Any] | None
) -> dict[str, Any]:
    """The whole report (what ``report.json`` holds)."""
    return {
        "schema": REPORT_SCHEMA,
        "strategy": spec.strategy,
        "seed": spec.seed,
        "data": dict(data),
        "sample_seconds": spec.sample_seconds,
        "bar_seconds": spec.bar_seconds,
        "models": {run.model_id: run.performance for run in runs},
        "compare": comparison,
    }


def to_json(report: Mapping[str, Any]) -> str:
    """The report as JSON text (stable key order, two-space indent, trailing newline)."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


_ROWS = (
    ("capital_usd", "capital (USD)"),
    ("pnl_usd", "PnL (USD)"),
    ("realized_pnl_usd", "realized PnL (USD)"),
    ("unrealized_pnl_usd", "unrealized PnL (USD)"),
    ("return_ratio", "return (fraction of capital)"),
    ("sharpe_annual", "Sharpe (annualised)"),
    ("max_drawdown_ratio", "max drawdown (fraction of peak)"),
    ("max_drawdown_usd", "max drawdown (USD)"),
    ("turnover_usd", "turnover (USD)"),
    ("turnover_ratio", "turnover (x capital)"),
    ("fees_usd", "fees (USD)"),
    ("slippage_usd", "slippage vs mid (USD)"),
    ("fills_count", "fills"),
    ("signals_count", "signals"),
    ("bars_count", "return bars"),
)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def to_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table: one column per model, then the comparison."""
    models: Mapping[str, Mapping[str, Any]] = report["models"]
    data = report["data"]
    lines = [
        f"backtest {report['strategy']}  seed {report['seed']}  {data['quotes_count']} quotes of "
        f"{', '.join(data['instruments'])} ({data['source']})  sample {report['sample_seconds']:g}s  "
        f"bar {report['bar_seconds']:g}s",
    ]
    rows = [("", *models.keys())]
    rows += [(label, *(_cell(m[key]) for m in models.values())) for key, label in _ROWS]
    rows.append(("rejections by code", *(_cell(m["rejections_by_code"]) for m in models.values())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    comparison = report.get("compare")
    if comparison:
        lines.append("")
        lines.append(f"compare {comparison['canary_model']} (canary) vs {comparison['stable_model']} (stable):")
        for key, value in comparison.items():
            if key not in ("canary_model", "stable_model"):
                lines.append(f"  {key}: {_cell(value)}")
    return "\n".join(lines) + "\n"
