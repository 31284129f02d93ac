"""Ops' journal compaction: a snapshot of what the journal rebuilds, in the state store, and the segments it covers
deleted.

Replaying the journal rebuilds the duplicate window of decisions, the orders with their fills and status, the fill
history, the positions of every book and the report cursor. A checkpoint saves exactly that as the state store
document ``journal_snapshot`` and lets the journal forget what came before:

1. the decisions appended since the last commit are committed (memory and journal now hold the same);
2. the journal closes its segment ``K`` and starts ``K + 1`` (:meth:`OpsJournal.roll`);
3. the snapshot, marked ``through_segment = K``, is written to the state store in one transaction;
4. the segments ``<= K`` are deleted, oldest first.

Steps 1 and 2 and the taking of the snapshot run without yielding to the event loop, so no frame is half applied in
between. The periodic checkpoint then encodes and writes the snapshot on a worker thread (step 3) while the loop goes
on journaling into segment ``K + 1``, which the snapshot does not cover, and deletes the covered segments once the
write returned. ``kill -9`` at any point loses and doubles nothing: before step 3 commits, the previous snapshot (or
none) and every segment after it are still there; after it, a restart restores the snapshot, deletes any segment
``<= K`` left over and replays only the segments after ``K``.

A checkpoint runs when the segment being written has reached ``journal_segment_bytes`` (checked every
``sample_interval_seconds``), so a segment is about that size and the journal on disk stays within a segment or
two plus the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.snapshots import json_text, pack, pack_serialized, unpack
from nautilus_mesh.store import EncodedDocument, StateStore
from ops_server.engine_link import ReportCursor
from ops_server.measurement import Measurement
from ops_server.order_tracker import OrderTracker, TrackedOrder

log = logging.getLogger(__name__)


def _saved_orders(saved: Any) -> Iterator[tuple[journal_pb2.TrackedOrderRecord, str, int, bool]]:
    """(record, filled, status, acknowledged) of each order of a snapshot of either version."""
    orders = saved["orders"]
    if isinstance(orders, list):  # version 1
        for order in orders:
            record = next(unpack(order["record"], journal_pb2.TrackedOrderRecord))
            yield record, order["filled"], order["status"], order["acknowledged"]
        return
    records = unpack(orders["records"], journal_pb2.TrackedOrderRecord)
    yield from zip(records, orders["filled"], orders["status"], orders["acknowledged"], strict=True)


SNAPSHOT_KEY = "journal_snapshot"
"""The state store document holding the journal snapshot."""
SNAPSHOT_VERSION = 2
"""2: orders as one packed list of records and columns (1: a document per order, still read)."""
__all__ = ["SNAPSHOT_KEY", "JournalCompaction", "pack", "unpack"]


@dataclass(eq=False)
class JournalCompaction:
    """Checkpoints of ops' journal into the state store, and the restore that precedes the replay."""

    store: StateStore
    """The state store the snapshot is written to."""
    tracker: OrderTracker
    """Decisions, orders and fills (and the journal)."""
    measurement: Measurement
    """The books' positions."""
    cursor: ReportCursor
    """The report cursor."""
    segment_bytes: int
    """Size at which the segment being written is closed by the next checkpoint, bytes."""
    checkpoints: int = field(default=0, init=False)
    """Checkpoints taken since the start."""

    def restore(self) -> int:
        """Restore the snapshot, if the store holds one; returns the first segment the replay must read."""
        saved = self.store.get(SNAPSHOT_KEY)
        if not saved or self.tracker.journal is None:
            return 0
        tracker = self.tracker
        for decision in unpack(saved["decisions"], ops_pb2.SignalDecision):
            tracker.remember(decision)
        for record, filled, status, acknowledged in _saved_orders(saved):
            tracked = TrackedOrder.from_pb(record)
            tracked.filled = Decimal(filled)
            tracked.status = int(status)
            tracked.acknowledged = bool(acknowledged)
            tracker.restore_order(tracked)
        for fill in unpack(saved["fills"], ops_pb2.Fill):
            tracker.remember_fill(fill)
        self.measurement.restore_positions(saved["books"])
        self.cursor.restore(saved["cursor"])
        through = int(saved["through_segment"])
        log.info(
            "[TRACKER] journal snapshot through segment %d restored: %d order(s), %d decision(s)",
            through,
            len(tracker.orders),
            len(tracker.decisions),
        )
        return through + 1

    def snapshot(self, through_segment: int) -> EncodedDocument:
        """What the journal up to now rebuilds, marked as covering the segments up to ``through_segment``."""
        return self._capture(through_segment)()

    def _capture(self, through_segment: int) -> Callable[[], EncodedDocument]:
        """Take the snapshot's state now (cheap: references to immutable messages, and the orders' changing fields
        copied); the returned function encodes it, on any thread (an order's record fields never change, and each
        order keeps its encoded record: :meth:`TrackedOrder.record_bytes`).

        The encoding holds the GIL only in short calls (:func:`nautilus_mesh.snapshots.json_text`), so the loop keeps
        its turns meanwhile; the document's JSON value is the same as before."""
        tracker = self.tracker
        # dict.values of an OrderedDict walks its dict's entries, in insertion order, about 10x faster than its own
        # linked list; the same order, since the tracker only appends, replaces and pops (never move_to_end).
        decisions, fills, orders = (
            list(dict.values(tracker.decisions)),
            list(dict.values(tracker.fills)),
            list(dict.values(tracker.orders)),
        )
        filled = [order.filled for order in orders]  # Decimals: immutable, formatted by encode()
        status = [order.status for order in orders]
        acknowledged = [order.acknowledged for order in orders]
        books, cursor = self.measurement.positions_state(), self.cursor.state()

        def encode() -> EncodedDocument:
            document = {
                "version": SNAPSHOT_VERSION,
                "through_segment": through_segment,
                "decisions": pack_serialized(decisions),
                "orders": {  # one packed list and three columns: a dict per order costs a second per 100,000
                    "records": pack_serialized(order.record_bytes() for order in orders),
                    "filled": [str(qty) for qty in filled],
                    "status": status,
                    "acknowledged": acknowledged,
                },
                "fills": pack_serialized(fill.encoded for fill in fills),
                "books": books,
                "cursor": cursor,
            }
            return EncodedDocument(json_text(document))

        return encode

    def due(self) -> bool:
        """True when the segment being written has reached ``segment_bytes``."""
        journal = self.tracker.journal
        return journal is not None and journal.segment_size >= self.segment_bytes

    async def maybe_checkpoint(self) -> bool:
        """Checkpoint when due (the store write off the event loop); True when one ran."""
        if not self.due():
            return False
        await self.checkpoint_off_loop()
        return True

    def checkpoint(self) -> int:
        """Close the current segment, save the snapshot covering it and delete what it covers; returns its index."""
        journal = self.tracker.journal
        if journal is None:
            raise RuntimeError("no journal to checkpoint")
        self.tracker.commit()
        self.tracker.flush_archive()  # what left memory is on disk before the records that hold it are deleted
        closed = journal.roll()
        self.store.put(SNAPSHOT_KEY, self.snapshot(closed))
        journal.drop_through(closed)
        self.checkpoints += 1
        return closed

    async def checkpoint_off_loop(self) -> int:
        """:meth:`checkpoint` with the snapshot's encoding and store write on a worker thread.

        The snapshot is taken on the event loop, between frames (so it is consistent with the closed segment); while
        the store writes it, the loop goes on journaling into the next segment; the covered segments are deleted only
        once the write returned. ``kill -9`` meanwhile leaves the previous snapshot and every segment after it.
        """
        journal = self.tracker.journal
        if journal is None:
            raise RuntimeError("no journal to checkpoint")
        self.tracker.commit()
        self.tracker.flush_archive()
        closed = journal.roll()
        encode = self._capture(closed)
        await asyncio.to_thread(lambda: self.store.put(SNAPSHOT_KEY, encode()))
        journal.drop_through(closed)
        self.checkpoints += 1
        return closed
