"""What ops has decided and sent: signal decisions, orders and their fills, with a journal.

Every decision (and the order it sends) is journaled before the order leaves; every applied
engine report is journaled as it is applied. Replaying the journal after a crash rebuilds the
decisions (so a repeated signal id stays a duplicate), the orders with their fills, the
positions (through the ``on_fill`` callback) and the report cursor, and lists the orders that
may not have reached the engine, to be re-sent (the engine deduplicates by client order id).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.decimals import fmt
from nautilus_mesh.fields import values_of
from nautilus_mesh.journal import FsyncPolicy
from ops_server.model_registry import is_paper_book
from ops_server.ops_journal import OpsJournal
from ops_server.order_archive import OrderArchive

log = logging.getLogger(__name__)

ZERO = Decimal(0)
TERMINAL = frozenset(
    {
        engine_pb2.ORDER_STATUS_FILLED,
        engine_pb2.ORDER_STATUS_CANCELED,
        engine_pb2.ORDER_STATUS_REJECTED,
        engine_pb2.ORDER_STATUS_EXPIRED,
    }
)
FILL_TYPES = frozenset({engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_PARTIAL_FILL})
ARCHIVE_BATCH = 256
"""Orders and fills that left memory are written to the archive in batches of this many (count), and before every
journal snapshot and query."""


RECORD_FIELDS = (
    "client_order_id",
    "signal_id",
    "model_id",
    "strategy_id",
    "instrument",
    "side",
    "mode",
    "venue",
    "traceparent",
    "owner",
)
"""Fields a tracked order and its ``TrackedOrderRecord`` hold under one name and type."""


@dataclass
class TrackedOrder:
    """An order ops sent, and what the engine reported about it."""

    client_order_id: str
    signal_id: str
    model_id: str
    strategy_id: str
    instrument: str
    side: str
    quantity: Decimal
    mode: str
    venue: str
    reference_mid: Decimal
    created_ns: int
    traceparent: str = ""
    owner: str = ""
    """The model whose strategy receives the fills ("" for an internal paper twin)."""
    filled: Decimal = ZERO
    status: int = engine_pb2.ORDER_STATUS_NEW
    acknowledged: bool = False
    _record: bytes = field(default=b"", init=False, repr=False, compare=False)
    """:meth:`record_bytes`, once encoded."""

    @property
    def open_quantity(self) -> Decimal:
        """Signed quantity still working at the engine."""
        if self.status in TERMINAL:
            return ZERO
        leaves = self.quantity - self.filled
        return leaves if self.side == "BUY" else -leaves

    def to_pb(self) -> journal_pb2.TrackedOrderRecord:
        """The journal form of the order."""
        return journal_pb2.TrackedOrderRecord(
            client_order_id=self.client_order_id,
            signal_id=self.signal_id,
            model_id=self.model_id,
            strategy_id=self.strategy_id,
            instrument=self.instrument,
            side=self.side,
            quantity=fmt(self.quantity),
            mode=self.mode,
            venue=self.venue,
            reference_mid=fmt(self.reference_mid),
            created_unix_nanos=self.created_ns,
            traceparent=self.traceparent,
            owner=self.owner,
        )

    def record_bytes(self) -> bytes:
        """:meth:`to_pb` serialised, encoded once and kept (its fields never change): a journal snapshot encodes it
        again only for the orders new since the previous one (about 200 bytes more per order in memory)."""
        if not self._record:
            self._record = self.to_pb().SerializeToString()
        return self._record

    @classmethod
    def from_pb(cls, r: journal_pb2.TrackedOrderRecord) -> TrackedOrder:
        return cls(
            **values_of(r, RECORD_FIELDS),
            quantity=Decimal(r.quantity),
            reference_mid=Decimal(r.reference_mid),
            created_ns=r.created_unix_nanos,
        )


RememberedFill = tuple[str, str, int, bytes]
"""A fill ops keeps for ``ListFills`` and a stream's resume: ``(exec_id, model_id, seq, encoded)``, what they filter
on and the ``Fill`` serialised (about 300 bytes of memory in all, where the message itself holds about 1.3 KB: its
protobuf arena). A plain tuple, not a ``NamedTuple``: the cyclic GC stops tracking a tuple of atomic values, not a
subclass's, and a full collection over ops' state at 80,000 orders and fills took 168 ms with the fills as
``NamedTuple`` instances, 95 ms as tuples (``scripts/bench_stall.py``)."""


def remembered_fill(fill: ops_pb2.Fill) -> RememberedFill:
    """What ops keeps of ``fill`` (see :data:`RememberedFill`)."""
    return (fill.exec_id, sys.intern(fill.model_id), fill.seq, fill.SerializeToString())


def fill_of(remembered: RememberedFill) -> ops_pb2.Fill:
    """The fill ``remembered`` keeps (a new message each call)."""
    return ops_pb2.Fill.FromString(remembered[3])


@dataclass(frozen=True)
class AppliedFill:
    """A fill applied to an order: what measurement and the strategy's stream need."""

    order: TrackedOrder
    report: engine_pb2.ExecutionReport
    signed_qty: Decimal
    price: Decimal
    fee: Decimal


