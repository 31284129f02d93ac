"""The engine's execution ledger: orders and their reports, ``seq``, deduplication, the journal and its compaction.

Every venue event applied to an order becomes a :class:`Report` with an engine-wide ``seq`` (strictly increasing
from 1, no gaps) and a deterministic ``exec_id`` (``f"{venue}-{seq}"``). Every order and report is journaled and
committed (group commit: one write per frame, :meth:`ExecutionLedger.frame`; the fsync may be deferred to a thread,
:meth:`ExecutionLedger.defer_fsync`) before its reports are sent.
Finished orders leave memory after ``retention`` more finished; the ids of the last ``dedupe_window`` that left are
kept as fingerprints, so a repeat is never executed again.

**Compaction** (:mod:`engine_server.ledger_compaction`, :mod:`engine_server.ledger_snapshot`). Once
``snapshot_every_bytes`` of journal were written since the last snapshot, at the end of a commit: the journal closes
its segment ``K`` and starts ``K + 1``; the snapshot (what replaying segments ``<= K`` rebuilds) replaces
``journal.snapshot.json`` atomically (encoded and written on a worker thread once the engine server called
:meth:`compact_in_background`); segments ``<= K`` are deleted. ``kill -9`` at any point loses and doubles
nothing: before the rename the previous snapshot and every segment after it are on disk; after it, a restart deletes
the segments ``<= K`` left over and replays the later ones. ``list_executions`` answers from the snapshot's
``oldest_seq - 1`` on (the last ``execution_retention`` reports at each snapshot, and all since); older is
``OUT_OF_RANGE`` (``EXECUTIONS_PAST_RETENTION``).

Not thread-safe: call it from one thread (the engine's event loop).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
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
    report_from_pb,
    report_of,
    report_pb,
)
from engine_server.fingerprints import FingerprintWindow
from engine_server.ledger_compaction import LedgerCompaction
from engine_server.ledger_recovery import (
    journal_reports,
    migrate_if_needed,
    open_journal,
    order_from_journal,
    order_of,
    restart_events,
)
from engine_server.ledger_snapshot import (
    LedgerSnapshot,
    fingerprint,
    load_snapshot,
    snapshot_order,
    snapshot_reports,
)
from engine_server.order_lifecycle import TERMINAL_STATUSES, IllegalTransitionError, Order
from engine_server.venues.base import ZERO, VenueEvent
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.errors import MeshError, NotFoundError, OutOfRangeError
from nautilus_mesh.journal import FsyncPolicy
from nautilus_mesh.journal_segments import (
    SegmentedJournalReader,
    SegmentedJournalWriter,
    drop_segments_before,
    segments_bytes,
)
from nautilus_mesh.snapshots import snapshot_path

log = logging.getLogger(__name__)

_NO_DETAILS: Mapping[str, str] = {}
MAX_LIST_LIMIT = 5000
JOURNAL_INDEX_EVERY = 1000  # one (seq, journal offset) pair per this many reports: old ranges read near their start
__all__ = ["MAX_LIST_LIMIT", "ExecutionLedger", "Report"]


class ExecutionLedger(LedgerCompaction):
    """Orders, reports, ``seq`` and deduplication, journaled and compacted behind a snapshot.

    Args:
        journal_path: Binary journal; restored and replayed on construction, committed before reports are returned.
        clock: Wall clock in ns (injected in tests).
        history_limit: Reports kept in memory for ``list_executions`` (count); older ones are read from disk.
        journal_fsync: ``never``, ``batch`` (one fsync per commit) or ``always`` (``True``/``False``: batch/never).
        retention: Finished orders (and their reports) kept in memory (count).
        dedupe_window: Orders whose ids stay recognised as duplicates after leaving memory (count; a 64-bit
            fingerprint each, about 34 bytes of memory with its index: :mod:`engine_server.fingerprints`).
        journal_segment_bytes: A new journal segment past this size (bytes; None: only at a snapshot).
        snapshot_every_bytes: Journal bytes since the last snapshot that trigger the next (None: never compacts).
        execution_retention: Reports (count) a snapshot keeps for ``list_executions`` once their segments are gone.
        on_snapshot: Called with the snapshot's seq after each compaction (metrics).
    """

    def __init__(
        self,
        journal_path: Path | None,
        clock: Callable[[], int],
        *,
        history_limit: int = 50_000,
        journal_fsync: FsyncPolicy | bool = "batch",
        retention: int = 20_000,
        dedupe_window: int = 200_000,
        journal_segment_bytes: int | None = None,
        snapshot_every_bytes: int | None = None,
        execution_retention: int = 50_000,
        on_snapshot: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}
        self._order_reports: dict[str, list[Report]] = {}
        self._history: deque[Report] = deque(maxlen=max(1, history_limit))
        self._retention = max(0, retention)
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished orders still in memory, oldest first
        self._dedupe_window = max(0, dedupe_window)
        self._forgotten = FingerprintWindow(self._dedupe_window)
        """Fingerprints (:func:`fingerprint`) of the ids of the last ``dedupe_window`` orders that left memory."""
        self._frame_depth = 0
        self._deferred_sync = False
        self._seq_index: list[tuple[int, int]] = []
        """Sparse (seq, journal offset) of reports, ascending: where to start reading an old range."""
        self._seq = 0
        self.anomalies = 0  # venue events dropped because they were illegal for their order (should stay 0)
        self._snapshot_every = snapshot_every_bytes
        self._execution_retention = max(1, execution_retention)
        self._on_snapshot = on_snapshot
        self._first_segment = 0  # the oldest journal segment the snapshot does not cover
        self.snapshot_seq = 0
        """The seq the newest snapshot covers (0: no snapshot)."""
        self._oldest_seq = 1
        self.snapshots = 0  # snapshots written by this process (count)
        self.replayed_records = 0
        """Journal records replayed on construction (count; the snapshot's are not records)."""
        self._tail_closed = (-1, 0)
        self._journal_path = journal_path
        self._snapshot_file = snapshot_path(journal_path) if journal_path is not None else None
        self._journal: SegmentedJournalWriter | None = None
        self.restart_reports: list[Report] = []
        if journal_path is not None:
            journal_path = Path(journal_path)
            migrate_if_needed(journal_path)
            assert self._snapshot_file is not None
            self._restore(load_snapshot(self._snapshot_file))
            drop_segments_before(journal_path, self._first_segment)
            reader = self._replay(journal_path)
            self._journal = open_journal(
                journal_path, journal_fsync, reader, journal_segment_bytes, first_segment=self._first_segment
            )
            self.restart_reports = self._cancel_after_restart()

    # ------------------------------------------------------------------ queries

    @property
    def last_seq(self) -> int:
        """The seq of the newest report (0 when there is none)."""
        return self._seq

    @property
    def oldest_available_seq(self) -> int:
        """The oldest seq ``list_executions`` can still return (1 until a snapshot let older reports go)."""
        return min(self._oldest_seq, self._history[0].seq if self._history else self._oldest_seq)

    @property
    def journal_bytes(self) -> int:
        """Bytes of the journal segments on disk (the snapshot file excluded; 0 without a journal)."""
        if self._journal_path is None:
            return 0
        return segments_bytes(self._journal_path)

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this id, or None (the ledger's own object: read it, do not mutate it); one that left memory
        within the dedupe window is rebuilt from the snapshot and the journal."""
        order = self._orders.get(client_order_id)
        if order is None and self._left_memory(client_order_id):
            order = self._from_journal(client_order_id)[0]
        return order

    def missing_order_error(self, client_order_id: str) -> MeshError:
        """Why :meth:`get_order` has no order: ``ORDER_PAST_RETENTION`` (OUT_OF_RANGE) for an id seen before whose
        records a snapshot let go, else ``ORDER_NOT_FOUND``."""
        if self.snapshot_seq and self._left_memory(client_order_id):
            return OutOfRangeError(
                "ORDER_PAST_RETENTION",
                f"order {client_order_id!r} is older than what the engine keeps",
                {"client_order_id": client_order_id, "oldest_available_seq": self.oldest_available_seq},
            )
        return NotFoundError("ORDER_NOT_FOUND", f"no order {client_order_id!r}", field="client_order_id")

    def reports_for(self, client_order_id: str) -> list[Report]:
        """Every report of one order, oldest first (from the snapshot and journal when it has left memory)."""
        reports = self._order_reports.get(client_order_id)
        if reports is not None:
            return list(reports)
        if client_order_id not in self._orders and self._left_memory(client_order_id):
            return self._from_journal(client_order_id)[1]
        return []

    def _left_memory(self, client_order_id: str) -> bool:
        """The id may belong to an order that left memory (a fingerprint hit)."""
        forgotten = self._forgotten
        return self._journal_path is not None and bool(forgotten) and fingerprint(client_order_id) in forgotten

    @property
    def orders_in_memory(self) -> int:
        """Orders held in memory (open ones plus at most ``retention`` finished ones)."""
        return len(self._orders)

    def defer_fsync(self) -> Callable[[], None] | None:
        """Commits under ``batch`` write without fsync from now on; returns the journal's thread-safe ``sync``, to run
        before a commit's reports are sent (:class:`~nautilus_mesh.group_sync.GroupSync`). None: nothing deferred."""
        if self._journal is None or self._journal.fsync != "batch":
            return None
        self._deferred_sync = True
        return self._journal.sync

    @contextlib.contextmanager
    def frame(self) -> Iterator[None]:
        """Group the journal records of every call inside into one commit at the end (nestable); reports returned
        inside are not yet durable: send them only after it ends (after :meth:`defer_fsync`: after the fsync)."""
        self._frame_depth += 1
        completed = False
        try:
            yield
            completed = True
        finally:
            self._frame_depth -= 1
            if self._frame_depth == 0 and self._journal is not None:
                self._journal.commit(sync=not self._deferred_sync)
                if completed:
                    self._maybe_compact()

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
            OutOfRangeError: ``EXECUTIONS_PAST_RETENTION`` when reports after ``since_seq`` were let go by a
                snapshot; ``details["oldest_available_seq"]`` is the oldest seq still available.
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
        if since_seq + 1 < (oldest := self.oldest_available_seq):
            raise OutOfRangeError(
                "EXECUTIONS_PAST_RETENTION",
                f"reports before seq {oldest} are past the engine's retention window",
                {"since_seq": since_seq, "oldest_available_seq": oldest},
            )
        return list(itertools.islice(self._stored_reports(since_seq), limit))

    def _stored_reports(self, since_seq: int) -> Iterator[Report]:
        """Reports with ``seq > since_seq`` read from the snapshot and the journal, ascending."""
        assert self._journal_path is not None
        if self._journal is not None:
            self._journal.commit(sync=not self._deferred_sync)
        if since_seq < self.snapshot_seq:
            assert self._snapshot_file is not None
            yield from snapshot_reports(self._snapshot_file, since_seq)
            start = 0
        else:
            at = bisect.bisect_right(self._seq_index, (since_seq + 1, sys.maxsize)) - 1
            start = self._seq_index[at][1] if at >= 0 else 0
        yield from journal_reports(self._journal_path, since_seq, start, self._first_segment)

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()

    # ------------------------------------------------------------------ compaction

    def _stored_or_memory(self, since_seq: int) -> Iterator[Report]:
        first = self._history[0].seq if self._history else self._seq + 1  # as in list_executions, without a limit
        if since_seq + 1 >= first:
            return itertools.islice(self._history, since_seq + 1 - first, None)
        return self._stored_reports(since_seq)

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
            self._maybe_compact()
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
        leaves = ZERO if order.is_terminal else order.request.quantity - order.filled_qty
        if event.leaves_qty != leaves or event.avg_price != order.avg_price:
            # The adapter's figures disagree with the order's own: the report carries the ledger's (what GetOrder
            # shows), never a cancelled order with quantity left or an average no fill made.
            self.anomalies += 1
            log.error(
                "[ORDER-MANAGER] venue %s event for %s corrected: leaves %s avg %s -> leaves %s avg %s",
                order.venue,
                order.client_order_id,
                event.leaves_qty,
                event.avg_price,
                leaves,
                order.avg_price,
            )
            event = dataclasses.replace(event, leaves_qty=leaves, avg_price=order.avg_price)
        self._seq += 1
        return report_of(event, self._seq, order.venue, order.request, status, details)

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
                self._forgotten.add(fingerprint(old))

    def _from_journal(self, coid: str) -> tuple[Order | None, list[Report]]:
        """An order that left memory, rebuilt from the snapshot and the journal with its reports (None: absent)."""
        assert self._journal_path is not None
        if self._journal is not None:
            self._journal.commit(sync=not self._deferred_sync)  # the current frame's records are part of the answer
        seed, seed_reports = None, list[engine_pb2.ExecutionReport]()
        if self.snapshot_seq and self._snapshot_file is not None:
            seed, seed_reports = snapshot_order(self._snapshot_file, coid)
        return order_from_journal(self._journal_path, coid, self._first_segment, seed, seed_reports)

    def _restore(self, snapshot: LedgerSnapshot | None) -> None:
        """Put back what a snapshot holds (before the journal after it is replayed)."""
        if snapshot is None:
            return
        self._first_segment = snapshot.through_segment + 1
        self._seq = self.snapshot_seq = snapshot.seq
        self._oldest_seq = snapshot.oldest_seq
        self._forgotten.extend(snapshot.forgotten)
        for record in snapshot.orders:
            order = order_of(record)
            self._orders[order.client_order_id] = self._open[order.client_order_id] = order
        for pb in snapshot.reports:
            owner = self._orders.get(pb.client_order_id)
            if owner is None:
                report = report_from_pb(pb, "", {})
            else:
                report = report_from_pb(pb, owner.request.session_id, owner.request.trace)
                owner.apply(report)
                if owner.is_terminal:
                    self._open.pop(owner.client_order_id, None)
                self._order_reports.setdefault(owner.client_order_id, []).append(report)
            if pb.seq >= snapshot.oldest_seq:
                self._history.append(report)
        self._finished.update(dict.fromkeys(snapshot.finished))
        log.info(
            "[ORDER-MANAGER] journal snapshot restored: seq %d through segment %d, %d orders in memory",
            snapshot.seq,
            snapshot.through_segment,
            len(self._orders),
        )

    def _replay(self, path: Path) -> SegmentedJournalReader:
        orders = reports = records = 0
        reader = SegmentedJournalReader(path, JOURNAL_SCHEMA, first_segment=self._first_segment)
        for record in reader.records():
            records += 1
            message = record.message
            try:
                if record.tag == ORDER_TAG:
                    assert isinstance(message, journal_pb2.OrderRecord)
                    new = order_of(message)
                    self._orders[new.client_order_id] = self._open[new.client_order_id] = new
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
        self.replayed_records = records
        if orders or reports:
            log.info(
                "[ORDER-MANAGER] journal %s replayed from segment %d: %d records (%d orders, %d reports), last seq "
                "%d, %d orders kept in memory",
                *(path, self._first_segment, records, orders, reports, self._seq, len(self._orders)),
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
