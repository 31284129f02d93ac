"""A canary's return series held in bounded memory, still indexed from the canary's first sample.

The controller counts observations from the canary's start (``len`` of the series, the index where a step or the
live track record began) and reads tails of the series from such an index. :class:`ReturnWindow` keeps those
absolute indices while holding only the samples a check can still read:

- samples before the current step's start and before the live track record's start are never read again and are
  dropped as soon as the manager learns those indices (:meth:`ReturnWindow.forget_before`): the statistics stay
  exactly those of the full series;
- at most ``limit`` samples are held (``canary_window_samples`` in ``ops.json``): a step or a live track record
  longer than that is judged on its most recent ``limit`` samples, a sliding window. The default (86,400 samples,
  a day at 1 s sampling) is far longer than a step's dwell, so in practice the window only bounds a canary left
  paused or waiting for confirmation for days.

``len(window)`` is the number of samples ever appended; a slice ``window[start:]`` returns the held samples from
absolute index ``start`` (or from the oldest held one, if ``start`` was dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

DEFAULT_WINDOW_SAMPLES = 86_400
"""Samples held per canary series by default (count): a day at 1 s sampling."""


class ReturnWindow(Sequence[float]):
    """The most recent returns of a series, addressed by their index in the whole series.

    Args:
        values: Samples to start with (the most recent ones, when restoring).
        dropped: How many samples came before ``values`` (their absolute index offset).
        limit: Most samples held; older ones are dropped on append (count).
    """

    def __init__(self, values: Iterable[float] = (), dropped: int = 0, limit: int = DEFAULT_WINDOW_SAMPLES) -> None:
        if limit < 1:
            raise ValueError(f"a return window holds at least 1 sample, got {limit}")
        self.limit = limit
        self._values = [float(v) for v in values]
        self._dropped = dropped
        self._trim()

    @property
    def held(self) -> list[float]:
        """A copy of the readable samples, oldest first (the one at absolute index :attr:`oldest` first)."""
        return list(self)

    def __len__(self) -> int:
        return self._dropped + len(self._values)

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("a return window is sliced with step 1 only")
            oldest = self.oldest
            if stop <= start:
                return []
            return self._values[max(start, oldest) - self._dropped : max(stop, oldest) - self._dropped]
        absolute = index + len(self) if index < 0 else index
        if not self.oldest <= absolute < len(self):
            raise IndexError(f"sample {index} is not held (held: {self.oldest}..{len(self) - 1})")
        return self._values[absolute - self._dropped]

    def __iter__(self) -> Iterator[float]:
        return iter(self._values[self.oldest - self._dropped :])

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample a read can return (at most ``limit`` samples back)."""
        return max(self._dropped, len(self) - self.limit)

    def append(self, value: float) -> None:
        """Add the newest sample (dropping the oldest past the limit)."""
        self._values.append(value)
        if len(self._values) > self.limit + self.limit // 10:
            self._trim()

    def extend(self, values: Iterable[float]) -> None:
        """Add several samples, oldest first."""
        self._values.extend(values)
        self._trim()

    def forget_before(self, index: int) -> None:
        """Drop the samples before absolute ``index``: nothing reads them any more."""
        cut = min(index, len(self)) - self._dropped
        if cut > 0:
            del self._values[:cut]
            self._dropped += cut

    def _trim(self) -> None:
        # Reads never go back past ``limit`` samples (:attr:`oldest`); the list itself is cut in chunks of a tenth of
        # the limit, so appends stay amortised O(1) and memory stays within 1.1x the limit.
        self.forget_before(len(self) - self.limit)
