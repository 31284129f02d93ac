"""Reconnect backoff, written once: exponential with full jitter around the step, capped, reset on success.

Used by ops' engine link and by the strategy runtime's stream to ops. The delay of attempt ``k`` (from 0) is
``min(initial * 2**k, maximum) * uniform(0.5, 1.5)``: the jitter spreads reconnects of many clients after one outage.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays between reconnect attempts.

    Args:
        initial: the first delay, seconds (before jitter).
        maximum: the largest delay, seconds (before jitter).
    """

    def __init__(self, initial: float, maximum: float) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial} and {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._step = initial

    def next_delay(self) -> float:
        """The delay before the next attempt, seconds; the step doubles up to ``maximum``."""
        delay = self._step * random.uniform(0.5, 1.5)  # noqa: S311  spreading retries, not a secret
        self._step = min(self._step * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``initial`` again."""
        self._step = self.initial
