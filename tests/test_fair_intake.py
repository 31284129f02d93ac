"""A flooding strategy does not stall the others (frames decided in slices that take turns), and an optional
per-strategy signal rate at intake refuses the excess in-band."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from ops_server import engine_link as engine_link_module
from ops_server import service as service_module
from ops_server.engine_link import REPORT_SLICE_MAX, apply_in_slices
from ops_server.intake import SLICE_SIGNALS, SliceSizer
from ops_server.service import OpsService
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


def test_slice_sizer_when_deciding_is_slow_shrinks_slices_to_its_time_target() -> None:
    sizer = SliceSizer(target_seconds=0.001, most=32)
    assert sizer.size() == 32  # nothing measured yet
    sizer.observe(32, 0.0032)  # 100 us a signal: 10 fit in a millisecond
    assert sizer.size() == 10
    for _ in range(20):
        sizer.observe(5, 0.025)  # 5 ms a signal (a loaded host): one signal a slice
    assert sizer.size() == 1
    for _ in range(40):
        sizer.observe(32, 0.00032)  # fast again: back to the largest slice
    assert sizer.size() == 32


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0


class _SlowPath:
    """A signal path whose every signal takes 2 ms of (fake) time; records who was decided when."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.order: list[str] = []
        self.slices: list[int] = []

    def handle_frame(self, signals: list[ops_pb2.Signal], principal: object) -> list[ops_pb2.SignalDecision]:
        self.clock.now += 0.002 * len(signals)
        self.order.extend(s.signal_id for s in signals)
        self.slices.append(len(signals))
        return [ops_pb2.SignalDecision(signal_id=s.signal_id, model_id=s.model_id) for s in signals]


async def test_stream_when_deciding_is_slow_a_neighbours_signal_waits_for_one_small_slice_not_a_large_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The neighbour's frame is decided after the flooder's first slice (32 before anything was measured) and at
    most one more slice, which is a single signal once a signal is known to take longer than a slice's target."""
    clock = _Clock()
    monkeypatch.setattr(service_module.time, "perf_counter", lambda: clock.now)
    path = _SlowPath(clock)
    service = OpsService(
        auth=None,  # type: ignore[arg-type]
        signals=path,  # type: ignore[arg-type]
        fills=None,  # type: ignore[arg-type]
        queries=None,  # type: ignore[arg-type]
        max_signals_per_frame=1000,
    )
    flood = [ops_pb2.Signal(signal_id=f"flood-{i}", model_id="momentum_v1") for i in range(500)]
    calm = [ops_pb2.Signal(signal_id="calm-0", model_id="meanrev_v1")]

    flooding = asyncio.create_task(service._decide_fairly(flood, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the flooder's first slice is decided
    calm_decisions = await service._decide_fairly(calm, None)  # type: ignore[arg-type]
    await flooding

    assert [d.signal_id for d in calm_decisions] == ["calm-0"]
    assert path.order.index("calm-0") == SLICE_SIGNALS
    # After the first slice measured 2 ms a signal, every slice is one signal: a turn lasts one signal, not 32.
    assert path.slices[0] == SLICE_SIGNALS and set(path.slices[1:]) == {1}
    assert len(path.order) == 501


async def test_engine_reports_when_a_frame_is_slow_to_apply_are_applied_in_slices_with_turns_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large frame of engine reports does not hold the event loop: once a report is known to take longer than a
    slice's target, reports are applied a slice at a time and other tasks run in between."""
    clock = _Clock()
    monkeypatch.setattr(engine_link_module.time, "perf_counter", lambda: clock.now)
    applied: list[int] = []
    turns: list[int] = []

    def on_reports(reports: Sequence[engine_pb2.ExecutionReport]) -> None:
        clock.now += 0.002 * len(reports)  # 2 ms a report
        applied.append(len(reports))

    async def neighbour() -> None:
        for _ in range(10):
            turns.append(sum(applied))
            await asyncio.sleep(0)

    frame = [engine_pb2.ExecutionReport(seq=i + 1) for i in range(REPORT_SLICE_MAX + 100)]
    other = asyncio.create_task(neighbour())
    await apply_in_slices(frame, on_reports, SliceSizer(most=REPORT_SLICE_MAX))
    await other

    assert sum(applied) == len(frame) and applied[0] == REPORT_SLICE_MAX  # nothing measured before the first
    assert set(applied[1:]) == {1}  # after the first slice measured 2 ms a report
    assert len({t for t in turns if 0 < t < len(frame)}) >= 5  # the neighbour ran between slices
