"""Ops' journal compaction: a snapshot of what the journal rebuilds, in a file beside the journal, and the segments
it covers deleted.

Replaying the journal rebuilds the duplicate window of decisions, the orders with their fills and status, the fill
history, the positions of every book and the report cursor. A checkpoint saves exactly that as
``journal.snapshot.json`` beside ``journal.bin`` and lets the journal forget what came before:

1. the decisions appended since the last commit are committed (memory and journal now hold the same);
2. the journal closes its segment ``K`` and starts ``K + 1`` (:meth:`OpsJournal.roll`);
3. the snapshot, marked ``through_segment = K``, is written to a temporary file beside ``journal.snapshot.json``,
   fsynced, renamed over it, and the folder fsynced;
4. the segments ``<= K`` are deleted, oldest first.

Steps 1 and 2 and the taking of the snapshot run without yielding to the event loop, so no frame is half applied in
between. The periodic checkpoint then encodes and writes the snapshot on a worker thread (step 3), paced so that it
holds the GIL at most :data:`~nautilus_mesh.snapshots.SNAPSHOT_GIL_SHARE` of the time, while the loop goes on
journaling into segment ``K + 1``, which the snapshot does not cover, and deletes the covered segments once the
rename is durable. ``kill -9`` at any point loses and doubles nothing: before the rename, the previous snapshot (or
none) and every segment after it are still there (a temporary file left by a crash is ignored); after it, a restart
restores the snapshot, deletes any segment ``<= K`` left over and replays only the segments after ``K``.

The snapshot is a file of its own, not a document of the state store: writing tens of MB into the store held it
for a second or more, and every write the event loop makes there meanwhile (the state saved at a canary step or an
allocation) waited as long. Versions that kept it in the store left it as the document ``journal_snapshot``: a
restart without the file restores that one, and the first checkpoint after it empties it.

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
from pathlib import Path
from typing import Any

from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.files import install_staged, stage_text
from nautilus_mesh.snapshots import (
    Pacer,
    json_parts,
    paced,
    pack,
    pack_serialized,
    read_snapshot,
    snapshot_path,
    unpack,
)
from nautilus_mesh.store import StateStore
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
"""The state store document where earlier versions kept the journal snapshot (read when there is no snapshot file;
emptied by the first checkpoint after that)."""
SNAPSHOT_VERSION = 2
"""2: orders as one packed list of records and columns (1: a document per order, still read)."""
__all__ = ["SNAPSHOT_KEY", "JournalCompaction", "pack", "unpack"]


@dataclass(eq=False)
class JournalCompaction:
    """Checkpoints of ops' journal into ``journal.snapshot.json``, and the restore that precedes the replay."""

    store: StateStore
    """The state store (where earlier versions kept the snapshot)."""
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
    _from_store: bool = field(default=False, init=False)
    """The snapshot restored was the state store's (an earlier version's): the next checkpoint empties it."""

    @property
    def path(self) -> Path | None:
        """The snapshot file, ``journal.snapshot.json`` beside the journal (None without a journal)."""
        journal_path = self.tracker.journal_path
        return snapshot_path(journal_path) if journal_path else None

    def restore(self) -> int:
        """Restore the snapshot, if there is one (the file, else an earlier version's in the state store); returns
        the first segment the replay must read."""
        path = self.path
        if path is None or self.tracker.journal is None:
            return 0
        saved = read_snapshot(path)
        if saved is None:
            saved = self.store.get(SNAPSHOT_KEY)
            self._from_store = bool(saved)
        if not saved:
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
            "[TRACKER] journal snapshot through segment %d restored from %s: %d order(s), %d decision(s)",
            through,
            f"the state store ({SNAPSHOT_KEY})" if self._from_store else path.name,
            len(tracker.orders),
            len(tracker.decisions),
        )
        return through + 1

    def _capture(self, through_segment: int) -> Callable[[Callable[[], None] | None], list[str]]:
        """Take the snapshot's state now (cheap: references to immutable messages, and the orders' changing fields
        copied); the returned function encodes it, on any thread (an order's record fields never change, and each
        order keeps its encoded record: :meth:`TrackedOrder.record_bytes`).

        The encoding holds the GIL only in short calls (:func:`nautilus_mesh.snapshots.json_parts`) and, given a
        :class:`~nautilus_mesh.snapshots.Pacer`, pauses between them, so the loop keeps most of the GIL meanwhile;
        the document's JSON value is the same either way."""
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

        def encode(pace: Callable[[], None] | None = None) -> list[str]:
            document = {
                "version": SNAPSHOT_VERSION,
                "through_segment": through_segment,
                "decisions": pack_serialized(decisions, pace),
                "orders": {  # one packed list and three columns: a dict per order costs a second per 100,000
                    "records": pack_serialized((order.record_bytes() for order in orders), pace),
                    "filled": [str(qty) for batch in paced(filled, pace) for qty in batch],
                    "status": status,
                    "acknowledged": acknowledged,
                },
                "fills": pack_serialized((encoded for _, _, _, encoded in fills), pace),
                "books": books,
                "cursor": cursor,
            }
            return json_parts(document)

        return encode

    def due(self) -> bool:
        """True when the segment being written has reached ``segment_bytes``."""
        journal = self.tracker.journal
        return journal is not None and journal.segment_size >= self.segment_bytes

    async def maybe_checkpoint(self) -> bool:
        """Checkpoint when due (the snapshot written off the event loop); True when one ran."""
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
        self._write(self._capture(closed)(None))
        journal.drop_through(closed)
        self.checkpoints += 1
        return closed

    async def checkpoint_off_loop(self) -> int:
        """:meth:`checkpoint` with the snapshot's encoding and writing on a worker thread, paced
        (:class:`~nautilus_mesh.snapshots.Pacer`).

        The snapshot is taken on the event loop, between frames (so it is consistent with the closed segment); while
        the thread writes it, the loop goes on journaling into the next segment; the covered segments are deleted only
        once the snapshot file is renamed into place. ``kill -9`` meanwhile leaves the previous snapshot and every
        segment after it.
        """
        journal = self.tracker.journal
        if journal is None:
            raise RuntimeError("no journal to checkpoint")
        self.tracker.commit()
        self.tracker.flush_archive()
        closed = journal.roll()
        encode = self._capture(closed)
        await asyncio.to_thread(lambda: self._write(encode(Pacer())))
        journal.drop_through(closed)
        self.checkpoints += 1
        return closed

    def _write(self, parts: list[str]) -> None:
        """Replace the snapshot file with ``parts``' text (temporary file fsynced, renamed, folder fsynced: durable
        before any segment it covers is deleted, whatever the journal's fsync policy); then empty an earlier
        version's snapshot in the state store, which would otherwise be read if the file went missing."""
        path = self.path
        assert path is not None  # a journal has a path
        install_staged(stage_text(path, parts), path, sync_dir=True)
        if self._from_store:
            self.store.put(SNAPSHOT_KEY, {})
            self._from_store = False
            log.info("[TRACKER] journal snapshot moved from the state store (%s) to %s", SNAPSHOT_KEY, path.name)
