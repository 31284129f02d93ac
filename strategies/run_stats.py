"""A strategy runner's counters and latency samples, and the JSON-ready snapshot the stats file holds
(:mod:`clients.strategy_stats` declares its shape). Latencies are in milliseconds."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from clients.strategy_stats import LatencySummary, ModelCounts, StrategySnapshot
from clients.traces import percentile
from nautilus_mesh.clock import REAL_CLOCK

LATENCY_SAMPLES = 100_000
"""Most recent latency samples kept per kind (decision, fill)."""


def latency_summary(samples: Sequence[float]) -> LatencySummary:
    """Count, p50 and p99 of latency samples (milliseconds)."""
    return {
        "count": len(samples),
        "p50": round(percentile(samples, 50), 3),
        "p99": round(percentile(samples, 99), 3),
    }


@dataclass
class RunnerStats:
    """Counters and latency samples of one runner (latencies in milliseconds)."""

    started_monotonic: float = field(default_factory=REAL_CLOCK.monotonic)
    signals: Counter[str] = field(default_factory=Counter)
    decisions: dict[str, Counter[str]] = field(default_factory=dict)
    fills: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    rejections_by_code: Counter[str] = field(default_factory=Counter)
    decision_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    fill_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    reconnects: Counter[str] = field(default_factory=Counter)
    connected: dict[str, bool] = field(default_factory=lambda: {"ops": False, "engine": False})
    frames_sent: int = 0
    """Request frames written (after coalescing)."""
    fill_latency_observer: Callable[[float], None] | None = None
    """Also told each signal-to-first-fill latency, in seconds (the ``/metrics`` histogram), when set."""

    def record_fill_latency(self, ms: float) -> None:
        """One signal's latency from sent to its first fill, in milliseconds."""
        self.fill_latency_ms.append(ms)
        if self.fill_latency_observer is not None:
            self.fill_latency_observer(ms / 1000)

    def count_decision(self, model_id: str, status: str) -> None:
        self.decisions.setdefault(model_id, Counter())[status] += 1

    def elapsed(self) -> float:
        return max(REAL_CLOCK.monotonic() - self.started_monotonic, 1e-9)

    def model_snapshot(self, model_id: str) -> ModelCounts:
        decisions = self.decisions.get(model_id, Counter())
        return {
            "signals": self.signals[model_id],
            "decisions": dict(sorted(decisions.items())),
            "accepted": decisions["ACCEPTED"],
            "fills": self.fills[model_id],
            "rejected": self.rejected[model_id],
        }

    def snapshot(self, model_ids: Iterable[str] = ()) -> StrategySnapshot:
        """A JSON-ready summary: totals, per-model counts, signals/s and p50/p99 latencies in ms."""
        models = sorted({*model_ids, *self.signals, *self.decisions, *self.fills})
        signals = sum(self.signals.values())
        return {
            "elapsed_s": round(self.elapsed(), 3),
            "signals": signals,
            "signals_per_s": round(signals / self.elapsed(), 3),
            "orders": sum(d["ACCEPTED"] for d in self.decisions.values()),
            "fills": sum(self.fills.values()),
            "rejected": sum(self.rejected.values()),
            "rejections_by_code": dict(sorted(self.rejections_by_code.items())),
            "decision_latency_ms": latency_summary(self.decision_latency_ms),
            "fill_latency_ms": latency_summary(self.fill_latency_ms),
            "reconnects": dict(self.reconnects),
            "connected": dict(self.connected),
            "models": {m: self.model_snapshot(m) for m in models},
        }
