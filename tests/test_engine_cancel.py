"""Cancels of finished orders answer a cancel reject; huge quantities are refused at parsing; paper size rails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from engine_server.server import EngineServer
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.status import from_rpc_error
from tests.conftest import ENGINE_TOKEN, flat_instruments, order_command, running_engine

META = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "cancel-session"))
Report = engine_pb2.ExecutionReport


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[EngineServer]:
    venues = [
        {"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()},
        {"name": "paper", "adapter": "paper", "follows": "sim"},
    ]
    rails = {"sim": {"max_order_qty": "50", "max_order_notional": "4000"}, "paper": {"max_messages_per_second": 100}}
    async with running_engine(tmp_path, venues=venues, rails=rails) as server:
        yield server


def new_order(coid: str, qty: str, price: str = "", venue: str = "sim") -> engine_pb2.OrderCommand:
    return order_command(coid, qty, price, venue=venue, account="a", model_id="m")


def cancel(coid: str) -> engine_pb2.OrderCommand:
    return engine_pb2.OrderCommand(cancel_order=engine_pb2.CancelOrder(client_order_id=coid))


class Session:
    """One StreamOrders session: send a command, wait for the report that answers it."""

    def __init__(self, stub: engine_pb2_grpc.EngineServiceStub) -> None:
        self._outbox: asyncio.Queue[engine_pb2.StreamOrdersRequest | None] = asyncio.Queue()
        self._call = stub.StreamOrders(self._frames(), metadata=META)

    async def _frames(self) -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
        while (frame := await self._outbox.get()) is not None:
            yield frame

    async def ask(self, command: engine_pb2.OrderCommand, answered: Callable[[Report], bool]) -> Report:
        self._outbox.put_nowait(engine_pb2.StreamOrdersRequest(commands=[command]))
        async with asyncio.timeout(5):
            async for frame in self._call:
                for report in frame.reports:
                    if answered(report):
                        return report
        raise AssertionError("stream ended without an answer")

    def close(self) -> None:
        self._outbox.put_nowait(None)
        self._call.cancel()


def of(coid: str, *exec_types: int) -> Callable[[Report], bool]:
    return lambda r: r.client_order_id == coid and r.exec_type in exec_types


FINAL = (engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_REJECTED)


async def test_cancel_on_stream_when_order_finished_answers_a_cancel_reject_in_band(engine: EngineServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        session = Session(engine_pb2_grpc.EngineServiceStub(channel))
        try:
            filled = await session.ask(new_order("f1", "1"), of("f1", *FINAL))
            assert filled.exec_type == engine_pb2.EXEC_TYPE_FILL
            late = await session.ask(cancel("f1"), of("f1", engine_pb2.EXEC_TYPE_REJECTED))
            assert (late.seq, late.error.kind, late.error.code) == (0, "venue_rejected", "TOO_LATE_TO_CANCEL")
            assert late.error.details["status"] == "FILLED"

            await session.ask(new_order("r1", "1", price="99.00"), of("r1", engine_pb2.EXEC_TYPE_ACCEPTED))
            done = await session.ask(cancel("r1"), of("r1", engine_pb2.EXEC_TYPE_CANCELED))
            assert done.seq > 0
            again = await session.ask(cancel("r1"), of("r1", engine_pb2.EXEC_TYPE_REJECTED))
            assert (again.seq, again.error.code) == (0, "ORDER_ALREADY_DONE")

            unknown = await session.ask(cancel("nope"), of("nope", engine_pb2.EXEC_TYPE_REJECTED))
            assert (unknown.seq, unknown.error.code) == (0, "ORDER_NOT_FOUND")
        finally:
            session.close()
    assert engine.metrics.malformed._value.get() == 1  # the unknown id; cancel rejects are answers, not malformed


async def test_cancel_unary_when_order_filled_unknown_or_resting_answers_status_codes(engine: EngineServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        stub = engine_pb2_grpc.EngineServiceStub(channel)
        session = Session(stub)
        # The session stays open: closing it would cancel r2 (cancel-on-disconnect).
        await session.ask(new_order("f2", "1"), of("f2", *FINAL))
        await session.ask(new_order("r2", "1", price="99.00"), of("r2", engine_pb2.EXEC_TYPE_ACCEPTED))
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.CancelOrder(engine_pb2.CancelOrderRequest(client_order_id="f2"), metadata=META)
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert from_rpc_error(late.value).code == "TOO_LATE_TO_CANCEL"  # type: ignore[union-attr]
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.CancelOrder(engine_pb2.CancelOrderRequest(client_order_id="nope"), metadata=META)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert from_rpc_error(unknown.value).code == "ORDER_NOT_FOUND"  # type: ignore[union-attr]
        response = await stub.CancelOrder(engine_pb2.CancelOrderRequest(client_order_id="r2"), metadata=META)
        assert [r.exec_type for r in response.reports] == [engine_pb2.EXEC_TYPE_CANCELED]
        with pytest.raises(grpc.aio.AioRpcError) as done:
            await stub.CancelOrder(engine_pb2.CancelOrderRequest(client_order_id="r2"), metadata=META)
        assert from_rpc_error(done.value).code == "ORDER_ALREADY_DONE"  # type: ignore[union-attr]
        session.close()


async def test_new_order_when_quantity_is_1e30_is_refused_at_parsing_as_invalid_quantity(engine: EngineServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        session = Session(engine_pb2_grpc.EngineServiceStub(channel))
        try:
            huge = await session.ask(new_order("huge", "1E+30"), of("huge", engine_pb2.EXEC_TYPE_REJECTED))
        finally:
            session.close()
    assert (huge.seq, huge.error.code, huge.error.field) == (0, "INVALID_QUANTITY", "quantity")
    assert engine.core.manager.get_order("huge") is None


async def test_paper_venue_when_order_exceeds_the_followed_venues_size_rails_is_rejected(engine: EngineServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        session = Session(engine_pb2_grpc.EngineServiceStub(channel))
        try:
            big = await session.ask(new_order("p-big", "60", venue="paper"), of("p-big", *FINAL))
            rich = await session.ask(new_order("p-rich", "45", venue="paper"), of("p-rich", *FINAL))
            fine = await session.ask(new_order("p-ok", "1", venue="paper"), of("p-ok", *FINAL))
        finally:
            session.close()
    assert (big.exec_type, big.error.code) == (engine_pb2.EXEC_TYPE_REJECTED, "MAX_ORDER_QTY")
    assert (rich.exec_type, rich.error.code) == (engine_pb2.EXEC_TYPE_REJECTED, "MAX_ORDER_NOTIONAL")
    assert fine.exec_type == engine_pb2.EXEC_TYPE_FILL
