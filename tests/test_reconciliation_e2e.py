"""Reconciliation: reports missed while the order stream is down are applied exactly once after it returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc

from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2
from ops_server.server import OpsServer
from tests.conftest import (
    ENGINE_TOKEN,
    MOMENTUM_META,
    Mesh,
    ops_config,
    order_command,
    wait_until,
)
from tests.localhost import free_port


def engine_positions(mesh: Mesh, coids: set[str]) -> dict[tuple[str, str], Decimal]:
    """Net filled quantity per (model, instrument) of the given orders, from the engine's executions."""
    out: dict[tuple[str, str], Decimal] = {}
    for report in mesh.engine.core.manager.list_executions(0, 5000):
        if report.client_order_id in coids and report.last_qty > 0:
            signed = report.last_qty if report.side.value == "BUY" else -report.last_qty
            key = (report.model_id, report.symbol)
            out[key] = out.get(key, Decimal(0)) + signed
    return out


def ops_positions(core: object, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Decimal]:
    return {k: core.queries.position(*k) for k in keys}  # type: ignore[attr-defined]


async def submit(stub: object, signal_id: str, instrument: str, target: float) -> ops_pb2.SignalDecision:
    response = await stub.SubmitSignal(  # type: ignore[attr-defined]
        ops_pb2.SubmitSignalRequest(
            signal=ops_pb2.Signal(signal_id=signal_id, model_id="momentum_v1", instrument=instrument, target=target)
        ),
        metadata=MOMENTUM_META,
    )
    return response.decision


async def test_order_stream_when_dropped_during_fills_reconciles_exactly_once(mesh: Mesh) -> None:
    core = mesh.ops.core
    engine = mesh.engine.core
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        d1 = await submit(stub, "rc-1", "BTC-USD", 0.2)
        await wait_until(lambda: not core.queries.order(d1.client_order_id).open_quantity)

        # The network loses everything the engine sends to ops from now on...
        session = core.link.session_id
        lost = engine.sessions.pop(session)
        seq_before = engine.manager.last_seq
        decisions = [
            await submit(stub, f"rc-{i}", instrument, target)
            for i, (instrument, target) in enumerate(
                [("BTC-USD", -0.1), ("ETH-USD", 0.3), ("ETH-USD", -0.2), ("BTC-USD", 0.4)], start=2
            )
        ]
        assert all(d.status == ops_pb2.DECISION_STATUS_ACCEPTED for d in decisions)
        await wait_until(lambda: engine.manager.last_seq >= seq_before + 4)
        missed = {d.client_order_id for d in decisions}
        assert all(core.queries.order(c).filled == 0 for c in missed)  # nothing arrived at ops

        # ...then the stream drops. Ops reconnects and fetches what it missed with ListExecutions.
        reconnects = core.link.reconnects
        lost.put_nowait(None)
        await wait_until(lambda: core.link.reconnects > reconnects and core.engine_connected)
        await wait_until(lambda: all(not core.queries.order(c).open_quantity for c in missed))

    coids = {d1.client_order_id, *missed}
    expected = engine_positions(mesh, coids)
    assert ops_positions(core, set(expected)) == expected
    # Every fill exactly once: ops' fills are the engine's fill executions, no more, no less.
    engine_fills = {
        r.exec_id for r in engine.manager.list_executions(0, 5000) if r.client_order_id in coids and r.last_qty > 0
    }
    assert {f.exec_id for f in core.queries.fills("", 1000, "").items if f.client_order_id in coids} == engine_fills
    assert len([f for f in core.queries.fills("", 1000, "").items if f.client_order_id in coids]) == len(engine_fills)
    assert core.link.cursor.watermark == engine.manager.last_seq

    # Reconciling again changes nothing.
    assert await core.link.reconcile() == 0
    assert ops_positions(core, set(expected)) == expected


