"""The bridge from backtests to the canary: a canary block names a backtest report, status shows it, and a policy
that requires it holds the canary in SHADOW while the report is missing or failing its thresholds."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from clients.commands import _print_canaries
from nautilus_mesh.errors import ConfigError, ValidationError
from ops_server import wire
from ops_server.canary.backtest_gate import BacktestStatus, judge_backtest
from ops_server.canary.config import CanaryConfig
from ops_server.canary.events import CanaryEvent, CanaryState
from ops_server.canary.guards import GuardSnapshot
from ops_server.canary.manager import CanaryManager
from ops_server.model_registry import ModelRegistry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def write_report(tmp_path: Path, sharpe: float = 1.5, drawdown: float = 0.05, model: str = "v2") -> Path:
    path = tmp_path / "report.json"
    figures = {"sharpe_annual": sharpe, "max_drawdown_ratio": drawdown, "pnl_usd": "1234.5"}
    path.write_text(json.dumps({"schema": 1, "models": {model: figures}}), encoding="utf-8")
    return path


def canary_block(**backtest: Any) -> dict[str, Any]:
    return {
        "model_id": "v2",
        "schedule": [50, 100],
        "min_dwell_seconds": 0,
        "shadow_min_dwell_seconds": 0,
        "min_observations": 3,
        "shadow_min_observations": 3,
        "bar_seconds": 1,
        "max_drawdown_ratio": None,
        "max_error_rate": None,
        **backtest,
    }


def registry(**canary: Any) -> ModelRegistry:
    """Strategy ``momentum``: stable ``v1``, canary ``v2`` in SHADOW with :func:`canary_block`'s settings."""
    return ModelRegistry.from_dict(
        {
            "strategies": {
                "momentum": {
                    "stable_model": "v1",
                    "models": {
                        "v1": {"instruments": ["BTC-USD"], "weight": 1.0},
                        "v2": {"instruments": ["BTC-USD"], "weight": 0.0, "mode": "SHADOW"},
                    },
                    "canary": canary_block(**canary),
                }
            }
        }
    )


def manager(**backtest: Any) -> tuple[CanaryManager, list[CanaryEvent]]:
    events: list[CanaryEvent] = []
    return CanaryManager(registry(**backtest), events.append, lambda: NOW, sample_seconds=1.0), events


def feed_good_returns(mgr: CanaryManager) -> None:
    rng = random.Random(3)
    run = mgr.run("momentum")
    for _ in range(40):
        stable = rng.gauss(0.001, 0.01)
        run.stable_returns.append(stable)
        run.canary_returns.append(stable + 0.0005)


def guards(model_id: str) -> GuardSnapshot:
    return GuardSnapshot()


# -- judging the report ---------------------------------------------------------------------------------------


def test_judge_backtest_when_no_report_is_named_is_none_unless_required() -> None:
    assert judge_backtest(CanaryConfig.from_dict({}), "v2").status is BacktestStatus.NONE
    required = judge_backtest(CanaryConfig.from_dict({"require_backtest": True}), "v2")
    assert required.status is BacktestStatus.MISSING and required.blocks_promotion


def test_judge_backtest_when_report_is_absent_or_lacks_the_model_is_missing(tmp_path: Path) -> None:
    absent = judge_backtest(CanaryConfig.from_dict({"backtest_report": str(tmp_path / "nope.json")}), "v2")
    assert absent.status is BacktestStatus.MISSING and "cannot be read" in absent.note
    assert not absent.blocks_promotion  # not required: shown, never enforced
    other = write_report(tmp_path, model="v9")
    lacking = judge_backtest(CanaryConfig.from_dict({"backtest_report": str(other)}), "v2")
    assert lacking.status is BacktestStatus.MISSING and "no model v2" in lacking.note


