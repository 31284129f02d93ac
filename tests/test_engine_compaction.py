"""The engine's journal compaction: a snapshot beside the journal, the segments it covers deleted, a restart that
replays only the tail, and what a crash between the steps leaves (nothing lost, nothing doubled)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from engine_server import ledger_compaction
from engine_server.execution_report import report_pb
from engine_server.order_manager import OrderManager
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.errors import OutOfRangeError
from nautilus_mesh.journal_segments import SegmentedJournalWriter, list_segments
from nautilus_mesh.snapshots import snapshot_path
from ops_server.server import OpsServer
from tests.conftest import ENGINE_TOKEN, flat_instruments, ops_config, order_command, running_engine, wait_until
from tests.test_order_manager import FakeClock, req, sim_venues

META = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "compaction-test"))


def ledger(path: Path, clock: FakeClock, **kw: Any) -> OrderManager:
    return OrderManager(sim_venues(), journal_path=path, clock=clock, **kw)


def trade(manager: OrderManager, first: int, count: int) -> None:
    """``count`` orders: market ones that fill at once, and every third a resting limit order that stays open."""
    for i in range(first, first + count):
        manager.submit("sim", req(f"c{i}", price="90.00" if i % 3 == 0 else None))


def everything(manager: OrderManager) -> list[bytes]:
    out: list[bytes] = []
    since = 0
    while page := manager.list_executions(since, limit=5000):
        out.extend(report_pb(r).SerializeToString() for r in page)
        since = page[-1].seq
    return out


def assert_resent_orders_execute_nothing(manager: OrderManager, first: int, count: int) -> None:
    """The orders of ``trade(manager, first, count)`` again: every id is a duplicate, so no report is made."""
    seq = manager.last_seq
    trade(manager, first, count)
    assert manager.last_seq == seq


def trade_then_kill_compaction(
    monkeypatch: pytest.MonkeyPatch, manager: OrderManager, batches: list[int], target: object, name: str
) -> list[bytes]:
    """``trade`` the ``batches`` of orders one after the other (c0, c1, ...) with a completed compaction between two
    batches, then compact with ``target.name`` replaced by a process kill (SystemExit) and put it back; returns every
    report made before the kill."""
    first = 0
    for i, count in enumerate(batches):
        if i:
            manager.compact()
        trade(manager, first, count)
        first += count
    before = everything(manager)

    def killed(*args: object, **kwargs: object) -> int:
        raise SystemExit(f"killed in {name}")

    monkeypatch.setattr(target, name, killed)
    with pytest.raises(SystemExit):
        manager.compact()
    monkeypatch.undo()
    return before


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The test's engine journal (the segments and the snapshot go beside it)."""
    return tmp_path / "journal.bin"


def test_restart_when_compacted_then_replays_only_the_tail_and_answers_as_before(clock: FakeClock, path: Path) -> None:
    manager = ledger(path, clock)
    trade(manager, 0, 30)
    through = manager.compact()
    assert [index for index, _ in list_segments(path)] == [through + 1]  # the covered segments are gone
    trade(manager, 30, 5)
    tail_records = 5 + sum(len(manager.reports_for(f"c{i}")) for i in range(30, 35))
    before = everything(manager)
    open_before = [o.client_order_id for o in manager.open_orders()]
    manager.close()

    restarted = ledger(path, clock)
    assert restarted.replayed_records == tail_records  # not the 30 orders before the snapshot
    assert restarted.snapshot_seq > 0 and restarted.oldest_available_seq == 1
    assert everything(restarted)[: len(before)] == before
    # orders open at the stop are cancelled by the restart (books are in memory), each exactly once
    assert sorted(r.client_order_id for r in restarted.restart_reports) == sorted(open_before)
    assert restarted.get_order("c0") is not None and restarted.get_order("c0").status.value == "CANCELED"  # type: ignore[union-attr]
    seq = restarted.last_seq
    for i in range(35):  # every id is a duplicate: nothing executes again
        restarted.submit("sim", req(f"c{i}", price=None))
    assert restarted.last_seq == seq
    restarted.close()


def test_compaction_when_triggered_by_bytes_then_the_journal_stays_small(clock: FakeClock, path: Path) -> None:
    manager = ledger(path, clock, snapshot_every_bytes=4096, journal_segment_bytes=4096, retention=10)
    trade(manager, 0, 200)
    assert manager.snapshots >= 5
    assert manager.journal_bytes < 3 * 4096 + 2048  # the tail since the newest snapshot, not 200 orders
    assert manager.bytes_since_snapshot() < 4096 + 2048
    before = everything(manager)
    manager.close()
    restarted = ledger(path, clock, snapshot_every_bytes=4096, journal_segment_bytes=4096, retention=10)
    assert restarted.replayed_records < 60
    assert everything(restarted)[: len(before)] == before
    restarted.close()


