"""Undecodable request bytes answer INVALID_ARGUMENT (MALFORMED_REQUEST) on unary calls and end streams with it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.status import from_rpc_error
from tests.conftest import ENGINE_TOKEN, MOMENTUM_META, Mesh

# Field 1 with wire type 7, which does not exist: no protobuf message decodes this.
GARBAGE = b"\x0f\xff\xfe\x00garbage"
# Field 1 as a string holding invalid UTF-8.
BAD_UTF8 = b"\x0a\x02\xff\xfe"
ENGINE = (("x-engine-token", ENGINE_TOKEN), ("x-session-id", "garbage-session"))


def identity(data: bytes) -> bytes:
    return data


def assert_malformed(exc: grpc.aio.AioRpcError) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
    detail = from_rpc_error(exc)
    assert detail is not None and detail.code == "MALFORMED_REQUEST"


@pytest.mark.parametrize(
    ("target", "method", "payload"),
    [
        ("ops", "/nautilus.ops.v1.OpsService/SubmitSignal", GARBAGE),
        ("ops", "/nautilus.ops.v1.OpsService/GetPositions", GARBAGE),
        ("ops", "/nautilus.ops.v1.OpsAdminService/SetTradingState", GARBAGE),
        ("engine", "/nautilus.engine.v1.EngineService/ListExecutions", GARBAGE),
        ("engine", "/nautilus.engine.v1.MarketDataService/GetQuote", GARBAGE),
        ("engine", "/nautilus.engine.v1.MarketDataService/GetQuote", BAD_UTF8),  # instrument is field 1
    ],
)
async def test_unary_when_bytes_do_not_decode_answers_invalid_argument(
    mesh: Mesh, target: str, method: str, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    address = mesh.ops_address if target == "ops" else mesh.engine_address
    metadata = MOMENTUM_META if target == "ops" else ENGINE
    caplog.set_level(logging.WARNING, logger="nautilus_mesh.request_guard")
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(payload, metadata=metadata, timeout=10)
    assert_malformed(caught.value)
    lines = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(lines) == 1 and method in lines[0].getMessage()
    registry = mesh.ops.core.metrics.registry if target == "ops" else mesh.engine.metrics.registry
    assert registry.get_sample_value("malformed_requests_total", {"method": method}) == 1


@pytest.mark.parametrize(
    ("target", "method", "good"),
    [
        (
            "ops",
            "/nautilus.ops.v1.OpsService/StreamSignals",
            ops_pb2.StreamSignalsRequest(
                signals=[ops_pb2.Signal(signal_id="ok-1", model_id="momentum_v1", instrument="BTC-USD", target=0.0)]
            ).SerializeToString(),
        ),
        ("engine", "/nautilus.engine.v1.EngineService/StreamOrders", b""),
    ],
)
async def test_stream_when_a_frame_does_not_decode_ends_with_invalid_argument(
    mesh: Mesh, target: str, method: str, good: bytes
) -> None:
    address = mesh.ops_address if target == "ops" else mesh.engine_address
    metadata = MOMENTUM_META if target == "ops" else ENGINE

    async def frames() -> AsyncIterator[bytes]:
        yield good
        yield GARBAGE

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(method, request_serializer=identity, response_deserializer=identity)
        stream = call(frames(), metadata=metadata, timeout=15)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
    assert_malformed(caught.value)
    registry = mesh.ops.core.metrics.registry if target == "ops" else mesh.engine.metrics.registry
    assert registry.get_sample_value("malformed_requests_total", {"method": method}) == 1
