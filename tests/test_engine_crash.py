"""kill -9 of the engine process under load (frames of 100 orders), then a restart on the same journal.

Write-ahead per frame: every report ops received before the kill is in the journal after the restart
(nothing lost); re-sending every frame executes no order twice (nothing doubled); seq stays gap-free. The
``compacted`` case snapshots the ledger every few KiB (with a small order retention, so re-sent ids are
recognised by their fingerprints), so the kill lands anywhere in or between compactions.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from tests.conftest import ENGINE_TOKEN, order_command
from tests.localhost import free_port
from tests.processes import start_serving, tail

ROOT = Path(__file__).resolve().parent.parent
META = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "crash-test"))
FRAMES = 30
PER_FRAME = 100


def frames() -> list[engine_pb2.StreamOrdersRequest]:
    out = []
    for f in range(FRAMES):
        commands = [
            order_command(
                f"o-{f}-{i}",
                "0.001" if i % 2 == 0 else "0.01",
                side=common_pb2.SIDE_BUY if (i // 2) % 2 == 0 else common_pb2.SIDE_SELL,
                account="default",
                instrument=("BTC-USD", "ETH-USD")[i % 2],
            )
            for i in range(PER_FRAME)
        ]
        out.append(engine_pb2.StreamOrdersRequest(commands=commands))
    return out


async def all_executions(stub: engine_pb2_grpc.EngineServiceStub) -> list[engine_pb2.ExecutionReport]:
    out: list[engine_pb2.ExecutionReport] = []
    token = ""
    while True:
        page = await stub.ListExecutions(
            engine_pb2.ListExecutionsRequest(since_seq=0, page_size=5000, page_token=token), metadata=META
        )
        out.extend(page.reports)
        token = page.next_page_token
        if not token:
            return out


COMPACTED = {"snapshot_every_bytes": 4096, "order_retention": 50, "execution_retention": 100_000}


@pytest.mark.timeout(180)  # a hang guard: the compacted case snapshots every 4 KiB, ~75 s on a busy 2-core host
@pytest.mark.parametrize(
    ("segment_bytes", "compaction"),
    [(None, {}), (4096, {}), (4096, COMPACTED)],
    ids=["one-file", "segmented", "compacted"],
)
async def test_engine_when_killed_under_load_then_restart_loses_nothing_and_doubles_nothing(
    tmp_path: Path, segment_bytes: int | None, compaction: dict[str, int]
) -> None:
    port = free_port()
    config = tmp_path / "engine.json"
    settings = {
        "port": port,
        "metrics_port": None,
        "ops_token": ENGINE_TOKEN,
        "journal_path": str(tmp_path / "engine" / "journal.bin"),
        "journal_fsync": "batch",
        "tick_interval_ms": 20,
        "tracing": False,
        "journal_segment_bytes": segment_bytes,
        "snapshot_every_bytes": None,
        **compaction,
    }
    config.write_text(json.dumps(settings), encoding="utf-8")
    log = tmp_path / "engine.log"
    work = frames()

    proc = await start_serving("engine_server", config, port, log)
    received: list[engine_pb2.ExecutionReport] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = engine_pb2_grpc.EngineServiceStub(channel).StreamOrders(metadata=META)
        for frame in work:
            await call.write(frame)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for response in call:
                received.extend(response.reports)
                if len(received) >= FRAMES * PER_FRAME // 2:  # mid-run: later frames may still be executing
                    proc.send_signal(signal.SIGKILL)
                    break
        await proc.wait()
        call.cancel()
    assert received, tail(log)
    if compaction:  # the kill hit a compacted journal: a snapshot and the segments after it
        assert (tmp_path / "engine" / "journal.snapshot.json").exists()
        assert not (tmp_path / "engine" / "journal.bin").exists()
    elif segment_bytes:  # the kill hit a journal of several segments; only the newest may be torn
        assert len(list((tmp_path / "engine").glob("journal.0*.bin"))) >= 2

    proc = await start_serving("engine_server", config, port, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            journaled = await all_executions(stub)
            assert [r.seq for r in journaled] == list(range(1, len(journaled) + 1))
            by_exec = {r.exec_id: r for r in journaled}
            for report in received:  # write-ahead: whatever left the engine is in its journal
                assert by_exec[report.exec_id].SerializeToString() == report.SerializeToString()

            call = stub.StreamOrders(metadata=META)
            for frame in work:  # ops re-sends what it cannot prove was executed: the engine deduplicates
                await call.write(frame)
            await call.done_writing()
            async for _ in call:
                pass
            final = await all_executions(stub)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

    assert [r.seq for r in final] == list(range(1, len(final) + 1))
    assert final[: len(journaled)] == journaled
    if compaction:  # compactions ran before the kill, and the restart started from a snapshot
        text = log.read_text()
        assert text.count("journal compacted") >= 3 and "journal snapshot restored" in text, tail(log)
    accepted = Counter(r.client_order_id for r in final if r.exec_type == engine_pb2.EXEC_TYPE_ACCEPTED)
    ended = Counter(
        r.client_order_id
        for r in final
        if r.order_status
        in (engine_pb2.ORDER_STATUS_FILLED, engine_pb2.ORDER_STATUS_CANCELED, engine_pb2.ORDER_STATUS_REJECTED)
    )
    coids = {c.new_order.client_order_id for f in work for c in f.commands}
    assert set(ended) == coids and max(ended.values()) == 1  # every order ended exactly once
    assert max(accepted.values()) == 1  # none executed twice
