"""A strategy process's ``/metrics``: what each strategy sent and what came back, as the strategy saw it.

Counters are read from the runners' own stats when Prometheus scrapes (no work on the signal path); the
signal-to-fill histogram is observed once per first fill. Every model's series exist at zero from the start.

- ``strategy_signals_sent_total{strategy,model}``
- ``strategy_decisions_total{strategy,model,status}`` (ACCEPTED, REJECTED, NO_ACTION, DUPLICATE)
- ``strategy_fills_total{strategy,model}``
- ``strategy_signal_to_fill_seconds{strategy}``: signal sent to its first fill received
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.telemetry import LATENCY_BUCKETS
from strategies.runtime import StrategyRunner

DECISION_STATUSES = tuple(
    name.removeprefix("DECISION_STATUS_")
    for name, _ in ops_pb2.DecisionStatus.items()
    if not name.endswith("UNSPECIFIED")
)


class RunnerCounters:
    """The runners' counters, read when Prometheus scrapes."""

    def __init__(self, runners: Sequence[StrategyRunner]) -> None:
        self._runners = runners

    def collect(self) -> Iterator[CounterMetricFamily]:
        sent = CounterMetricFamily(
            "strategy_signals_sent", "Signals the strategy sent, by strategy and model.", labels=["strategy", "model"]
        )
        decided = CounterMetricFamily(
            "strategy_decisions",
            "Decisions the strategy received, by strategy, model and status.",
            labels=["strategy", "model", "status"],
        )
        fills = CounterMetricFamily(
            "strategy_fills", "Fills the strategy received, by strategy and model.", labels=["strategy", "model"]
        )
        for runner in self._runners:
            stats = runner.stats
            for model in runner.planner.model_ids:
                sent.add_metric([runner.name, model], stats.signals[model])
                fills.add_metric([runner.name, model], stats.fills[model])
                counts: Mapping[str, int] = stats.decisions.get(model, {})
                for status in DECISION_STATUSES:
                    decided.add_metric([runner.name, model, status], counts.get(status, 0))
        yield sent
        yield decided
        yield fills

    def describe(self) -> Iterator[CounterMetricFamily]:
        return self.collect()


class StrategyMetrics:
    """The registry of one strategy process (every runner in it)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.signal_to_fill = Histogram(
            "strategy_signal_to_fill_seconds",
            "Seconds from a signal sent to its first fill received, as the strategy saw it.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch(self, runners: Sequence[StrategyRunner]) -> None:
        """Export the runners' counters and bind each runner's signal-to-fill histogram."""
        self.registry.register(RunnerCounters(runners))
        for runner in runners:
            runner.stats.fill_latency_observer = self.signal_to_fill.labels(runner.name).observe
