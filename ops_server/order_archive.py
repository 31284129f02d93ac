"""Orders and fills that left ops' memory, in a bounded on-disk index (``history.db`` beside the journal).

Ops keeps the last ``order_history`` orders and fills in memory. An order that leaves memory (finished, pushed out by
newer ones) and a fill that leaves it are written here, so ``ListOrders`` and ``ListFills`` keep answering for them:
a page lists what memory holds first (newest first), then what this archive holds, most recently archived first.
The archive keeps the last ``retention`` orders and fills (count each); older rows are deleted.

It is a SQLite file of its own (WAL, ``synchronous=NORMAL``), whatever the state store is: each ops worker archives
its own orders. Rows are inserted with ``INSERT OR IGNORE`` keyed by client order id and exec id, so the replay after
a crash, which pushes the same orders out of memory again, adds nothing twice; rows not yet committed when the
process dies are added again by that replay, because ops flushes the archive before each journal snapshot (the
journal still holds every eviction after it). An order the replay puts back in memory is listed from memory only.

The rows are written by a thread of the archive's own, a batch per transaction: SQLite's work and its I/O (the WAL's
writes, a checkpoint's fsync) stay off the event loop, and Python's sqlite3 releases the GIL while SQLite runs. Once
ops' order history is full every new order pushes one out, so this is steady-state work on every signal: on the
loop it took about a fifth of ops' CPU samples. :meth:`OrderArchive.flush` waits for every batch handed over (a query
reads after it, a journal snapshot is taken after it).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.errors import ValidationError
from nautilus_mesh.pagination import Page, page_size, token_number

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS archived_orders (ord INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, "
    "created_ns INTEGER NOT NULL, model_id TEXT NOT NULL, visible_model TEXT NOT NULL, record BLOB NOT NULL, "
    "filled TEXT NOT NULL, status INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS archived_orders_key ON archived_orders (created_ns, client_order_id)",
    "CREATE INDEX IF NOT EXISTS archived_orders_model ON archived_orders (model_id, ord)",
    "CREATE TABLE IF NOT EXISTS archived_fills (ord INTEGER PRIMARY KEY AUTOINCREMENT, exec_id TEXT NOT NULL UNIQUE, "
    "model_id TEXT NOT NULL, fill BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS archived_fills_model ON archived_fills (model_id, ord)",
)
"""An order is keyed by its creation time and then its id: orders leave memory about in the order they were created,
so each key lands at the end of the index and the oldest leave from its start, where a key by the id alone (a hash)
put every insert and every trim on a random page of a 100,000-entry index (about twice the CPU per order; see
docs/performance.md). Fills are keyed by exec id (``<venue>-<seq>``: ascending per venue)."""
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
        _migrate_order_key(self._conn)
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
        self._orders: list[tuple[str, int, str, str, bytes, str, int]] = []
        self._fills: list[tuple[str, str, bytes]] = []
        self._since_trim = 0
        self._lock = threading.Lock()  # the connection, one user at a time: the writer thread or a query
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-archive")
        self._writes: deque[Future[int]] = deque()  # batches handed to the writer, oldest first
        self._failure: BaseException | None = None  # the first batch that failed since the last flush
        self.archived_orders = 0
        """Orders archived by this process (count)."""
        self.archived_fills = 0
        """Fills archived by this process (count)."""
        self.failed_batches = 0
        """Batches whose transaction failed (count); their rows come back with the journal's replay."""

    def add_order(
        self,
        client_order_id: str,
        created_ns: int,
        model_id: str,
        owner: str,
        record: bytes,
        filled: Decimal,
        status: int,
    ) -> None:
        """Queue an order that left memory for the next :meth:`commit`: ``created_ns`` is its creation time (Unix
        nanoseconds, as in ``record``), ``record`` its serialised ``TrackedOrderRecord`` (the order's own journal
        encoding), ``owner`` the model whose strategy sees it ("" for ``model_id``'s own)."""
        self._orders.append((client_order_id, created_ns, model_id, owner or model_id, record, str(filled), status))

    def add_fill(self, exec_id: str, model_id: str, fill: bytes) -> None:
        """Queue a fill that left memory (``fill``: the serialised ``Fill``) for the next :meth:`commit`."""
        self._fills.append((exec_id, model_id, fill))

    @property
    def pending(self) -> int:
        """Rows queued since the last commit (not yet handed to the writer)."""
        return len(self._orders) + len(self._fills)

    def commit(self) -> int:
        """Hand the queued rows to the writer thread, one transaction (rows already archived are skipped); returns
        how many, at once. A batch that failed earlier is logged here (ERROR) and counted in :attr:`failed_batches`,
        not raised: the archive answers queries, it never holds up a decision."""
        self._reap()
        if not self._orders and not self._fills:
            return 0
        orders, fills = self._orders, self._fills
        self._orders, self._fills = [], []
        self._writes.append(self._writer.submit(self._write, orders, fills))
        return len(orders) + len(fills)

    def flush(self) -> None:
        """Write what is queued and wait until every batch handed to the writer is written.

        Raises:
            sqlite3.Error (or OSError): a batch failed since the last flush (after logging it); what it held is still
                in the journal, since a snapshot, which would let those records go, is taken only after a flush.
        """
        self.commit()
        while self._writes:
            self._settle(self._writes.popleft())
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _reap(self) -> None:
        """Forget the batches already written (noting the ones that failed)."""
        while self._writes and self._writes[0].done():
            self._settle(self._writes.popleft())

    def _settle(self, write: Future[int]) -> None:
        """Wait for one batch; a failure is logged and kept for the next :meth:`flush` (the first one since)."""
        error = write.exception()
        if error is not None:
            log.error("[ARCHIVE] a batch of orders and fills could not be written to %s: %r", self.path, error)
            if self._failure is None:
                self._failure = error

    def _write(
        self, orders: list[tuple[str, int, str, str, bytes, str, int]], fills: list[tuple[str, str, bytes]]
    ) -> int:
        """One transaction of archived rows (on the writer thread)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO archived_orders (client_order_id, created_ns, model_id, visible_model, "
                    "record, filled, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    orders,
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO archived_fills (exec_id, model_id, fill) VALUES (?, ?, ?)", fills
                )
                self._since_trim += len(orders) + len(fills)
                if self._since_trim >= TRIM_EVERY:
                    self._trim()
                conn.execute("COMMIT")
            except BaseException:
                self.failed_batches += 1
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
        self.flush()
        sql, args = _where("visible_model", model_id, visible, before)
        with self._lock:
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
        self.flush()
        sql, args = _where("model_id", model_id, visible, before)
        with self._lock:
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
        """Write what is queued, stop the writer thread and close the file (a failed batch is raised, after)."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
            with self._lock:
                self._conn.close()


