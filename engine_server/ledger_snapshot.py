"""The engine ledger's snapshot: what replaying the journal up to a segment rebuilds, in one file beside it.

``journal.snapshot.json`` (beside ``journal.bin``) holds, for the journal segments ``<= through_segment``:

- ``seq``: the seq of the newest report they hold;
- ``orders``: the order record of every order then in memory (open ones and the ``order_retention`` newest
  finished ones), in the order the ledger received them, and ``finished``: the finished ones, oldest first;
- ``reports``: every report of those orders, plus every report with ``seq >= oldest_seq`` (the retention window
  ``ListExecutions`` answers from after the segments are deleted), in seq order;
- ``forgotten``: the fingerprints of the ids of the orders that had left memory within the dedupe window, so a
  repeated ``client_order_id`` among them is still refused after its records are gone.

The file is replaced atomically (:mod:`engine_server.ledger_compaction`: written beside it and fsynced, on a worker
thread in the engine server, then renamed over it, folder fsynced unless the journal's fsync policy is ``never``)
before any segment it covers is deleted.
"""

from __future__ import annotations

import base64
import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine_server.execution_report import Report, order_record, report_from_pb, report_pb
from engine_server.order_lifecycle import Order
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.snapshots import paced, pack, read_snapshot, unpack

SNAPSHOT_VERSION = 1


def fingerprint(client_order_id: str) -> int:
    """A 64-bit fingerprint of an order id, the same in every process (``hash`` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(client_order_id.encode(), digest_size=8).digest(), "little")


@dataclass
class LedgerSnapshot:
    """The ledger as replaying the journal's segments ``<= through_segment`` rebuilds it (see the module doc)."""

    through_segment: int
    seq: int
    oldest_seq: int
    """The oldest seq ``ListExecutions`` can still answer (``seq + 1`` when there is no report)."""
    orders: list[journal_pb2.OrderRecord]
    reports: list[engine_pb2.ExecutionReport]
    finished: list[str]
    forgotten: array[int]
    """The fingerprints, oldest first, unboxed (``array("Q")``)."""

    def document(self, pace: Callable[[], None] | None = None) -> dict[str, Any]:
        """The JSON document of the snapshot (``pace``: :func:`nautilus_mesh.snapshots.pack`'s)."""
        return {
            "version": SNAPSHOT_VERSION,
            "through_segment": self.through_segment,
            "seq": self.seq,
            "oldest_seq": self.oldest_seq,
            "orders": pack(self.orders, pace),
            "reports": pack(self.reports, pace),
            "finished": self.finished,
            "forgotten": base64.b64encode(self.forgotten.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> LedgerSnapshot:
        """The snapshot a :meth:`document` holds.

        Raises:
            ValueError: a snapshot of another version.
        """
        if doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"engine snapshot version {doc.get('version')!r} is not {SNAPSHOT_VERSION}")
        forgotten = array("Q")
        forgotten.frombytes(base64.b64decode(doc["forgotten"]))
        return cls(
            through_segment=int(doc["through_segment"]),
            seq=int(doc["seq"]),
            oldest_seq=int(doc["oldest_seq"]),
            orders=list(unpack(doc["orders"], journal_pb2.OrderRecord)),
            reports=list(unpack(doc["reports"], engine_pb2.ExecutionReport)),
            finished=[str(coid) for coid in doc["finished"]],
            forgotten=forgotten,
        )


def build_snapshot(
    through_segment: int,
    oldest_seq: int,
    orders: Iterable[Order],
    reports: Iterable[Report],
    finished: Iterable[str],
    forgotten: Iterable[int],
    pace: Callable[[], None] | None = None,
) -> LedgerSnapshot:
    """The snapshot of a ledger: ``orders`` in memory, ``reports`` (theirs and the retention window, in any order,
    a report may come twice), the finished ids in memory and the fingerprints of the ids that left it. ``pace`` (a
    :class:`nautilus_mesh.snapshots.Pacer`) is called between steps of the work."""
    by_seq = {report.seq: report for report in reports}
    return LedgerSnapshot(
        through_segment=through_segment,
        seq=max(by_seq, default=0),
        oldest_seq=oldest_seq,
        orders=[order_record(o.venue, o.request, o.created_ns) for batch in paced(orders, pace) for o in batch],
        reports=[report_pb(by_seq[seq]) for batch in paced(sorted(by_seq), pace) for seq in batch],
        finished=list(finished),
        forgotten=array("Q", forgotten),
    )


def load_snapshot(path: Path) -> LedgerSnapshot | None:
    """The snapshot saved at ``path``, or None."""
    doc = read_snapshot(path)
    return None if doc is None else LedgerSnapshot.from_document(doc)


def snapshot_reports(path: Path, since_seq: int) -> Iterator[Report]:
    """The snapshot's reports with ``seq > since_seq``, ascending (session and trace are not kept for them)."""
    snapshot = load_snapshot(path)
    if snapshot is None:
        return
    for pb in snapshot.reports:
        if pb.seq > since_seq:
            yield report_from_pb(pb, "", {})


def snapshot_order(
    path: Path, client_order_id: str
) -> tuple[journal_pb2.OrderRecord | None, list[engine_pb2.ExecutionReport]]:
    """The order record (None when the snapshot does not hold it) and the reports of one order in the snapshot."""
    snapshot = load_snapshot(path)
    if snapshot is None:
        return None, []
    record = next((o for o in snapshot.orders if o.order.client_order_id == client_order_id), None)
    return record, [r for r in snapshot.reports if r.client_order_id == client_order_id]
