"""CPU per order and fill written to ops' archive of orders that left memory, at steady state.

Run: .venv/bin/python scripts/bench_archive.py [--rows N] [--retention N] [--batch N]

Once ops' order history is full, every new order pushes one out to the archive (``history.db``) and every new fill
pushes one fill out, so this is work on every signal (the demo's signal with its paper twin: two orders and two
fills). The benchmark writes ``--rows`` orders and as many fills in batches of ``--batch`` (the tracker hands one over
per ``ARCHIVE_BATCH`` rows) into an archive that keeps ``--retention`` of each, and measures the process CPU (every
thread) of what comes after the first ``2 x --retention`` (the archive full and turned over once, the oldest rows
trimmed as new ones arrive), in microseconds per order and its fill.

Two layouts, alternated in one run:

* ``archive`` -- :class:`ops_server.order_archive.OrderArchive` as ops runs it (orders keyed by creation time, then
  client order id);
* ``keyed by id`` -- the same rows in the layout before it (orders keyed by client order id alone, a hash: every
  insert and trim on a random page of the index), written with the same statements on the same thread.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from ops_server.order_archive import OrderArchive
from ops_server.router import client_order_id

ID_KEYED_SCHEMA = (
    "CREATE TABLE archived_orders (ord INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL UNIQUE, "
    "model_id TEXT NOT NULL, visible_model TEXT NOT NULL, record BLOB NOT NULL, filled TEXT NOT NULL, "
    "status INTEGER NOT NULL)",
    "CREATE INDEX archived_orders_model ON archived_orders (model_id, ord)",
    "CREATE TABLE archived_fills (ord INTEGER PRIMARY KEY AUTOINCREMENT, exec_id TEXT NOT NULL UNIQUE, "
    "model_id TEXT NOT NULL, fill BLOB NOT NULL)",
    "CREATE INDEX archived_fills_model ON archived_fills (model_id, ord)",
)
RECORD = os.urandom(180)
"""An order record's size in the three-process mesh (bytes)."""
FILL = os.urandom(150)


def rows(count: int) -> list[tuple[str, int, str, str]]:
    """``(client order id, created_ns, model, exec id)`` of ``count`` orders, live and paper twin in turn."""
    start = time.time_ns()
    out = []
    for n in range(count):
        model = "momentum_v1" if n % 2 else "momentum_v1@paper"
        venue = "SIM" if n % 2 else "PAPER"
        out.append((client_order_id(model, f"sig-{n // 2}"), start + n * 1000, model, f"{venue}-{n}"))
    return out


def warm_up(rows: int, retention: int, batch: int) -> int:
    """Orders written before the measured part: ``2 x retention``, or half of them when fewer, in whole batches."""
    per_batch = batch // 2
    return min(2 * retention, rows // 2) // per_batch * per_batch


def run_archive(tmp: Path, data: list[tuple[str, int, str, str]], retention: int, batch: int) -> float:
    """CPU us per order and fill after the warm-up, through :class:`OrderArchive`."""
    archive = OrderArchive(tmp / "history.db", retention)
    half = warm_up(len(data), retention, batch)
    started = 0.0
    for n, (coid, created, model, exec_id) in enumerate(data):
        if n == half:
            archive.flush()
            started = time.process_time()
        archive.add_order(coid, created, model, "", RECORD, Decimal("0.01"), 2)
        archive.add_fill(exec_id, model, FILL)
        if archive.pending >= batch:
            archive.commit()
    archive.flush()
    used = time.process_time() - started
    archive.close()
    return used / (len(data) - half) * 1e6


def run_id_keyed(tmp: Path, data: list[tuple[str, int, str, str]], retention: int, batch: int) -> float:
    """CPU us per order and fill after the warm-up, in the layout keyed by client order id (same statements)."""
    conn = sqlite3.connect(tmp / "history-by-id.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in ID_KEYED_SCHEMA:
        conn.execute(statement)
    half = warm_up(len(data), retention, batch)
    started = 0.0
    since_trim = 0
    for first in range(0, len(data), batch // 2):
        if first == half:
            started = time.process_time()
        chunk = data[first : first + batch // 2]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO archived_orders (client_order_id, model_id, visible_model, record, filled, status) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(coid, model, model, RECORD, "0.01", 2) for coid, _, model, _ in chunk],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO archived_fills (exec_id, model_id, fill) VALUES (?, ?, ?)",
            [(exec_id, model, FILL) for _, _, model, exec_id in chunk],
        )
        since_trim += 2 * len(chunk)
        if since_trim >= 1000:
            since_trim = 0
            for table in ("archived_orders", "archived_fills"):
                conn.execute(
                    f"DELETE FROM {table} WHERE ord <= (SELECT MAX(ord) FROM {table}) - ?",  # noqa: S608
                    (retention,),
                )
        conn.execute("COMMIT")
    used = time.process_time() - started
    conn.close()
    return used / (len(data) - half) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000, help="orders written (and as many fills), count")
    parser.add_argument("--retention", type=int, default=100_000, help="orders and fills kept (count each)")
    parser.add_argument("--batch", type=int, default=256, help="rows per transaction (orders + fills)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of each layout")
    args = parser.parse_args()
    data = rows(args.rows)
    results: dict[str, list[float]] = {"archive": [], "keyed by id": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-archive-") as name:
            results["archive"].append(run_archive(Path(name), data, args.retention, args.batch))
        with tempfile.TemporaryDirectory(prefix="bench-archive-") as name:
            results["keyed by id"].append(run_id_keyed(Path(name), data, args.retention, args.batch))
    print(f"{args.rows:,} orders and fills, {args.retention:,} kept, {args.batch} rows per transaction")
    print("layout          CPU us per order and fill (median, rounds)")
    for name, values in results.items():
        print(f"{name:<15} {statistics.median(values):6.1f}   {', '.join(f'{v:.1f}' for v in values)}")
    ratio = statistics.median(results["keyed by id"]) / statistics.median(results["archive"])
    print(f"keyed by id / archive: {ratio:.2f}x")


if __name__ == "__main__":
    main()
