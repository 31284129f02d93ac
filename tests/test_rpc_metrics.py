"""grpc_server_handled_total / grpc_server_handling_seconds on real servers; known label sets start at zero."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import MOMENTUM_META, Mesh, wait_until

OPS = "nautilus.ops.v1.OpsService"
ENGINE = "nautilus.engine.v1.EngineService"


def handled(mesh: Mesh, method: str, code: str, service: str = OPS) -> float | None:
    registry = mesh.ops.core.metrics.registry if service.startswith("nautilus.ops") else mesh.engine.metrics.registry
    return registry.get_sample_value(
        "grpc_server_handled_total", {"grpc_service": service, "grpc_method": method, "grpc_code": code}
    )


def handling_count(mesh: Mesh, method: str, service: str = OPS) -> float | None:
    return mesh.ops.core.metrics.registry.get_sample_value(
        "grpc_server_handling_seconds_count", {"grpc_service": service, "grpc_method": method}
    )


async def test_rpc_metrics_when_servers_start_have_every_method_at_zero(mesh: Mesh) -> None:
    assert handled(mesh, "GetAllocations", "OK") == 0
    assert handled(mesh, "StreamSignals", "OK") == 0
    assert handled(mesh, "SetTradingState", "OK", "nautilus.ops.v1.OpsAdminService") == 0
    assert handled(mesh, "ListVenues", "OK", ENGINE) is not None
    assert handled(mesh, "StreamQuotes", "OK", "nautilus.engine.v1.MarketDataService") is not None


async def test_unary_rpc_when_answered_or_refused_is_counted_by_code_and_timed(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        await stub.GetAllocations(ops_pb2.GetAllocationsRequest(), metadata=MOMENTUM_META, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetAllocations(ops_pb2.GetAllocationsRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert handled(mesh, "GetAllocations", "OK") == 1
    assert handled(mesh, "GetAllocations", "UNAUTHENTICATED") == 1
    assert handling_count(mesh, "GetAllocations") == 2


async def test_stream_when_it_ends_is_counted_once_with_its_code(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        call = stub.StreamSignals(iter([ops_pb2.StreamSignalsRequest()]), metadata=MOMENTUM_META)
        async for _ in call:
            pass
        assert await call.code() == grpc.StatusCode.OK
        await wait_until(lambda: handled(mesh, "StreamSignals", "OK") == 1)
        assert handling_count(mesh, "StreamSignals") == 1

        cancelled = stub.StreamSignals(metadata=MOMENTUM_META)
        await cancelled.write(ops_pb2.StreamSignalsRequest())
        await asyncio.sleep(0.2)
        cancelled.cancel()
        await wait_until(lambda: handled(mesh, "StreamSignals", "CANCELLED") == 1)

        refused = stub.StreamSignals(iter([ops_pb2.StreamSignalsRequest()]))
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in refused:
                pass
        await wait_until(lambda: handled(mesh, "StreamSignals", "UNAUTHENTICATED") == 1)
    assert handled(mesh, "StreamSignals", "OK") == 1


async def test_model_metrics_when_ops_starts_exist_at_zero_for_every_configured_model(mesh: Mesh) -> None:
    registry = mesh.ops.core.metrics.registry
    for model in ("momentum_v1", "momentum_v2", "meanrev_v1"):
        for status in ("ACCEPTED", "REJECTED", "NO_ACTION"):
            assert registry.get_sample_value("signal_decisions_total", {"model": model, "status": status}) == 0
        assert registry.get_sample_value("signals_received_total", {"model": model}) == 0
        assert registry.get_sample_value("fills_total", {"model": model}) == 0
    assert registry.get_sample_value("orders_submitted_total", {"venue": "sim"}) == 0
