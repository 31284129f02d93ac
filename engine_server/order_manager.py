"""The engine's order manager: routes orders to venues through their rails, over the execution ledger.

The ledger (:class:`engine_server.execution_ledger.ExecutionLedger`) gives every venue event a :class:`Report`
with an engine-wide ``seq`` and keeps the journal, its snapshot and deduplication. This class adds:

- **Idempotent submit.** A repeated ``client_order_id`` (including one that was rejected) is never
  executed again; the call returns every report of the existing order that the engine still holds. Ids are
  "burned" once used, as FIX ClOrdIDs are: an order that left memory is recognised by a fingerprint within
  the last ``dedupe_window`` orders (answered from the snapshot and the journal). An id older than that (and
  every id when there is no journal) is no longer recognised: ops never re-sends an order that old (its own
  duplicate window is 200,000 signals).
- **Never overfilled.** Each event passes through :meth:`Order.apply`; an illegal or overfilling
  event is logged as an anomaly, counted, and dropped instead of reaching ops.
- **Restart semantics** (:mod:`engine_server.ledger_recovery`). Venue books are in memory and are not restored:
  orders still open in the replayed journal are reported CANCELED (``ENGINE_RESTART``, new seqs, journaled), also
  in :attr:`OrderManager.restart_reports`. A JSONL journal (before the binary format) is migrated once on start.

Not thread-safe: call it from one thread (the engine's event loop).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine_server.execution_ledger import MAX_LIST_LIMIT, ExecutionLedger, Report
from engine_server.execution_report import order_record
from engine_server.order_lifecycle import Order, cancel_reject
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import ExecType, OrderRequest, VenueAdapter, VenueEvent, rejected_event
from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import ValidationError, VenueRejectedError

log = logging.getLogger(__name__)

CANCEL_ON_DISCONNECT = "CANCEL_ON_DISCONNECT"
"""Reason code of an open order cancelled because its session's stream dropped (the venue's ``cancel_on_disconnect``
rail), where a client's own cancel says ``CANCELED_BY_CLIENT``."""

_NO_DETAILS: Mapping[str, str] = {}
__all__ = ["MAX_LIST_LIMIT", "OrderManager", "Report"]


