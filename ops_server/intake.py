"""Fair intake of signals across strategies: one stream cannot stall the others.

- **Slices.** A frame is decided in slices of at most ``SLICE_SIGNALS`` signals, and the event loop is yielded between
  slices, so the streams with work take turns (asyncio runs ready tasks in order): a well-behaved strategy's frame
  waits for at most one slice of a flooding neighbour, not for its whole backlog. A slice is also bounded in time
  (:class:`SliceSizer`, ``SLICE_SECONDS``): its size follows the measured cost per signal, so when deciding is slow
  (a loaded host, tracing) a slice still lasts about a millisecond. Each answer of a neighbour takes a few turns
  of the event loop (its frame read, decided, its answer written), and each turn waits for one slice.
- **Backpressure.** A stream whose answers are not being read stops being read: once its answers waiting to be sent
  reach a high-water mark, ops reads no further frame from it until they drain (gRPC flow control then holds the
  sender).
- **Rate.** Optionally, signals per second per strategy (a token bucket shared by the strategy's streams and
  ``SubmitSignal``); the excess is answered in-band ``RATE_LIMITED`` (rail ``intake``) and not decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import RiskRejectedError
from nautilus_mesh.status import error_detail

log = logging.getLogger(__name__)

SLICE_SIGNALS = 32
"""Signals decided before the event loop is yielded to other streams, at most (count)."""
SLICE_SECONDS = 0.001
"""How long a slice of a multi-slice frame should take: slices hold fewer signals when deciding is slow (seconds)."""


class SliceSizer:
    """The size of the next slice: as many signals as fit in ``target_seconds`` at the measured cost per signal.

    Args:
        target_seconds: the time a slice should take, seconds.
        most: the largest slice (count).
    """

    def __init__(self, target_seconds: float = SLICE_SECONDS, most: int = SLICE_SIGNALS) -> None:
        self.target_seconds = target_seconds
        self.most = most
        self.per_signal = 0.0
        """Moving average of the seconds one signal takes to decide (0 until measured)."""

    def size(self) -> int:
        """Signals in the next slice, 1..``most``."""
        if self.per_signal <= 0.0:
            return self.most
        return max(1, min(self.most, int(self.target_seconds / self.per_signal)))

    def observe(self, signals: int, seconds: float) -> None:
        """A slice of ``signals`` took ``seconds``."""
        if signals > 0:
            cost = seconds / signals
            self.per_signal = cost if self.per_signal <= 0.0 else 0.8 * self.per_signal + 0.2 * cost


@dataclass
class _Bucket:
    tokens: float
    at: float


class StrategyIntake:
    """Signals per second per strategy at intake.

    Args:
        rate: signals per second a strategy may send; None switches the limit off.
        burst: bucket capacity (signals); defaults to one second of ``rate``.
        registry: where ``intake_rejections_total{strategy}`` is registered.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        rate: float | None,
        burst: int | None,
        registry: CollectorRegistry,
        clock: Callable[[], float] = REAL_CLOCK.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1.0, rate or 1.0))
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.rejections = Counter(
            "intake_rejections_total",
            "Signals refused at intake by the per-strategy rate.",
            ["strategy"],
            registry=registry,
        )

    def admit(self, strategy: str, requested: int) -> int:
        """How many of ``requested`` signals the strategy may send now (takes their tokens)."""
        if self.rate is None:
            return requested
        now = self._clock()
        bucket = self._buckets.get(strategy)
        if bucket is None:
            bucket = self._buckets[strategy] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        admitted = min(requested, int(bucket.tokens))
        bucket.tokens -= admitted
        if admitted < requested:
            self.rejections.labels(strategy).inc(requested - admitted)
            log.warning(
                "[OPS] strategy %s over its intake rate (%g/s): %d signal(s) refused",
                strategy,
                self.rate,
                requested - admitted,
            )
        return admitted

    def refusal(self, signal: ops_pb2.Signal) -> ops_pb2.SignalDecision:
        """The in-band answer to a signal refused at intake."""
        error = RiskRejectedError(
            "RATE_LIMITED",
            f"strategy over its intake rate of {self.rate:g} signals/s; the signal was not decided",
            {"rail": "intake", "rate_per_second": f"{self.rate:g}", "burst": f"{self.burst:g}"},
            rail="intake",
        )
        return ops_pb2.SignalDecision(
            signal_id=signal.signal_id,
            model_id=signal.model_id,
            status=ops_pb2.DECISION_STATUS_REJECTED,
            error=error_detail(error),
        )
