"""The engine service's Prometheus metrics (one registry per engine instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nautilus_mesh.telemetry import LATENCY_BUCKETS


class EngineMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.orders_received = Counter("engine_orders_total", "New orders received, by venue.", ["venue"], registry=r)
        self.reports = Counter(
            "execution_reports_total", "Execution reports by venue and type.", ["venue", "exec_type"], registry=r
        )
        self.fills = Counter("engine_fills_total", "Fills by venue.", ["venue"], registry=r)
        self.venue_rejections = Counter(
            "venue_rejections_total", "Orders denied by a venue rail.", ["venue", "rail"], registry=r
        )
        self.malformed = Counter(
            "engine_malformed_commands_total", "Order commands that could not be parsed.", registry=r
        )
        self.sessions = Gauge("engine_order_sessions", "Open order stream sessions.", registry=r)
        self.last_seq = Gauge("engine_last_seq", "Sequence number of the newest execution report.", registry=r)
        self.frame_latency = Histogram(
            "engine_frame_latency_seconds",
            "Time to execute one frame of order commands.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.quote_subscribers = Gauge("engine_quote_subscribers", "Open StreamQuotes subscriptions.", registry=r)
        self.component_up = Gauge(
            "component_up",
            "1 while an engine health check is healthy (venue:<name>, quotes, ...).",
            ["component"],
            registry=r,
        )
