"""Backtests through the live code path: determinism, the report, bad input, and the CLI."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from backtests.api import run_backtest, write_outputs
from backtests.report import compare
from backtests.runner import BacktestSpec, ModelRun
from backtests.tape import TapeError, load_tape
from nautilus_mesh.errors import ConfigError
from ops_server.canary.stats import describe_returns

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config" / "demo"
SAMPLE = ROOT / "backtests" / "data" / "btc_1s.csv"


def small_tape(tmp_path: Path, rows: int = 900) -> Path:
    """The first ``rows`` quotes of the sample tape (15 minutes of one-second quotes)."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[: rows + 1]
    path = tmp_path / "btc_small.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def spec(**overrides: object) -> BacktestSpec:
    base: dict[str, object] = {"strategy": "momentum", "config_dir": CONFIG_DIR, "seed": 7, "sample_seconds": 10.0}
    base.update(overrides)
    base.setdefault("bar_seconds", 60.0)
    return BacktestSpec(**base)  # type: ignore[arg-type]


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quotes.csv"
    path.write_text(text, encoding="utf-8")
    return path


# -- determinism and the report -------------------------------------------------------------------------------


def test_backtest_when_run_twice_on_same_data_and_seed_writes_byte_identical_reports(tmp_path: Path) -> None:
    data = small_tape(tmp_path)
    outputs = []
    for run in ("a", "b"):
        result = run_backtest(spec(), data, with_compare=True, workdir=tmp_path / f"state-{run}")
        written = write_outputs(result, tmp_path / run)
        outputs.append({p.name: p.read_bytes() for p in written})
    assert outputs[0].keys() == {"report.json", "report.txt", "momentum_v1.equity.png", "momentum_v2.equity.png"}
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(("tape", "strategy"), [("btc_1s.csv", "momentum"), ("eth_1s.csv", "meanrev")])
def test_the_committed_sample_reports_are_what_this_version_computes(
    tape: str, strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/backtests.md shows these reports and names one as a canary gate's input: `python -m
    backtests.make_sample` must give them back byte for byte (a change to what is measured regenerates them)."""
    monkeypatch.chdir(ROOT)  # the report names its tape relative to the repository root, as make_sample runs
    committed = ROOT / "backtests" / "reports" / strategy
    result = run_backtest(
        BacktestSpec(strategy=strategy, config_dir=CONFIG_DIR, seed=7),
        Path("backtests") / "data" / tape,
        with_compare=strategy == "momentum",
        workdir=tmp_path / "state",
    )
    written = write_outputs(result, tmp_path / "out")
    for name in ("report.json", "report.txt"):
        assert (tmp_path / "out" / name).read_text() == (committed / name).read_text(), name
    assert {p.name for p in written} == {p.name for p in committed.iterdir()}


def test_backtest_when_run_trades_through_ops_and_the_sim_venue_and_reports_every_figure(tmp_path: Path) -> None:
    result = run_backtest(spec(models=("momentum_v1",)), small_tape(tmp_path))
    report = result.report
    model = report["models"]["momentum_v1"]
    assert report["data"] == {
        "source": "file",
        "path": (tmp_path / "btc_small.csv").as_posix(),
        "quotes_count": 900,
        "instruments": ["BTC-USD"],
        "first_ts_ns": 1_767_225_600_000_000_000,
        "last_ts_ns": 1_767_225_600_000_000_000 + 899 * 1_000_000_000,
        "duration_s": 899.0,
    }
    assert model["fills_count"] > 0 and model["signals_count"] > 0
    assert model["decisions_by_status"]["ACCEPTED"] > 0
    assert model["capital_usd"] == "500000"  # an equal share of the demo policy's 1,000,000 between two strategies
    assert float(model["fees_usd"]) > 0 and float(model["turnover_usd"]) > 0
    pnl = float(model["realized_pnl_usd"]) + float(model["unrealized_pnl_usd"]) - float(model["fees_usd"])
    assert float(model["pnl_usd"]) == pytest.approx(pnl, abs=0.02)
    assert 0.0 <= model["max_drawdown_ratio"] <= 1.0
    assert model["samples_count"] == len(model["equity_curve"]["t_s"]) == 90  # every 10 s from 10 s on, and the end
    assert "momentum_v1" in result.table and "Sharpe (annualised)" in result.table
    assert report["compare"] is None


def config_with_max_order_notional(tmp_path: Path, notional: str) -> Path:
    """A copy of the backtest config whose models may send orders of at most ``notional`` (quote currency) each."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    limits = json.loads((config / "risk_limits.json").read_text(encoding="utf-8"))
    limits["default_model"]["max_order_notional"] = notional
    (config / "risk_limits.json").write_text(json.dumps(limits), encoding="utf-8")
    return config


def test_backtest_when_rails_refuse_orders_counts_rejections_by_code(tmp_path: Path) -> None:
    config = config_with_max_order_notional(tmp_path, "1000")
    result = run_backtest(spec(config_dir=config, models=("momentum_v1",)), small_tape(tmp_path, 300))
    model = result.report["models"]["momentum_v1"]
    assert model["rejections_by_code"]["MAX_ORDER_NOTIONAL"] == model["decisions_by_status"]["REJECTED"] > 0
    assert model["fills_count"] == 0


def test_backtest_when_run_stamps_ops_events_and_orders_with_simulated_time(tmp_path: Path) -> None:
    config = config_with_max_order_notional(tmp_path, "1000")
    run_backtest(spec(config_dir=config, models=("momentum_v1",)), small_tape(tmp_path, 300), workdir=tmp_path / "st")
    audit_log = (tmp_path / "st" / "momentum_v1" / "ops" / "audit.jsonl").read_text(encoding="utf-8")
    audit = [json.loads(line) for line in audit_log.splitlines()]
    rejected = [e["at"] for e in audit if e["kind"] == "RISK_REJECTED"]
    first_s, last_s = 1_767_225_600, 1_767_225_600 + 299
    assert rejected and all(first_s <= at <= last_s for at in rejected)  # the tape's time, not the wall clock


def test_backtest_compare_when_two_models_reports_the_canary_check_figures(tmp_path: Path) -> None:
    result = run_backtest(spec(), small_tape(tmp_path), with_compare=True)
    compare = result.report["compare"]
    assert compare["stable_model"] == "momentum_v1" and compare["canary_model"] == "momentum_v2"
    assert compare["outcome"] in ("PASSED", "FAILED", "INCONCLUSIVE")
    assert compare["paired_bars"] == 14  # 89 paired returns (the first sample has none) in bars of 6
    for key in ("sharpe_diff_annual", "jobson_korkie_z", "psr_canary", "dsr_canary", "returns_correlation"):
        assert isinstance(compare[key], float), key
    assert "compare momentum_v2 (canary) vs momentum_v1 (stable)" in result.table


def test_backtest_without_data_replays_the_seeded_synthetic_market(tmp_path: Path) -> None:
    one = run_backtest(spec(models=("momentum_v1",)), None, quotes=300)
    two = run_backtest(spec(models=("momentum_v1",)), None, quotes=300)
    assert one.report["data"]["source"] == "synthetic" and one.report["data"]["quotes_count"] == 300
    assert one.json == two.json
    other_seed = run_backtest(spec(models=("momentum_v1",), seed=8), None, quotes=300)
    assert other_seed.report["models"] != one.report["models"]


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("ts,bid\n1,100\n", 1, "missing column(s) ask"),
        ("ts,bid,ask\n1,100,101\n3,100,101\n2,100,101\n", 4, "ts 2 is not after the previous BTC-USD quote (3)"),
        ("ts,bid,ask\n1,100,101\n2,100,101\n2,100,101\n", 4, "is not after the previous"),
        ("ts,bid,ask\n1,100,101\n2,NaN,101\n", 3, "bid is not finite: 'NaN'"),
        ("ts,bid,ask\n1,100,101\n2,100,nan\n", 3, "ask is not finite"),
        ("ts,bid,ask\n1,100,101\n2,102,101\n", 3, "crossed quote: bid 102 >= ask 101"),
        ("ts,bid,ask\n1,100,100\n", 2, "crossed quote"),
        ("ts,bid,ask\n1,abc,101\n", 2, "bid is not a number: 'abc'"),
        ("ts,bid,ask\n1.5,100,101\n", 2, "ts is not an integer of nanoseconds"),
        ("ts,bid,ask,bid_size\n1,100,101,1\n", 1, "give both or neither"),
        ("ts,bid,ask\n-5,100,101\n", 2, "ts must be nanoseconds since the Unix epoch (>= 0), got -5"),
    ],
)
def test_load_tape_when_a_row_is_bad_refuses_it_with_its_line_number(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write_csv(tmp_path, text)
    with pytest.raises(TapeError) as raised:
        load_tape(path)
    assert raised.value.line == line
    assert f"{path}:{line}: " in raised.value.message
    assert problem in raised.value.message


def test_load_tape_when_the_engine_replay_format_is_given_reads_symbols_and_sizes(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, "ts,symbol,bid,ask,bid_size,ask_size\n1,ETH-USD,3000,3001,2,3\n1,BTC-USD,60000,60001,1,1\n"
    )
    quotes = load_tape(path)
    assert [(q.symbol, q.bid_size, q.ask_size) for q in quotes] == [("ETH-USD", 2, 3), ("BTC-USD", 1, 1)]


def test_backtest_when_the_strategy_is_unknown_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown strategy 'nope'; known strategies: momentum, meanrev"):
        run_backtest(spec(strategy="nope"), None, quotes=10)


def test_backtest_when_a_model_is_unknown_lists_the_strategy_models() -> None:
    with pytest.raises(ConfigError, match=r"has no model x; its models: momentum_v1, momentum_v2"):
        run_backtest(spec(models=("x",)), None, quotes=10)


# -- the CLI --------------------------------------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", "backtest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_backtest_when_run_writes_the_report_plot_and_prints_the_table(tmp_path: Path) -> None:
    data = small_tape(tmp_path, 300)
    done = cli("--strategy", "momentum", "--models", "momentum_v1", "--data", str(data), "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "momentum_v1" in done.stdout and "PnL (USD)" in done.stdout
    assert "300 quotes replayed for each of 1 model(s) in " in done.stderr and "quotes/s, all models)" in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["models"]["momentum_v1"]["quotes_count"] == 300
    assert (tmp_path / "out" / "momentum_v1.equity.png").read_bytes().startswith(b"\x89PNG")


def test_cli_backtest_when_input_is_bad_exits_2_with_the_line(tmp_path: Path) -> None:
    write_csv(tmp_path, "ts,bid,ask\n1,100,101\n2,101,100\n")
    done = cli("--strategy", "momentum", "--data", "quotes.csv", "--no-plot", cwd=tmp_path)
    assert done.returncode == 2
    assert "quotes.csv:3: crossed quote" in done.stderr
    unknown = cli("--strategy", "nope", "--no-plot", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "known strategies: momentum, meanrev" in unknown.stderr
    for option, value in (("--quotes", "0"), ("--sample-seconds", "nan"), ("--bar-seconds", "inf")):
        refused = cli("--strategy", "momentum", option, value, "--no-plot", cwd=tmp_path)
        assert refused.returncode == 2, option
        assert f"argument {option}: must be" in refused.stderr, refused.stderr


def _run(model: str, returns: list[float]) -> ModelRun:
    return ModelRun(model_id=model, capital_usd=Decimal(1000), performance={}, returns=returns)


def _returns(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0002, 0.001) for _ in range(count)]


def test_compare_when_two_paired_bars_is_inconclusive_not_an_error() -> None:
    """The Sharpe difference test needs three paired bars: two are an INCONCLUSIVE comparison (it raised)."""
    spec = BacktestSpec(strategy="momentum", config_dir=Path("."), seed=1, sample_seconds=30.0, bar_seconds=300.0)
    for samples, bars in ((20, 2), (29, 2)):
        out = compare(_run("v1", _returns(samples, 1)), _run("v2", _returns(samples, 2)), spec, None)
        assert (out["outcome"], out["note"]) == ("INCONCLUSIVE", f"{bars} paired bars: at least 3 are needed")
    assert "sharpe_diff_annual" in compare(_run("v1", _returns(30, 1)), _run("v2", _returns(30, 2)), spec, None)


def test_compare_when_the_bar_is_not_a_whole_number_of_samples_annualises_by_the_effective_bar() -> None:
    """45 s bars of 30 s samples are k = round(1.5) = 2 samples, a 60 s bar: annualised by sqrt(31,536,000 / 60), as
    the report's sharpe_annual and the controller are (it used 45 s)."""
    spec = BacktestSpec(strategy="momentum", config_dir=Path("."), seed=1, sample_seconds=30.0, bar_seconds=45.0)
    stable, canary = _returns(400, 3), _returns(400, 4)
    out = compare(_run("v1", stable), _run("v2", canary), spec, None)
    bars = [stable[i] + stable[i + 1] for i in range(0, 400, 2)]
    expected = describe_returns(bars).sharpe * math.sqrt(31_536_000 / 60)
    assert out["bar_seconds"] == 60.0
    assert out["sharpe_stable_annual"] == pytest.approx(expected, rel=1e-6)


def test_backtest_limits_keep_what_concerns_the_model_and_leave_out_the_rest() -> None:
    """The backtest's registry holds one model: ops would refuse overrides and caps naming others."""
    from backtests.runner import backtest_limits

    limits = {
        "global": {"max_gross_exposure": "1000"},
        "default_model": {"max_order_notional": "10", "max_position_qty": {"*": "5", "BTC-USD": "1", "ETH-USD": "2"}},
        "models": {
            "meanrev_v1": {"max_order_notional": "7", "max_position_qty": {"SOL-USD": "3", "BTC-USD": "9"}},
            "momentum_v1": {"max_order_notional": "1"},
        },
    }
    kept = backtest_limits(limits, "meanrev_v1", ("ETH-USD", "SOL-USD"))
    assert kept["global"] == limits["global"]
    assert kept["default_model"] == {"max_order_notional": "10", "max_position_qty": {"*": "5", "ETH-USD": "2"}}
    assert kept["models"] == {"meanrev_v1": {"max_order_notional": "7", "max_position_qty": {"SOL-USD": "3"}}}
    assert limits["models"]["meanrev_v1"]["max_position_qty"]["BTC-USD"] == "9"  # the caller's dict is not changed
