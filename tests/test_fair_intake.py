"""A flooding strategy does not stall the others (frames decided in slices that take turns), and an optional
per-strategy signal rate at intake refuses the excess in-band."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import MEANREV_TOKEN, MOMENTUM_TOKEN, running_mesh, start_mesh, stop_mesh, wait_until

FLOOD_FRAMES = 50
FRAME = 100


def flood_frame(i: int) -> ops_pb2.StreamSignalsRequest:
    return ops_pb2.StreamSignalsRequest(
        signals=[
            ops_pb2.Signal(signal_id=f"flood-{i}-{k}", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
            for k in range(FRAME)
        ]
    )


async def test_stream_when_a_neighbour_floods_without_reading_still_gets_its_decisions(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path, ops={"max_signals_per_frame": FRAME})
    registry = mesh.ops.core.metrics.registry

    def decided(model: str) -> float:
        return sum(
            registry.get_sample_value("signal_decisions_total", {"model": model, "status": s}) or 0.0
            for s in ("ACCEPTED", "REJECTED", "NO_ACTION", "DUPLICATE")
        )

    written = [0]
    try:
        async with mesh.channel() as flood_channel, mesh.channel() as calm_channel:
            flood = mesh.ops_stub(flood_channel).StreamSignals(metadata=(("x-strategy-token", MOMENTUM_TOKEN),))

            async def flooding() -> None:  # writes as fast as ops reads, never reads an answer
                for i in range(FLOOD_FRAMES):
                    await flood.write(flood_frame(i))
                    written[0] += 1

            flooder = asyncio.create_task(flooding())
            await wait_until(lambda: decided("momentum_v1") >= FRAME)

            requests: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()

            async def outgoing() -> AsyncIterator[ops_pb2.StreamSignalsRequest]:
                while (item := await requests.get()) is not None:
                    yield item

            calm = mesh.ops_stub(calm_channel).StreamSignals(
                outgoing(), metadata=(("x-strategy-token", MEANREV_TOKEN),)
            )
            answers: list[ops_pb2.SignalDecision] = []
            for i in range(5):
                signal = ops_pb2.Signal(signal_id=f"calm-{i}", model_id="meanrev_v1", instrument="SOL-USD", target=0.0)
                await requests.put(ops_pb2.StreamSignalsRequest(signals=[signal]))
            async for frame in calm:
                answers.extend(frame.decisions)
                if len(answers) >= 5:
                    break
            assert [d.signal_id for d in answers] == [f"calm-{i}" for i in range(5)]

            assert decided("meanrev_v1") == 5
            await requests.put(None)
            calm.cancel()
            flooder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flooder
            flood.cancel()
    finally:
        await stop_mesh(mesh)


async def test_intake_when_a_strategy_exceeds_its_rate_refuses_the_excess_in_band(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, ops={"intake_signals_per_second": 10, "intake_burst": 10}) as mesh:
        signals = [
            ops_pb2.Signal(signal_id=f"rate-{i}", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
            for i in range(30)
        ]
        async with mesh.channel() as channel:
            call = mesh.ops_stub(channel).StreamSignals(metadata=(("x-strategy-token", MOMENTUM_TOKEN),))
            await call.write(ops_pb2.StreamSignalsRequest(signals=signals))
            decisions: list[ops_pb2.SignalDecision] = []
            while len(decisions) < 30:
                frame = await call.read()
                decisions.extend(frame.decisions)
            call.cancel()
        refused = [d for d in decisions if d.error.code == "RATE_LIMITED"]
        assert len(refused) == 20 and all(d.error.details["rail"] == "intake" for d in refused)
        assert [d.signal_id for d in refused] == [f"rate-{i}" for i in range(10, 30)]
        registry = mesh.ops.core.metrics.registry
        assert registry.get_sample_value("intake_rejections_total", {"strategy": "momentum"}) == 20
