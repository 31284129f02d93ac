"""``python -m backtests`` (run by ``nautilus-mesh backtest``): replay quotes through ops and the engine in-process.

Exit codes: 0 done, 2 bad input (unknown strategy or model, a bad quote file, a bad config).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from backtests.api import run_backtest, write_outputs
from backtests.runner import BacktestSpec
from clients.backtest_cli import add_backtest_options
from nautilus_mesh.errors import MeshError

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nautilus-mesh backtest", description=__doc__.splitlines()[0])
    add_backtest_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if args.sample_seconds <= 0 or args.bar_seconds < args.sample_seconds:
        print("error: need 0 < --sample-seconds <= --bar-seconds", file=sys.stderr)
        return 2
    spec = BacktestSpec(
        strategy=args.strategy,
        config_dir=args.config_dir or DEFAULT_CONFIG_DIR,
        seed=args.seed,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        sample_seconds=args.sample_seconds,
        bar_seconds=args.bar_seconds,
    )
    started = time.perf_counter()  # the run's duration, printed as a rate; never part of the report
    try:
        result = run_backtest(spec, args.data, quotes=args.quotes, with_compare=args.compare)
        out = args.out or Path("var/backtests") / args.strategy
        written = write_outputs(result, out, plots=not args.no_plot)
    except (MeshError, RuntimeError) as exc:  # a MeshError's str() is its message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - started
    print(result.json if args.json else result.table, end="")
    tape, models = result.report["data"]["quotes_count"], len(result.runs)
    replayed = tape * models  # each model replays the whole tape on a mesh of its own
    print(f"wrote {', '.join(p.as_posix() for p in written)}", file=sys.stderr)
    print(
        f"{tape} quotes replayed for each of {models} model(s) in {took:.2f}s ({replayed / took:,.0f} quotes/s, "
        "all models)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
