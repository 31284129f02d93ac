"""Orders and fills that left ops' memory (past ``order_history``) are still listed, from the on-disk archive."""

from __future__ import annotations

import sqlite3
import time
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2, ops_pb2_grpc
from nautilus_mesh.errors import ValidationError
from ops_server import order_archive
from ops_server.order_archive import ARCHIVE_TOKEN, OrderArchive, merged_page
from ops_server.order_tracker import OrderTracker, TrackedOrder
from tests.conftest import MOMENTUM_META, running_mesh, wait_until

ORDERS = 50


def record(coid: str, model: str = "m1") -> journal_pb2.TrackedOrderRecord:
    """An order's record, created at a time of its own (the same for the same id)."""
    created = 1_700_000_000_000_000_000 + zlib.crc32(coid.encode())
    return journal_pb2.TrackedOrderRecord(
        client_order_id=coid, model_id=model, side="BUY", quantity="1", created_unix_nanos=created
    )


def archive_order(archive: OrderArchive, coid: str, model: str = "m1") -> None:
    """Queue a filled order of ``model`` that left memory."""
    order = record(coid, model)
    encoded = order.SerializeToString()
    archive.add_order(coid, order.created_unix_nanos, model, "", encoded, Decimal(1), engine_pb2.ORDER_STATUS_FILLED)


def test_merged_page_when_paged_then_memory_first_then_archive_without_repeats(tmp_path: Path) -> None:
    archive = OrderArchive(tmp_path / "history.db", retention=100)
    for i in range(8):  # o0..o7 left memory, oldest first; o7 is back in memory (a replay put it there)
        archive_order(archive, f"o{i}")
    archive_order(archive, "x0", model="other")
    archive_order(archive, "o0")  # archived twice: kept once
    memory = ["o10", "o9", "o8", "o7"]

    def fetch(before: int, limit: int) -> list[tuple[int, str]]:
        return [(at, r.client_order_id) for at, r, _, _ in archive.orders("m1", None, before, limit)]

    seen: list[str] = []
    token = ""
    while True:
        page = merged_page(memory, 3, token, fetch, lambda coid: coid in memory)
        assert len(page.items) <= 3
        seen.extend(page.items)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"o{i}" for i in range(10, -1, -1)]
    assert int(merged_page(memory, 4, "", fetch, lambda c: c in memory).next_page_token) == ARCHIVE_TOKEN + 9 * 10**17
    with pytest.raises(ValidationError):
        merged_page(memory, 3, "not-a-token", fetch, lambda c: False)
    # Digits of other scripts ("²" is a digit to str.isdigit, not to int) and a position beyond any the archive
    # gives out (too large for SQLite) are not tokens this server issued either.
    for token in ("\u00b2", "\u0663", str(ARCHIVE_TOKEN + 9 * 10**17 + 1), "9" * 20):
        with pytest.raises(ValidationError) as refused:
            merged_page(memory, 3, token, fetch, lambda c: False)
        assert refused.value.code == "INVALID_PAGE_TOKEN"
    assert archive.orders("m1", frozenset({"someone-else"}), 10**9, 10) == []
    archive.close()


def test_archive_when_past_retention_then_oldest_rows_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_archive, "TRIM_EVERY", 5)
    archive = OrderArchive(tmp_path / "history.db", retention=4)
    for i in range(12):
        archive.add_fill(f"e{i}", "m1", ops_pb2.Fill(exec_id=f"e{i}", model_id="m1", seq=i + 1).SerializeToString())
        archive.commit()
    kept = [fill.exec_id for _, fill in archive.fills("", None, 10**9, 100)]
    assert kept[:4] == ["e11", "e10", "e9", "e8"] and len(kept) <= 4 + 5
    archive.close()


def test_archive_commit_hands_rows_to_its_writer_without_waiting_for_sqlite(tmp_path: Path) -> None:
    archive = OrderArchive(tmp_path / "history.db", retention=100)
    blocker = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file: the archive's transaction must wait
    archive_order(archive, "o1")
    assert archive.commit() == 1  # returned while SQLite could not write
    assert archive.pending == 0
    assert blocker.execute("SELECT COUNT(*) FROM archived_orders").fetchone()[0] == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    archive.flush()  # waits for the writer
    assert [r.client_order_id for _, r, _, _ in archive.orders("", None, 10**9, 10)] == ["o1"]
    assert archive.archived_orders == 1
    archive.close()


