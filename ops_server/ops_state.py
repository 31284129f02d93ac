"""Ops' restartable state in the state store: allocations, trading states, canaries and the trading day.

Each save writes every document in one transaction; ops saves at each decision that changes the state, when the
trading day rolls and every ``STATE_SAVE_SECONDS`` (:mod:`ops_server.core`). On start the state is restored from
the store; a state file from before the store (``state.json``) is imported once and kept as ``state.json.imported``.
The trading day (UTC) and each model's equity at its start survive a restart on the same day, so daily-loss limits
keep counting; on a new day the day starts from the equity once every open position has a mark.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal
from pathlib import Path

from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.files import load_json_file
from nautilus_mesh.store import StateStore
from ops_server.allocation import CapitalAllocator
from ops_server.canary.manager import CanaryManager
from ops_server.measurement import Measurement
from ops_server.risk import RiskRails

log = logging.getLogger(__name__)

_PARTS = ("allocator", "risk", "canaries")


def utc_day(now: float) -> tuple[int, int, int]:
    """The UTC calendar day (year, month, day) of epoch seconds ``now``."""
    year, month, day = time.gmtime(now)[:3]
    return year, month, day


@dataclass(eq=False, repr=False)
class OpsState:
    """Saves and restores ops' state documents.

    Args:
        store: the state store (SQLite or PostgreSQL).
        allocator: allocator weights and cooldown clock.
        risk: trading states and the kill switch.
        canaries: every canary controller and its paired returns.
        measurement: day-start equity per model.
        legacy_path: the pre-store ``state.json``, imported once when the store is empty.
        clock: wall time (the trading day).
    """

    store: StateStore
    allocator: CapitalAllocator
    risk: RiskRails
    canaries: CanaryManager
    measurement: Measurement
    legacy_path: Path
    _: KW_ONLY
    clock: Clock = REAL_CLOCK

    def __post_init__(self) -> None:
        self.trading_day = utc_day(self.clock.time())
        # The books whose day started without a mark for every open position (a restart on a new day, or midnight
        # before the first quotes): each starts its day again at the first roll where its positions all have one.
        self._rebase_books: set[str] = set()

    def save(self) -> None:
        """Write the restartable state as store documents, all in one transaction."""
        documents = {
            "allocator": self.allocator.snapshot(),
            "risk": self.risk.snapshot(),
            "canaries": self.canaries.snapshot(),
            "drawdown": self.measurement.drawdown_state(),
            "trading_day": {
                "day": list(self.trading_day),
                "day_start_equity": {
                    m: str(self.measurement.book(m).day_start_equity) for m in self.measurement.models()
                },
            },
        }
        # Through JSON with str() for what JSON lacks (Decimals, enums), exactly as the old state file was written.
        self.store.put_many({key: json.loads(json.dumps(value, default=str)) for key, value in documents.items()})

    def close(self) -> None:
        """Save the final state and close the store (a second call does nothing)."""
        if not self.store.closed:
            self.save()
            self.store.close()

    def roll_day(self, now: float) -> bool:
        """Start a new trading day at UTC midnight (daily-loss limits count from it), or start today's again for a book
        whose open positions all have a mark now (its day started without them counted them at nothing; the other
        books keep their start); True when a day (re)started: the caller saves the state then, so a crash after
        midnight keeps the day's losses."""
        today = utc_day(now)
        if today != self.trading_day:
            self.measurement.start_day()
            self.trading_day = today
            self._rebase_books = self.measurement.unpriced_books()
            return True
        priced = {book for book in self._rebase_books if self.measurement.book_priced(book)}
        if not priced:
            return False
        self.measurement.start_day(priced)
        self._rebase_books -= priced
        return True

    def restore(self) -> None:
        """Restore allocator, risk and canary state (importing a legacy state file first, once)."""
        self._import_legacy()
        state = {key: self.store.get(key) for key in _PARTS}
        if state["allocator"] is not None:
            self.allocator.restore(state["allocator"])
        if state["risk"] is not None:
            self.risk.restore(state["risk"])
        if state["canaries"] is not None:
            self.canaries.restore(state["canaries"])
        if any(value is not None for value in state.values()):
            log.info("[OPS] restored allocator and risk state from %s", self.store.location)

    def restore_trading_day(self) -> None:
        """Daily-loss limits keep counting from the day's start across a restart on the same UTC day.

        Call after the journal replay, which rebuilds the positions the day-start equity is compared with. The
        drawdown memory (equity index and peaks) comes back too, so a restart never resets a drawdown.
        """
        drawdown = self.store.get("drawdown")
        if drawdown:
            self.measurement.restore_drawdown_state(drawdown)
        saved = self.store.get("trading_day") or {}
        if tuple(saved.get("day", ())) == self.trading_day:
            for model_id, equity in saved.get("day_start_equity", {}).items():
                self.measurement.book(model_id).day_start_equity = Decimal(equity)
        else:  # a new day: it starts from the current equity, again once the open positions have marks
            self.measurement.start_day()
            self._rebase_books = self.measurement.unpriced_books()

    def _import_legacy(self) -> None:
        legacy = self.legacy_path
        if not legacy.exists():
            return
        if any(self.store.get(key) is not None for key in (*_PARTS, "trading_day")):
            log.warning("[OPS] ignoring %s: the state store %s already holds state", legacy, self.store.location)
            return
        old = load_json_file(legacy)
        documents = {key: old[key] for key in _PARTS if key in old}
        if "trading_day" in old:
            documents["trading_day"] = {"day": old["trading_day"], "day_start_equity": old.get("day_start_equity", {})}
        self.store.put_many(documents)
        imported = legacy.with_name(legacy.name + ".imported")
        legacy.replace(imported)
        log.info("[OPS] imported %s into the state store %s (kept as %s)", legacy, self.store.location, imported.name)
