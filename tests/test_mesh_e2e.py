"""End to end on real servers: a strategy's signal becomes an order, a fill and a position."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import grpc

from clients.trace_stages import HOPS
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.files import read_jsonl
from nautilus_mesh.telemetry import Tracing, trace_id_of
from tests.conftest import ENGINE_TOKEN, MOMENTUM_META, Mesh, order_command, wait_until


def signal(signal_id: str, target: float, model: str = "momentum_v1", instrument: str = "BTC-USD") -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id=model, instrument=instrument, target=target, confidence=1.0)


async def test_signal_when_streamed_becomes_order_fill_and_position_in_one_trace(mesh: Mesh, tmp_path: Path) -> None:
    strategy_tracing = Tracing("strategy-momentum", tmp_path / "spans" / "strategy.jsonl")
    sig = signal("e2e-1", 0.5)
    with strategy_tracing.produce("strategy.signal send", sig.trace, {"nautilus.signal_id": "e2e-1"}):
        pass_through_trace = sig.trace.traceparent
    requests: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()

    async def outgoing():  # type: ignore[no-untyped-def]
        while (item := await requests.get()) is not None:
            yield item

    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        call = stub.StreamSignals(outgoing(), metadata=MOMENTUM_META)
        await requests.put(ops_pb2.StreamSignalsRequest(signals=[sig]))
        decisions: list[ops_pb2.SignalDecision] = []
        fills: list[ops_pb2.Fill] = []
        async for frame in call:
            decisions.extend(frame.decisions)
            for fill in frame.fills:
                with strategy_tracing.consume(
                    "strategy.fill receive", fill.trace, {"nautilus.signal_id": fill.signal_id}
                ):
                    fills.append(fill)
            tracked = mesh.ops.core.queries.order(decisions[0].client_order_id) if decisions else None
            filled = sum(Decimal(f.quantity) for f in fills)
            if tracked is not None and tracked.open_quantity == 0 and fills and filled == tracked.filled:
                break
        await requests.put(None)
        call.cancel()

        decision = decisions[0]
        assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED, decision
        assert decision.mode == ops_pb2.ROUTING_MODE_LIVE
        assert decision.side == common_pb2.SIDE_BUY
        assert Decimal(decision.quantity) > 0
        assert all(f.client_order_id == decision.client_order_id and f.model_id == "momentum_v1" for f in fills)

        # The engine executed exactly this order once; a market order may fill partly against the book's depth.
        order = mesh.engine.core.manager.get_order(decision.client_order_id)
        filled = sum(Decimal(f.quantity) for f in fills)
        assert order is not None and order.filled_qty == filled and 0 < filled <= Decimal(decision.quantity)

        positions = await stub.GetPositions(ops_pb2.GetPositionsRequest(model_id="momentum_v1"), metadata=MOMENTUM_META)
        btc = [p for p in positions.positions if p.instrument == "BTC-USD"]
        assert len(btc) == 1 and Decimal(btc[0].quantity) == filled
        async with grpc.aio.insecure_channel(mesh.engine_address) as engine_channel:
            venues = await engine_pb2_grpc.EngineServiceStub(engine_channel).ListVenues(
                engine_pb2.ListVenuesRequest(), metadata=(("x-engine-token", ENGINE_TOKEN),)
            )
        specs = [i for v in venues.venues for i in v.instrument_specs if i.instrument == "BTC-USD"]
        tick = Decimal(specs[0].tick_size)
        assert Decimal(btc[0].avg_cost) == Decimal(btc[0].avg_cost).quantize(tick)  # no digits beyond the tick

    # One trace from the strategy through ops and the engine and back.
    strategy_tracing.force_flush()
    mesh.ops.core.tracing.force_flush()
    mesh.engine.tracing.force_flush()
    trace_id = trace_id_of(pass_through_trace)
    spans = [s for f in (tmp_path / "spans").glob("*.jsonl") for s in read_jsonl(f)]
    services = {s["service"] for s in spans if s["trace_id"] == trace_id}
    assert {"strategy-momentum", "ops", "engine"} <= services
    names = {s["name"] for s in spans if s["trace_id"] == trace_id}
    assert set(HOPS) <= names
    # The stable model's paper twin (the demo canary is in shadow) rode the same trace unsampled: no span of its own.
    twins = mesh.ops.core.queries.orders("momentum_v1@paper", 10, "").items
    twin = [mesh.ops.core.queries.order(o.client_order_id) for o in twins if o.signal_id == "e2e-1"]
    assert len(twin) == 1 and twin[0] is not None and twin[0].traceparent.endswith("-00"), twins
    assert trace_id_of(twin[0].traceparent) == trace_id
    span_models = {s["attributes"].get("nautilus.model_id") for s in spans if s["trace_id"] == trace_id}
    assert "momentum_v1" in span_models and "momentum_v1@paper" not in span_models
    strategy_tracing.shutdown()


async def test_duplicate_signal_id_when_resent_does_not_double_the_position(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        first = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("dup-1", 0.25)), metadata=MOMENTUM_META
        )
        second = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("dup-1", 0.25)), metadata=MOMENTUM_META
        )
        assert first.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
        assert second.decision.status == ops_pb2.DECISION_STATUS_DUPLICATE
        assert second.decision.client_order_id == first.decision.client_order_id
        core = mesh.ops.core
        await wait_until(lambda: core.queries.order(first.decision.client_order_id).open_quantity == 0)
        position = core.queries.position("momentum_v1", "BTC-USD")
        assert 0 < position <= Decimal(first.decision.quantity)
        # A new signal id with the same target converges on the target instead of doubling it.
        third = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("dup-2", 0.25)), metadata=MOMENTUM_META
        )
        assert third.decision.status in (ops_pb2.DECISION_STATUS_NO_ACTION, ops_pb2.DECISION_STATUS_ACCEPTED)
        if third.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED:
            await wait_until(lambda: core.queries.order(third.decision.client_order_id).open_quantity == 0)
        final = core.queries.position("momentum_v1", "BTC-USD")
        assert final <= Decimal(first.decision.quantity) * Decimal("1.05")
    # One order at the engine for the duplicated signal, and the position is what it filled, once.
    order = mesh.engine.core.manager.get_order(first.decision.client_order_id)
    assert order is not None and order.filled_qty == position


async def test_duplicate_client_order_id_at_engine_when_resent_executes_once(mesh: Mesh) -> None:
    core = mesh.ops.core
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        first = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("coid-1", 0.2)), metadata=MOMENTUM_META
        )
    coid = first.decision.client_order_id
    await wait_until(lambda: core.queries.order(coid).open_quantity == 0)
    position = core.queries.position("momentum_v1", "BTC-USD")
    manager = mesh.engine.core.manager
    reports_before = manager.reports_for(coid)
    # Re-send the very same order on another engine session: the engine answers with the existing reports.
    resend = order_command(coid, first.decision.quantity)
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        call = engine.StreamOrders(
            iter([engine_pb2.StreamOrdersRequest(commands=[resend])]),
            metadata=(("x-engine-token", ENGINE_TOKEN),),
        )
        async for frame in call:
            assert [r.seq for r in frame.reports] == [r.seq for r in reports_before]
            break
        call.cancel()
    assert manager.reports_for(coid) == reports_before
    assert manager.get_order(coid).filled_qty == position  # type: ignore[union-attr]
    assert core.queries.position("momentum_v1", "BTC-USD") == position


async def test_engine_when_order_stream_has_no_token_refuses_it(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        for metadata in ((), (("x-engine-token", "wrong"),)):
            call = engine.StreamOrders(iter([engine_pb2.StreamOrdersRequest()]), metadata=metadata)
            try:
                async for _ in call:
                    raise AssertionError("the engine streamed to an unauthenticated session")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            else:
                raise AssertionError("the engine accepted an order stream without ops' token")
    assert mesh.engine.core.manager.last_seq == 0


async def test_strategy_token_for_one_model_when_signalling_another_is_refused(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        try:
            await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal("x-1", 0.1, model="meanrev_v1", instrument="SOL-USD")),
                metadata=MOMENTUM_META,
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "MODEL_NOT_ALLOWED" in (exc.details() or "")
        else:
            raise AssertionError("a momentum token signalled for meanrev_v1")


async def test_signal_when_its_trace_is_unsampled_costs_no_span_and_carries_the_context_on(
    mesh: Mesh, tmp_path: Path
) -> None:
    unsampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
    sig = signal("unsampled-1", 0.2)
    sig.trace.traceparent = unsampled
    principal = mesh.ops.core.auth.authenticate(MOMENTUM_META)
    decision = mesh.ops.core.signals.handle(sig, principal)
    assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert decision.trace.traceparent == unsampled  # the order carries the strategy's decision on
    order = mesh.ops.core.queries.order(decision.client_order_id)
    assert order is not None
    await wait_until(lambda: order.open_quantity == 0)
    mesh.ops.core.tracing.force_flush()
    mesh.engine.tracing.force_flush()
    spans = [s for f in (tmp_path / "spans").glob("*.jsonl") for s in read_jsonl(f)]
    assert not [s for s in spans if s["trace_id"] == "ab" * 16]
    assert mesh.engine.core.manager.get_order(decision.client_order_id) is not None  # it did trade
    fills = [f for f in mesh.ops.core.queries.fills("momentum_v1", 100, "").items if f.signal_id == "unsampled-1"]
    assert fills and all(f.trace.traceparent == unsampled for f in fills)  # the fill carries it on to the strategy
