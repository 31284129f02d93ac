"""Intake of signals: slice sizes, and the optional signal rate per strategy.

- **Slices.** Frames are decided in slices (:mod:`ops_server.fair_intake` takes turns between streams, one slice
  each): at most ``SLICE_SIGNALS`` signals, and as many as fit in ``SLICE_SECONDS`` at the measured cost per signal
  (:class:`SliceSizer`), so when deciding is slow (a loaded host, tracing) a slice, and so a neighbour's wait, still
  lasts about a millisecond. Engine reports are applied in slices sized the same way.
- **Rate.** Optionally, signals per second per strategy (``intake_signals_per_second``/``intake_burst``, or a
  strategy's own): a token bucket shared by the strategy's streams and ``SubmitSignal``. The excess is answered
  in-band ``REJECTED`` with code ``RATE_LIMITED`` (rail ``intake``) and not decided, counted in
  ``intake_rejections_total{strategy}`` and logged at most once per ``REFUSAL_LOG_SECONDS`` per strategy. A
  duplicate of a signal already decided takes no token: it is answered ``DUPLICATE`` as always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import RiskRejectedError
from nautilus_mesh.log_safety import LogThrottle
from nautilus_mesh.status import error_detail
from ops_server.metrics import OpsMetrics

log = logging.getLogger(__name__)

SLICE_SIGNALS = 32
"""Signals decided before the event loop is yielded to other streams, at most (count)."""
SLICE_SECONDS = 0.001
"""How long a slice of a multi-slice frame should take: slices hold fewer signals when deciding is slow (seconds)."""
REFUSAL_LOG_SECONDS = 10.0
"""A strategy's RATE_LIMITED warnings are logged at most once per this many seconds, with the count since the last."""


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
    rate: float
    burst: float
    tokens: float
    at: float


@dataclass(frozen=True)
class IntakeRate:
    """One strategy's signal rate at intake: ``rate`` signals per second, ``burst`` back to back (None: no limit)."""

    rate: float | None
    burst: int | None = None

    @property
    def capacity(self) -> float:
        """The bucket's capacity (signals): ``burst``, else one second's worth of ``rate``."""
        return float(self.burst if self.burst is not None else max(1.0, self.rate or 1.0))


class StrategyIntake:
    """Signals per second per strategy at intake: a token bucket per strategy, shared by its streams and
    ``SubmitSignal``.

    Args:
        rate: signals per second any strategy may send; None switches the limit off.
        burst: bucket capacity (signals); defaults to one second of ``rate``.
        metrics: where ``intake_rejections_total{strategy}`` is counted.
        per_strategy: a strategy's own rate and burst, in place of ``rate`` and ``burst`` (a None field of it
            falls back to them).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        rate: float | None,
        burst: int | None,
        metrics: OpsMetrics,
        per_strategy: Mapping[str, IntakeRate] | None = None,
        clock: Callable[[], float] = REAL_CLOCK.monotonic,
    ) -> None:
        self.default = IntakeRate(rate, burst)
        self._own = dict(per_strategy or {})
        self._clock = clock
        self._buckets: dict[str, _Bucket | None] = {}
        self._rejections = metrics.intake_rejections
        self._log = LogThrottle(REFUSAL_LOG_SECONDS, clock)

    @property
    def limited(self) -> bool:
        """True when any strategy has a rate (else :meth:`admit` admits everything)."""
        return self.default.rate is not None or any(r.rate is not None for r in self._own.values())

    def rate_of(self, strategy: str) -> IntakeRate:
        """The strategy's rate and burst (its own, else the default)."""
        own = self._own.get(strategy)
        if own is None:
            return self.default
        rate = own.rate if own.rate is not None else self.default.rate
        return IntakeRate(rate, own.burst if own.burst is not None else self.default.burst)

    def _bucket(self, strategy: str, now: float) -> _Bucket | None:
        if strategy not in self._buckets:
            limit = self.rate_of(strategy)
            self._buckets[strategy] = (
                None if limit.rate is None else _Bucket(limit.rate, limit.capacity, limit.capacity, now)
            )
        return self._buckets[strategy]

    def admit(self, strategy: str, requested: int) -> int:
        """How many of ``requested`` signals the strategy may send now (takes their tokens)."""
        now = self._clock()
        bucket = self._bucket(strategy, now)
        if bucket is None:
            return requested
        bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.at) * bucket.rate)
        bucket.at = now
        admitted = min(requested, int(bucket.tokens))
        bucket.tokens -= admitted
        return admitted

    def refused(self, strategy: str, count: int) -> None:
        """``count`` signals of the strategy were answered ``RATE_LIMITED``: counted, and logged at most once per
        ``REFUSAL_LOG_SECONDS`` per strategy (a flood makes one line, not one per frame)."""
        if count <= 0:
            return
        self._rejections.labels(strategy).inc(count)
        since_last = self._log.note(strategy, count)
        if since_last is not None:
            log.warning(
                "[OPS] strategy %s over its intake rate (%g/s, burst %g): %d signal(s) answered RATE_LIMITED since "
                "the last such line (at most one every %g s)",
                strategy,
                self.rate_of(strategy).rate or 0.0,
                self.rate_of(strategy).capacity,
                since_last,
                REFUSAL_LOG_SECONDS,
            )

    def refusal(self, signal: ops_pb2.Signal, strategy: str) -> ops_pb2.SignalDecision:
        """The in-band answer to a signal refused at intake."""
        limit = self.rate_of(strategy)
        rate = limit.rate or 0.0
        error = RiskRejectedError(
            "RATE_LIMITED",
            f"strategy over its intake rate of {rate:g} signals/s; the signal was not decided",
            {"rail": "intake", "rate_per_second": f"{rate:g}", "burst": f"{limit.capacity:g}"},
            rail="intake",
        )
        return ops_pb2.SignalDecision(
            signal_id=signal.signal_id,
            model_id=signal.model_id,
            status=ops_pb2.DECISION_STATUS_REJECTED,
            error=error_detail(error),
        )
