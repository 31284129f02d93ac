"""The engine service's Prometheus metrics (one registry per engine instance).

Labelled children on the order path are bound once per label set and kept (``labels()`` costs a
lock and a tuple per call): :meth:`EngineMetrics.order_counter`, :meth:`EngineMetrics.report_counter`,
:meth:`EngineMetrics.fill_counter`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from nautilus_mesh.telemetry import LATENCY_BUCKETS


class EngineMetrics:
    """The engine's metrics and their pre-bound children."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, ...], Any] = {}
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
        PlatformCollector(registry=r)  # python_info
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
        self.orders_in_memory = Gauge(
            "engine_orders_in_memory", "Orders held in memory (open plus the retention window).", registry=r
        )
        self.journal_snapshots = Counter(
            "engine_journal_snapshots_total",
            "Journal snapshots written (each followed by deleting the segments it covers).",
            registry=r,
        )
        self.journal_snapshot_seq = Gauge(
            "engine_journal_snapshot_seq", "Sequence number the newest journal snapshot covers (0: none).", registry=r
        )
        self.journal_bytes = Gauge(
            "engine_journal_bytes", "Bytes of the journal segments on disk (the snapshot file excluded).", registry=r
        )
        self.journal_replayed_records = Gauge(
            "engine_journal_replayed_records",
            "Journal records replayed at the last start (those after the snapshot).",
            registry=r,
        )
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

    def order_counter(self, venue: str) -> Any:
        """``engine_orders_total{venue}``, bound once."""
        key = ("orders", venue)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.orders_received.labels(venue)
        return child

    def report_counter(self, venue: str, exec_type: str) -> Any:
        """``execution_reports_total{venue,exec_type}``, bound once."""
        key = ("reports", venue, exec_type)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.reports.labels(venue, exec_type)
        return child

    def fill_counter(self, venue: str) -> Any:
        """``engine_fills_total{venue}``, bound once."""
        key = ("fills", venue)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.fills.labels(venue)
        return child
