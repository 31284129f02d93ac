"""Orders and fills that left ops' memory, in a bounded on-disk index (``history.db`` beside the journal).

Ops keeps the last ``order_history`` orders and fills in memory. An order that leaves memory (finished, pushed out by
newer ones) and a fill that leaves it are written here, so ``ListOrders`` and ``ListFills`` keep answering for them:
a page lists what memory holds first (newest first), then what this archive holds, most recently archived first.
The archive keeps the last ``retention`` orders and fills (count each); older rows are deleted.

It is a SQLite file of its own (WAL, ``synchronous=NORMAL``), whatever the state store is: each ops worker archives
its own orders. Rows are inserted with ``INSERT OR IGNORE`` keyed by client order id and exec id, so the replay after
a crash, which pushes the same orders out of memory again, adds nothing twice; rows not yet committed when the
process dies are added again by that replay, because ops commits the archive before each journal snapshot (the
journal still holds every eviction after it). An order the replay puts back in memory is listed from memory only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.pagination import Page, page_size, token_number

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS archived_orders (ord INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL "
    "UNIQUE, model_id TEXT NOT NULL, visible_model TEXT NOT NULL, record BLOB NOT NULL, filled TEXT NOT NULL, "
    "status INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS archived_orders_model ON archived_orders (model_id, ord)",
    "CREATE TABLE IF NOT EXISTS archived_fills (ord INTEGER PRIMARY KEY AUTOINCREMENT, exec_id TEXT NOT NULL UNIQUE, "
    "model_id TEXT NOT NULL, fill BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS archived_fills_model ON archived_fills (model_id, ord)",
)
_TABLES = ("archived_orders", "archived_fills")
TRIM_EVERY = 1000
"""Rows past the retention are deleted once per this many archived rows (count)."""

ARCHIVE_TOKEN = 10**18
"""Page tokens from this number on continue in the archive: the token minus it is the position to read below."""
_NEWEST = 9 * 10**17
T = TypeVar("T")

ArchivedOrder = tuple[int, journal_pb2.TrackedOrderRecord, Decimal, int]
"""``(position, order record, filled quantity, status)`` of an archived order."""


class OrderArchive:
    """The bounded on-disk index of orders and fills that left memory (see the module doc).

    Args:
        path: the SQLite file (created when missing).
        retention: orders and fills kept (count each); older rows are deleted.
    """

    def __init__(self, path: str | os.PathLike[str], retention: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        orders, fills = (self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _TABLES)  # noqa: S608
        log.info(
            "[ARCHIVE] %s: %d order(s) and %d fill(s) that left memory, kept up to %d each",
            path,
            orders,
            fills,
            retention,
        )
        self._orders: list[tuple[str, str, str, bytes, str, int]] = []
        self._fills: list[tuple[str, str, bytes]] = []
        self._since_trim = 0
        self.archived_orders = 0
        """Orders archived by this process (count)."""
        self.archived_fills = 0
        """Fills archived by this process (count)."""

    def add_order(self, record: journal_pb2.TrackedOrderRecord, filled: Decimal, status: int) -> None:
        """Queue an order that left memory for the next :meth:`commit`."""
        visible = record.owner or record.model_id
        self._orders.append(
            (record.client_order_id, record.model_id, visible, record.SerializeToString(), str(filled), status)
        )

    def add_fill(self, fill: ops_pb2.Fill) -> None:
        """Queue a fill that left memory for the next :meth:`commit`."""
        self._fills.append((fill.exec_id, fill.model_id, fill.SerializeToString()))

    @property
    def pending(self) -> int:
        """Rows queued since the last commit."""
        return len(self._orders) + len(self._fills)

    def commit(self) -> int:
        """Write the queued rows in one transaction (rows already archived are skipped); returns how many."""
        if not self._orders and not self._fills:
            return 0
        orders, fills = self._orders, self._fills
        self._orders, self._fills = [], []
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO archived_orders (client_order_id, model_id, visible_model, record, filled, "
                "status) VALUES (?, ?, ?, ?, ?, ?)",
                orders,
            )
            conn.executemany("INSERT OR IGNORE INTO archived_fills (exec_id, model_id, fill) VALUES (?, ?, ?)", fills)
            self._since_trim += len(orders) + len(fills)
            if self._since_trim >= TRIM_EVERY:
                self._trim()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.archived_orders += len(orders)
        self.archived_fills += len(fills)
        return len(orders) + len(fills)

    def _trim(self) -> None:
        self._since_trim = 0
        deleted = 0
        for table in _TABLES:
            cursor = self._conn.execute(
                f"DELETE FROM {table} WHERE ord <= (SELECT MAX(ord) FROM {table}) - ?",  # noqa: S608 - fixed names
                (self.retention,),
            )
            deleted += max(0, cursor.rowcount)
        if deleted:
            log.info("[ARCHIVE] %d order(s) and fill(s) past the retention of %d deleted", deleted, self.retention)

    def orders(self, model_id: str, visible: frozenset[str] | None, before: int, limit: int) -> list[ArchivedOrder]:
        """Archived orders with a position below ``before``, newest first, at most ``limit``; ``model_id`` ("" for
        any) and the models the caller may see (None: every one) filter them."""
        self.commit()
        sql, args = _where("visible_model", model_id, visible, before)
        rows = self._conn.execute(
            f"SELECT ord, record, filled, status FROM archived_orders {sql} ORDER BY ord DESC LIMIT ?",  # noqa: S608
            (*args, limit),
        ).fetchall()
        out: list[ArchivedOrder] = []
        for position, blob, filled, status in rows:
            record = journal_pb2.TrackedOrderRecord()
            record.ParseFromString(blob)
            out.append((int(position), record, Decimal(filled), int(status)))
        return out

    def fills(
        self, model_id: str, visible: frozenset[str] | None, before: int, limit: int
    ) -> list[tuple[int, ops_pb2.Fill]]:
        """Archived fills with a position below ``before``, newest first, at most ``limit`` (filtered as
        :meth:`orders`)."""
        self.commit()
        sql, args = _where("model_id", model_id, visible, before)
        rows = self._conn.execute(
            f"SELECT ord, fill FROM archived_fills {sql} ORDER BY ord DESC LIMIT ?",  # noqa: S608 - fixed names
            (*args, limit),
        ).fetchall()
        out: list[tuple[int, ops_pb2.Fill]] = []
        for position, blob in rows:
            fill = ops_pb2.Fill()
            fill.ParseFromString(blob)
            out.append((int(position), fill))
        return out

    def close(self) -> None:
        """Commit what is queued and close the file."""
        self.commit()
        self._conn.close()


def _where(
    visible_column: str, model_id: str, visible: frozenset[str] | None, before: int
) -> tuple[str, tuple[object, ...]]:
    clauses = ["ord < ?"]
    args: list[object] = [before]
    if model_id:
        clauses.append("model_id = ?")
        args.append(model_id)
    if visible is not None:
        clauses.append(f"{visible_column} IN ({', '.join('?' * len(visible))})" if visible else "0")
        args.extend(sorted(visible))
    return "WHERE " + " AND ".join(clauses), tuple(args)


def merged_page(
    memory: Sequence[T],
    requested_size: int,
    page_token: str,
    fetch: Callable[[int, int], list[tuple[int, T]]] | None,
    in_memory: Callable[[T], bool],
) -> Page[T]:
    """A page of what memory holds (``memory``, newest first, by offset), then of the archive (newest first, by
    position): ``fetch(before, limit)`` reads archived items below a position; those ``in_memory`` says memory holds
    again (after a replay) are skipped. A token below :data:`ARCHIVE_TOKEN` is an offset into ``memory``."""
    size = page_size(requested_size)
    start = token_number(page_token)
    items: list[T] = []
    before = _NEWEST
    if start < ARCHIVE_TOKEN:
        items = list(memory[start : start + size])
        if start + size < len(memory):
            return Page(items, str(start + size))
    else:
        before = start - ARCHIVE_TOKEN
    if fetch is None:
        return Page(items, "")
    last_taken = before
    while True:
        limit = size - len(items) + 1  # one more than the page needs: is there a next page?
        rows = fetch(before, limit)
        for position, item in rows:
            before = position
            if in_memory(item):
                continue
            if len(items) == size:
                return Page(items, str(ARCHIVE_TOKEN + last_taken))
            items.append(item)
            last_taken = position
        if len(rows) < limit:
            return Page(items, "")
