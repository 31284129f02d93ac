"""Quotes replayed per second by a backtest: ops' signal path and the engine's sim venue in one process.

Run: .venv/bin/python benchmarks/bench_backtest.py [--quotes N] [--strategy momentum] [--models momentum_v1]

The tape is the seeded synthetic market (one-second BTC-USD quotes of the demo engine config); each quote moves the
simulated clock, requotes the sim venue's market maker, feeds ops' marks and the model, and sends the model's
signals through the ops signal path to the engine. Printed: quotes per second per model run, signals and fills.
Timing is printed, never checked.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backtests.api import run_backtest
from backtests.runner import BacktestSpec

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "demo"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quotes", type=int, default=100_000, help="synthetic quotes (count)")
    p.add_argument("--strategy", default="momentum")
    p.add_argument("--models", default="momentum_v1", help="comma-separated models (each is its own run)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    models = tuple(m for m in args.models.split(",") if m)
    spec = BacktestSpec(strategy=args.strategy, config_dir=CONFIG_DIR, seed=args.seed, models=models)
    started = time.perf_counter()
    result = run_backtest(spec, None, quotes=args.quotes)
    took = time.perf_counter() - started
    runs = len(result.runs)
    print(f"backtest of {args.quotes:,} quotes x {runs} model run(s) in {took:.2f}s")
    print(f"  {args.quotes * runs / took:,.0f} quotes/s (tape generation, setup and report included)")
    for model_id, m in result.report["models"].items():
        print(f"  {model_id}: {m['signals_count']:,} signals, {m['fills_count']:,} fills, PnL {m['pnl_usd']} USD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
