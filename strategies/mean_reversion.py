"""Mean reversion: a rolling z-score per instrument, faded.

``target = clip(-z / entry_z, -1, 1)`` where ``z`` is how many rolling standard deviations the
latest mid sits from the rolling mean (the window includes the latest mid). At ``|z| >=
entry_z`` the model holds a full position against the move; inside it scales linearly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MeanReversionConfig:
    """Parameters of the rolling z-score model."""

    window: int = 50
    """Number of most recent mids in the rolling mean and deviation; also the warm-up length. At least 2."""
    entry_z: float = 2.0
    """|z| at which the target reaches a full -1/+1; a finite number above 0."""

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not (math.isfinite(self.entry_z) and self.entry_z > 0):
            raise ValueError(f"entry_z must be a finite number > 0, got {self.entry_z}")


@dataclass
class MeanReversionModel:
    """Rolling z-score mean reversion, one window per instrument.

    Returns None until ``window`` prices of an instrument have been seen. A flat window
    (zero deviation) gives a 0 target: there is nothing to revert from.
    """

    config: MeanReversionConfig = field(default_factory=MeanReversionConfig)

    def __post_init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}

    def on_price(self, instrument: str, mid: float, ts_ns: int) -> float | None:
        """Feed one mid price; return the target exposure in [-1, 1] or None while warming up."""
        window = self._windows.get(instrument)
        if window is None:
            window = self._windows[instrument] = deque(maxlen=self.config.window)
        window.append(mid)
        if len(window) < self.config.window:
            return None
        # Recomputed over the window instead of running sums: windows are small and running
        # sums of squares lose precision on prices around 1e4-1e5.
        n = len(window)
        mean = math.fsum(window) / n
        variance = math.fsum((x - mean) ** 2 for x in window) / (n - 1)
        std = math.sqrt(variance)
        if std <= 1e-12 * max(abs(mean), 1.0):
            return 0.0
        z = (mid - mean) / std
        return max(-1.0, min(1.0, -z / self.config.entry_z))