def test_judge_backtest_when_thresholds_are_met_or_missed_passes_or_fails(tmp_path: Path) -> None:
    report = str(write_report(tmp_path, sharpe=1.5, drawdown=0.05))
    ok = judge_backtest(
        CanaryConfig.from_dict(
            {"backtest_report": report, "backtest_min_sharpe_annual": 1.0, "backtest_max_drawdown_ratio": 0.1}
        ),
        "v2",
    )
    assert (ok.status, ok.sharpe_annual, ok.max_drawdown_ratio, ok.pnl_usd) == (
        BacktestStatus.PASSED,
        1.5,
        0.05,
        "1234.5",
    )
    bad = judge_backtest(
        CanaryConfig.from_dict(
            {"backtest_report": report, "backtest_min_sharpe_annual": 2.0, "backtest_max_drawdown_ratio": 0.01}
        ),
        "v2",
    )
    assert bad.status is BacktestStatus.FAILED
    assert "Sharpe 1.5/yr < 2/yr" in bad.note and "max drawdown 0.05 > 0.01" in bad.note


# -- the policy -----------------------------------------------------------------------------------------------


def test_canary_when_backtest_not_required_leaves_shadow_on_a_passing_check_whatever_the_report(
    tmp_path: Path,
) -> None:
    mgr, _ = manager(backtest_report=str(write_report(tmp_path, sharpe=-5.0)), backtest_min_sharpe_annual=0.0)
    feed_good_returns(mgr)
    mgr.evaluate(guards)
    assert mgr.run("momentum").backtest.status is BacktestStatus.FAILED
    assert mgr.run("momentum").controller.state is CanaryState.STEPPING


def test_canary_when_required_backtest_fails_is_held_in_shadow_and_promotion_is_refused(tmp_path: Path) -> None:
    report = write_report(tmp_path, sharpe=-5.0)
    mgr, events = manager(backtest_report=str(report), backtest_min_sharpe_annual=0.0, require_backtest=True)
    feed_good_returns(mgr)
    assert mgr.evaluate(guards) == [] and events == []
    assert mgr.run("momentum").controller.state is CanaryState.SHADOW
    with pytest.raises(ValidationError) as refused:
        mgr.operate("momentum", "promote", "looks fine")
    assert refused.value.code == "BACKTEST_REQUIRED"
    assert "v2 stays in SHADOW: Sharpe -5.0/yr < 0/yr" in refused.value.message
    assert refused.value.details["backtest"] == "FAILED"
    # Rollback and pause still work while held.
    mgr.operate("momentum", "pause", "hold on")
    assert mgr.run("momentum").controller.state is CanaryState.PAUSED


