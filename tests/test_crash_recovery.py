"""kill -9 of the ops process, then a restart: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from engine_server.server import EngineServer
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.health import OPS_ENGINE_LINK_SERVICE
from tests.conftest import (
    ADMIN_TOKEN,
    DEMO,
    ENGINE_TOKEN,
    MEANREV_TOKEN,
    MOMENTUM_META,
    MOMENTUM_TOKEN,
    engine_config,
    wait_until,
)
from tests.localhost import free_port
from tests.processes import SERVING, start_serving, wait_health

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[EngineServer]:
    server = EngineServer(engine_config(tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


def write_ops_config(tmp_path: Path, engine_port: int, port: int, **extra: object) -> Path:
    config: dict[str, object] = {
        "port": port,
        "metrics_port": None,
        "engine_address": f"127.0.0.1:{engine_port}",
        "engine_token": ENGINE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "strategies": {
            "momentum": {"token": MOMENTUM_TOKEN, "models": ["momentum_v1", "momentum_v2"]},
            "meanrev": {"token": MEANREV_TOKEN, "models": ["meanrev_v1"]},
        },
        "registry_path": str(DEMO / "registry.json"),
        "capital_policy_path": str(DEMO / "capital_policy.json"),
        "risk_limits_path": str(DEMO / "risk_limits.json"),
        "state_dir": str(tmp_path / "ops"),
        "span_file": str(tmp_path / "spans" / "ops.jsonl"),
        "sample_interval_seconds": 0.2,
        **extra,
    }
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(config))
    return path


async def start_ops(config: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    """An ops process, once it serves and its link to the engine is up (a signal before that is refused)."""
    proc = await start_serving("ops_server", config, port, log)
    await wait_health(f"127.0.0.1:{port}", SERVING, service=OPS_ENGINE_LINK_SERVICE, proc=proc, log=log)
    return proc


async def positions(port: int) -> dict[tuple[str, str], Decimal]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await ops_pb2_grpc.OpsServiceStub(channel).GetPositions(
            ops_pb2.GetPositionsRequest(), metadata=MOMENTUM_META
        )
    return {(p.model_id, p.instrument): Decimal(p.quantity) for p in response.positions if Decimal(p.quantity)}


def engine_positions(engine: EngineServer) -> dict[tuple[str, str], Decimal]:
    """Net fills per registry model (paper twins of stable models are internal to ops and not listed)."""
    out: dict[tuple[str, str], Decimal] = {}
    for report in engine.core.manager.list_executions(0, 5000):
        if report.last_qty > 0 and "@" not in report.model_id:
            key = (report.model_id, report.symbol)
            out[key] = out.get(key, Decimal(0)) + (report.last_qty if report.side.value == "BUY" else -report.last_qty)
    return {k: v for k, v in out.items() if v}


@pytest.mark.parametrize("compacted", [False, True], ids=["one-segment", "after-compaction"])
async def test_ops_when_killed_with_sigkill_and_restarted_loses_and_doubles_nothing(
    engine: EngineServer, tmp_path: Path, compacted: bool
) -> None:
    port = free_port()
    # Compacted: a checkpoint at the first 1 KiB of journal, so the kill comes after a snapshot replaced segment 0.
    config = write_ops_config(tmp_path, engine.port, port, **({"journal_segment_bytes": 1024} if compacted else {}))
    log = tmp_path / "ops.log"
    proc = await start_ops(config, port, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ops_pb2_grpc.OpsServiceStub(channel)
            await wait_until(lambda: len(engine.core.manager.venues) > 0)
            decisions = []
            for i, (instrument, target) in enumerate(
                [("BTC-USD", 0.2), ("ETH-USD", -0.3), ("BTC-USD", -0.1), ("ETH-USD", 0.25)]
            ):
                for _ in range(100):  # the first signals may meet ops before it has its first quotes
                    try:
                        response = await stub.SubmitSignal(
                            ops_pb2.SubmitSignalRequest(
                                signal=ops_pb2.Signal(
                                    signal_id=f"k9-{i}", model_id="momentum_v1", instrument=instrument, target=target
                                )
                            ),
                            metadata=MOMENTUM_META,
                        )
                        decisions.append(response.decision)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert "STALE_MARK" in (exc.details() or ""), exc.details()
                        await asyncio.sleep(0.05)
        coids = {d.client_order_id for d in decisions}
        assert len(coids) == 4
        await wait_until(lambda: all(engine.core.manager.get_order(c) is not None for c in coids))
        await wait_until(lambda: all(engine.core.manager.get_order(c).is_terminal for c in coids))  # type: ignore[union-attr]
        expected = engine_positions(engine)
        assert expected, "nothing filled"
        if compacted:
            await wait_until(lambda: not (tmp_path / "ops" / "journal.bin").exists())
            assert list((tmp_path / "ops").glob("journal.0*.bin"))
        os.kill(proc.pid, signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL

        proc = await start_ops(config, port, log)
        deadline = asyncio.get_running_loop().time() + 10
        while await positions(port) != expected:
            assert asyncio.get_running_loop().time() < deadline, (await positions(port), expected)
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ops_pb2_grpc.OpsServiceStub(channel)
            again = await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(
                    signal=ops_pb2.Signal(signal_id="k9-0", model_id="momentum_v1", instrument="BTC-USD", target=0.2)
                ),
                metadata=MOMENTUM_META,
            )
            assert again.decision.status == ops_pb2.DECISION_STATUS_DUPLICATE
            fills = await stub.ListFills(
                ops_pb2.ListFillsRequest(model_id="momentum_v1", page_size=1000), metadata=MOMENTUM_META
            )
        engine_fills = {
            r.exec_id for r in engine.core.manager.list_executions(0, 5000) if r.client_order_id in coids and r.last_qty
        }
        assert sorted(f.exec_id for f in fills.fills if f.client_order_id in coids) == sorted(engine_fills)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