def test_archive_batch_that_fails_is_counted_raised_by_flush_and_the_next_is_written(tmp_path: Path) -> None:
    archive = OrderArchive(tmp_path / "history.db", retention=100)
    archive.add_order("bad", 1, "m1", "", object(), Decimal(1), 0)  # type: ignore[arg-type]  # SQLite cannot bind it
    archive.commit()
    time.sleep(0.2)  # the batch fails at once: the next commit finds it done
    archive_order(archive, "o0")
    archive.commit()  # notes the failed batch (logged), does not raise it: a decision never waits on the archive
    with pytest.raises(sqlite3.Error):
        archive.flush()
    assert archive.failed_batches == 1
    archive_order(archive, "o1")
    archive.flush()
    assert [r.client_order_id for _, r, _, _ in archive.orders("", None, 10**9, 10)] == ["o1", "o0"]
    archive.close()


UNKEYED_SCHEMA = (
    "CREATE TABLE archived_orders (ord INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL UNIQUE, "
    "model_id TEXT NOT NULL, visible_model TEXT NOT NULL, record BLOB NOT NULL, filled TEXT NOT NULL, "
    "status INTEGER NOT NULL)",
    "CREATE INDEX archived_orders_model ON archived_orders (model_id, ord)",
)
"""The archive's orders table as versions before the creation-time key wrote it."""


def test_archive_written_before_the_creation_time_key_when_opened_then_rekeyed_at_the_same_positions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    old = sqlite3.connect(path, isolation_level=None)
    for statement in UNKEYED_SCHEMA:
        old.execute(statement)
    for coid in ("o0", "o1", "o2", "o3"):
        old.execute(
            "INSERT INTO archived_orders (client_order_id, model_id, visible_model, record, filled, status) "
            "VALUES (?, 'm1', 'm1', ?, '1', ?)",
            (coid, record(coid).SerializeToString(), engine_pb2.ORDER_STATUS_FILLED),
        )
    old.execute("DELETE FROM archived_orders WHERE client_order_id IN ('o0', 'o3')")  # trimmed, and the newest gone
    old.close()

    archive = OrderArchive(path, retention=100)
    listed = archive.orders("m1", None, 10**9, 10)
    assert [(position, r.client_order_id) for position, r, _, _ in listed] == [(3, "o2"), (2, "o1")]
    with sqlite3.connect(path) as check:
        keys = check.execute("SELECT client_order_id, created_ns FROM archived_orders ORDER BY ord").fetchall()
        assert keys == [(coid, record(coid).created_unix_nanos) for coid in ("o1", "o2")]
    archive_order(archive, "o1")  # a replay pushing an order out again: still kept once
    archive_order(archive, "o4")
    archive.flush()
    listed = archive.orders("m1", None, 10**9, 10)
    # Position 4 (o3's, deleted) is never given out again; the ignored o1 used up 5, as SQLite's AUTOINCREMENT does.
    assert [(position, r.client_order_id) for position, r, _, _ in listed] == [(6, "o4"), (3, "o2"), (2, "o1")]
    archive.close()
    reopened = OrderArchive(path, retention=100)  # rekeyed once: opening it again changes nothing
    assert [r.client_order_id for _, r, _, _ in reopened.orders("m1", None, 10**9, 10)] == ["o4", "o2", "o1"]
    reopened.close()


async def all_pages(stub: ops_pb2_grpc.OpsServiceStub, fills: bool) -> list[str]:
    """Every page of ListFills (exec ids) or ListOrders (client order ids) of momentum_v1, 7 at a time."""
    out: list[str] = []
    token = ""
    while True:
        if fills:
            page = await stub.ListFills(
                ops_pb2.ListFillsRequest(model_id="momentum_v1", page_size=7, page_token=token), metadata=MOMENTUM_META
            )
            out.extend(f.exec_id for f in page.fills)
            token = page.next_page_token
        else:
            response = await stub.ListOrders(
                ops_pb2.ListOrdersRequest(model_id="momentum_v1", page_size=7, page_token=token), metadata=MOMENTUM_META
            )
            out.extend(o.client_order_id for o in response.orders)
            token = response.next_page_token
        if not token:
            return out


