"""Group commit off the event loop: fsyncs on a thread of their own, reports sent only once durable, in order."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from engine_server.engine_core import EngineCore
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.group_sync import GroupSync
from nautilus_mesh.journal import JournalWriter
from nautilus_mesh.journal_segments import SegmentedJournalWriter
from tests.conftest import ENGINE_TOKEN, order_command, running_engine

META = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "group-sync"))
SCHEMA = {1: engine_pb2.ExecutionReport}


def counting_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count os.fsync calls (they still run)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_commit_when_sync_deferred_writes_now_and_fsyncs_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = JournalWriter(tmp_path / "j.bin", SCHEMA, fsync="batch")
    size_before = (tmp_path / "j.bin").stat().st_size
    calls = counting_fsync(monkeypatch)

    writer.append(engine_pb2.ExecutionReport(seq=1, exec_id="sim-1"))
    writer.commit(sync=False)

    assert (tmp_path / "j.bin").stat().st_size > size_before, "the records are written at once"
    assert calls == [], "no fsync on the committing thread"
    writer.sync()
    assert len(calls) == 1
    writer.sync()
    assert len(calls) == 1, "nothing owed: no second fsync"
    writer.append(engine_pb2.ExecutionReport(seq=2, exec_id="sim-2"))
    writer.commit(sync=False)
    writer.close()
    assert len(calls) == 2, "close fsyncs what a deferred commit left unsynced"


def test_segment_when_rolled_after_deferred_commit_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = SegmentedJournalWriter(tmp_path / "j.bin", SCHEMA, fsync="batch", segment_bytes=64)
    calls = counting_fsync(monkeypatch)

    writer.append(engine_pb2.ExecutionReport(seq=1, exec_id="x" * 80))
    writer.commit(sync=False)  # past 64 bytes: rolls, and the closed segment is fsynced as it closes

    assert writer.segment == 1
    assert calls, "the rolled segment was fsynced"
    writer.close()


async def test_release_when_requested_runs_in_order_after_one_fsync_per_group() -> None:
    gate = threading.Event()
    syncs: list[int] = []

    def sync() -> None:
        gate.wait(5)
        syncs.append(len(syncs))

    group = GroupSync(sync, asyncio.get_running_loop())
    released: list[tuple[int, int]] = []
    try:
        for n in range(5):
            group.after_sync(lambda n=n: released.append((n, len(syncs))))  # type: ignore[misc]
        await asyncio.sleep(0.05)
        assert released == [], "nothing is released before its fsync returned"
        gate.set()
        await group.drain()
    finally:
        group.close()

    assert [n for n, _ in released] == [0, 1, 2, 3, 4], "released in the order asked"
    assert all(done >= 1 for _, done in released), "each release ran after an fsync"
    assert group.fsyncs <= 3, "requests waiting together share one fsync"


async def test_release_when_one_raises_runs_the_rest_of_its_group(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    def sync() -> None:
        gate.wait(5)

    group = GroupSync(sync, asyncio.get_running_loop())
    released: list[int] = []

    def failing() -> None:
        raise RuntimeError("a release that fails")

    try:
        group.after_sync(lambda: released.append(0))
        group.after_sync(failing)
        group.after_sync(lambda: released.append(2))
        gate.set()
        await group.drain()
    finally:
        group.close()

    assert released == [0, 2], "the releases after a failing one still ran, in order"
    assert group.released == 4, "three releases and drain's own"
    assert "a release after an fsync raised" in caplog.text


async def order_behind(
    core: EngineCore, sync: Callable[[], None], coid: str
) -> asyncio.Queue[list[engine_pb2.ExecutionReport] | None]:
    """Put ``sync`` in place of the engine's journal fsync, execute one order on a session of its own, let the loop
    run a moment; returns the session's report queue."""
    assert core.group_sync is not None
    core.group_sync._sync = sync
    queue: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue()
    core.sessions["held"] = queue
    core.execute([order_command(coid, "0.1")], "held")
    await asyncio.sleep(0.1)
    return queue


async def test_engine_when_fsync_is_slow_holds_reports_until_durable(tmp_path: Path) -> None:
    async with running_engine(tmp_path, journal_fsync="batch") as server:
        core: EngineCore = server.core
        assert core.group_sync is not None, "the engine server fsyncs on a thread of its own under batch"
        gate = threading.Event()
        journal_sync = core.group_sync._sync

        def slow_sync() -> None:
            gate.wait(5)
            journal_sync()

        queue = await order_behind(core, slow_sync, "gs-1")
        assert queue.empty(), "no report leaves before the fsync of its frame"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            listing = asyncio.ensure_future(
                stub.ListExecutions(engine_pb2.ListExecutionsRequest(since_seq=0), metadata=META)
            )
            await asyncio.sleep(0.05)
            assert not listing.done(), "a query waits for the fsync rather than show a report a crash could undo"
            gate.set()
            answer = await listing

        frame = await asyncio.wait_for(queue.get(), 5)
        assert frame and {r.client_order_id for r in frame} == {"gs-1"}
        assert [r.seq for r in answer.reports] == sorted(r.seq for r in frame)
        assert answer.last_seq == frame[-1].seq


async def test_fsync_when_it_fails_releases_nothing_more_and_the_engine_says_unhealthy(tmp_path: Path) -> None:
    async with running_engine(tmp_path, journal_fsync="batch") as server:
        core: EngineCore = server.core
        assert core.group_sync is not None

        def broken_disk() -> None:
            raise OSError(5, "Input/output error")

        queue = await order_behind(core, broken_disk, "gs-eio")

        assert queue.empty(), "a report whose fsync failed is never sent"
        assert "Input/output error" in core.group_sync.failure
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = await engine_pb2_grpc.EngineServiceStub(channel).GetHealth(
                engine_pb2.GetHealthRequest(), metadata=META
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await engine_pb2_grpc.EngineServiceStub(channel).ListExecutions(
                    engine_pb2.ListExecutionsRequest(since_seq=0), metadata=META
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "JOURNAL_FSYNC_FAILED" in str(refused.value.details()) + str(refused.value.trailing_metadata())
        journal = [c for c in health.checks if c.name == "journal"]
        assert journal and journal[0].status == common_pb2.HEALTH_STATUS_UNHEALTHY, health
        assert health.status == common_pb2.HEALTH_STATUS_UNHEALTHY