def _migrate_order_key(conn: sqlite3.Connection) -> None:
    """Rebuild an archive written before orders were keyed by creation time (its ``archived_orders`` has no
    ``created_ns``): every row kept at its position (page tokens stay valid), its creation time read from its record,
    in one transaction."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(archived_orders)")]
    if not columns or "created_ns" in columns:
        return
    conn.create_function(
        "record_created_ns",
        1,
        lambda blob: journal_pb2.TrackedOrderRecord.FromString(blob).created_unix_nanos,
        deterministic=True,
    )
    conn.execute("BEGIN")
    try:
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'archived_orders'").fetchone()
        conn.execute("DROP INDEX IF EXISTS archived_orders_model")
        conn.execute("ALTER TABLE archived_orders RENAME TO archived_orders_unkeyed")
        conn.execute(_SCHEMA[0])
        conn.execute(
            "INSERT INTO archived_orders (ord, client_order_id, created_ns, model_id, visible_model, record, filled, "
            "status) SELECT ord, client_order_id, record_created_ns(record), model_id, visible_model, record, filled, "
            "status FROM archived_orders_unkeyed ORDER BY ord"
        )
        rows = conn.execute("SELECT COUNT(*) FROM archived_orders").fetchone()[0]
        conn.execute("DROP TABLE archived_orders_unkeyed")
        if sequence is not None:  # positions are never given out twice, even those of rows already deleted
            conn.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'archived_orders'", (int(sequence[0]),)
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("[ARCHIVE] %d archived order(s) rekeyed by creation time", rows)


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
        if before > _NEWEST:  # above every position the archive gives out: not a token this server issued
            raise ValidationError("INVALID_PAGE_TOKEN", "page_token is not one this server issued", field="page_token")
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