def test_canary_when_required_backtest_appears_and_passes_leaves_shadow(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    mgr, _ = manager(backtest_report=str(report), backtest_min_sharpe_annual=0.0, require_backtest=True)
    feed_good_returns(mgr)
    mgr.evaluate(guards)
    assert mgr.run("momentum").controller.state is CanaryState.SHADOW
    assert mgr.run("momentum").backtest.status is BacktestStatus.MISSING
    write_report(tmp_path, sharpe=1.0)  # the report is read again while the canary is held
    mgr.evaluate(guards)
    assert mgr.run("momentum").backtest.status is BacktestStatus.PASSED
    assert mgr.run("momentum").controller.state is CanaryState.STEPPING


def test_canary_when_required_backtest_passes_operator_may_promote(tmp_path: Path) -> None:
    mgr, _ = manager(backtest_report=str(write_report(tmp_path)), require_backtest=True)
    mgr.operate("momentum", "promote", "backtest and shadow look fine")
    assert mgr.run("momentum").controller.state is CanaryState.STEPPING


# -- status ---------------------------------------------------------------------------------------------------


def test_canary_status_when_a_report_is_named_shows_it_beside_the_live_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mgr, _ = manager(backtest_report=str(write_report(tmp_path)), require_backtest=True)
    run = mgr.run("momentum")
    pb = wire.canary_status(run.controller.status(), run.controller.config.schedule, run.backtest)
    assert pb.backtest.status == "PASSED" and pb.backtest.required
    assert pb.backtest.sharpe_annual == 1.5 and pb.backtest.max_drawdown_ratio == 0.05
    assert pb.backtest.pnl_usd == "1234.5" and pb.backtest.report.endswith("report.json")
    _print_canaries(Console(width=250), "canaries", [pb])
    text = capsys.readouterr().out
    assert "PASSED (required)" in text
    assert "backtest of v2" in text and "Sharpe (annualised)" in text and "1234.5" in text


def test_canary_status_when_no_report_is_named_leaves_the_backtest_unset() -> None:
    mgr, _ = manager()
    run = mgr.run("momentum")
    pb = wire.canary_status(run.controller.status(), run.controller.config.schedule, run.backtest)
    assert not pb.HasField("backtest")


def test_canary_when_held_in_shadow_for_its_backtest_is_still_rolled_back_by_its_guards(tmp_path: Path) -> None:
    mgr, events = manager(require_backtest=True, max_drawdown_ratio=0.1)  # no report: held in SHADOW
    feed_good_returns(mgr)
    mgr.evaluate(lambda model: GuardSnapshot(drawdown_ratio=0.9))
    assert mgr.run("momentum").controller.state is CanaryState.ROLLED_BACK
    assert [e.reason for e in events] == ["GUARD_DRAWDOWN"]


def two_canaries(window_samples: int = 86_400) -> tuple[CanaryManager, list[CanaryEvent]]:
    def strategy(name: str) -> dict[str, Any]:
        models = {
            f"{name}_v1": {"instruments": ["BTC-USD"], "weight": 1.0},
            f"{name}_v2": {"instruments": ["BTC-USD"], "weight": 0.0, "mode": "SHADOW"},
        }
        block = {**canary_block(max_drawdown_ratio=0.1), "model_id": f"{name}_v2"}
        return {"stable_model": f"{name}_v1", "models": models, "canary": block}

    registry = ModelRegistry.from_dict({"strategies": {"first": strategy("first"), "second": strategy("second")}})
    events: list[CanaryEvent] = []
    mgr = CanaryManager(registry, events.append, lambda: NOW, sample_seconds=1.0, window_samples=window_samples)
    return mgr, events


def test_canary_when_one_fails_to_evaluate_the_others_guards_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mgr, events = two_canaries()

    def broken(*_: object, **__: object) -> list[CanaryEvent]:
        raise RuntimeError("a canary that cannot be evaluated")

    monkeypatch.setattr(mgr.run("first").controller, "evaluate", broken)
    mgr.evaluate(lambda model: GuardSnapshot(drawdown_ratio=0.9))
    assert mgr.run("second").controller.state is CanaryState.ROLLED_BACK
    assert [(e.strategy, e.reason) for e in events] == [("second", "GUARD_DRAWDOWN")]
    assert "evaluating the canary of strategy first failed" in caplog.text


def test_canary_when_its_window_cannot_hold_a_check_refuses_to_start() -> None:
    # 3 bars of 60 one-second samples: a window of 179 samples would judge two bars, or fail to compute.
    minute_bars = registry(bar_seconds=60)
    with pytest.raises(ConfigError, match="canary_window_samples 179 holds fewer samples than a check of strategy "):
        CanaryManager(minute_bars, lambda e: None, lambda: NOW, sample_seconds=1.0, window_samples=179)
    CanaryManager(minute_bars, lambda e: None, lambda: NOW, sample_seconds=1.0, window_samples=180)


def test_canary_status_when_a_statistic_is_infinite_sends_infinity_not_a_missing_zero() -> None:
    mgr, _ = manager(psr_benchmark_sharpe_annual=0.0)
    run = mgr.run("momentum")
    rng = random.Random(4)
    for _ in range(10):  # a flat canary: se is infinite, and its Sharpe 0 is not above SR* 0, so MinTRL is too
        run.canary_returns.append(0.001)
        run.stable_returns.append(rng.gauss(0.001, 0.01))
    mgr.evaluate(guards)
    check = run.controller.status().last_check
    assert check is not None and math.isinf(check.comparison.se) and math.isinf(check.min_trl)
    pb = wire.canary_status(run.controller.status(), run.controller.config.schedule, run.backtest)
    assert pb.last_check.statistics["se"] == math.inf and pb.last_check.statistics["min_trl"] == math.inf