async def test_ops_when_restarted_on_its_journal_rebuilds_the_same_ledger(mesh: Mesh, tmp_path: Path) -> None:
    core = mesh.ops.core
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        decisions = [await submit(stub, f"rs-{i}", "BTC-USD", t) for i, t in enumerate((0.2, -0.1, 0.3))]
    coids = {d.client_order_id for d in decisions}
    await wait_until(lambda: all(not core.queries.order(c).open_quantity for c in coids))
    before = ops_positions(core, {("momentum_v1", "BTC-USD")})
    fills_before = {f.exec_id for f in core.queries.fills("", 1000, "").items}
    core.measurement.book("momentum_v1").day_start_equity = Decimal("123.45")  # the day began before the restart
    await mesh.ops.stop(grace=0.1)

    restarted = OpsServer(ops_config(tmp_path, mesh.engine.port))
    await restarted.start()
    try:
        await wait_until(lambda: restarted.core.engine_connected)
        assert ops_positions(restarted.core, {("momentum_v1", "BTC-USD")}) == before
        assert {f.exec_id for f in restarted.core.queries.fills("", 1000, "").items} == fills_before
        assert restarted.core.link.cursor.watermark == mesh.engine.core.manager.last_seq
        # Daily-loss limits keep counting from the same day start.
        assert restarted.core.measurement.book("momentum_v1").day_start_equity == Decimal("123.45")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            stub = ops_pb2_grpc_stub(channel)
            again = await submit(stub, "rs-0", "BTC-USD", 0.2)
        assert again.status == ops_pb2.DECISION_STATUS_DUPLICATE  # the decision survived the restart
    finally:
        await restarted.stop(grace=0.1)
        mesh.ops = restarted  # the fixture stops it again harmlessly


def ops_pb2_grpc_stub(channel: grpc.aio.Channel) -> object:
    from nautilus_mesh.api.ops.v1 import ops_pb2_grpc

    return ops_pb2_grpc.OpsServiceStub(channel)


async def test_engine_session_when_dropped_cancels_its_resting_orders(mesh: Mesh) -> None:
    manager = mesh.engine.core.manager
    outbox: asyncio.Queue[engine_pb2.StreamOrdersRequest | None] = asyncio.Queue()

    async def commands() -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
        while (frame := await outbox.get()) is not None:
            yield frame

    mid = mesh.ops.core.queries.mark("ETH-USD")
    assert mid is not None
    price = str((mid * Decimal("0.99")).quantize(Decimal("0.01")))
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        call = engine.StreamOrders(commands(), metadata=(("x-engine-token", ENGINE_TOKEN), ("x-session-id", "desk-1")))
        await outbox.put(
            engine_pb2.StreamOrdersRequest(
                commands=[order_command("cod-1", "1", price, account="desk", model_id="manual", instrument="ETH-USD")]
            )
        )
        await wait_until(lambda: [o.client_order_id for o in manager.open_orders()] == ["cod-1"])
        call.cancel()  # the session's connection drops
    await wait_until(lambda: manager.open_orders() == [])
    assert manager.get_order("cod-1").status.value == "CANCELED"  # type: ignore[union-attr]


async def test_ops_when_started_before_the_engine_loses_no_order_after_connecting(tmp_path: Path) -> None:
    from engine_server.server import EngineServer
    from tests.conftest import engine_config

    port = free_port()  # nobody listens there yet
    ops = OpsServer(ops_config(tmp_path, port))
    await ops.start()
    engine = EngineServer(engine_config(tmp_path, port=port))
    try:
        await wait_until(lambda: ops.core.link.reconnects >= 3)  # several failed attempts first
        await engine.start()
        await wait_until(lambda: ops.core.engine_connected and len(ops.core.queries.marks()) >= 3)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ops.port}") as channel:
            stub = ops_pb2_grpc_stub(channel)
            decisions = [await submit(stub, f"late-{i}", "BTC-USD", t) for i, t in enumerate((0.1, 0.2, 0.3))]
        coids = [d.client_order_id for d in decisions]
        assert all(d.status == ops_pb2.DECISION_STATUS_ACCEPTED for d in decisions)
        await wait_until(lambda: all(engine.core.manager.get_order(c) is not None for c in coids))
        await wait_until(lambda: all(not ops.core.queries.order(c).open_quantity for c in coids))
    finally:
        await ops.stop(grace=0.1)
        await engine.stop(grace=0.1)
