"""``nautilus-mesh dashboard``: one self-contained latency page, served without Docker, Grafana or a CDN.

A poller scrapes the services' ``/metrics`` (ops, engine, optionally strategies) every ``interval`` seconds and keeps
a bounded history; the span files give the stage breakdown and the slowest traces (:mod:`clients.trace_report`).
``GET /`` is the page (inline SVG drawn by plain JavaScript, the current state embedded so it draws on load),
``GET /api/state`` the same state as JSON, which the page polls.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from clients.dashboard_page import render_page
from clients.trace_report import report
from clients.trace_stages import break_down_all
from clients.traces import load_spans

log = logging.getLogger(__name__)

HISTORY_POINTS = 600
"""Scrapes kept (10 minutes at one a second)."""
SPAN_REFRESH_SECONDS = 2.0
"""The span files are read again at most this often."""


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative ``(le, count)`` buckets, interpolated as Prometheus does; None when
    the histogram is empty."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            width = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / width if width > 0 else 1.0)
        lower_le, lower_count = le, count
    return lower_le


@dataclass
class Scrape:
    """What one round of scrapes read."""

    t: float
    s2f_buckets: dict[float, float] = field(default_factory=dict)
    signals: float = 0.0
    fills: float = 0.0
    allocations: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


def parse_metrics(text: str, scrape: Scrape) -> None:
    """Fold one ``/metrics`` text into ``scrape``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "signal_to_fill_seconds_bucket":
                le = float(s.labels["le"])
                scrape.s2f_buckets[le] = scrape.s2f_buckets.get(le, 0.0) + s.value
            elif s.name == "signals_received_total":
                scrape.signals += s.value
            elif s.name == "fills_total":
                scrape.fills += s.value
            elif s.name == "allocated_capital_usd":
                scrape.allocations[s.labels.get("model", "")] = s.value
            elif s.name == "canary_weight":
                scrape.weights[f"{s.labels.get('strategy', '')}/{s.labels.get('model', '')}"] = s.value


def _fetch(address: str, timeout: float = 2.0) -> str:
    url = address if address.startswith("http") else f"http://{address}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (an operator-given address)
        return str(response.read().decode("utf-8"))


class Dashboard:
    """Scrapes, history and the state the page draws."""

    def __init__(self, sources: Mapping[str, str], span_dir: str | Path, *, slowest: int = 5) -> None:
        self.sources = dict(sources)
        self.span_dir = Path(span_dir)
        self.slowest = slowest
        self.history: deque[Scrape] = deque(maxlen=HISTORY_POINTS)
        self.source_status: dict[str, dict[str, Any]] = {n: {"url": u, "up": False} for n, u in sources.items()}
        self._lock = threading.Lock()
        self._traces: dict[str, Any] = {}
        self._traces_at = 0.0

    def scrape(self) -> Scrape:
        """Scrape every source once and append the result to the history."""
        scrape = Scrape(time.time())
        for name, address in self.sources.items():
            try:
                parse_metrics(_fetch(address), scrape)
                self.source_status[name] = {"url": address, "up": True}
            except (OSError, ValueError) as exc:
                self.source_status[name] = {"url": address, "up": False, "error": type(exc).__name__}
        with self._lock:
            self.history.append(scrape)
        return scrape

    def traces(self) -> dict[str, Any]:
        """The stage breakdown of filled signals and the slowest traces (re-read at most every 2 s)."""
        now = time.monotonic()
        if not self._traces or now - self._traces_at >= SPAN_REFRESH_SECONDS:
            doc = report(break_down_all(load_spans(self.span_dir)), slowest=self.slowest)
            self._traces = {
                "filled": doc["filled"],
                "rejected": {"count": doc["rejected"]["count"]},
                "slowest": doc["waterfalls"],
            }
            self._traces_at = now
        return self._traces

    def state(self) -> dict[str, Any]:
        """Everything the page draws, JSON-ready."""
        with self._lock:
            points = list(self.history)
        latency: list[dict[str, Any]] = []
        throughput: list[dict[str, Any]] = []
        for before, after in itertools.pairwise(points):
            dt = max(after.t - before.t, 1e-9)
            delta = [(le, after.s2f_buckets.get(le, 0.0) - c) for le, c in before.s2f_buckets.items()]
            row: dict[str, Any] = {"t": after.t}
            for q in (50, 90, 99):
                value = histogram_quantile(q / 100, delta)
                row[f"p{q}"] = None if value is None else value * 1000
            latency.append(row)
            throughput.append(
                {
                    "t": after.t,
                    "signals_per_s": max(0.0, after.signals - before.signals) / dt,
                    "fills_per_s": max(0.0, after.fills - before.fills) / dt,
                }
            )
        last = points[-1] if points else Scrape(time.time())
        return {
            "generated_at": time.time(),
            "sources": self.source_status,
            "latency_ms": latency,
            "throughput": throughput,
            "allocations_usd": dict(sorted(last.allocations.items())),
            "canary_weights": dict(sorted(last.weights.items())),
            "traces": self.traces(),
        }

    def poll(self, stop: threading.Event, interval: float) -> None:
        """Scrape every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            self.scrape()
            stop.wait(interval)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = render_page(self.dashboard.state()).encode("utf-8")
            self._send(200, "text/html; charset=utf-8", body)
        elif path == "/api/state":
            self._send(200, "application/json", json.dumps(self.dashboard.state()).encode("utf-8"))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("[DASHBOARD] " + format, *args)


class DashboardServer:
    """The page and its poller, in daemon threads."""

    def __init__(self, dashboard: Dashboard, host: str, port: int, *, interval: float = 1.0) -> None:
        handler = type("Handler", (_Handler,), {"dashboard": dashboard})
        self._server = ThreadingHTTPServer((host, port), handler)
        self.port: int = self._server.server_address[1]
        self.host = host
        self._stop = threading.Event()
        dashboard.scrape()
        self._poller = threading.Thread(target=dashboard.poll, args=(self._stop, interval), daemon=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._poller.start()
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
        self._poller.join(timeout=5)


def add_arguments(parser: Any) -> None:
    """The ``dashboard`` command's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address the page is served on")
    parser.add_argument("--port", type=int, default=8088, help="port of the page (0 = any free port)")
    parser.add_argument("--ops-metrics", default="127.0.0.1:8002", help="ops /metrics (host:port or URL)")
    parser.add_argument("--engine-metrics", default="127.0.0.1:8003", help="engine /metrics (host:port or URL)")
    parser.add_argument("--strategy-metrics", default="", help="strategies' /metrics, when they serve one")
    parser.add_argument("--dir", default="var/traces", help="directory of span JSONL files")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--slowest", type=int, default=5, help="slowest filled traces drawn as waterfalls")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to serve; 0 = until Ctrl-C")


def run_dashboard(args: Any) -> int:
    """Run ``nautilus-mesh dashboard`` until Ctrl-C (or ``--duration``); returns the exit code."""
    sources = {"ops": args.ops_metrics, "engine": args.engine_metrics}
    if args.strategy_metrics:
        sources["strategies"] = args.strategy_metrics
    try:
        server = DashboardServer(Dashboard(sources, args.dir, slowest=args.slowest), args.host, args.port,
                                 interval=args.interval)  # fmt: skip
    except OSError as exc:  # the port is taken, or the host is not this machine's
        print(f"error: could not bind {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"dashboard: {server.url}", flush=True)
    try:
        deadline = time.monotonic() + args.duration if args.duration > 0 else math.inf
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
