"""The engine's gRPC service alone: venue rails answered in-band, reconciliation pages, queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from engine_server.server import EngineServer
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.status import from_rpc_error
from tests.conftest import ENGINE_TOKEN, flat_instruments, order_command, running_engine, wait_until

META = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "test-session"))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[EngineServer]:
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    rails = {
        "sim": {
            "price_collar_bps": "100",
            "max_order_qty": "50",
            "max_order_notional": "4000",
            "max_messages_per_second": 1,
            "message_burst": 4,
        }
    }
    async with running_engine(tmp_path, venues=venues, rails=rails) as server:
        yield server


def new_order(coid: str, qty: str, price: str = "", side: int = common_pb2.SIDE_BUY) -> engine_pb2.OrderCommand:
    return order_command(coid, qty, price, side=side, tif=common_pb2.TIME_IN_FORCE_IOC, account="a", model_id="m")


async def exchange(engine: EngineServer, commands: list[engine_pb2.OrderCommand]) -> list[engine_pb2.ExecutionReport]:
    """Send one frame per command and collect every report until each order is final (or rejected in-band)."""
    outbox: asyncio.Queue[engine_pb2.StreamOrdersRequest | None] = asyncio.Queue()
    for command in commands:
        outbox.put_nowait(engine_pb2.StreamOrdersRequest(commands=[command]))

    async def frames() -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
        while (frame := await outbox.get()) is not None:
            yield frame

    final = {
        engine_pb2.EXEC_TYPE_FILL,
        engine_pb2.EXEC_TYPE_CANCELED,
        engine_pb2.EXEC_TYPE_REJECTED,
        engine_pb2.EXEC_TYPE_EXPIRED,
    }
    reports: list[engine_pb2.ExecutionReport] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        call = engine_pb2_grpc.EngineServiceStub(channel).StreamOrders(frames(), metadata=META)
        done: set[str] = set()
        async for frame in call:
            reports.extend(frame.reports)
            done |= {r.client_order_id for r in frame.reports if r.exec_type in final}
            if len(done) == len(commands):
                break
        outbox.put_nowait(None)
        call.cancel()
    return reports


async def test_venue_rails_when_breached_reject_in_band_and_the_engine_keeps_serving(engine: EngineServer) -> None:
    reports = await exchange(
        engine,
        [
            new_order("collar", "1", price="103.00"),  # 300 bps from the 100.00 reference, collar is 100
            new_order("too-big", "60"),  # max quantity 50
            new_order("too-rich", "45", price="100.02"),  # 4501 notional, max 4000
            new_order("ok-1", "1"),
            new_order("rate", "1"),  # the 5th order inside a second: the bucket holds 4
        ],
    )
    rejected = {r.client_order_id: r.error.code for r in reports if r.exec_type == engine_pb2.EXEC_TYPE_REJECTED}
    assert rejected == {
        "collar": "PRICE_COLLAR",
        "too-big": "MAX_ORDER_QTY",
        "too-rich": "MAX_ORDER_NOTIONAL",
        "rate": "RATE_LIMITED",
    }
    assert all(r.seq > 0 for r in reports)  # rail rejections are journaled executions with a seq
    fills = [r for r in reports if r.client_order_id == "ok-1" and r.exec_type == engine_pb2.EXEC_TYPE_FILL]
    assert len(fills) == 1 and Decimal(fills[0].cum_qty) == 1
    metrics = engine.metrics.venue_rejections
    assert metrics.labels("sim", "price_collar")._value.get() == 1
    assert metrics.labels("sim", "message_rate")._value.get() == 1


async def test_malformed_command_when_sent_is_answered_in_band_without_seq(engine: EngineServer) -> None:
    reports = await exchange(engine, [new_order("bad-qty", "-3"), new_order("fine", "1")])
    bad = [r for r in reports if r.client_order_id == "bad-qty"]
    assert len(bad) == 1 and bad[0].seq == 0
    assert (bad[0].error.kind, bad[0].error.code, bad[0].error.field) == (
        "validation_failed",
        "INVALID_QUANTITY",
        "quantity",
    )
    assert engine.core.manager.get_order("bad-qty") is None
    assert engine.core.manager.get_order("fine") is not None


async def test_list_executions_when_paged_returns_every_report_once_in_seq_order(engine: EngineServer) -> None:
    await exchange(
        engine,
        [new_order(f"p-{i}", "1", side=common_pb2.SIDE_BUY if i % 2 else common_pb2.SIDE_SELL) for i in range(4)],
    )
    last = engine.core.manager.last_seq
    seqs: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        stub = engine_pb2_grpc.EngineServiceStub(channel)
        token = ""
        while True:
            page = await stub.ListExecutions(
                engine_pb2.ListExecutionsRequest(since_seq=0, page_size=3, page_token=token), metadata=META
            )
            assert page.last_seq == last
            seqs.extend(r.seq for r in page.reports)
            token = page.next_page_token
            if not token:
                break
        order = await stub.GetOrder(engine_pb2.GetOrderRequest(client_order_id="p-1"), metadata=META)
        assert order.order.status == engine_pb2.ORDER_STATUS_FILLED and order.order.filled_qty == "1"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(engine_pb2.GetOrderRequest(client_order_id="nope"), metadata=META)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.GetOrder(engine_pb2.GetOrderRequest(client_order_id=""), metadata=META)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(empty.value).code == "MISSING_FIELD"  # type: ignore[union-attr]
        venues = await stub.ListVenues(engine_pb2.ListVenuesRequest(), metadata=META)
        assert [(v.name, v.kind, v.connected) for v in venues.venues] == [("sim", "live", True)]
        assert {s.instrument: s.lot_size for s in venues.venues[0].instrument_specs}["BTC-USD"] == "0.01"
    assert seqs == list(range(1, last + 1))


async def test_list_executions_when_asked_for_5000_serves_up_to_5000_a_page(tmp_path: Path) -> None:
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    async with running_engine(tmp_path, venues=venues) as engine:
        engine.core.sessions["bulk"] = asyncio.Queue()
        engine.core.execute([order_command(f"b-{i}", "0.01") for i in range(600)], "bulk")  # 1,200 reports
        async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            page = await stub.ListExecutions(engine_pb2.ListExecutionsRequest(page_size=5000), metadata=META)
            default = await stub.ListExecutions(engine_pb2.ListExecutionsRequest(), metadata=META)
    assert len(page.reports) == page.last_seq == 1200 and page.next_page_token == ""  # not cut at 1,000
    assert len(default.reports) == 500 and default.next_page_token == "500"


async def test_list_executions_when_the_page_token_is_not_one_it_issued_answers_invalid_page_token(
    engine: EngineServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        stub = engine_pb2_grpc.EngineServiceStub(channel)
        for token in ("-5", " 3 ", "1_0", "\u0663", "9" * 40, "abc"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListExecutions(engine_pb2.ListExecutionsRequest(page_token=token), metadata=META)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token
            assert from_rpc_error(refused.value).code == "INVALID_PAGE_TOKEN", token  # type: ignore[union-attr]
        assert (
            await stub.ListExecutions(engine_pb2.ListExecutionsRequest(page_token="0"), metadata=META)
        ).last_seq >= 0


def sample(engine: EngineServer, name: str, **labels: str) -> float:
    value = engine.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_execute_when_frame_of_orders_then_one_reports_frame_and_metric_counts_match(
    engine: EngineServer,
) -> None:
    core = engine.core
    queue: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue()
    core.sessions["frame-test"] = queue
    commands = [new_order(f"f{i}", "1", side=common_pb2.SIDE_BUY if i % 2 else common_pb2.SIDE_SELL) for i in range(3)]
    commands.append(new_order("f-rejected", "60"))  # beyond max_order_qty: a rail rejects it
    assert core.execute(commands, "frame-test") == []
    frame = queue.get_nowait()
    assert queue.empty() and frame is not None  # one reports frame for the commands frame
    by_type: dict[str, int] = {}
    for report in frame:
        name = engine_pb2.ExecType.Name(report.exec_type).removeprefix("EXEC_TYPE_")
        by_type[name] = by_type.get(name, 0) + 1
    assert sample(engine, "engine_orders_total", venue="sim") == 4
    for exec_type, count in by_type.items():
        assert sample(engine, "execution_reports_total", venue="sim", exec_type=exec_type) == count
    fills = sum(1 for r in frame if r.exec_type in (engine_pb2.EXEC_TYPE_FILL, engine_pb2.EXEC_TYPE_PARTIAL_FILL))
    assert fills and sample(engine, "engine_fills_total", venue="sim") == fills
    assert sample(engine, "engine_last_seq") == max(r.seq for r in frame)
    assert [r.seq for r in frame] == sorted(r.seq for r in frame)


async def test_engine_when_restarted_then_seq_and_orders_gauges_show_the_replayed_journal(tmp_path: Path) -> None:
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    async with running_engine(tmp_path, venues=venues) as first:
        first.core.sessions["restart-test"] = asyncio.Queue()
        assert first.core.execute([new_order(f"r{i}", "1") for i in range(3)], "restart-test") == []
        await wait_until(lambda: sample(first, "engine_last_seq") > 0, within=2)  # set once the frame is durable
        last_seq, in_memory = sample(first, "engine_last_seq"), sample(first, "engine_orders_in_memory")
    assert in_memory == 3 and last_seq == first.core.manager.last_seq
    async with running_engine(tmp_path, venues=venues) as second:  # the same journal, replayed; no new report yet
        assert sample(second, "engine_journal_replayed_records") > 0
        assert second.core.manager.last_seq == last_seq
        assert sample(second, "engine_last_seq") == last_seq
        assert sample(second, "engine_orders_in_memory") == in_memory


@pytest.mark.parametrize("fsync", ["never", "batch"])
async def test_stream_orders_when_the_client_half_closes_after_a_frame_still_sends_its_reports(
    tmp_path: Path, fsync: str
) -> None:
    """What grpcurl -d does (docs/api.md): one commands frame, then the send side closed. Under group commit the
    reports wait for their fsync; the stream ended before they were sent, with none."""
    venues = [{"name": "sim", "adapter": "sim", "seed": 3, "instruments": flat_instruments()}]
    async with running_engine(tmp_path, venues=venues, journal_fsync=fsync) as engine:
        request = engine_pb2.StreamOrdersRequest(commands=[new_order("hc-1", "1"), new_order("hc-bad", "-1")])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
            stub = engine_pb2_grpc.EngineServiceStub(channel)
            frames = [list(f.reports) async for f in stub.StreamOrders(iter([request]), metadata=META)]
    reports = [r for frame in frames for r in frame]
    kinds = [(r.client_order_id, engine_pb2.ExecType.Name(r.exec_type)) for r in reports]
    assert ("hc-1", "EXEC_TYPE_FILL") in kinds and ("hc-bad", "EXEC_TYPE_REJECTED") in kinds, kinds
    assert len(frames) == 1  # one commands frame, one reports frame
    assert kinds[-1] == ("hc-bad", "EXEC_TYPE_REJECTED")  # in the order made: the in-band refusal after the order's


async def test_execute_when_an_order_is_sent_again_on_another_session_answers_it_there_and_counts_it_once(
    engine: EngineServer,
) -> None:
    """Ops reconnects under a new session id and sends its unacknowledged orders again: the repeat's reports go to the
    session that asked (the first one is gone), and the report and fill counters do not count them twice."""
    core = engine.core
    first: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue()
    core.sessions["first"] = first
    assert core.execute([new_order("again-1", "1")], "first") == []
    original = first.get_nowait()
    assert original is not None and {r.client_order_id for r in original} == {"again-1"}
    fills = sample(engine, "engine_fills_total", venue="sim")
    reports = sample(engine, "execution_reports_total", venue="sim", exec_type="FILL")
    core.close_session("first")
    core.sessions["second"] = asyncio.Queue()
    answers = core.execute([new_order("again-1", "1")], "second")
    assert [(r.seq, r.exec_type) for r in answers] == [(r.seq, r.exec_type) for r in original]
    assert sample(engine, "engine_fills_total", venue="sim") == fills
    assert sample(engine, "execution_reports_total", venue="sim", exec_type="FILL") == reports
