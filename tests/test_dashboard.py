"""`nautilus-mesh dashboard`: the page over a real mesh, opened in headless Chromium; its parts in isolation."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from clients.dashboard import Dashboard, Scrape, histogram_quantile, parse_metrics
from clients.dashboard_page import render_page
from clients.trace_stages import FILLED, break_down_all
from clients.traces import load_spans
from tests.launcher import CLI, demo_config_on, up_command
from tests.localhost import free_ports

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHARTS = ("latency", "throughput", "stages", "waterfalls", "allocations", "weights")


def test_histogram_quantile_when_buckets_given_interpolates_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 0.9)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 4.0)]) == 0.1  # all past the last bound


def test_dashboard_state_when_two_scrapes_differ_has_percentiles_and_throughput(tmp_path: Path) -> None:
    dashboard = Dashboard({}, tmp_path)

    def scrape(t: float, fast: float, slow: float, signals: float) -> Scrape:
        s = Scrape(t)
        text = (
            "# TYPE signal_to_fill_seconds histogram\n"
            f'signal_to_fill_seconds_bucket{{le="0.001"}} {fast}\n'
            f'signal_to_fill_seconds_bucket{{le="0.01"}} {fast + slow}\n'
            f'signal_to_fill_seconds_bucket{{le="+Inf"}} {fast + slow}\n'
            f"signal_to_fill_seconds_count {fast + slow}\nsignal_to_fill_seconds_sum 0\n"
            "# TYPE signals_received_total counter\n"
            f'signals_received_total{{model="m1"}} {signals}\n'
            "# TYPE allocated_capital_usd gauge\n"
            'allocated_capital_usd{model="m1"} 250000\n'
            "# TYPE canary_weight gauge\n"
            'canary_weight{strategy="s",model="m2"} 0.05\n'
        )
        parse_metrics(text, s)
        return s

    dashboard.history.extend([scrape(100.0, 10, 0, 5), scrape(102.0, 20, 10, 25)])
    state = dashboard.state()
    (row,) = state["latency_ms"]
    assert row["p50"] == pytest.approx(1.0) and 1.0 < row["p99"] <= 10.0
    assert state["throughput"] == [{"t": 102.0, "signals_per_s": 10.0, "fills_per_s": 0.0}]
    assert state["allocations_usd"] == {"m1": 250000.0} and state["canary_weights"] == {"s/m2": 0.05}
    page = render_page(state)
    assert "__STATE__" not in page and "<script src" not in page and "http://" not in page.replace(NS, "")


NS = "http://www.w3.org/2000/svg"


def test_page_when_state_holds_a_closing_script_tag_escapes_it() -> None:
    page = render_page({"sources": {"x": {"url": "</script><script>alert(1)</script>", "up": False}}})
    assert page.count("</script>") == 2  # the embedded state's own and the page script's


def _wait_for(predicate, within: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
@pytest.mark.skipif(CLI is None, reason="the console script is installed by `make test`")
def test_dashboard_when_opened_in_headless_chromium_draws_every_chart_without_errors(tmp_path: Path) -> None:
    ops, engine, ops_metrics, engine_metrics, page_port = free_ports(5)
    config = demo_config_on(tmp_path, ops, engine, ops_metrics, engine_metrics)
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    assert CLI is not None and CHROMIUM is not None
    mesh_log = (tmp_path / "mesh.log").open("w")
    mesh = subprocess.Popen(
        up_command(config, 60), cwd=tmp_path, stdout=mesh_log,
        stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    page_log = (tmp_path / "dashboard.log").open("w")
    dashboard = subprocess.Popen(
        [CLI, "dashboard", "--port", str(page_port), "--ops-metrics", f"127.0.0.1:{ops_metrics}",
         "--engine-metrics", f"127.0.0.1:{engine_metrics}", "--dir", "var/traces", "--interval", "0.5",
         "--slowest", "3"],
        cwd=tmp_path, stdout=page_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{page_port}/"
    try:

        def filled_traces() -> int:
            return sum(1 for b in break_down_all(load_spans(tmp_path / "var" / "traces")) if b.outcome == FILLED)

        _wait_for(lambda: filled_traces() >= 3, 60, "filled traces in the span files")

        def fill_rates_drawn() -> bool:
            try:
                with urllib.request.urlopen(url + "api/state", timeout=2) as response:  # noqa: S310 (loopback)
                    state = json.loads(response.read())
            except OSError:
                return False
            return any(r["p50"] is not None for r in state["latency_ms"]) and bool(state["canary_weights"])

        _wait_for(fill_rates_drawn, 30, "a signal-to-fill percentile in the dashboard state")
        artifacts = Path(os.environ.get("NAUTILUS_ARTIFACTS_DIR") or tempfile.mkdtemp(prefix="nautilus-dashboard-"))
        artifacts.mkdir(parents=True, exist_ok=True)
        screenshot = artifacts / "dashboard.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
                 "--v=0", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'chromium'}"]  # fmt: skip
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
        shot = subprocess.run(
            [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1280,1600", url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        dashboard.terminate()
        mesh.terminate()
        dashboard.wait(timeout=20)
        mesh.wait(timeout=60)
        mesh_log.close()
        page_log.close()
    assert dom.returncode == 0, dom.stderr[-3000:]
    console_errors = [
        line for line in (dom.stderr + shot.stderr).splitlines() if "CONSOLE" in line and "error" in line.lower()
    ]
    assert console_errors == []
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stdout[:2000]
    assert 'data-errors="0"' in body.group(0)
    assert int(re.search(r'data-rendered="(\d+)"', body.group(0)).group(1)) >= 1  # type: ignore[union-attr]
    for chart in CHARTS:
        found = re.search(rf'id="chart-{chart}"[^>]*data-points="(\d+)"', dom.stdout)
        assert found is not None and int(found.group(1)) > 0, f"chart {chart} is empty"
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    print(f"dashboard screenshot: {screenshot}")


def test_dashboard_when_its_port_is_taken_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from clients.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--port", str(port), "--duration", "0.1"]) == 2
    assert f"error: could not bind 127.0.0.1:{port}" in capsys.readouterr().err