class OrderManager(ExecutionLedger):
    """Routes orders to venues through their rails and keeps the execution ledger.

    Args:
        venues: Venue adapters by name.
        rails: Rails per venue name, or one ``VenueRails`` for every venue. A venue without rails gets
            a default (no limits, cancel-on-disconnect on).
        journal_path: Binary journal; restored and replayed on construction (see :class:`ExecutionLedger`).
        clock: Wall clock in ns (injected in tests).
        **ledger: The :class:`ExecutionLedger` settings (``history_limit``, ``journal_fsync``, ``retention``,
            ``dedupe_window``, ``journal_segment_bytes``, ``snapshot_every_bytes``, ``execution_retention``,
            ``on_snapshot``).
    """

    def __init__(
        self,
        venues: Mapping[str, VenueAdapter],
        rails: Mapping[str, VenueRails] | VenueRails | None = None,
        journal_path: Path | None = None,
        clock: Callable[[], int] = REAL_CLOCK.time_ns,
        **ledger: Any,
    ) -> None:
        self._venues = dict(venues)
        # Live venues advance before paper ones, so a paper venue copies the quotes of this same step.
        self._advance_order = sorted(self._venues.values(), key=lambda v: v.kind == "paper")
        self._shared_rails = rails if isinstance(rails, VenueRails) else None
        self._rails: dict[str, VenueRails] = {}
        for name in self._venues:
            given = None if isinstance(rails, VenueRails) or rails is None else rails.get(name)
            self._rails[name] = given or self._shared_rails or VenueRails(VenueRailsConfig(), venue=name)
        super().__init__(journal_path, clock, **ledger)

    @property
    def venues(self) -> Mapping[str, VenueAdapter]:
        """The venue adapters by name."""
        return self._venues

    # ------------------------------------------------------------------ commands

    def submit(self, venue_name: str, req: OrderRequest) -> list[Report]:
        """Execute a new order; returns its reports (and those of any other order it traded with).

        A repeated ``client_order_id`` returns the existing order's reports and executes nothing.
        Unknown venue or instrument and rail breaches come back as one REJECTED report whose
        ``reason_code`` names the cause (``UNKNOWN_VENUE``, ``UNKNOWN_INSTRUMENT``, ``PRICE_COLLAR``...).

        Raises:
            ValidationError: ``INVALID_CLIENT_ORDER_ID`` for an empty id (nothing to deduplicate on).
        """
        coid = req.client_order_id
        if not coid:
            raise ValidationError("INVALID_CLIENT_ORDER_ID", "client_order_id is required", field="client_order_id")
        if coid in self._orders:
            previous = list(self._order_reports.get(coid, ()))
            log.info("[ORDER-MANAGER] duplicate client_order_id %s: returning %d reports", coid, len(previous))
            return previous
        if self._left_memory(coid):
            old, previous = self._from_journal(coid)
            if old is not None or self.snapshot_seq:  # after a compaction the order's records may be gone
                log.info("[ORDER-MANAGER] duplicate client_order_id %s (left memory): %d reports", coid, len(previous))
                return previous
        now = self._clock()
        order = Order(coid, venue_name, req, created_ns=now, updated_ns=now)
        self._orders[coid] = order
        self._open[coid] = order
        if self._journal is not None:
            self._journal.append(order_record(venue_name, req, now))
        details: dict[str, str] = {}
        venue = self._venues.get(venue_name)
        if venue is None:
            events = [rejected_event(req, "UNKNOWN_VENUE", f"no venue named {venue_name!r}", now)]
        elif req.symbol not in venue.instruments():
            events = [rejected_event(req, "UNKNOWN_INSTRUMENT", f"{venue_name} does not trade {req.symbol}", now)]
        else:
            try:
                self._rails[venue_name].check(req, venue.reference_price(req.symbol), now, venue=venue_name)
                events = venue.submit(req)
            except VenueRejectedError as exc:
                details = exc.details
                events = [rejected_event(req, exc.code, exc.message, now)]
            except Exception:
                log.exception("[ORDER-MANAGER] venue %s failed on order %s", venue_name, coid)
                events = [rejected_event(req, "VENUE_ERROR", f"venue {venue_name} failed to process the order", now)]
        return self._record(events, {coid: details} if details else None)

    def cancel(self, client_order_id: str) -> list[Report]:
        """Cancel one order.

        Raises:
            NotFoundError: ``ORDER_NOT_FOUND`` for an id the engine never saw.
            OutOfRangeError: ``ORDER_PAST_RETENTION`` for a finished order whose records a snapshot let go.
            VenueRejectedError: The cancel reject of a finished order (:func:`cancel_reject`), in memory or not.
        """
        coid = client_order_id
        if (order := self._orders.get(coid)) is None:
            finished = self.get_order(coid)  # open orders never leave memory: one found this way is finished
            if finished is not None:
                raise cancel_reject(finished)
            raise self.missing_order_error(coid)
        if order.is_terminal:
            raise cancel_reject(order)
        return self._cancel_open(order)

    def _cancel_open(self, order: Order, *, disconnected: bool = False) -> list[Report]:
        """Cancel an open order at its venue; ``disconnected``: its session dropped, so its CANCELED event says
        ``CANCEL_ON_DISCONNECT`` (the engine's decision, not the client's)."""
        venue = self._venues.get(order.venue)
        if venue is None:
            return []
        events = venue.cancel(order.client_order_id)
        if disconnected:
            text = "cancelled: its session disconnected"
            events = [
                dataclasses.replace(e, reason_code=CANCEL_ON_DISCONNECT, reason_text=text)
                if e.exec_type is ExecType.CANCELED
                else e
                for e in events
            ]
        return self._record(events)

    def cancel_all(
        self, session_id: str | None = None, model_id: str | None = None, venue: str | None = None
    ) -> list[Report]:
        """Cancel every open order matching all the given filters (all open orders when none is given)."""
        reports: list[Report] = []
        with self.frame():
            for order in self.open_orders(session_id=session_id, model_id=model_id, venue=venue):
                reports.extend(self.cancel(order.client_order_id))
        if reports:
            log.info(
                "[ORDER-MANAGER] cancel_all cancelled %d orders", sum(r.exec_type is ExecType.CANCELED for r in reports)
            )
        return reports

    def on_session_closed(self, session_id: str) -> list[Report]:
        """A session's order stream dropped: cancel its open orders on venues whose rails say cancel_on_disconnect."""
        reports: list[Report] = []
        with self.frame():
            for order in self.open_orders(session_id=session_id):
                rails = self._rails.get(order.venue)
                if rails is not None and rails.cancel_on_disconnect:
                    reports.extend(self._cancel_open(order, disconnected=True))
        for rails in self._rails.values():
            rails.forget_session(session_id)
        log.info("[ORDER-MANAGER] session %s closed: %d cancel reports", session_id, len(reports))
        return reports

    def advance(self, now_ns: int | None = None) -> list[Report]:
        """Advance every venue's market to ``now_ns`` (default: the clock) and report the fills it caused."""
        now = self._clock() if now_ns is None else now_ns
        events: list[VenueEvent] = []
        for venue in self._advance_order:
            events.extend(venue.advance(now))
        return self._record(events) if events else []
