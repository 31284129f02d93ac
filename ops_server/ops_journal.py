"""Ops' journal: decisions (with the orders they send) and applied engine reports, binary, with group commit.

Records are length-delimited protobuf frames (:mod:`nautilus_mesh.journal`): a ``DecisionRecord`` per decision (tag 1)
and the engine's ``ExecutionReport`` per applied report (tag 2). The signal path appends a frame's decisions and
commits them with one write before the frame's orders leave (write-ahead per frame); a frame of reports is
committed with one write before any of it is applied. Replay tolerates a torn tail (a crash mid-write): the reader
stops there with a warning and the service starts. ``nautilus-mesh journal dump`` prints a journal as JSON lines.

The journal is segmented (:mod:`nautilus_mesh.journal_segments`): ``journal.bin``, then ``journal.000001.bin`` and
on. Ops moves to a new segment at a checkpoint (:mod:`ops_server.journal_compaction`), which saves a snapshot of
what the closed segments rebuild in the state store and then deletes them; replay starts after the snapshot.

A JSONL journal written before the binary format (``journal.jsonl`` beside the binary one) is migrated once on
open and kept as ``journal.jsonl.migrated``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.files import read_jsonl
from nautilus_mesh.journal import FsyncPolicy, JournalWriter
from nautilus_mesh.journal_segments import SegmentedJournalReader, SegmentedJournalWriter, drop_segments_before

log = logging.getLogger(__name__)

SCHEMA = {1: journal_pb2.DecisionRecord, 2: engine_pb2.ExecutionReport}
"""The ops journal's record types by tag."""

Record = journal_pb2.DecisionRecord | engine_pb2.ExecutionReport


_DECISION_KEY = bytes(((journal_pb2.DecisionRecord.DECISION_FIELD_NUMBER << 3) | 2,))
_ORDER_KEY = bytes(((journal_pb2.DecisionRecord.ORDER_FIELD_NUMBER << 3) | 2,))
"""Keys of ``DecisionRecord``'s two fields on the wire (field number, wire type 2: length-delimited)."""


