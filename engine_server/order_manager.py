"""The engine-wide execution ledger: orders, execution reports, ``seq`` and the journal.

Every venue event becomes a :class:`Report` with an engine-wide ``seq`` (strictly increasing from 1,
no gaps) and a deterministic ``exec_id`` (``f"{venue}-{seq}"``). Ops reconciles after a reconnect with
``list_executions(since_seq)``.

Guarantees:

- **Idempotent submit.** A repeated ``client_order_id`` (including a rejected one) is never executed again; the
  call returns every report of the existing order (ids are burned once used, as FIX ClOrdIDs are). Finished orders
  leave memory after ``retention`` finished orders; a repeat of an id that left memory but is within the last
  ``dedupe_window`` orders is recognised by a fingerprint and answered from the journal. An older id (and every id
  without a journal) is no longer recognised: ops never re-sends an order that old (its duplicate window is 200,000).
- **Never overfilled.** Each event passes through :meth:`Order.apply`; an illegal or overfilling event is logged as
  an anomaly, counted, and dropped instead of reaching ops.
- **Durable before visible (group commit).** With a journal, every order and report is appended to the binary
  journal (:mod:`nautilus_mesh.journal`) and committed (one write and, under ``batch``, one fsync) before the call
  returns its reports; inside :meth:`frame` the commit waits for the end of the frame. After :meth:`defer_fsync` the
  fsync is the caller's to run (the engine service runs it on a thread and sends reports after it). On construction
  the journal is replayed, so ``seq``, orders and deduplication survive ``kill -9``.
- **Restart semantics** (:mod:`engine_server.ledger_recovery`). Venue books are in memory and are not restored:
  orders still open in the replayed journal are reported CANCELED (``ENGINE_RESTART``, new seqs, journaled), also
  in :attr:`OrderManager.restart_reports`. A JSONL journal (before the binary format) is migrated once on start.

Not thread-safe: call it from one thread (the engine's event loop).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from engine_server.execution_report import (
    JOURNAL_SCHEMA,
    ORDER_TAG,
    REPORT_TAG,
    Report,
    order_record,
    report_from_pb,
    report_pb,
    request_from_pb,
)
from engine_server.ledger_recovery import migrate_if_needed, open_journal, order_from_journal, restart_events
from engine_server.order_lifecycle import TERMINAL_STATUSES, IllegalTransitionError, Order, cancel_reject
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import (
    ExecType,
    OrderRequest,
    VenueAdapter,
    VenueEvent,
    rejected_event,
)
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import NotFoundError, ValidationError, VenueRejectedError
from nautilus_mesh.journal import FsyncPolicy
from nautilus_mesh.journal_segments import SegmentedJournalReader, SegmentedJournalWriter

log = logging.getLogger(__name__)

_NO_DETAILS: Mapping[str, str] = {}
MAX_LIST_LIMIT = 5000
JOURNAL_INDEX_EVERY = 1000
"""One (seq, journal offset) pair is kept per this many reports, so old ranges are read from near their start."""
__all__ = ["MAX_LIST_LIMIT", "OrderManager", "Report"]


class OrderManager:
    """Routes orders to venues through their rails and keeps the execution ledger.

    Args:
        venues: Venue adapters by name.
        rails: Rails per venue name, or one for every venue (default: no limits, cancel-on-disconnect on).
        journal_path: Binary journal; replayed on construction, committed before reports are returned.
        clock: Wall clock in ns (injected in tests).
        history_limit: Reports kept in memory for ``list_executions``; older ones are read from the journal.
        journal_fsync: ``never``, ``batch`` (one fsync per commit) or ``always`` (``True``/``False``: batch/never).
        retention: Finished orders (and their reports) kept in memory; older ones leave memory.
        dedupe_window: Orders whose ids are still recognised as duplicates after leaving memory (a fingerprint each,
            about 100 bytes), answered from the journal.
        journal_segment_bytes: a new journal segment past this size, bytes.
    """

    def __init__(
        self,
        venues: Mapping[str, VenueAdapter],
        rails: Mapping[str, VenueRails] | VenueRails | None = None,
        journal_path: Path | None = None,
        clock: Callable[[], int] = REAL_CLOCK.time_ns,
        *,
        history_limit: int = 50_000,
        journal_fsync: FsyncPolicy | bool = "batch",
        retention: int = 20_000,
        dedupe_window: int = 200_000,
        journal_segment_bytes: int | None = None,
    ) -> None:
        self._venues = dict(venues)
        # Live venues advance before paper ones, so a paper venue copies the quotes of this same step.
        self._advance_order = sorted(self._venues.values(), key=lambda v: v.kind == "paper")
        self._shared_rails = rails if isinstance(rails, VenueRails) else None
        self._rails: dict[str, VenueRails] = {}
        for name in self._venues:
            given = None if isinstance(rails, VenueRails) or rails is None else rails.get(name)
            self._rails[name] = given or self._shared_rails or VenueRails(VenueRailsConfig(), venue=name)
        self._clock = clock
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}
        self._order_reports: dict[str, list[Report]] = {}
        self._history: deque[Report] = deque(maxlen=max(1, history_limit))
        self._retention = max(0, retention)
        self._finished: OrderedDict[str, None] = OrderedDict()
        """Finished orders still in memory, oldest first."""
        self._dedupe_window = max(0, dedupe_window)
        self._forgotten: OrderedDict[int, None] = OrderedDict()
        """Fingerprints (``hash``) of the ids of orders that left memory, oldest first."""
        self._frame_depth = 0
        self._deferred_sync = False
        self._seq_index: list[tuple[int, int]] = []
        """Sparse (seq, journal offset) of reports, ascending: where to start reading an old range."""
        self._seq = 0
        self.anomalies = 0
        """Venue events dropped because they were illegal for their order (should stay 0)."""
        self._journal_path = journal_path
        self._journal: SegmentedJournalWriter | None = None
        self.restart_reports: list[Report] = []
        if journal_path is not None:
            journal_path = Path(journal_path)
            migrate_if_needed(journal_path)
            reader = self._replay(journal_path)
            self._journal = open_journal(journal_path, journal_fsync, reader, journal_segment_bytes)
            self.restart_reports = self._cancel_after_restart()

    def defer_fsync(self) -> Callable[[], None] | None:
        """Commits under ``batch`` write without fsync from now on; returns the journal's thread-safe ``sync``, to run
        before a commit's reports are sent (:class:`~nautilus_mesh.group_sync.GroupSync`). None: nothing deferred."""
        if self._journal is None or self._journal.fsync != "batch":
            return None
        self._deferred_sync = True
        return self._journal.sync

    # ------------------------------------------------------------------ queries

    @property
    def last_seq(self) -> int:
        """The seq of the newest report (0 when there is none)."""
        return self._seq

    @property
    def venues(self) -> Mapping[str, VenueAdapter]:
        """The venue adapters by name."""
        return self._venues

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this id, or None (the ledger's own object: read it, do not mutate it); an order that has
        left memory within the dedupe window is rebuilt from the journal."""
        order = self._orders.get(client_order_id)
        if order is None and self._left_memory(client_order_id):
            order = self._from_journal(client_order_id)[0]
        return order

    def reports_for(self, client_order_id: str) -> list[Report]:
        """Every report of one order, oldest first (from the journal when it has left memory)."""
        reports = self._order_reports.get(client_order_id)
        if reports is not None:
            return list(reports)
        if client_order_id not in self._orders and self._left_memory(client_order_id):
            return self._from_journal(client_order_id)[1]
        return []

    def _left_memory(self, client_order_id: str) -> bool:
        """The id may belong to an order that left memory (a fingerprint hit; the journal decides)."""
        return self._journal_path is not None and bool(self._forgotten) and hash(client_order_id) in self._forgotten

    @property
    def orders_in_memory(self) -> int:
        """Orders held in memory (open ones plus at most ``retention`` finished ones)."""
        return len(self._orders)

    @contextlib.contextmanager
    def frame(self) -> Iterator[None]:
        """Group the journal records of every call inside into one commit at the end (nestable); reports returned
        inside are not yet durable: send them only after it ends."""
        self._frame_depth += 1
        try:
            yield
        finally:
            self._frame_depth -= 1
            if self._frame_depth == 0 and self._journal is not None:
                self._journal.commit(sync=not self._deferred_sync)

    def open_orders(
        self, *, session_id: str | None = None, model_id: str | None = None, venue: str | None = None
    ) -> list[Order]:
        """Orders not yet terminal, optionally filtered, in submission order."""
        return [o for o in self._open.values() if o.matches(session_id, model_id, venue)]

    def list_executions(self, since_seq: int, limit: int = 500) -> list[Report]:
        """Reports with ``seq > since_seq`` in ascending order, at most ``limit`` (capped at 5000).

        Raises:
            NotFoundError: ``EXECUTIONS_TRUNCATED`` when the range is older than the in-memory
                history and there is no journal to read it from.
        """
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        since_seq = max(0, since_seq)
        if since_seq >= self._seq:
            return []
        first = self._history[0].seq if self._history else self._seq + 1
        if since_seq + 1 >= first:
            start = since_seq + 1 - first
            return list(itertools.islice(self._history, start, start + limit))
        if self._journal_path is None:
            raise NotFoundError(
                "EXECUTIONS_TRUNCATED",
                f"reports before seq {first} are no longer held in memory",
                {"since_seq": since_seq, "oldest_available": first - 1},
            )
        if self._journal is not None:
            self._journal.commit(sync=not self._deferred_sync)
        out: list[Report] = []
        sessions: dict[str, tuple[str, Mapping[str, str]]] = {}
        at = bisect.bisect_right(self._seq_index, (since_seq + 1, sys.maxsize)) - 1
        start = self._seq_index[at][1] if at >= 0 else 0
        for record in SegmentedJournalReader(self._journal_path, JOURNAL_SCHEMA).records(start):
            message = record.message
            if record.tag == ORDER_TAG:
                assert isinstance(message, journal_pb2.OrderRecord)
                req = request_from_pb(message)
                sessions[req.client_order_id] = (req.session_id, req.trace)
            elif record.tag == REPORT_TAG:
                assert isinstance(message, engine_pb2.ExecutionReport)
                if message.seq > since_seq:
                    session, trace = sessions.get(message.client_order_id, ("", {}))
                    out.append(report_from_pb(message, session, trace))
                    if len(out) >= limit:
                        break
        return out

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
            if old is not None:
                log.info("[ORDER-MANAGER] duplicate client_order_id %s (journal): %d reports", coid, len(previous))
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
            VenueRejectedError: The cancel reject of a finished order (:func:`cancel_reject`).
        """
        coid = client_order_id
        if (order := self._orders.get(coid)) is None:
            raise NotFoundError("ORDER_NOT_FOUND", f"no order {coid!r}", {"client_order_id": coid})
        if order.is_terminal:
            raise cancel_reject(order)
        venue = self._venues.get(order.venue)
        if venue is None:
            return []
        return self._record(venue.cancel(client_order_id))

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
                    reports.extend(self.cancel(order.client_order_id))
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

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()

    # ------------------------------------------------------------------ internals

    def _record(
        self,
        events: Iterable[VenueEvent],
        details: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[Report]:
        reports: list[Report] = []
        journal = self._journal
        for event in events:
            report = self._apply(event, details.get(event.client_order_id, _NO_DETAILS) if details else _NO_DETAILS)
            if report is not None:
                reports.append(report)
                if journal is not None:
                    self._index(report.seq, journal.append(report_pb(report)))
                self._remember(report)
        if journal is not None and self._frame_depth == 0:
            journal.commit(sync=not self._deferred_sync)
        return reports

    def _apply(self, event: VenueEvent, details: Mapping[str, str]) -> Report | None:
        order = self._orders.get(event.client_order_id)
        if order is None:
            self.anomalies += 1
            log.error("[ORDER-MANAGER] event for unknown order %s dropped", event.client_order_id)
            return None
        try:
            status = order.apply(event)
        except IllegalTransitionError as exc:
            self.anomalies += 1
            log.error("[ORDER-MANAGER] venue %s event dropped: %s %s", order.venue, exc.message, exc.details)
            return None
        if order.is_terminal:
            self._open.pop(order.client_order_id, None)
        self._seq += 1
        req = order.request
        return Report(
            seq=self._seq,
            exec_id=f"{order.venue}-{self._seq}",
            venue=order.venue,
            client_order_id=event.client_order_id,
            venue_order_id=event.venue_order_id,
            model_id=req.model_id,
            account=req.account,
            session_id=req.session_id,
            symbol=event.symbol,
            side=event.side,
            exec_type=event.exec_type,
            order_status=status,
            last_qty=event.last_qty,
            last_price=event.last_price,
            cum_qty=event.cum_qty,
            leaves_qty=event.leaves_qty,
            avg_price=event.avg_price,
            fee=event.fee,
            liquidity=event.liquidity,
            reason_code=event.reason_code,
            reason_text=event.reason_text,
            ts_ns=event.ts_ns,
            trace=req.trace,
            reason_details=details,
        )

    def _index(self, seq: int, offset: int) -> None:
        index = self._seq_index
        if not index or seq - index[-1][0] >= JOURNAL_INDEX_EVERY:
            index.append((seq, offset))

    def _remember(self, report: Report) -> None:
        self._history.append(report)
        coid = report.client_order_id
        reports = self._order_reports.get(coid)
        if reports is None:
            self._order_reports[coid] = [report]
        else:
            reports.append(report)
        if report.order_status in TERMINAL_STATUSES:
            self._finish(coid)

    def _finish(self, coid: str) -> None:
        """An order is done: keep it for ``retention`` more finished orders, then only its fingerprint."""
        finished = self._finished
        finished[coid] = None
        while len(finished) > self._retention:
            old, _ = finished.popitem(last=False)
            self._orders.pop(old, None)
            self._order_reports.pop(old, None)
            if self._dedupe_window:
                self._forgotten[hash(old)] = None
                if len(self._forgotten) > self._dedupe_window:
                    self._forgotten.popitem(last=False)

    def _from_journal(self, coid: str) -> tuple[Order | None, list[Report]]:
        """An order that left memory, rebuilt from the journal with its reports (None when absent)."""
        assert self._journal_path is not None
        if self._journal is not None:
            self._journal.commit(sync=not self._deferred_sync)  # the current frame's records are part of the answer
        return order_from_journal(self._journal_path, coid)

    def _replay(self, path: Path) -> SegmentedJournalReader:
        orders = reports = 0
        reader = SegmentedJournalReader(path, JOURNAL_SCHEMA)
        for record in reader.records():
            message = record.message
            try:
                if record.tag == ORDER_TAG:
                    assert isinstance(message, journal_pb2.OrderRecord)
                    req, created = request_from_pb(message), message.created_unix_nanos
                    new = Order(req.client_order_id, message.order.venue, req, created_ns=created, updated_ns=created)
                    self._orders[req.client_order_id] = self._open[req.client_order_id] = new
                    orders += 1
                elif record.tag == REPORT_TAG:
                    assert isinstance(message, engine_pb2.ExecutionReport)
                    order = self._orders.get(message.client_order_id)
                    if order is None:
                        raise KeyError(message.client_order_id)
                    req = order.request
                    if self._replay_report(report_from_pb(message, req.session_id, req.trace)):
                        self._index(message.seq, record.offset)
                        reports += 1
            except (KeyError, ValueError, ArithmeticError, IllegalTransitionError) as exc:
                log.error("[ORDER-MANAGER] unusable journal record at offset %d skipped: %r", record.offset, exc)
        if orders or reports:
            log.info(
                "[ORDER-MANAGER] journal %s replayed: %d orders, %d reports, last seq %d, %d orders kept in memory",
                path,
                orders,
                reports,
                self._seq,
                len(self._orders),
            )
        return reader

    def _replay_report(self, report: Report) -> bool:
        if report.seq <= self._seq:
            log.warning("[ORDER-MANAGER] journal seq %d out of order, skipped", report.seq)
            return False
        order = self._orders[report.client_order_id]
        order.apply(report)
        if order.is_terminal:
            self._open.pop(order.client_order_id, None)
        self._seq = report.seq
        self._remember(report)
        return True

    def _cancel_after_restart(self) -> list[Report]:
        events = restart_events(self._open.values(), self._clock())
        reports = self._record(events) if events else []
        if reports:
            log.warning("[ORDER-MANAGER] %d orders open at restart reported CANCELED (ENGINE_RESTART)", len(reports))
        return reports
