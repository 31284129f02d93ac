"""`nautilus-mesh up` (what `make run` runs), as a user runs it: processes, the ready line, the summary line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.launcher import CLI, demo_config_on, run_up, status_rows
from tests.localhost import free_ports

pytestmark = pytest.mark.skipif(CLI is None, reason="the console script is installed by `make test`")


def test_up_when_run_for_a_few_seconds_prints_ready_then_a_parsable_summary(tmp_path: Path) -> None:
    ops, engine, ops_metrics, engine_metrics = free_ports(4)
    config = demo_config_on(tmp_path, ops, engine, ops_metrics, engine_metrics)
    result = run_up(config, tmp_path, 8)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    ready = [line for line in lines if line.startswith("ready:")]
    assert ready == [
        f"ready: ops=127.0.0.1:{ops} engine=127.0.0.1:{engine} "
        f"metrics=127.0.0.1:{ops_metrics},127.0.0.1:{engine_metrics}"
    ]
    summary = re.fullmatch(
        r"summary: signals=(\d+) orders=(\d+) fills=(\d+) rejected=(\d+) p50_ms=([\d.]+) p99_ms=([\d.]+)", lines[-1]
    )
    assert summary is not None, lines[-1]
    signals, orders, fills = (int(summary.group(i)) for i in (1, 2, 3))
    assert signals > 0 and 0 < orders <= signals and fills > 0
    assert float(summary.group(5)) <= float(summary.group(6))
    # The status tables show sane figures: no Sharpe ratio until it rests on stats_min_bars bars, then a plausible
    # one; drawdown a fraction of peak equity.
    rows = status_rows(lines)
    assert {row["model"] for row in rows} == {"momentum_v1", "momentum_v2", "meanrev_v1"}
    for row in rows:
        assert row["sharpe/yr"] == "-" or abs(float(row["sharpe/yr"])) < 50, row
        assert row["sharpe/yr"] == "-" or int(row["bars"]) >= 30, row
        assert 0.0 <= float(row["drawdown ratio"].removesuffix("%")) / 100 <= 1.0, row
    # Everything it started has stopped, and its state landed under the working directory.
    assert (tmp_path / "var" / "ops" / "journal.bin").exists()
    assert (tmp_path / "var" / "engine" / "journal.bin").exists()