async def test_list_orders_and_fills_when_past_order_history_then_every_one_listed_in_order_after_restart_too(
    tmp_path: Path,
) -> None:
    ops = {"order_history": 10}
    submitted: list[str] = []
    async with running_mesh(tmp_path, ops=ops) as mesh:
        tracker = mesh.ops.core.tracker
        async with mesh.channel() as channel:
            stub = mesh.ops_stub(channel)
            for i in range(ORDERS):
                decision = await stub.SubmitSignal(
                    ops_pb2.SubmitSignalRequest(
                        signal=ops_pb2.Signal(
                            signal_id=f"h-{i}",
                            model_id="momentum_v1",
                            instrument="BTC-USD",
                            target=0.05 * (i % 2 * 2 - 1),
                        )
                    ),
                    metadata=MOMENTUM_META,
                )
                coid = decision.decision.client_order_id
                assert coid, decision
                submitted.append(coid)
                await wait_until(
                    lambda: all(
                        o.status != engine_pb2.ORDER_STATUS_NEW and o.open_quantity == 0
                        for o in tracker.orders.values()
                    )
                )
            assert len(tracker.orders) < ORDERS and len(tracker.fills) <= 10  # most left memory
            orders = await all_pages(stub, fills=False)
            fills = await all_pages(stub, fills=True)
            archived = mesh.ops.core.metrics.registry.get_sample_value("order_archive_rows_written", {"kind": "order"})
            assert archived is not None and archived >= ORDERS - 10 - 1  # the queries wrote what was queued
            assert mesh.ops.core.metrics.registry.get_sample_value("order_archive_failed_batches") == 0
        engine_fills = [
            r.exec_id
            for r in mesh.engine.core.manager.list_executions(0, 5000)
            if r.model_id == "momentum_v1" and r.last_qty > 0
        ]
    assert orders == submitted[::-1]  # all 50, newest first
    assert fills == engine_fills[::-1] and len(fills) >= ORDERS

    async with running_mesh(tmp_path, ops=ops) as mesh, mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        assert await all_pages(stub, fills=False) == orders
        assert await all_pages(stub, fills=True) == fills


def test_archive_when_ops_killed_before_committing_it_then_the_replay_archives_every_order_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal.bin"
    tracker = OrderTracker(journal, history=3, archive_retention=100)
    for i in range(10):
        coid = f"o-{i}"
        decision = ops_pb2.SignalDecision(signal_id=f"s-{i}", model_id="m1", client_order_id=coid, quantity="1")
        order = TrackedOrder(coid, f"s-{i}", "m1", "strat", "BTC-USD", "BUY", Decimal(1), "LIVE", "sim", Decimal(1), i)
        tracker.record(decision, order)
        tracker.commit()
        fill = engine_pb2.ExecutionReport(
            seq=i + 1, exec_id=f"sim-{i + 1}", client_order_id=coid, exec_type=engine_pb2.EXEC_TYPE_FILL,
            order_status=engine_pb2.ORDER_STATUS_FILLED, last_qty="1", last_price="100",
        )  # fmt: skip
        tracker.apply_report(fill)
    assert tracker.archive is not None and tracker.archive.pending == 7  # queued, not written: then kill -9
    assert tracker.archive.orders("", None, 10**9, 100) != []  # a query writes what is queued ...
    (tmp_path / "history.db").unlink()  # ... so start over from an archive that lost it all
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"history.db{suffix}").unlink(missing_ok=True)

    again = OrderTracker(journal, history=3, archive_retention=100)
    again.replay(lambda r: again.apply_report(r, journal=False))
    assert again.archive is not None
    archived = [r.client_order_id for _, r, _, _ in again.archive.orders("", None, 10**9, 100)]
    assert archived == [f"o-{i}" for i in range(6, -1, -1)] and list(again.orders) == ["o-7", "o-8", "o-9"]
    again.close()
    third = OrderTracker(journal, history=3, archive_retention=100)  # a second restart replays the same again
    third.replay(lambda r: third.apply_report(r, journal=False))
    assert third.archive is not None and len(third.archive.orders("", None, 10**9, 100)) == 7  # nothing twice
    third.close()
