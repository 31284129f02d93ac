"""The benchmarks run end to end with minimal sizes (figures are never checked: timing is not pass/fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"scenario", "signals_per_s", "p50_ms", "p99_ms", "first_fill_p50_ms", "first_fill_p99_ms", "rss_mb"}


@pytest.mark.timeout(240)
def test_bench_mesh_when_run_with_minimal_sizes_then_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_mesh.py"), "--only", "mesh3,floor,echo,tracing", "--signals",
        "20", "--batch", "10", "--window", "2", "--rates", "100", "--duration", "0.2", "--tracing-rounds", "1",
        "--tracing-signals", "20",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=230, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert {(r["scenario"], r["load"]) for r in rows} == {
        ("mesh, 3 processes", "closed, frames of 10"),
        ("mesh, 3 processes", "closed, frames of 1"),
        ("mesh, 3 processes", "open 100/s"),
        ("mesh floor, 3 procs", "closed, frames of 10"),
        ("mesh floor, 3 procs", "closed, frames of 1"),
        ("mesh floor, 3 procs", "open 100/s"),
        ("grpc.aio echo", "closed, frames of 10"),
        ("grpc.aio echo", "closed, frames of 1"),
        ("grpc.aio echo", "open 100/s"),
        ("mesh3, tracing off", "closed, frames of 10"),
        ("mesh3, tracing 10%", "closed, frames of 10"),
        ("mesh3, tracing 100%", "closed, frames of 10"),
    }
    assert all(row.keys() >= KEYS and row["signals_per_s"] for row in rows)
    mesh_closed = next(r for r in rows if r["scenario"] == "mesh, 3 processes" and r["load"] == "closed, frames of 10")
    assert mesh_closed["first_fill_p50_ms"] is not None and mesh_closed["rss_mb"] > 0
    floor = [r for r in rows if r["scenario"] == "mesh floor, 3 procs"]
    assert all(r["first_fill_p50_ms"] is not None and r["rss_mb"] > 0 for r in floor), floor  # every signal filled
    assert "mesh floor, 3 procs, closed, frames of 10: 20 signals" in done.stdout
    assert "decisions ACCEPTED 20; first fill seen for 20 of 20 accepted" in done.stdout
    assert "grpc.aio echo" in done.stdout and "x echo" in done.stdout
    assert "throughput cost" in done.stdout and "CPU per signal (engine + ops) against tracing off" in done.stdout
    assert "best round" in done.stdout and "against off's best" in done.stdout


@pytest.mark.timeout(120)
def test_bench_engine_when_run_with_minimal_sizes_then_reports_one_frame_per_frame() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--orders", "200", "--frame", "50"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in 4 report frames for 4 command frames" in done.stdout


def test_bench_engine_when_asked_for_rss_prints_it_at_each_multiple() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--orders", "25000", "--rss-every", "10000"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "orders: RSS" in line]
    assert [line.split()[0] for line in lines] == ["10,000", "20,000"], done.stdout


@pytest.mark.timeout(120)
def test_bench_hop_when_run_with_minimal_sizes_prints_round_trips_and_fsyncs() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_hop.py"), "--rates", "0,200", "--messages", "5"]
    done = subprocess.run([*cmd, "--fsyncs", "3"], cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    for label in ("back2back", "200"):  # p50 / p90 / p99 of each rate, in ms
        assert len(rows[label]) == 5 and 0 < float(rows[label][0]) <= float(rows[label][4]), done.stdout
    assert "fsync of a 300-byte append" in done.stdout


@pytest.mark.timeout(120)
def test_bench_spans_when_run_with_minimal_sizes_then_prints_both_kinds_of_span() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_spans.py"), "--spans", "300", "--rounds", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SDK span      made and ended" in done.stdout and "message span  made and ended" in done.stdout


@pytest.mark.timeout(120)
def test_bench_backtest_when_run_with_minimal_sizes_then_prints_the_rate() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_backtest.py"), "--quotes", "200"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quotes/s" in done.stdout and "momentum_v1:" in done.stdout


@pytest.mark.timeout(120)
def test_bench_archive_when_run_with_minimal_sizes_then_prints_both_layouts() -> None:
    cmd = [
        sys.executable, str(ROOT / "scripts" / "bench_archive.py"), "--rows", "2000", "--retention", "500",
        "--rounds", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "archive " in done.stdout and "keyed by id " in done.stdout and "keyed by id / archive:" in done.stdout


def test_bench_soak_when_run_for_seconds_then_reports_rss_growth_of_both_services(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_soak.py"), "--duration", "4", "--rate", "50",
        "--sample-seconds", "0.5", "--baseline-seconds", "1", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["signals_sent"] > 0 and sum(figures["decisions"].values()) == figures["signals_sent"]
    assert figures["decisions"].get("ACCEPTED") == figures["signals_sent"] and figures["rejections"] == {}  # it trades
    for service in ("ops", "engine"):
        row = figures["services"][service]
        assert row["baseline_mb"] > 0 and row["growth_percent"] is not None
        assert row["cpu_us_per_signal"] is not None and row["cpu_us_per_signal"] > 0  # CPU between two samples
    assert all(s["signals"] <= figures["signals_sent"] for s in figures["samples"])
    assert figures["engine_journal"]["end_mb"] > 0 and all("engine_journal" in s for s in figures["samples"])
    assert "growth" in done.stdout and "ops" in done.stdout and "engine journal on disk" in done.stdout
    latency = figures["first_fill"]
    assert 0 < latency["count"] <= figures["signals_sent"] and "signal -> first fill" in done.stdout
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["p50_ms"] <= latency["worst_second"]["p99_ms"] <= latency["max_ms"]


@pytest.mark.timeout(150)
def test_bench_flood_when_run_for_seconds_then_reports_p99_alone_and_flooded(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_flood.py"), "--seconds", "2", "--rate", "20",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=140, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["alone"]["n"] > 0 and figures["flooded"]["n"] > 0
    assert figures["p99_ratio"] is not None and figures["flooder"]["signals_written"] > 0
    assert figures["flooder"]["stream_holds"] >= 0 and figures["backlog_share"] is None  # ops' default share
    assert "p99 flooded / alone" in done.stdout
