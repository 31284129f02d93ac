"""Values from the wire cannot forge log lines or make them unbounded (real ops process, real log)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients.sdk import wait_serving
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.log_safety import MAX_FIELD_CHARS, SafeLogFilter
from tests.localhost import free_ports
from tests.processes import server_process, write_engine_json, write_ops_json

ROOT = Path(__file__).resolve().parent.parent
FORGED = "2026-01-01 00:00:00,000 CRITICAL ops_server.core [OPS] KILL SWITCH ENGAGED by admin"


def test_filter_when_args_hold_controls_and_megabytes_writes_one_bounded_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SafeLogFilter())
    logger = logging.getLogger("test_log_injection.unit")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("signal %s refused: %s (%d)", "a\nb\x00c\x1b[31m", "I" * 1_000_000, 7)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "a\\nb\\x00c\\x1b[31m" in text
    assert len(text) < MAX_FIELD_CHARS + 200 and "...[+999744 chars]" in text and text.endswith("(7)\n")


@pytest.mark.timeout(90)
async def test_ops_log_when_signal_id_holds_a_newline_keeps_one_line_per_record(tmp_path: Path) -> None:
    port, engine_port = free_ports(2)
    config = write_ops_json(tmp_path, port, engine_port, tracing=False)
    log_path = tmp_path / "ops.log"
    with server_process(["ops_server", "--config", str(tmp_path / "ops.json")], log_path):
        await wait_serving(f"127.0.0.1:{port}", 30)
        signal = ops_pb2.Signal(
            signal_id=f"s-1\n{FORGED}\x00\x1b[2J", model_id="momentum_v1", instrument="BTC-USD", target=0.1
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ops_pb2_grpc.OpsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.SubmitSignal(
                    ops_pb2.SubmitSignalRequest(signal=signal),
                    metadata=(("x-strategy-token", config["strategies"]["momentum"]["token"]),),
                )
    lines = log_path.read_bytes().decode("utf-8").splitlines()
    assert any("s-1\\n2026-01-01" in line and "KILL SWITCH" in line for line in lines)  # one line, escaped
    assert not any(line.startswith(FORGED[:24]) for line in lines)
    assert not any("\x00" in line or "\x1b" in line for line in lines)


@pytest.mark.timeout(90)
async def test_engine_log_when_client_order_id_holds_a_newline_keeps_one_line_per_record(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    write_engine_json(tmp_path, port)
    log_path = tmp_path / "engine.log"
    with server_process(["engine_server", "--config", str(tmp_path / "engine.json")], log_path):
        await wait_serving(f"127.0.0.1:{port}", 30)
        bad = engine_pb2.NewOrder(
            client_order_id=f"c-1\n{FORGED}\x00\x1b[2J",
            venue="sim",
            instrument="BTC-USD",
            side=common_pb2.SIDE_BUY,
            order_type=common_pb2.ORDER_TYPE_MARKET,
            quantity="not a number",
        )

        async def frames() -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
            yield engine_pb2.StreamOrdersRequest(commands=[engine_pb2.OrderCommand(new_order=bad)])

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = engine_pb2_grpc.EngineServiceStub(channel).StreamOrders(
                frames(), metadata=(("x-engine-token", "log-test-token"),)
            )
            async for response in call:
                assert response.reports[0].exec_type == engine_pb2.EXEC_TYPE_REJECTED
                break
            call.cancel()
    lines = log_path.read_bytes().decode("utf-8").splitlines()
    assert any("c-1\\n2026-01-01" in line and "KILL SWITCH" in line for line in lines)  # one line, escaped
    assert not any(line.startswith(FORGED[:24]) for line in lines)
    assert not any("\x00" in line or "\x1b" in line for line in lines)