@dataclass
class OrderTracker:
    """Decisions, orders and report application, journaled.

    Args:
        journal_path: the binary journal (:mod:`ops_server.ops_journal`); None keeps everything in memory (tests).
        journal_fsync: ``never`` (one write per frame: survives a process crash), ``batch`` (plus one fsync per
            frame: survives power loss) or ``always``.
        dedup_window: how many signal decisions are remembered for duplicate detection.
        history: how many orders and fills are kept for queries (count each); open orders are always kept, finished
            ones leave memory in the order they finished.
        archive_retention: how many orders and fills that left memory are kept on disk for queries (count each,
            ``history.db`` beside the journal, :mod:`ops_server.order_archive`); None keeps none.
    """

    journal_path: str | os.PathLike[str] | None = None
    journal_fsync: FsyncPolicy = "never"
    dedup_window: int = 200_000
    history: int = 100_000
    archive_retention: int | None = None
    decisions: OrderedDict[tuple[str, str], bytes] = field(default_factory=OrderedDict)
    """The decisions remembered for duplicate detection, by (model id, signal id), each as its ``SignalDecision``'s
    bytes (the journal's encoding): about 190 bytes of memory each, where the message itself holds about 1.6 KB (its
    protobuf arena); a duplicate, the only reader, parses its one."""
    orders: OrderedDict[str, TrackedOrder] = field(default_factory=OrderedDict)
    fills: OrderedDict[str, RememberedFill] = field(default_factory=OrderedDict)
    """The fills kept for queries, by exec id, oldest first."""
    _open: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    _finished: deque[str] = field(default_factory=deque)
    """Client order ids of finished orders, in the order they finished: the next to leave memory first (open orders
    resting at the head of ``orders`` are never walked again and again)."""

    def __post_init__(self) -> None:
        self._journal = OpsJournal(Path(self.journal_path), self.journal_fsync) if self.journal_path else None
        self.archive: OrderArchive | None = None
        if self.journal_path and self.archive_retention is not None:
            self.archive = OrderArchive(Path(self.journal_path).with_name("history.db"), self.archive_retention)

    def close(self) -> None:
        self.commit()
        if self._journal is not None:
            self._journal.close()
        if self.archive is not None:
            self.archive.close()

    def commit(self) -> None:
        """Write the decisions recorded since the last commit with one write (group commit).

        The signal path commits once per frame, before that frame's orders leave: the write-ahead rule per frame.
        """
        if self._journal is not None:
            self._journal.commit()
        if self.archive is not None and self.archive.pending >= ARCHIVE_BATCH:
            self.archive.commit()

    def flush_archive(self) -> None:
        """Write the orders and fills queued for the archive and wait for them (before a journal snapshot lets their
        records go)."""
        if self.archive is not None:
            self.archive.flush()

    # -- decisions -------------------------------------------------------------------------

    def previous_decision(self, model_id: str, signal_id: str) -> ops_pb2.SignalDecision | None:
        """The decision already taken for this signal of this model (a new message each call), None when none is
        remembered."""
        encoded = self.decisions.get((model_id, signal_id))
        return None if encoded is None else ops_pb2.SignalDecision.FromString(encoded)

    def knows_order(self, client_order_id: str) -> bool:
        """True when an order with this id is held (open, or finished within ``history``)."""
        return client_order_id in self.orders

    def knows_decision(self, model_id: str, signal_id: str) -> bool:
        """True when a decision for this signal of this model is remembered (without reading it)."""
        return (model_id, signal_id) in self.decisions

    def record(self, decision: ops_pb2.SignalDecision, order: TrackedOrder | None) -> None:
        """Remember a decision (as it is now: later changes to the message are neither remembered nor journaled) and
        the order it sends; its journal record is written by the next :meth:`commit`, which must come before the
        order is sent."""
        encoded = decision.SerializeToString()
        self._remember(decision.model_id, decision.signal_id, encoded)
        if order is not None:
            self._add_order(order)
        if self._journal is not None:
            self._journal.append_decision(encoded, None if order is None else order.record_bytes())

    def remember(self, decision: ops_pb2.SignalDecision) -> None:
        """Remember a decision for duplicate detection only (a journal snapshot's decisions)."""
        self._remember(decision.model_id, decision.signal_id, decision.SerializeToString())

    def _remember(self, model_id: str, signal_id: str, encoded: bytes) -> None:
        if is_paper_book(model_id):
            # A paper twin's decision, journaled with its order but not remembered: no strategy can send a signal for
            # a paper book, so nothing would ever look it up, and each would push a strategy's signal id out of the
            # dedup_window while a shadow canary runs.
            return
        self.decisions[(model_id, signal_id)] = encoded
        while len(self.decisions) > self.dedup_window:
            self.decisions.popitem(last=False)

    def _add_order(self, order: TrackedOrder) -> None:
        self.orders[order.client_order_id] = order
        self._adjust_open(order, order.open_quantity)
        if order.status in TERMINAL:
            self._finished.append(order.client_order_id)
        while len(self.orders) > self.history and self._finished:
            old = self.orders.get(self._finished.popleft())
            if old is not None and old.status in TERMINAL:
                del self.orders[old.client_order_id]
                if self.archive is not None:
                    self.archive.add_order(
                        old.client_order_id,
                        old.created_ns,
                        old.model_id,
                        old.owner,
                        old.record_bytes(),
                        old.filled,
                        old.status,
                    )

    def _adjust_open(self, order: TrackedOrder, delta: Decimal) -> None:
        key = (order.model_id, order.instrument)
        self._open[key] = self._open.get(key, ZERO) + delta

    def open_quantity(self, model_id: str, instrument: str) -> Decimal:
        return self._open.get((model_id, instrument), ZERO)

    def open_orders(self, venue: str | None = None) -> list[TrackedOrder]:
        return [o for o in self.orders.values() if o.status not in TERMINAL and (venue is None or o.venue == venue)]

    # -- reports ---------------------------------------------------------------------------

    def journal_reports(self, reports: list[engine_pb2.ExecutionReport]) -> None:
        """Journal a frame of reports (those of known orders) with one write, before they are applied."""
        if self._journal is not None:
            for report in reports:
                if report.client_order_id in self.orders:
                    self._journal.append_report(report)
            self._journal.commit()  # after the frame's decisions: the reports answer them

    def apply_report(self, report: engine_pb2.ExecutionReport, *, journal: bool = True) -> AppliedFill | None:
        """Apply one engine report (the caller guarantees each seq once); returns the fill it carries."""
        order = self.orders.get(report.client_order_id)
        if order is None:
            return None
        if journal and self._journal is not None:
            self._journal.append_report(report)
            self._journal.commit()
        before = order.open_quantity
        order.acknowledged = True
        fill: AppliedFill | None = None
        if report.exec_type in FILL_TYPES:
            qty = Decimal(report.last_qty or "0")
            if qty > 0:
                order.filled += qty
                signed = qty if order.side == "BUY" else -qty
                fill = AppliedFill(order, report, signed, Decimal(report.last_price), Decimal(report.fee or "0"))
        if report.order_status != engine_pb2.ORDER_STATUS_UNSPECIFIED:
            if report.order_status in TERMINAL and order.status not in TERMINAL:
                self._finished.append(order.client_order_id)
            order.status = report.order_status
        self._adjust_open(order, order.open_quantity - before)
        return fill

    def remember_fill(self, fill: ops_pb2.Fill) -> None:
        """Keep a fill for queries (as it is now); the oldest beyond ``history`` leaves for the archive."""
        self.fills[fill.exec_id] = remembered_fill(fill)
        while len(self.fills) > self.history:
            _, (exec_id, model_id, _, encoded) = self.fills.popitem(last=False)
            if self.archive is not None:
                self.archive.add_fill(exec_id, model_id, encoded)

    # -- recovery --------------------------------------------------------------------------

    @property
    def journal(self) -> OpsJournal | None:
        """The journal (None when everything is kept in memory only)."""
        return self._journal

    def restore_order(self, order: TrackedOrder) -> None:
        """Put back an order as a journal snapshot saved it (fills and status included)."""
        self.orders[order.client_order_id] = order
        self._adjust_open(order, order.open_quantity)
        if order.status in TERMINAL:
            self._finished.append(order.client_order_id)

    def replay(self, on_report: Callable[[engine_pb2.ExecutionReport], None], first_segment: int = 0) -> int:
        """Rebuild from the journal's segments from ``first_segment`` on (a snapshot restored the ones before);
        ``on_report`` re-applies each journaled report (in order).

        Returns the number of records replayed.
        """
        if self._journal is None:
            return 0
        count = 0
        for record in self._journal.replay(first_segment):
            count += 1
            if isinstance(record, journal_pb2.DecisionRecord):
                self.remember(record.decision)  # its own bytes: the record's message is not kept alive
                if record.HasField("order"):
                    self._add_order(TrackedOrder.from_pb(record.order))
            else:
                on_report(record)
        if count:
            log.info("[TRACKER] replayed %d journal record(s): %d order(s)", count, len(self.orders))
        return count

    def unacknowledged(self) -> Iterator[TrackedOrder]:
        """Orders journaled but never acknowledged by the engine: they may not have been sent."""
        return (o for o in self.orders.values() if not o.acknowledged and o.status not in TERMINAL)
