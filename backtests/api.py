"""Run a backtest end to end: the tape, every chosen model, the comparison, and the files of the report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtests.mesh import instrument_specs, market_maker
from backtests.report import build_report, compare, to_json, to_table
from backtests.runner import LIVE_VENUE, BacktestSpec, ModelRun, run_model, select_models, strategy_entry
from backtests.tape import DEFAULT_SYMBOL, TapeQuote, load_tape, symbols, synthetic_tape
from clients.backtest_cli import DEFAULT_SYNTHETIC_QUOTES
from engine_server.config import load_engine_config
from nautilus_mesh.errors import ConfigError
from ops_server.model_registry import ModelRegistry


@dataclass
class BacktestResult:
    """A finished backtest."""

    report: dict[str, Any]
    runs: list[ModelRun]

    @property
    def json(self) -> str:
        return to_json(self.report)

    @property
    def table(self) -> str:
        return to_table(self.report)


def load_market(spec: BacktestSpec, data: Path | None, quotes: int) -> tuple[list[TapeQuote], dict[str, Any]]:
    """The tape (from ``data``, else ``quotes`` synthetic quotes of the seeded sim market) and its description."""
    if data is not None:
        tape = load_tape(data)
        source: dict[str, Any] = {"source": "file", "path": data.as_posix()}
    else:
        engine = load_engine_config(spec.config_dir / "engine.json")
        inst = next(i for i in instrument_specs(engine.venues, LIVE_VENUE) if i.symbol == DEFAULT_SYMBOL)
        tape = synthetic_tape(inst, market_maker(engine.venues, LIVE_VENUE), spec.seed, quotes)
        source = {"source": "synthetic", "path": None}
    first, last = tape[0].ts_ns, tape[-1].ts_ns
    return tape, {
        **source,
        "quotes_count": len(tape),
        "instruments": symbols(tape),
        "first_ts_ns": first,
        "last_ts_ns": last,
        "duration_s": (last - first) / 1e9,
    }


def run_backtest(
    spec: BacktestSpec,
    data: Path | None = None,
    *,
    quotes: int = DEFAULT_SYNTHETIC_QUOTES,
    with_compare: bool = False,
    workdir: Path | None = None,
) -> BacktestResult:
    """Backtest ``spec`` on a quote file (or the synthetic market); ``workdir`` keeps ops' state (temporary if None).

    Raises:
        ConfigError: unknown strategy or model, a bad quote file (with its line), or ``with_compare`` with fewer
            than two models.
    """
    entry = strategy_entry(spec.config_dir, spec.strategy)
    models = select_models(entry, spec.models)
    if with_compare and len(models) < 2:
        raise ConfigError(f"--compare needs two models; strategy {entry.name!r} runs {len(models)}")
    tape, described = load_market(spec, data, quotes)
    with tempfile.TemporaryDirectory(prefix="nautilus-backtest-") as tmp:
        root = workdir or Path(tmp)
        runs = [run_model(spec, entry, m, tape, root / m.model_id) for m in models]
    comparison = None
    if with_compare:
        registry = ModelRegistry.load(spec.config_dir / "registry.json")
        block = registry.data.strategies.get(spec.strategy)
        policy = block.canary.config() if block is not None and block.canary is not None else None
        comparison = compare(runs[0], runs[1], spec, policy)
    return BacktestResult(build_report(spec, described, runs, comparison), runs)


def write_outputs(result: BacktestResult, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.txt`` and one ``<model>.equity.png`` per model; returns the paths."""
    from backtests.plot import plot_equity

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.txt"]
    written[0].write_text(result.json, encoding="utf-8")
    written[1].write_text(result.table, encoding="utf-8")
    if plots:
        for run in result.runs:
            path = out_dir / f"{run.model_id}.equity.png"
            plot_equity(run, f"{result.report['strategy']} / {run.model_id}: PnL (USD)", path)
            written.append(path)
    return written
