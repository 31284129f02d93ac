"""The engine service's Prometheus metrics (one registry per engine instance).

Labelled children on the order path are bound once per label set and kept (``labels()`` costs a
lock and a tuple per call): :meth:`EngineMetrics.order_counter`, :meth:`EngineMetrics.report_counter`,
:meth:`EngineMetrics.fill_counter`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from engine_server.venues.base import ExecType
from nautilus_mesh.telemetry import LATENCY_BUCKETS


class BoundChildren(dict[tuple[str, ...], Any]):
    """A labelled metric's children by their label values, each bound on first use and kept."""

    def __init__(self, metric: Counter) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, labels: tuple[str, ...]) -> Any:
        child = self[labels] = self.metric.labels(*labels)
        return child


class EngineMetrics:
    """The engine's metrics and their pre-bound children."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
        PlatformCollector(registry=r)  # python_info

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.orders_received = counter("engine_orders_total", "New orders received, by venue.", "venue")
        self.reports = counter("execution_reports_total", "Execution reports by venue and type.", "venue", "exec_type")
        self.fills = counter("engine_fills_total", "Fills by venue.", "venue")
        self.venue_rejections = counter("venue_rejections_total", "Orders denied by a venue rail.", "venue", "rail")
        self.malformed = counter("engine_malformed_commands_total", "Order commands that could not be parsed.")
        self.sessions = gauge("engine_order_sessions", "Open order stream sessions.")
        self.last_seq = gauge("engine_last_seq", "Sequence number of the newest execution report.")
        self.orders_in_memory = gauge(
            "engine_orders_in_memory", "Orders held in memory (open plus the retention window)."
        )
        self.journal_snapshots = counter(
            "engine_journal_snapshots_total",
            "Journal snapshots written (each followed by deleting the segments it covers).",
        )
        self.journal_snapshot_seq = gauge(
            "engine_journal_snapshot_seq", "Sequence number the newest journal snapshot covers (0: none)."
        )
        self.journal_bytes = gauge(
            "engine_journal_bytes", "Bytes of the journal segments on disk (the snapshot file excluded)."
        )
        self.journal_replayed_records = gauge(
            "engine_journal_replayed_records", "Journal records replayed at the last start (those after the snapshot)."
        )
        self.frame_latency = Histogram(
            "engine_frame_latency_seconds",
            "Time to execute one frame of order commands.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.quote_subscribers = gauge("engine_quote_subscribers", "Open StreamQuotes subscriptions.")
        self.component_up = gauge(
            "component_up", "1 while an engine health check is healthy (venue:<name>, quotes, ...).", "component"
        )
        self._orders_by_venue = BoundChildren(self.orders_received)
        self._reports_by_type = BoundChildren(self.reports)
        self._fills_by_venue = BoundChildren(self.fills)

    def bind_venues(self, venues: Iterable[str]) -> None:
        """Each venue's order, fill and report series at zero from the start (a panel shows 0, not "No data", and a
        series' first increment counts in ``rate()``)."""
        for venue in venues:
            self.order_counter(venue)
            self.fill_counter(venue)
            for exec_type in ExecType:
                self.report_counter(venue, exec_type.value)

    def order_counter(self, venue: str) -> Any:
        """``engine_orders_total{venue}``, bound once."""
        return self._orders_by_venue[(venue,)]

    def report_counter(self, venue: str, exec_type: str) -> Any:
        """``execution_reports_total{venue,exec_type}``, bound once."""
        return self._reports_by_type[(venue, exec_type)]

    def fill_counter(self, venue: str) -> Any:
        """``engine_fills_total{venue}``, bound once."""
        return self._fills_by_venue[(venue,)]
