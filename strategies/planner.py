"""Which model targets are worth a signal: quotes in, signals out, no I/O (the strategy runtime's decision logic).

:class:`SignalPlanner` feeds each quote to the models trading its instrument and emits a signal only when a model's
target moved by at least ``min_target_change`` since the last target sent for that (model, instrument), so it can be
tested on a fake quote sequence; :mod:`strategies.runtime` carries the signals to ops.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.bounds import MAX_ID_CHARS
from strategies.config import Model

ModelSpec = tuple[str, Model, Sequence[str]]
"""(model_id, model, instruments) as the runner takes them."""


def signal_id(run_id: str, model_id: str, instrument: str, n: int) -> str:
    """``<run>-<model>-<instrument>-<n>``, readable in logs and traces; when names that long would pass the id bound
    ops keeps (:data:`~nautilus_mesh.bounds.MAX_ID_CHARS`, 128 characters), the prefix is replaced by 24 hex digits
    of its sha256 (still one id per run, model, instrument and count)."""
    readable = f"{run_id}-{model_id}-{instrument}-{n}"
    if len(readable) <= MAX_ID_CHARS:
        return readable
    digest = hashlib.sha256(f"{run_id}\x00{model_id}\x00{instrument}".encode()).hexdigest()[:24]
    return f"s-{digest}-{n}"


class SignalPlanner:
    """Feeds quotes to models and decides which targets are worth a signal. No I/O.

    The first target of each (model, instrument) is always sent, so a restarted strategy
    re-states its view to ops (positions outlive the strategy process); after that only moves
    of at least ``min_target_change`` are. ``forget_sent`` restores that first-target rule,
    for use after the signal stream reconnects (frames in flight may have been lost).

    Args:
        models: (model_id, model, instruments) triples.
        min_target_change: smallest target move that is sent.
        run_id: prefix making signal ids unique across runs of the same models.
    """

    def __init__(
        self, models: Sequence[ModelSpec], min_target_change: float, run_id: str, refresh_seconds: float = 0.0
    ) -> None:
        if not (math.isfinite(min_target_change) and min_target_change >= 0):
            raise ValueError(f"min_target_change must be a finite number >= 0, got {min_target_change}")
        if not (math.isfinite(refresh_seconds) and refresh_seconds >= 0):
            raise ValueError(f"refresh_seconds must be a finite number >= 0, got {refresh_seconds}")
        self.min_target_change = min_target_change
        self._refresh_ns = int(refresh_seconds * 1e9)
        self._last_sent_ns: dict[tuple[str, str], int] = {}
        self.run_id = run_id
        self.model_ids = tuple(model_id for model_id, _, _ in models)
        self._by_instrument: dict[str, list[tuple[str, Model]]] = {}
        # A model spreads its quota evenly over its instruments, so the sum of its |targets| stays
        # within the quota and ops' quota rail is not hit by design.
        self._share: dict[str, float] = {}
        for model_id, model, instruments in models:
            self._share[model_id] = 1.0 / max(1, len(instruments))
            for instrument in instruments:
                self._by_instrument.setdefault(instrument, []).append((model_id, model))
        self._last_sent: dict[tuple[str, str], float] = {}
        self._counters: Counter[str] = Counter()
        self._last_ts: dict[str, int] = {}

    @property
    def instruments(self) -> list[str]:
        """Every instrument some model trades, sorted."""
        return sorted(self._by_instrument)

    def forget_sent(self) -> None:
        """Treat every (model, instrument) as never signalled: its next target is sent."""
        self._last_sent.clear()

    def forget_quotes(self) -> None:
        """Forget quote timestamps (after the quote stream reconnects, e.g. to a restarted engine)."""
        self._last_ts.clear()

    def plan(self, prices: Iterable[tuple[str, float, int]], now_ns: int, *, emit: bool = True) -> list[ops_pb2.Signal]:
        """Feed one frame of (instrument, mid, ts_ns) prices; return the signals to send.

        A (model, instrument) touched several times in the frame yields at most one signal,
        with its latest target. A price not newer than the last one seen for its instrument
        (a duplicate, e.g. the same quote from a second venue) is ignored. With
        ``emit=False`` (ops not connected) the models still learn but nothing is sent or
        marked as sent.
        """
        latest: dict[tuple[str, str], float] = {}
        for instrument, mid, ts_ns in prices:
            models = self._by_instrument.get(instrument)
            if not models or not (math.isfinite(mid) and mid > 0):
                continue
            if ts_ns and ts_ns <= self._last_ts.get(instrument, 0):
                continue
            if ts_ns:
                self._last_ts[instrument] = ts_ns
            for model_id, model in models:
                target = model.on_price(instrument, mid, ts_ns)
                if target is not None and math.isfinite(target):
                    latest[(model_id, instrument)] = max(-1.0, min(1.0, target)) * self._share[model_id]
        if not emit:
            return []
        signals: list[ops_pb2.Signal] = []
        for (model_id, instrument), target in latest.items():
            previous = self._last_sent.get((model_id, instrument))
            # The epsilon keeps a move of exactly min_target_change from being lost to float rounding.
            small_move = previous is not None and abs(target - previous) < self.min_target_change - 1e-12
            stale = self._refresh_ns > 0 and now_ns - self._last_sent_ns.get((model_id, instrument), now_ns) >= (
                self._refresh_ns
            )
            if small_move and not stale:
                continue
            self._last_sent[(model_id, instrument)] = target
            self._last_sent_ns[(model_id, instrument)] = now_ns
            self._counters[model_id] += 1
            signals.append(
                ops_pb2.Signal(
                    signal_id=signal_id(self.run_id, model_id, instrument, self._counters[model_id]),
                    model_id=model_id,
                    instrument=instrument,
                    target=target,
                    confidence=1.0,
                    created_at_unix_nanos=now_ns,
                )
            )
        return signals