def test_list_executions_when_since_precedes_retention_then_out_of_range_with_oldest_available(
    clock: FakeClock, path: Path
) -> None:
    manager = ledger(path, clock, execution_retention=10, history_limit=5)
    trade(manager, 0, 20)
    last = manager.last_seq
    manager.compact()
    oldest = manager.oldest_available_seq
    assert oldest == last - 9
    with pytest.raises(OutOfRangeError) as caught:
        manager.list_executions(oldest - 2)
    assert caught.value.code == "EXECUTIONS_PAST_RETENTION"
    assert caught.value.details == {"since_seq": str(oldest - 2), "oldest_available_seq": str(oldest)}
    trade(manager, 20, 3)
    # from the oldest available on, every report once, in seq order: the snapshot's, then the journal's
    assert [r.seq for r in manager.list_executions(oldest - 1, limit=5000)] == list(range(oldest, manager.last_seq + 1))
    manager.close()
    restarted = ledger(path, clock, execution_retention=10, history_limit=5)
    assert [r.seq for r in restarted.list_executions(oldest - 1, limit=5000)][:12] == list(range(oldest, oldest + 12))
    with pytest.raises(OutOfRangeError):
        restarted.list_executions(0)
    restarted.close()


def test_duplicate_when_order_left_memory_and_its_records_were_compacted_then_never_executed_again(
    clock: FakeClock, path: Path
) -> None:
    manager = ledger(path, clock, retention=2, execution_retention=3)
    for i in range(10):
        manager.submit("sim", req(f"d{i}", price=None))
    first = manager.submit("sim", req("d0", price=None))  # left memory, still in the journal: its reports
    assert [r.client_order_id for r in first] == ["d0", "d0"]
    manager.compact()
    trade(manager, 100, 3)
    manager.compact()  # d0's records are in neither the journal nor the snapshot's retention window now
    seq = manager.last_seq
    assert manager.submit("sim", req("d0", price=None)) == [] and manager.last_seq == seq
    assert manager.missing_order_error("d0").code == "ORDER_PAST_RETENTION"
    assert manager.missing_order_error("never-seen").code == "ORDER_NOT_FOUND"
    with pytest.raises(OutOfRangeError, match="older than what the engine keeps"):
        manager.cancel("d0")  # a cancel says what GetOrder says of it
    manager.close()
    restarted = ledger(path, clock, retention=2, execution_retention=3)  # the fingerprints come back from the snapshot
    seq = restarted.last_seq
    for i in range(10):
        restarted.submit("sim", req(f"d{i}", price=None))
    assert restarted.last_seq == seq
    restarted.close()


