"""One clock for the whole mesh: ops, engine, venues and strategies read time from a :class:`Clock`.

In production it is :data:`REAL_CLOCK` (the operating system's clocks); in a backtest it is a :class:`SimClock`
that the replay moves forward quote by quote, so the same signal path, rails, allocator, canary controller and
matching run on simulated time at full speed. This module is the only place that calls ``time.time``,
``time.time_ns``, ``time.monotonic`` or ``datetime.now``; ``tests/test_clock.py`` enforces it.

Durations measured only for latency metrics (``time.perf_counter``) are not time *readings* of the system and
stay on the process's performance counter in both modes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

NS_PER_SECOND = 1_000_000_000


@runtime_checkable
class Clock(Protocol):
    """Wall time and monotonic time, as the mesh reads them."""

    def time(self) -> float:
        """Wall time, seconds since the Unix epoch."""
        ...

    def time_ns(self) -> int:
        """Wall time, nanoseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Monotonic time, seconds (only differences are meaningful)."""
        ...

    def now(self) -> datetime:
        """Wall time as a timezone-aware UTC datetime."""
        ...


class RealClock:
    """The operating system's clocks (production)."""

    def time(self) -> float:
        return time.time()

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


REAL_CLOCK = RealClock()
"""The process-wide real clock: the default of every ``clock`` parameter."""


class SimClock:
    """Simulated time, moved forward by a replay; it never goes backwards.

    Wall time and monotonic time are the same simulated instant (monotonic in seconds since the epoch).

    Args:
        start_ns: the first instant, nanoseconds since the Unix epoch.
    """

    def __init__(self, start_ns: int = 0) -> None:
        if start_ns < 0:
            raise ValueError(f"start_ns must be >= 0, got {start_ns}")
        self._ns = start_ns

    def advance_to(self, ns: int) -> None:
        """Move the clock to ``ns`` (nanoseconds since the epoch); an earlier instant is ignored."""
        if ns > self._ns:
            self._ns = ns

    def time(self) -> float:
        return self._ns / NS_PER_SECOND

    def time_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._ns / NS_PER_SECOND

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._ns / NS_PER_SECOND, UTC)


__all__ = ["NS_PER_SECOND", "REAL_CLOCK", "Clock", "RealClock", "SimClock"]
