"""Rejections stay small whatever the input: bounded fields, clipped echoes, small trailers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.errors import RiskRejectedError, ValidationError
from nautilus_mesh.status import error_detail, from_rpc_error, to_rpc_status
from tests.conftest import MOMENTUM_META, Mesh


@pytest.mark.parametrize(
    "error",
    [
        ValidationError("INVALID_ID", "x" * 1_000_000, {"value": "y" * 1_000_000}, field="instrument"),
        RiskRejectedError("INVALID_QUOTE", "q" * 100_000, {f"k{i}": "v" * 1000 for i in range(1000)}),
    ],
)
def test_rich_status_when_the_message_is_huge_stays_small(error: ValidationError) -> None:
    status = to_rpc_status(error)
    assert len(status.SerializeToString()) < 4096
    assert "...[+" in status.message
    detail = error_detail(error)
    assert len(detail.SerializeToString()) < 4096


async def test_submit_signal_when_instrument_is_3000_chars_answers_a_small_invalid_argument(mesh: Mesh) -> None:
    signal = ops_pb2.Signal(signal_id="long-1", model_id="momentum_v1", instrument="B" * 3000, target=0.1)
    async with mesh.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.ops_stub(channel).SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal), metadata=MOMENTUM_META
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = from_rpc_error(caught.value)
    assert detail is not None and (detail.code, detail.field) == ("FIELD_TOO_LONG", "instrument")
    trailers = caught.value.trailing_metadata() or ()
    assert sum(len(k) + len(v) for k, v in trailers) < 4096


async def test_stream_when_one_signal_is_megabytes_rejects_it_in_band_and_keeps_the_stream(mesh: Mesh) -> None:
    frames: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
    huge = ops_pb2.Signal(signal_id="huge-1", model_id="momentum_v1", instrument="B" * 2_200_000, target=0.1)
    fine = ops_pb2.Signal(signal_id="fine-1", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
    frames.put_nowait(ops_pb2.StreamSignalsRequest(signals=[huge]))

    async def requests() -> AsyncIterator[ops_pb2.StreamSignalsRequest]:
        while (frame := await frames.get()) is not None:
            yield frame

    decisions: list[ops_pb2.SignalDecision] = []
    async with mesh.channel() as channel:
        call = mesh.ops_stub(channel).StreamSignals(requests(), metadata=MOMENTUM_META)
        async for response in call:
            decisions.extend(response.decisions)
            if len(decisions) == 1:
                frames.put_nowait(ops_pb2.StreamSignalsRequest(signals=[fine]))
            if len(decisions) == 2:
                break
        frames.put_nowait(None)
        call.cancel()
    assert decisions[0].status == ops_pb2.DECISION_STATUS_REJECTED
    assert decisions[0].error.code == "FIELD_TOO_LONG" and decisions[0].ByteSize() < 4096
    assert decisions[1].signal_id == "fine-1" and decisions[1].status != ops_pb2.DECISION_STATUS_REJECTED
