"""A flooding strategy does not stall the others: frames are decided in turns of one slice (new streams first), a
stream whose answers are not being read is paused at its bound, and an optional per-strategy signal rate at intake
refuses the excess in-band. Assertions are on counts and order, never on elapsed time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.log_safety import LogThrottle
from ops_server import engine_link as engine_link_module
from ops_server import fair_intake as fair_intake_module
from ops_server.config import StrategyAccess
from ops_server.engine_link import REPORT_SLICE_MAX, apply_in_slices
from ops_server.fair_intake import INTAKE_FRAMES, Decide, FairIntake, IntakeStream
from ops_server.intake import SLICE_SIGNALS, SliceSizer
from ops_server.metrics import OpsMetrics
from tests.conftest import MEANREV_TOKEN, MOMENTUM_TOKEN, running_mesh, wait_until

FRAME = 100
FLOOD_FRAMES = 80
BOUND = 300  # stream_max_pending_answers of the mesh under test


def flood_frame(i: int) -> ops_pb2.StreamSignalsRequest:
    return ops_pb2.StreamSignalsRequest(
        signals=[
            ops_pb2.Signal(signal_id=f"flood-{i}-{k}", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
            for k in range(FRAME)
        ]
    )


def calm_signal(i: int) -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=f"calm-{i}", model_id="meanrev_v1", instrument="SOL-USD", target=0.0)


async def test_stream_when_a_neighbour_floods_without_reading_is_answered_and_the_flooder_paused_at_its_bound(
    tmp_path: Path,
) -> None:
    ops = {"max_signals_per_frame": FRAME, "stream_max_pending_answers": BOUND}
    async with running_mesh(tmp_path, ops=ops) as mesh:
        service, registry = mesh.ops.service, mesh.ops.core.metrics.registry

        def decided(model: str) -> float:
            return sum(
                registry.get_sample_value("signal_decisions_total", {"model": model, "status": s}) or 0.0
                for s in ("ACCEPTED", "REJECTED", "NO_ACTION", "DUPLICATE")
            )

        def paused_streams() -> list[IntakeStream]:
            return [s for s in service.fair.streams() if s.paused]

        # The flooder's client does not probe the bandwidth-delay product, so its receive window stays at HTTP/2's
        # 64 KiB and fills after ~2,000 unread answers; with probing (gRPC's default) it grows to 4 MiB first.
        flood_channel = grpc.aio.insecure_channel(mesh.ops_address, options=[("grpc.http2.bdp_probe", 0)])
        async with flood_channel, mesh.channel() as calm_channel:
            flood = mesh.ops_stub(flood_channel).StreamSignals(metadata=(("x-strategy-token", MOMENTUM_TOKEN),))
            written = [0]

            async def flooding() -> None:  # writes as fast as ops takes frames; reads nothing (yet)
                for i in range(FLOOD_FRAMES):
                    await flood.write(flood_frame(i))
                    written[0] += 1

            flooder = asyncio.create_task(flooding())
            await wait_until(lambda: len(paused_streams()) == 1)
            (paused,) = paused_streams()
            assert paused.principal.name == "momentum"
            assert paused.outbox.qsize() <= BOUND  # the answers ops holds for it stay under the bound
            assert len(paused.frames) <= INTAKE_FRAMES  # and so do the frames it read and has not decided
            assert registry.get_sample_value("signal_stream_pauses_total", {"strategy": "momentum"}) == 1
            assert registry.get_sample_value("signal_streams_paused") == 1
            flood_decided = decided("momentum_v1")
            assert flood_decided < FLOOD_FRAMES * FRAME and written[0] < FLOOD_FRAMES  # bounded: not all read

            requests: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()

            async def outgoing() -> AsyncIterator[ops_pb2.StreamSignalsRequest]:
                while (item := await requests.get()) is not None:
                    yield item

            calm = mesh.ops_stub(calm_channel).StreamSignals(
                outgoing(), metadata=(("x-strategy-token", MEANREV_TOKEN),)
            )
            answers: list[ops_pb2.SignalDecision] = []
            for i in range(5):
                await requests.put(ops_pb2.StreamSignalsRequest(signals=[calm_signal(i)]))
            async for frame in calm:
                answers.extend(frame.decisions)
                if len(answers) >= 5:
                    break
            assert [d.signal_id for d in answers] == [f"calm-{i}" for i in range(5)]
            assert decided("meanrev_v1") == 5
            # Still paused: not one more of the flooder's signals was decided while its answers went unread.
            assert decided("momentum_v1") == flood_decided and paused.paused
            assert paused.outbox.qsize() <= BOUND
            await requests.put(None)
            calm.cancel()

            # The flooder reads at last: it resumes, and every signal it wrote is answered once, in order.
            flood_answers: list[str] = []
            while len(flood_answers) < FLOOD_FRAMES * FRAME:
                response = await flood.read()
                assert isinstance(response, ops_pb2.StreamSignalsResponse)
                flood_answers.extend(d.signal_id for d in response.decisions)
            await flooder
            assert flood_answers == [f"flood-{i}-{k}" for i in range(FLOOD_FRAMES) for k in range(FRAME)]
            assert registry.get_sample_value("signal_streams_paused") == 0
            await flood.done_writing()
            assert await flood.code() == grpc.StatusCode.OK
        await wait_until(lambda: registry.get_sample_value("intake_pending_signals") == 0)


async def test_intake_when_a_strategy_exceeds_its_rate_refuses_the_excess_in_band(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_mesh(tmp_path, ops={"intake_signals_per_second": 10, "intake_burst": 10}) as mesh:
        signals = [
            ops_pb2.Signal(signal_id=f"rate-{i}", model_id="momentum_v1", instrument="BTC-USD", target=0.0)
            for i in range(30)
        ]
        async with mesh.channel() as channel:
            call = mesh.ops_stub(channel).StreamSignals(metadata=(("x-strategy-token", MOMENTUM_TOKEN),))
            with caplog.at_level(logging.WARNING, logger="ops_server.intake"):
                await call.write(ops_pb2.StreamSignalsRequest(signals=signals))
                for k in range(5):  # a flood of over-rate frames: one warning line, not one per frame
                    await call.write(ops_pb2.StreamSignalsRequest(signals=[*signals[:5], signals[20 + k]]))
                decisions: list[ops_pb2.SignalDecision] = []
                while len(decisions) < 30 + 5 * 6:
                    frame = await call.read()
                    decisions.extend(frame.decisions)
            call.cancel()
        first, repeats = decisions[:30], decisions[30:]
        refused = [d for d in first if d.error.code == "RATE_LIMITED"]
        assert [d.signal_id for d in refused] == [f"rate-{i}" for i in range(10, 30)]
        assert all(
            d.status == ops_pb2.DECISION_STATUS_REJECTED and d.error.details["rail"] == "intake" for d in refused
        )
        # Duplicates of decided signals are still answered DUPLICATE over the rate; new signals are refused.
        duplicate, refused_code = ops_pb2.DECISION_STATUS_DUPLICATE, ops_pb2.DECISION_STATUS_REJECTED
        assert [d.status for d in repeats] == ([duplicate] * 5 + [refused_code]) * 5
        assert [d.signal_id for d in repeats[5::6]] == [f"rate-{20 + k}" for k in range(5)]
        registry = mesh.ops.core.metrics.registry
        assert registry.get_sample_value("intake_rejections_total", {"strategy": "momentum"}) == 25
        lines = [r.getMessage() for r in caplog.records if "over its intake rate" in r.getMessage()]
        assert len(lines) == 1 and "20 signal(s) answered RATE_LIMITED" in lines[0]


async def test_intake_when_a_frame_repeats_a_decided_signal_the_repeat_takes_no_token(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, ops={"intake_signals_per_second": 1, "intake_burst": 4}) as mesh:

        def sig(signal_id: str) -> ops_pb2.Signal:
            return ops_pb2.Signal(signal_id=signal_id, model_id="momentum_v1", instrument="BTC-USD", target=0.0)

        async with mesh.channel() as channel:
            stub = mesh.ops_stub(channel)
            call = stub.StreamSignals(metadata=(("x-strategy-token", MOMENTUM_TOKEN),))
            await call.write(ops_pb2.StreamSignalsRequest(signals=[sig("d-1")]))  # 1 token of 4
            first = (await call.read()).decisions
            await call.write(ops_pb2.StreamSignalsRequest(signals=[sig("d-1"), sig("n-1"), sig("n-2"), sig("n-3")]))
            decisions: list[ops_pb2.SignalDecision] = []
            while len(decisions) < 4:
                decisions.extend((await call.read()).decisions)
            call.cancel()
        assert [d.status for d in first] == [ops_pb2.DECISION_STATUS_NO_ACTION]
        # The repeat is answered DUPLICATE without a token, so the three new signals have the three left.
        assert [d.status for d in decisions] == [
            ops_pb2.DECISION_STATUS_DUPLICATE,
            *[ops_pb2.DECISION_STATUS_NO_ACTION] * 3,
        ]


async def test_intake_when_a_strategy_has_its_own_rate_it_applies_to_that_strategy_only(tmp_path: Path) -> None:
    strategies = {
        "momentum": StrategyAccess(token=MOMENTUM_TOKEN, models=("momentum_v1",), intake_signals_per_second=1),
        "meanrev": StrategyAccess(token=MEANREV_TOKEN, models=("meanrev_v1",)),
    }
    async with running_mesh(tmp_path, ops={"strategies": strategies}) as mesh, mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        for token, model, instrument, expected_refused in (
            (MOMENTUM_TOKEN, "momentum_v1", "BTC-USD", 4),
            (MEANREV_TOKEN, "meanrev_v1", "SOL-USD", 0),
        ):
            call = stub.StreamSignals(metadata=(("x-strategy-token", token),))
            signals = [
                ops_pb2.Signal(signal_id=f"own-{i}", model_id=model, instrument=instrument, target=0.0)
                for i in range(5)
            ]
            await call.write(ops_pb2.StreamSignalsRequest(signals=signals))
            frame = await call.read()
            codes = [d.error.code for d in frame.decisions]
            assert codes.count("RATE_LIMITED") == expected_refused, (model, codes)
            call.cancel()


# -- the scheduler alone ---------------------------------------------------------------------------------------------


class _Path:
    """Decides by recording who was decided, slice by slice."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.slices: list[tuple[str, int]] = []

    def decide(self, signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        self.order.extend(s.signal_id for s in signals)
        self.slices.append((principal.name, len(signals)))
        return [ops_pb2.SignalDecision(signal_id=s.signal_id, model_id=s.model_id) for s in signals]


def _principal(name: str) -> Principal:
    return Principal(name=name, models=frozenset({f"{name}_v1"}))


def _signals(prefix: str, n: int) -> list[ops_pb2.Signal]:
    return [ops_pb2.Signal(signal_id=f"{prefix}-{i}", model_id="m") for i in range(n)]


def _intake(path: _Path, bound: int = 10_000, sizer: SliceSizer | None = None) -> FairIntake:
    """An intake that never holds a backlog back (share 1): these tests are about turns and bounds."""
    return FairIntake(
        path.decide, max_pending_answers=bound, metrics=OpsMetrics(), sizer=sizer or SliceSizer(), backlog_share=1.0
    )


def _drain(outbox: asyncio.Queue[ops_pb2.SignalDecision]) -> list[str]:
    out = []
    while not outbox.empty():
        out.append(outbox.get_nowait().signal_id)
    return out


async def _until(predicate: object, turns: int = 10_000) -> None:
    """Yield the event loop until ``predicate()`` holds (a bounded number of turns, no clock)."""
    for _ in range(turns):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


async def test_intake_when_a_new_stream_arrives_amid_several_floods_it_waits_for_the_one_slice_in_progress() -> None:
    path = _Path()
    intake = _intake(path)
    floods = [intake.open(_principal(f"flood{k}"), asyncio.Queue()) for k in range(3)]
    for k, stream in enumerate(floods):
        for f in range(INTAKE_FRAMES):
            await intake.submit(stream, _signals(f"flood{k}.{f}", 320))
    await _until(lambda: len(path.slices) >= 6)  # the floods are taking turns
    calm = intake.open(_principal("calm"), asyncio.Queue())
    before = len(path.slices)
    await intake.submit(calm, _signals("calm", 1))
    await _until(lambda: "calm-0" in path.order)
    # Decided at the next turn: after at most the slice in progress, not after a slice of each flooding stream.
    assert path.slices.index(("calm", 1)) - before <= 1
    await _until(lambda: intake.pending_signals == 0)


async def test_intake_when_streams_have_backlogs_they_take_turns_one_slice_each() -> None:
    path = _Path()
    intake = _intake(path, sizer=SliceSizer(target_seconds=60.0))  # full slices however slow the machine is
    a, b = (intake.open(_principal(n), asyncio.Queue()) for n in ("a", "b"))
    await intake.submit(a, _signals("a", 5 * SLICE_SIGNALS))
    await intake.submit(b, _signals("b", 5 * SLICE_SIGNALS))
    await _until(lambda: intake.pending_signals == 0)
    assert path.slices == [("a", SLICE_SIGNALS), ("b", SLICE_SIGNALS)] * 5


async def test_intake_when_a_streams_answers_are_not_read_pauses_it_at_the_bound_and_resumes_at_half() -> None:
    path = _Path()
    bound = 50
    intake = _intake(path, bound=bound)
    outbox: asyncio.Queue[ops_pb2.SignalDecision] = asyncio.Queue()
    stream = intake.open(_principal("flood"), outbox)
    await intake.submit(stream, _signals("f0", 40))
    await intake.submit(stream, _signals("f1", 40))
    await _until(lambda: stream.paused)
    assert outbox.qsize() == bound and len(path.order) == bound  # decided exactly up to the bound, no further
    await intake.submit(stream, _signals("f2", 40))  # f0 is decided: f1 and f2 are the two undecided frames
    assert intake.pending_signals == 30 + 40
    submitted = asyncio.create_task(intake.submit(stream, _signals("f3", 40)))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not submitted.done()  # two frames undecided: the reader waits (it reads nothing more)
    assert len(path.order) == bound
    answers = [outbox.get_nowait().signal_id for _ in range(bound // 2 - 1)]  # not yet half drained
    intake.sent(stream)
    assert stream.paused
    answers.append(outbox.get_nowait().signal_id)
    intake.sent(stream)
    assert not stream.paused
    while len(answers) < 160:  # the strategy reads: the outbox drains, the stream resumes, f3 is read
        await _until(lambda: not outbox.empty())
        answers += _drain(outbox)
        intake.sent(stream)
    assert submitted.done() and intake.pending_signals == 0
    expected = [f"f{f}-{i}" for f in range(4) for i in range(40)]
    assert answers == expected and path.order == expected  # every signal answered once, in order


async def test_intake_when_a_stream_closes_drops_its_undecided_frames() -> None:
    path = _Path()
    intake = _intake(path, bound=10)
    stream = intake.open(_principal("gone"), asyncio.Queue())
    await intake.submit(stream, _signals("g", 30))
    await _until(lambda: stream.paused)
    intake.close(stream)
    assert intake.pending_signals == 0 and intake.streams() == () and not stream.paused
    await intake.finish(stream)  # returns: nothing more will be decided


async def test_intake_when_deciding_is_slow_a_neighbours_signal_waits_for_one_small_slice_not_a_large_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The neighbour's frame is decided after the flooder's first slice (32 before anything was measured) and at
    most one more slice, which is a single signal once a signal is known to take longer than a slice's target."""
    now = [0.0]
    monkeypatch.setattr(fair_intake_module.time, "perf_counter", lambda: now[0])
    path = _Path()

    def slow(signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        now[0] += 0.002 * len(signals)  # 2 ms a signal
        return path.decide(signals, principal)

    intake = FairIntake(slow, metrics=OpsMetrics(), backlog_share=1.0)
    flood = intake.open(_principal("flood"), asyncio.Queue())
    await intake.submit(flood, _signals("flood", 500))  # its first slice is decided at once, in this task
    calm = intake.open(_principal("calm"), asyncio.Queue())
    await intake.submit(calm, _signals("calm", 1))
    await _until(lambda: intake.pending_signals == 0)

    assert path.order.index("calm-0") <= SLICE_SIGNALS + 1
    # After the first slice measured 2 ms a signal, every slice is one signal: a turn lasts one signal, not 32.
    assert path.slices[0] == ("flood", SLICE_SIGNALS) and {n for _, n in path.slices[1:]} == {1}
    assert len(path.order) == 501


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


def test_log_throttle_when_events_repeat_logs_one_line_per_interval_with_the_count() -> None:
    now = [100.0]
    throttle = LogThrottle(10.0, clock=lambda: now[0])
    assert throttle.note("a", 3) == 3  # the first event of a key is logged
    assert throttle.note("a", 4) is None and throttle.note("b") == 1  # keys are independent
    now[0] += 9.9
    assert throttle.note("a") is None
    now[0] += 0.1
    assert throttle.note("a", 2) == 7  # everything since the last line


async def test_engine_reports_when_a_frame_is_slow_to_apply_are_applied_in_slices_with_turns_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large frame of engine reports does not hold the event loop: once a report is known to take longer than a
    slice's target, reports are applied a slice at a time and other tasks run in between."""
    now = [0.0]
    monkeypatch.setattr(engine_link_module.time, "perf_counter", lambda: now[0])
    applied: list[int] = []
    turns: list[int] = []

    def on_reports(reports: Sequence[engine_pb2.ExecutionReport]) -> None:
        now[0] += 0.002 * len(reports)  # 2 ms a report
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


SIGNAL_COST_SECONDS = 0.0001
"""What deciding one signal advances the test's clock by (seconds; the host's clock is never read)."""


def _costly(path: _Path, now: list[float]) -> Decide:
    """``path``'s deciding, advancing the test's clock ``now[0]`` by SIGNAL_COST_SECONDS a signal."""

    def decide(signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        now[0] += SIGNAL_COST_SECONDS * len(signals)
        return path.decide(signals, principal)

    return decide


async def _flood_beside_a_trading_stream(share: float) -> tuple[FairIntake, OpsMetrics, list[float], list[str]]:
    """A stream floods (two frames of 640 signals) while another sends one signal a frame, one every 2 ms of the
    test's clock for 80 ms, then goes quiet past ACTIVE_SECONDS until the flood is decided.

    Returns the intake, its metrics, for each trading frame the clock time spent deciding the flood since the flood
    was backlogged (seconds), and every answer of both streams in the order they came."""
    now = [0.0]
    path = _Path()
    costly = _costly(path, now)
    metrics = OpsMetrics()
    sizer = SliceSizer(target_seconds=60.0)  # full slices of SLICE_SIGNALS
    intake = FairIntake(costly, metrics=metrics, sizer=sizer, backlog_share=share, clock=lambda: now[0])
    calm_out: asyncio.Queue[ops_pb2.SignalDecision] = asyncio.Queue()
    flood_out: asyncio.Queue[ops_pb2.SignalDecision] = asyncio.Queue()
    calm, flood = intake.open(_principal("calm"), calm_out), intake.open(_principal("flood"), flood_out)
    await intake.submit(calm, _signals("calm-start", 1))
    await intake.submit(flood, _signals("flood0", 640))  # a new stream: its first slice is decided at once
    await intake.submit(flood, _signals("flood1", 640))
    backlogged_at, first_slice = now[0], sum(1 for s in path.order if s.startswith("flood"))
    flood_seconds: list[float] = []
    answers = _drain(calm_out)
    for i in range(40):
        now[0] += 0.002
        await intake.submit(calm, _signals(f"calm{i}", 1))
        assert _drain(calm_out) == [f"calm{i}-0"]  # decided at once: it never waits for the flood's share
        answers.append(f"calm{i}-0")
        for _ in range(5):
            await asyncio.sleep(0)  # the worker's turns
        flooded = sum(1 for s in path.order if s.startswith("flood")) - first_slice
        flood_seconds.append(flooded * SIGNAL_COST_SECONDS)
        assert flood_seconds[-1] <= share * (now[0] - backlogged_at) + SLICE_SIGNALS * SIGNAL_COST_SECONDS
    now[0] += fair_intake_module.ACTIVE_SECONDS + 0.1  # the trading stream is quiet: the flood goes at full speed
    await asyncio.wait_for(intake.finish(flood), timeout=60)
    return intake, metrics, flood_seconds, answers + _drain(flood_out)


async def test_intake_when_a_stream_without_backlog_is_active_holds_a_flood_to_its_share_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ops_server.fair_intake"):
        intake, metrics, flood_seconds, answers = await _flood_beside_a_trading_stream(share=0.25)
    # While the neighbour traded (80 ms of waiting and 4 ms of its deciding on the clock) the flood got at most a
    # quarter of the clock, asserted after every frame: F <= 0.25 x (84 ms + F) + one slice (3.2 ms), so F < 33 ms
    # of its 125 ms of work; and at least the slice it was due first.
    assert SLICE_SIGNALS * SIGNAL_COST_SECONDS <= flood_seconds[-1] < 0.033
    # Then it was decided in full: every signal of both streams answered once, each stream's in order.
    flood = [a for a in answers if a.startswith("flood")]
    assert flood == [f"flood{f}-{i}" for f in range(2) for i in range(640)]
    assert [a for a in answers if a.startswith("calm")] == ["calm-start-0"] + [f"calm{i}-0" for i in range(40)]
    assert intake.pending_signals == 0
    # One decision to hold it back (it stayed held while the neighbour traded): one count, one log line.
    assert metrics.registry.get_sample_value("signal_stream_holds_total", {"strategy": "flood"}) == 1
    assert metrics.registry.get_sample_value("signal_stream_holds_total", {"strategy": "calm"}) is None
    lines = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert len(lines) == 1 and "strategy flood held back" in lines[0] and "25%" in lines[0]


async def test_intake_when_backlog_share_is_whole_a_flood_beside_a_trading_stream_is_not_held_back() -> None:
    """The control for the test above: the same scenario without the share decides the whole flood while the
    neighbour trades."""
    _, metrics, flood_seconds, _ = await _flood_beside_a_trading_stream(share=1.0)
    assert flood_seconds[-1] == (1280 - SLICE_SIGNALS) * SIGNAL_COST_SECONDS
    assert metrics.registry.get_sample_value("signal_stream_holds_total", {"strategy": "flood"}) is None


async def test_intake_when_a_stream_with_a_backlog_is_alone_it_is_never_held_back() -> None:
    """A lone strategy (one that also sent frames with nothing waiting before) keeps the whole of ops: its backlog
    is decided without waiting on the clock, which this test never advances but by deciding."""
    now = [0.0]
    path = _Path()
    costly = _costly(path, now)
    metrics = OpsMetrics()
    intake = FairIntake(costly, metrics=metrics, backlog_share=0.1, clock=lambda: now[0])
    lone = intake.open(_principal("lone"), asyncio.Queue())
    await intake.submit(lone, _signals("small", 1))  # decided at once: the stream counts as active without backlog
    await intake.submit(lone, _signals("big0", 640))
    await intake.submit(lone, _signals("big1", 640))
    await _until(lambda: intake.pending_signals == 0)
    assert len(path.order) == 1281
    assert metrics.registry.get_sample_value("signal_stream_holds_total", {"strategy": "lone"}) is None
