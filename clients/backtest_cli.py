"""``nautilus-mesh backtest``: its options, and the child process that runs it.

The options are defined here once, for the CLI's parser and for ``python -m backtests`` (which parses them again in
the child). The backtest wires ops and the engine in one process, so it runs as ``python -m backtests``: the CLI
imports neither server.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_SYNTHETIC_QUOTES = 14_400
"""Quotes of the synthetic market when no file is given: four hours of one-second quotes (count)."""


def _count(text: str) -> int:
    """A count of at least 1 (argparse refuses anything else with exit code 2)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds above 0 (argparse refuses anything else with exit code 2)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text}")
    return value


def add_backtest_options(p: argparse.ArgumentParser) -> None:
    """The options of a backtest run."""
    p.add_argument("--strategy", required=True, help="strategy name in strategies.json (e.g. momentum, meanrev)")
    p.add_argument("--data", type=Path, default=None, help="quote CSV (ts,bid,ask[,bid_size,ask_size][,symbol])")
    p.add_argument("--seed", type=int, default=7, help="seed of the sim venue and of the synthetic market")
    p.add_argument("--models", default="", help="comma-separated models of the strategy (default: all)")
    p.add_argument("--compare", action="store_true", help="compare the first two models as the canary would")
    p.add_argument("--quotes", type=_count, default=DEFAULT_SYNTHETIC_QUOTES, help="synthetic quotes without --data")
    p.add_argument("--config-dir", type=Path, default=None, help="folder of the config files (default: config/demo)")
    p.add_argument("--sample-seconds", type=_seconds, default=30.0, help="equity sampling interval (simulated s)")
    p.add_argument("--bar-seconds", type=_seconds, default=300.0, help="return bar of Sharpe and compare (s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default var/backtests/<strategy>)")
    p.add_argument("--no-plot", action="store_true", help="skip the equity-curve PNGs")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")


def run_backtest(args: Sequence[str]) -> int:
    """``python -m backtests ARGS`` in a child process; returns its exit code."""
    return subprocess.call([sys.executable, "-m", "backtests", *args])  # noqa: S603 (our interpreter, our module)
