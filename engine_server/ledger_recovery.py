"""Recovery of the engine's ledger from its journal: orders rebuilt on demand, the reports owed after a restart,
and the one-time migration of a JSONL journal (written before the binary format)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from engine_server.execution_report import (
    JOURNAL_SCHEMA,
    ORDER_TAG,
    REPORT_TAG,
    Report,
    order_record,
    report_from_json,
    report_from_pb,
    report_pb,
    request_from_json,
    request_from_pb,
)
from engine_server.order_lifecycle import Order, OrderStatus
from engine_server.venues.base import ZERO, ExecType, OrderRequest, VenueEvent, rejected_event
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.files import read_jsonl
from nautilus_mesh.journal import (
    MAGIC,
    FsyncPolicy,
    JournalFormatError,
    JournalWriter,
    fsync_policy,
    is_binary_journal,
)
from nautilus_mesh.journal_segments import SegmentedJournalReader, SegmentedJournalWriter

log = logging.getLogger(__name__)


def open_journal(
    path: Path,
    fsync: FsyncPolicy | bool,
    replayed: SegmentedJournalReader,
    segment_bytes: int | None,
    first_segment: int = 0,
) -> SegmentedJournalWriter:
    """The ledger's journal writer after its replay: a new segment past ``segment_bytes`` (None: one file), never
    one before ``first_segment`` (a snapshot covers those)."""
    return SegmentedJournalWriter(
        path,
        JOURNAL_SCHEMA,
        fsync=fsync_policy(fsync),
        replayed=replayed,
        segment_bytes=segment_bytes,
        first_segment=first_segment,
    )


def order_of(record: journal_pb2.OrderRecord) -> Order:
    """A new order (status NEW) from its journal record."""
    created = record.created_unix_nanos
    req = request_from_pb(record)
    return Order(req.client_order_id, record.order.venue, req, created_ns=created, updated_ns=created)


def order_from_journal(
    path: Path,
    coid: str,
    first_segment: int = 0,
    seed: journal_pb2.OrderRecord | None = None,
    seed_reports: Iterable[engine_pb2.ExecutionReport] = (),
) -> tuple[Order | None, list[Report]]:
    """An order that left memory, rebuilt from the journal at ``path`` (segments from ``first_segment``) with its
    reports (None when absent). ``seed`` and ``seed_reports`` are what a snapshot holds of it, applied first; a
    report without its order (the order record was compacted) is returned all the same."""
    order = None if seed is None else order_of(seed)
    reports: list[Report] = []

    def take(message: engine_pb2.ExecutionReport) -> None:
        session, trace = ("", {}) if order is None else (order.request.session_id, order.request.trace)
        report = report_from_pb(message, session, trace)
        if order is not None:
            order.apply(report)
        reports.append(report)

    for seeded in seed_reports:
        take(seeded)
    for record in SegmentedJournalReader(path, JOURNAL_SCHEMA, first_segment=first_segment).records():
        message = record.message
        if record.tag == ORDER_TAG:
            assert isinstance(message, journal_pb2.OrderRecord)
            if message.order.client_order_id == coid:
                order = order_of(message)
        elif record.tag == REPORT_TAG:
            assert isinstance(message, engine_pb2.ExecutionReport)
            if message.client_order_id == coid:
                take(message)
    return order, reports


def journal_reports(path: Path, since_seq: int, start: int, first_segment: int) -> Iterator[Report]:
    """The journaled reports with ``seq > since_seq`` from the global offset ``start`` on (segments from
    ``first_segment``), ascending; session and trace come from the order records read on the way."""
    sessions: dict[str, tuple[str, Mapping[str, str]]] = {}
    for record in SegmentedJournalReader(path, JOURNAL_SCHEMA, first_segment=first_segment).records(start):
        message = record.message
        if record.tag == ORDER_TAG:
            assert isinstance(message, journal_pb2.OrderRecord)
            req = request_from_pb(message)
            sessions[req.client_order_id] = (req.session_id, req.trace)
        elif record.tag == REPORT_TAG:
            assert isinstance(message, engine_pb2.ExecutionReport)
            if message.seq > since_seq:
                session, trace = sessions.get(message.client_order_id, ("", {}))
                yield report_from_pb(message, session, trace)


def restart_events(open_orders: Iterable[Order], now: int) -> list[VenueEvent]:
    """The reports owed for orders open when the engine stopped: CANCELED (books are in memory, not restored), or
    REJECTED for an order journaled but never acknowledged (it reached no book we still have); ``now`` in ns."""
    events: list[VenueEvent] = []
    for order in open_orders:
        if order.status is OrderStatus.NEW:
            # Crashed between journaling the order and its first report: it never reached a book we still have.
            events.append(
                rejected_event(
                    order.request, "ENGINE_RESTART", "engine restarted before the order was acknowledged", now
                )
            )
            continue
        events.append(
            VenueEvent(
                exec_type=ExecType.CANCELED,
                client_order_id=order.client_order_id,
                venue_order_id=order.venue_order_id,
                symbol=order.request.symbol,
                side=order.request.side,
                last_qty=ZERO,
                last_price=ZERO,
                cum_qty=order.filled_qty,
                leaves_qty=ZERO,
                avg_price=order.avg_price,
                fee=ZERO,
                liquidity="",
                reason_code="ENGINE_RESTART",
                reason_text="engine restarted; venue books are not restored",
                ts_ns=now,
            )
        )
    return events


def migrate_jsonl(path: Path, target: Path) -> None:
    """Rewrite a JSONL journal (written before the binary format) as the binary journal ``target``, once.

    The JSONL file is kept as ``<name>.migrated``. A crash during the migration leaves the JSONL
    file as it was (the binary one is written beside it and renamed into place only when complete),
    so the next start migrates again.
    """
    staging = target.with_name(f"{target.name}.binary-staging")
    staging.unlink(missing_ok=True)
    writer = JournalWriter(staging, JOURNAL_SCHEMA, fsync="batch")
    orders = reports = 0
    requests: dict[str, OrderRequest] = {}
    for rec in read_jsonl(path):
        try:
            if rec.get("k") == "order":
                req = request_from_json(rec["request"])
                requests[req.client_order_id] = req
                writer.append(order_record(str(rec["venue"]), req, int(rec.get("created_ns", 0))))
                orders += 1
            elif rec.get("k") == "report":
                writer.append(report_pb(report_from_json(rec)))
                reports += 1
        except (KeyError, ValueError, ArithmeticError) as exc:
            log.error("[ORDER-MANAGER] unusable JSONL journal record not migrated: %r", exc)
    writer.close()
    backup = path.with_name(f"{path.name}.migrated")
    if not backup.exists():
        os.link(path, backup)
    os.replace(staging, target)
    if target != path:
        path.unlink()
    log.warning(
        "[ORDER-MANAGER] JSONL journal %s migrated to the binary journal %s (%d orders, %d reports); original: %s",
        path,
        target,
        orders,
        reports,
        backup,
    )


def migrate_if_needed(journal_path: Path) -> None:
    """Migrate a JSONL journal at ``journal_path``, or at ``journal.jsonl`` beside it (the default path before the
    binary format), to the binary journal ``journal_path``, once."""
    legacy = journal_path.with_suffix(".jsonl")
    if journal_path.exists() and journal_path.stat().st_size and not is_binary_journal(journal_path):
        if not _looks_like_jsonl(journal_path):  # a binary journal with a damaged header is not migrated away
            raise JournalFormatError(f"{journal_path} is not a binary journal (no {MAGIC!r} header) nor a JSONL one")
        migrate_jsonl(journal_path, journal_path)
    elif not journal_path.exists() and legacy != journal_path and legacy.exists():
        migrate_jsonl(legacy, journal_path)


def _looks_like_jsonl(path: Path) -> bool:
    """Whether a file reads as JSON lines: UTF-8 text whose first line is a JSON object."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20).strip()
    try:
        return first.startswith(b"{") and isinstance(json.loads(first.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return False
