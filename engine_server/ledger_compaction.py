"""The engine ledger's compaction in two halves: the snapshot taken on the event loop, encoded and written on a thread.

:meth:`LedgerCompaction.compact` (mixed into ``engine_server.execution_ledger.ExecutionLedger``) runs three steps:

1. between frames and without yielding: the journal closes segment ``K`` and starts ``K + 1``, and what replaying
   segments ``<= K`` rebuilds is taken by reference (the orders in memory, their reports and those of the retention
   window, the finished ids and the forgotten fingerprints; orders' records and reports never change);
2. :meth:`PendingCompaction.write`, on any thread: the snapshot is built, encoded
   (:func:`nautilus_mesh.snapshots.json_parts`, in short GIL holds, paced off the loop by a
   :class:`nautilus_mesh.snapshots.Pacer` so the loop keeps most of the GIL) and written to a temporary file beside
   ``journal.snapshot.json``, fsynced;
3. back on the loop, the ledger renames it over the snapshot (folder fsynced unless the policy is ``never``), moves
   its own marks (first segment, snapshot seq, oldest available seq) and deletes the segments ``<= K``.

Readers of the snapshot and the journal on the loop see the previous snapshot with every segment after it until
step 3, then the new one with the segments after ``K``: never a mix. ``kill -9`` at any point loses and doubles
nothing: before the rename the previous snapshot (or none) and every segment after it are on disk (a temporary file
left by a crash is ignored), after it the snapshot covers what the leftover segments hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import ABC, abstractmethod
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine_server.execution_report import Report
from engine_server.fingerprints import FingerprintWindow
from engine_server.ledger_snapshot import LedgerSnapshot, build_snapshot
from engine_server.order_lifecycle import Order
from nautilus_mesh.files import install_staged, stage_text
from nautilus_mesh.journal_segments import SEGMENT_SHIFT, SegmentedJournalWriter, segments_bytes
from nautilus_mesh.snapshots import Pacer, json_parts

log = logging.getLogger("engine_server.execution_ledger")


@dataclass
class PendingCompaction:
    """A snapshot taken on the loop (step 1), to write (step 2) and install (step 3)."""

    path: Path
    """``journal.snapshot.json``."""
    sync: bool
    """Fsync the folder after the rename (the journal's policy is not ``never``)."""
    closed: int
    """The last segment the snapshot covers."""
    seq: int
    """The ledger's seq when it was taken."""
    oldest: int
    """The oldest seq ``ListExecutions`` answers once it is installed."""
    orders: list[Order]
    reports: list[Report]
    finished: list[str]
    forgotten: array[int]
    snapshot: LedgerSnapshot | None = None
    staged: Path | None = field(default=None, repr=False)
    size: int = 0
    """The snapshot file's size, bytes (once written)."""

    def write(self, pace: Callable[[], None] | None = None) -> None:
        """Build and encode the snapshot and write it to a temporary file beside :attr:`path`, fsynced (any thread;
        ``pace``: a :class:`nautilus_mesh.snapshots.Pacer` made in that thread, called between steps)."""
        snapshot = build_snapshot(
            self.closed, self.oldest, self.orders, self.reports, self.finished, self.forgotten, pace
        )
        parts = json_parts(snapshot.document(pace))  # written one after the other: no joined copy of tens of MB
        self.staged = stage_text(self.path, parts)
        self.snapshot, self.size = snapshot, sum(map(len, parts))

    def install(self) -> LedgerSnapshot:
        """Rename the written snapshot over :attr:`path` (on the loop, after :meth:`write`); returns it."""
        if self.staged is None or self.snapshot is None:
            raise RuntimeError("the snapshot was not written")
        install_staged(self.staged, self.path, sync_dir=self.sync)
        return self.snapshot

    def discard(self) -> None:
        """Remove the written file, if any (a compaction abandoned before :meth:`install`)."""
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


class LedgerCompaction(ABC):
    """The compaction half of :class:`engine_server.execution_ledger.ExecutionLedger`, which mixes it in and sets
    the attributes declared here. On the loop only (like the ledger); :meth:`PendingCompaction.write` is the part
    that runs on a thread."""

    _journal: SegmentedJournalWriter | None
    _journal_path: Path | None
    _snapshot_file: Path | None
    _seq: int
    _oldest_seq: int
    _first_segment: int
    _execution_retention: int
    _snapshot_every: int | None
    _on_snapshot: Callable[[int], None] | None
    _orders: dict[str, Order]
    _order_reports: dict[str, list[Report]]
    _finished: OrderedDict[str, None]
    _forgotten: FingerprintWindow
    _seq_index: list[tuple[int, int]]
    _tail_closed: tuple[int, int]
    snapshot_seq: int
    snapshots: int
    _background: bool = False
    """Compactions triggered by commits write on a worker thread (:meth:`compact_in_background`)."""
    _compacting: asyncio.Task[int] | None = None
    _retry_floor = 0
    """Journal bytes since the snapshot when the last background compaction failed (0: none failed)."""

    @abstractmethod
    def _stored_or_memory(self, since_seq: int) -> Iterator[Report]:
        """The reports with ``seq > since_seq``, from the snapshot, the journal or memory (the ledger's)."""

    def compact(self) -> int:
        """Snapshot the ledger and delete the journal segments the snapshot covers; returns the last one's index.

        Call it between frames (the ledger and the journal hold the same then); everything runs on this thread.
        """
        pending = self._begin_compaction()
        try:
            pending.write()
        except BaseException:
            pending.discard()
            raise
        return self._end_compaction(pending)

    async def compact_off_loop(self) -> int:
        """:meth:`compact` with the snapshot built, encoded and written on a worker thread, paced
        (:class:`nautilus_mesh.snapshots.Pacer`: it holds the GIL at most ``SNAPSHOT_GIL_SHARE`` of the time); the
        loop goes on meanwhile (its commits go to the next segment) and installs the snapshot once it is written."""
        pending = self._begin_compaction()
        try:
            await asyncio.to_thread(lambda: pending.write(Pacer()))
        except BaseException:
            pending.discard()
            raise
        return self._end_compaction(pending)

    def compact_in_background(self) -> None:
        """From now on a compaction a commit triggers runs as :meth:`compact_off_loop` in a task of the running loop
        (at most one at a time); a failed one is logged and retried once ``snapshot_every_bytes`` more were
        written."""
        self._background = True

    async def compaction_done(self) -> None:
        """Wait for the background compaction in flight, if any (its failure is logged, not raised)."""
        if self._compacting is not None:
            await asyncio.wait([self._compacting])

    async def aclose(self) -> None:
        """Let the background compaction in flight finish, then close."""
        await self.compaction_done()
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Close the journal (the ledger's)."""

    def _begin_compaction(self) -> PendingCompaction:
        journal, path = self._journal, self._snapshot_file
        if journal is None or path is None:
            raise RuntimeError("no journal to compact")
        journal.commit()
        closed = journal.roll()
        oldest = max(self._oldest_seq, self._seq - self._execution_retention + 1)
        retained = list(itertools.chain(self._stored_or_memory(oldest - 1), *self._order_reports.values()))
        # dict.keys of an OrderedDict walks its dict's entries, in the same order (appends and pops only) and faster.
        finished, forgotten = list(dict.keys(self._finished)), self._forgotten.oldest_first()
        orders = list(self._orders.values())
        sync = journal.fsync != "never"
        return PendingCompaction(path, sync, closed, self._seq, oldest, orders, retained, finished, forgotten)

    def _end_compaction(self, pending: PendingCompaction) -> int:
        snapshot = pending.install()
        journal = self._journal
        assert journal is not None
        closed, seq = pending.closed, pending.seq
        self._first_segment, self.snapshot_seq, self._oldest_seq = closed + 1, seq, pending.oldest
        deleted = journal.drop_through(closed)
        self._seq_index = [entry for entry in self._seq_index if entry[1] >> SEGMENT_SHIFT > closed]
        self._tail_closed = (-1, 0)
        self.snapshots += 1
        counts = (len(snapshot.orders), len(snapshot.reports), pending.oldest, deleted)
        log.info(
            "[ORDER-MANAGER] journal compacted: snapshot at seq %d through segment %d (%d bytes, %d orders, %d "
            "reports, oldest available seq %d); %d segment(s) deleted",
            *(seq, closed, pending.size, *counts),
        )
        if self._on_snapshot is not None:
            self._on_snapshot(seq)
        return closed

    def bytes_since_snapshot(self) -> int:
        """Journal bytes written since the newest snapshot (its trigger; 0 without a journal)."""
        journal = self._journal
        if journal is None or self._journal_path is None:
            return 0
        seen, closed = self._tail_closed
        if seen != journal.segment:  # a segment was closed since: sum the closed ones once
            closed = segments_bytes(self._journal_path, self._first_segment, journal.segment)
            self._tail_closed = (journal.segment, closed)
        return closed + journal.size

    def _maybe_compact(self) -> None:
        if self._snapshot_every is None or self._compacting is not None:
            return
        if self.bytes_since_snapshot() - self._retry_floor < self._snapshot_every:
            return
        if not self._background:
            self.compact()
            return
        self._compacting = asyncio.get_running_loop().create_task(self._compact_task(), name="engine-compaction")

    async def _compact_task(self) -> int:
        try:
            closed = await self.compact_off_loop()
        except Exception:
            self._retry_floor = self.bytes_since_snapshot()
            log.exception("[ORDER-MANAGER] journal compaction failed: the journal keeps every segment, retried later")
            return -1
        else:
            self._retry_floor = 0
            return closed
        finally:
            self._compacting = None