def test_crash_when_between_snapshot_and_segment_removal_then_restart_loses_nothing_and_doubles_nothing(
    clock: FakeClock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # killed after the snapshot, before the covered segments are deleted
    before = trade_then_kill_compaction(monkeypatch, ledger(path, clock), [12], SegmentedJournalWriter, "drop_through")
    assert snapshot_path(path).exists() and len(list_segments(path)) == 2  # covered segment 0 is still there

    restarted = ledger(path, clock)
    assert [index for index, _ in list_segments(path)] == [1]  # the leftover is deleted on start
    assert restarted.replayed_records == 0
    after = everything(restarted)
    assert after[: len(before)] == before and len(after) == len(before) + len(restarted.restart_reports)
    assert_resent_orders_execute_nothing(restarted, 0, 12)
    restarted.close()


def test_crash_when_writing_the_snapshot_then_the_previous_state_is_replayed_whole(
    clock: FakeClock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a compaction done, then killed while writing the next snapshot
    before = trade_then_kill_compaction(monkeypatch, ledger(path, clock), [6, 6], ledger_compaction, "stage_text")

    restarted = ledger(path, clock)  # the previous snapshot and every segment after it
    assert everything(restarted)[: len(before)] == before
    assert_resent_orders_execute_nothing(restarted, 0, 12)
    restarted.close()


async def test_engine_when_compacting_then_metrics_and_grpc_answer_out_of_range(tmp_path: Path) -> None:
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    settings = {"snapshot_every_bytes": 2048, "execution_retention": 5, "order_retention": 1, "report_history": 3}
    async with running_engine(tmp_path, venues=venues, **settings) as server:
        commands = [order_command(f"g{i}", "1", account="a") for i in range(40)]
        reports = server.core.execute(commands, "compaction-test")
        assert reports == []  # reports go to the session (none here), after the frame's commit
        server.core.manager.compact()
        registry = server.metrics.registry
        assert (registry.get_sample_value("engine_journal_snapshots_total") or 0) >= 1
        assert registry.get_sample_value("engine_journal_snapshot_seq") == server.core.manager.last_seq
        assert registry.get_sample_value("engine_journal_bytes") == server.core.manager.journal_bytes
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListExecutions(engine_pb2.ListExecutionsRequest(since_seq=0), metadata=META)
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "EXECUTIONS_PAST_RETENTION" in (caught.value.details() or "")
            oldest = server.core.manager.oldest_available_seq
            page = await stub.ListExecutions(
                engine_pb2.ListExecutionsRequest(since_seq=oldest - 1, page_size=5000), metadata=META
            )
            assert [r.seq for r in page.reports] == list(range(oldest, server.core.manager.last_seq + 1))
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await stub.GetOrder(engine_pb2.GetOrderRequest(client_order_id="g0"), metadata=META)
            assert gone.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_new_ops_when_the_engine_let_its_oldest_reports_go_then_reconciles_from_the_oldest_kept(
    tmp_path: Path,
) -> None:
    settings = {"snapshot_every_bytes": 2048, "execution_retention": 5, "order_retention": 1, "report_history": 3}
    async with running_engine(tmp_path, **settings) as engine:
        engine.core.execute([order_command(f"old{i}", "0.01", account="a") for i in range(20)], "gone-session")
        engine.core.manager.compact()
        oldest = engine.core.manager.oldest_available_seq
        assert oldest > 1
        ops = OpsServer(ops_config(tmp_path, engine.port))  # a new worker: it has applied no report yet
        await ops.start()
        try:
            core = ops.core
            await wait_until(lambda: core.engine_connected and core.link.cursor.watermark >= oldest - 1)
            assert core.metrics.registry.get_sample_value("engine_reconcile_history_skips") == 1
        finally:
            await ops.stop(grace=0.1)


# -- compaction written on a worker thread (as the engine server runs it) --------------------------------


async def test_background_compaction_when_writing_then_trading_and_reads_go_on_and_restart_loses_nothing(
    clock: FakeClock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: dict[str, Any] = {"snapshot_every_bytes": 4096, "retention": 3}
    manager = ledger(path, clock, **settings)
    manager.compact_in_background()
    started, may_finish = threading.Event(), threading.Event()
    stage = ledger_compaction.stage_text

    def slow_stage(*args: Any) -> Path:
        started.set()
        may_finish.wait(10)
        return stage(*args)

    monkeypatch.setattr(ledger_compaction, "stage_text", slow_stage)
    trade(manager, 0, 60)  # far past 4 KiB: one commit started a compaction, the later ones saw it in flight
    assert await asyncio.to_thread(started.wait, 10), "the snapshot is written on a worker thread"
    trade(manager, 60, 9)  # the loop trades on meanwhile, into the next segment
    segments = len(list_segments(path))
    assert manager.snapshots == 0 and manager.snapshot_seq == 0 and segments >= 2  # nothing installed or deleted
    during, c1 = everything(manager), [r.exec_id for r in manager.reports_for("c1")]  # c1 left memory: from disk
    assert len(during) == len(set(during)) == manager.last_seq and len(c1) == 2

    may_finish.set()
    await manager.compaction_done()
    assert manager.snapshots == 1 and 0 < manager.snapshot_seq < manager.last_seq
    assert len(list_segments(path)) < segments
    assert everything(manager) == during  # the snapshot's reports and the tail's, once each
    assert [r.exec_id for r in manager.reports_for("c1")] == c1
    await manager.aclose()

    restarted = ledger(path, clock, **settings)
    assert everything(restarted)[: len(during)] == during
    seq = restarted.last_seq
    for i in range(69):  # every id is a duplicate: nothing executes again
        restarted.submit("sim", req(f"c{i}", price=None))
    assert restarted.last_seq == seq
    restarted.close()


async def test_background_compaction_when_the_write_fails_then_segments_stay_and_a_later_one_succeeds(
    clock: FakeClock, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ledger(path, clock, snapshot_every_bytes=4096)
    manager.compact_in_background()

    attempts: list[object] = []

    def full_disk(*args: Any) -> Path:
        attempts.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ledger_compaction, "stage_text", full_disk)
    trade(manager, 0, 30)
    await asyncio.sleep(0)
    await manager.compaction_done()
    assert manager.snapshots == 0 and not snapshot_path(path).exists() and len(attempts) == 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    trade(manager, 30, 3)  # not yet another 4 KiB since the failure: no retry on every commit
    await asyncio.sleep(0)
    await manager.compaction_done()
    assert len(attempts) == 1 and manager.snapshots == 0
    monkeypatch.undo()
    before = everything(manager)
    trade(manager, 33, 30)
    await asyncio.sleep(0)
    await manager.compaction_done()
    assert manager.snapshots == 1
    assert everything(manager)[: len(before)] == before
    await manager.aclose()
