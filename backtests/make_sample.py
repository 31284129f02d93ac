"""Regenerate the sample tapes in ``backtests/data/`` and the demo strategies' reports in ``backtests/reports/``.

``python -m backtests.make_sample`` draws each tape from the sim venue's seeded GBM market (the demo engine config's
instrument, with no drift and the volatility below), then backtests each demo strategy on its tape. Everything is
seeded: running it again rewrites the same bytes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from backtests.api import run_backtest, write_outputs
from backtests.mesh import instrument_specs, market_maker
from backtests.runner import LIVE_VENUE, BacktestSpec
from backtests.tape import synthetic_tape, write_tape
from engine_server.config import load_engine_config

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT.parent / "config" / "demo"
SEED = 7
QUOTES = 7_200
"""Two hours of one-second quotes per tape (count): small enough to commit, long enough for 24 five-minute bars."""
SAMPLES = {
    # file -> (instrument, annualised volatility, strategy backtested on it)
    "btc_1s.csv": ("BTC-USD", 0.8, "momentum"),
    "eth_1s.csv": ("ETH-USD", 0.9, "meanrev"),
}


def main() -> int:
    os.chdir(ROOT.parent)  # report paths are relative to the repository root
    engine = load_engine_config(CONFIG_DIR / "engine.json")
    instruments = {i.symbol: i for i in instrument_specs(engine.venues, LIVE_VENUE)}
    (ROOT / "data").mkdir(exist_ok=True)
    for name, (symbol, volatility, strategy) in SAMPLES.items():
        inst = instruments[symbol].model_copy(update={"drift": 0.0, "volatility": volatility})
        tape = synthetic_tape(inst, market_maker(engine.venues, LIVE_VENUE), SEED, QUOTES)
        path = ROOT / "data" / name
        write_tape(path, tape, with_symbol=symbol != "BTC-USD")
        spec = BacktestSpec(strategy=strategy, config_dir=CONFIG_DIR, seed=SEED)
        result = run_backtest(spec, path.relative_to(ROOT.parent), with_compare=strategy == "momentum")
        written = write_outputs(result, ROOT / "reports" / strategy)
        print(f"{path.relative_to(ROOT.parent)}: {len(tape)} quotes; wrote {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