def _submessage(key: bytes, encoded: bytes) -> bytes:
    """A length-delimited protobuf field: its key, the length as a varint, the bytes."""
    size = len(encoded)
    head = bytearray(key)
    while size > 0x7F:
        head.append((size & 0x7F) | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + encoded


class OpsJournal:
    """The binary journal of one ops service.

    Args:
        path: the journal file (``journal.bin`` in the state dir).
        fsync: ``never`` (one write per commit: survives a process crash), ``batch`` (plus one fsync per commit:
            survives power loss) or ``always`` (an fsync per record).
    """

    def __init__(self, path: Path, fsync: FsyncPolicy = "never") -> None:
        self.path = path
        self._fsync: FsyncPolicy = fsync
        self._writer: SegmentedJournalWriter | None = None
        legacy = path.with_suffix(".jsonl")
        if legacy != path and legacy.exists() and not path.exists():
            migrate_jsonl(legacy, path)

    def replay(self, first_segment: int = 0) -> Iterator[Record]:
        """Every good record of the segments from ``first_segment`` on, in order (a torn tail is skipped with a
        warning); then the journal is open to append. Segments before ``first_segment`` (covered by a snapshot, left
        by a crash before their deletion) are deleted."""
        drop_segments_before(self.path, first_segment)
        reader = SegmentedJournalReader(self.path, SCHEMA, first_segment=first_segment)
        for record in reader.records():
            message = record.message
            if not isinstance(message, journal_pb2.DecisionRecord | engine_pb2.ExecutionReport):  # a newer writer's
                log.warning(
                    "[OPS-JOURNAL] %s: record of a type this version does not know (%s) at offset %d skipped",
                    self.path,
                    message.DESCRIPTOR.full_name,
                    record.offset,
                )
                continue
            yield message
        self._writer = SegmentedJournalWriter(
            self.path, SCHEMA, fsync=self._fsync, replayed=reader, first_segment=first_segment
        )

    def _open(self) -> SegmentedJournalWriter:
        if self._writer is None:
            self._writer = SegmentedJournalWriter(self.path, SCHEMA, fsync=self._fsync)
        return self._writer

    @property
    def segment_size(self) -> int:
        """Bytes in the segment being written."""
        return self._open().size

    def roll(self) -> int:
        """Commit, close the current segment and start the next; returns the closed segment's index."""
        return self._open().roll()

    def drop_through(self, last: int) -> int:
        """Delete the segments ``<= last`` (a snapshot in the state store covers them); returns how many."""
        return self._open().drop_through(last)

    def append_decision(self, decision: bytes, order: bytes | None) -> None:
        """Encode a decision (a serialised ``SignalDecision``) and its order (a serialised ``TrackedOrderRecord``)
        for the next commit.

        The ``DecisionRecord`` is put together from the two encodings, bytes for bytes what building it and
        serialising it would give, without copying either message into it.
        """
        payload = _submessage(_DECISION_KEY, decision)
        if order is not None:
            payload += _submessage(_ORDER_KEY, order)
        self._open().append_serialized(journal_pb2.DecisionRecord, payload)

    def append_report(self, report: engine_pb2.ExecutionReport) -> None:
        """Encode an applied report for the next commit."""
        self._open().append(report)

    def commit(self) -> None:
        """Write what was appended since the last commit with one write."""
        if self._writer is not None:
            self._writer.commit()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def migrate_jsonl(legacy: Path, target: Path) -> None:
    """Rewrite the JSONL journal ``legacy`` as the binary journal ``target``, once (the JSONL file is kept as
    ``<name>.migrated``; a crash midway leaves it as it was and the next start migrates again)."""
    staging = target.with_name(f"{target.name}.staging")
    staging.unlink(missing_ok=True)
    writer = JournalWriter(staging, SCHEMA, fsync="batch")
    count = 0
    for record in read_jsonl(legacy):
        try:
            if record.get("type") == "decision":
                decision = journal_pb2.DecisionRecord(decision=decision_from_record(record["decision"]))
                if "order" in record:
                    decision.order.CopyFrom(order_from_record(record["order"]))
                writer.append(decision)
            elif record.get("type") == "report":
                writer.append(report_from_record(record["report"]))
            count += 1
        except (KeyError, ValueError, TypeError) as exc:
            log.error("[TRACKER] unusable JSONL journal record not migrated: %r", exc)
    writer.close()
    os.replace(legacy, legacy.with_name(f"{legacy.name}.migrated"))
    os.replace(staging, target)
    log.warning("[TRACKER] JSONL journal %s migrated to %s (%d records)", legacy, target, count)


def order_from_record(r: dict[str, Any]) -> journal_pb2.TrackedOrderRecord:
    """An order record of a JSONL journal as the binary journal holds it."""
    return journal_pb2.TrackedOrderRecord(
        client_order_id=r["client_order_id"],
        signal_id=r["signal_id"],
        model_id=r["model_id"],
        strategy_id=r["strategy_id"],
        instrument=r["instrument"],
        side=r["side"],
        quantity=r["quantity"],
        mode=r["mode"],
        venue=r["venue"],
        reference_mid=r["reference_mid"],
        created_unix_nanos=int(r["created_ns"]),
        traceparent=r.get("traceparent", ""),
        owner=r.get("owner", r["model_id"]),
    )


# Journal codecs: the fields replay needs, written directly (json_format is ~10x slower on the hot path).
# The shape matches protobuf's JSON mapping with original field names (enums by name), so either reads back.
_REPORT_STRINGS = (
    "exec_id",
    "client_order_id",
    "venue_order_id",
    "venue",
    "model_id",
    "account",
    "instrument",
    "last_qty",
    "last_price",
    "cum_qty",
    "leaves_qty",
    "avg_price",
    "fee",
    "liquidity",
)
_DECISION_STRINGS = ("signal_id", "model_id", "client_order_id", "quantity")


@dataclass(frozen=True, slots=True)
class _RecordFields:
    """The fields of one message type a journal record keeps: strings and integers as they are, enums by name."""

    strings: tuple[str, ...]
    enums: dict[str, Callable[[Any], str]]
    """Field name -> its enum's ``Name`` (number -> name); a record without the field reads as the zero value."""
    ints: tuple[str, ...] = ()

    def record(self, message: Any) -> dict[str, Any]:
        """``message``'s fields as a record (its trace context under ``trace`` when it has one)."""
        record: dict[str, Any] = {name: getattr(message, name) for name in (*self.strings, *self.ints)}
        record.update((name, name_of(getattr(message, name))) for name, name_of in self.enums.items())
        if message.trace.traceparent:
            record["trace"] = {"traceparent": message.trace.traceparent}
        return record

    def arguments(self, record: dict[str, Any]) -> dict[str, Any]:
        """The message's constructor arguments read from ``record`` (a missing field: its default)."""
        arguments: dict[str, Any] = {name: record.get(name, "") for name in self.strings}
        arguments.update((name, int(record.get(name, 0))) for name in self.ints)
        arguments.update((name, record.get(name, name_of(0))) for name, name_of in self.enums.items())
        return arguments


_REPORT_FIELDS = _RecordFields(
    _REPORT_STRINGS,
    {"side": common_pb2.Side.Name, "exec_type": engine_pb2.ExecType.Name, "order_status": engine_pb2.OrderStatus.Name},
    ints=("seq", "ts_unix_nanos"),
)
_DECISION_FIELDS = _RecordFields(
    _DECISION_STRINGS,
    {"status": ops_pb2.DecisionStatus.Name, "mode": ops_pb2.RoutingMode.Name, "side": common_pb2.Side.Name},
)


_Traced = TypeVar("_Traced", engine_pb2.ExecutionReport, ops_pb2.SignalDecision)


def _with_trace(message: _Traced, record: dict[str, Any]) -> _Traced:
    """``message`` with the trace context ``record`` keeps under ``trace`` (none: left unset)."""
    if traceparent := str(record.get("trace", {}).get("traceparent", "")):
        message.trace.traceparent = traceparent
    return message


def report_record(report: engine_pb2.ExecutionReport) -> dict[str, Any]:
    return _REPORT_FIELDS.record(report)


def report_from_record(record: dict[str, Any]) -> engine_pb2.ExecutionReport:
    return _with_trace(engine_pb2.ExecutionReport(**_REPORT_FIELDS.arguments(record)), record)


def decision_record(decision: ops_pb2.SignalDecision) -> dict[str, Any]:
    return _DECISION_FIELDS.record(decision)


def decision_from_record(record: dict[str, Any]) -> ops_pb2.SignalDecision:
    return _with_trace(ops_pb2.SignalDecision(**_DECISION_FIELDS.arguments(record)), record)
