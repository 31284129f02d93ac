"""Strategy models, strategies.json loading and the runner core (planning, batching, bookkeeping)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest

from clients.sdk import FrameCoalescer
from clients.strategy_stats import read_stats_file
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.telemetry import Tracing
from strategies import MODEL_KINDS, MeanReversionConfig, MeanReversionModel, MomentumConfig, MomentumModel
from strategies.__main__ import write_stats
from strategies.config import build_model, load_strategies
from strategies.planner import SignalPlanner
from strategies.runtime import StrategyRunner, combined_snapshot

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo" / "strategies.json"


class ScriptedModel:
    """Returns pre-set targets in order, one per price, recording what it was fed."""

    def __init__(self, targets: Sequence[float | None]) -> None:
        self._targets = list(targets)
        self.fed: list[tuple[str, float, int]] = []

    def on_price(self, instrument: str, mid: float, ts_ns: int) -> float | None:
        self.fed.append((instrument, mid, ts_ns))
        return self._targets.pop(0) if self._targets else None


def feed(
    model: MomentumModel | MeanReversionModel, prices: Sequence[float], instrument: str = "BTC-USD"
) -> list[float | None]:
    return [model.on_price(instrument, p, i + 1) for i, p in enumerate(prices)]


# --- models ------------------------------------------------------------------------------------


def test_momentum_when_prices_rise_returns_long_target() -> None:
    targets = feed(MomentumModel(MomentumConfig(fast=5, slow=20)), [100 * 1.001**i for i in range(80)])
    assert targets[-1] is not None and 0 < targets[-1] <= 1


def test_momentum_when_prices_fall_returns_short_target() -> None:
    targets = feed(MomentumModel(MomentumConfig(fast=5, slow=20)), [100 * 0.999**i for i in range(80)])
    assert targets[-1] is not None and -1 <= targets[-1] < 0


def test_momentum_when_fewer_prices_than_slow_returns_none() -> None:
    targets = feed(MomentumModel(MomentumConfig(fast=5, slow=20)), [100 + i for i in range(19)])
    assert targets == [None] * 19


def test_momentum_when_trend_is_strong_clips_target_to_one() -> None:
    targets = feed(MomentumModel(MomentumConfig(fast=2, slow=5, scale=1e6)), [100 * 1.01**i for i in range(20)])
    assert targets[-1] == 1.0


def test_momentum_when_instruments_interleave_keeps_separate_state() -> None:
    model = MomentumModel(MomentumConfig(fast=3, slow=6))
    up = down = None
    for i in range(30):
        up = model.on_price("BTC-USD", 100 * 1.002**i, i)
        down = model.on_price("ETH-USD", 50 * 0.998**i, i)
    assert up is not None and up > 0
    assert down is not None and down < 0


def _wiggle(n: int) -> list[float]:
    return [100.0 + (0.5 if i % 2 else -0.5) for i in range(n)]


def test_mean_reversion_when_price_spikes_up_returns_short_target() -> None:
    targets = feed(MeanReversionModel(MeanReversionConfig(window=20, entry_z=2.0)), [*_wiggle(30), 104.0])
    assert targets[-1] is not None and targets[-1] < -0.5


def test_mean_reversion_when_price_drops_returns_long_target() -> None:
    targets = feed(MeanReversionModel(MeanReversionConfig(window=20, entry_z=2.0)), [*_wiggle(30), 96.0])
    assert targets[-1] is not None and targets[-1] > 0.5


def test_mean_reversion_when_moves_are_extreme_stays_within_bounds() -> None:
    prices = [*_wiggle(25), 1000.0, 1.0, 500.0, 0.5, *_wiggle(10)]
    targets = [
        t for t in feed(MeanReversionModel(MeanReversionConfig(window=10, entry_z=0.5)), prices) if t is not None
    ]
    assert targets and all(-1.0 <= t <= 1.0 for t in targets)
    assert min(targets) == -1.0 and max(targets) == 1.0


def test_mean_reversion_when_window_not_full_returns_none() -> None:
    targets = feed(MeanReversionModel(MeanReversionConfig(window=10)), _wiggle(9))
    assert targets == [None] * 9


def test_mean_reversion_when_window_is_flat_returns_zero() -> None:
    targets = feed(MeanReversionModel(MeanReversionConfig(window=5)), [100.0] * 6)
    assert targets[-1] == 0.0


# --- config ------------------------------------------------------------------------------------


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps(data))
    return path


def _config(model: dict[str, object]) -> dict[str, object]:
    return {"strategies": [{"name": "s", "token": "t", "models": [model]}]}


def test_load_strategies_when_demo_config_returns_three_models() -> None:
    config = load_strategies(DEMO_CONFIG)
    assert [m.model_id for s in config.strategies for m in s.models] == ["momentum_v1", "momentum_v2", "meanrev_v1"]
    assert 0 < config.min_target_change < 1
    assert set(MODEL_KINDS) == {"momentum", "mean_reversion"}


def test_load_strategies_when_kind_unknown_raises_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _config({"model_id": "m", "kind": "astrology", "instruments": ["BTC-USD"]}))
    with pytest.raises(ConfigError, match="unknown model kind 'astrology'"):
        load_strategies(path)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": 30, "slow": 10}, "slow must be greater than fast"),
        ({"fast": "10"}, "parameter 'fast' must be int"),
        ({"fast": True}, "parameter 'fast' must be int"),
        ({"fats": 10}, "unknown parameter 'fats'"),
        ({"scale": -1.0}, "scale must be > 0"),
    ],
)
def test_load_strategies_when_momentum_params_bad_raises_config_error(
    tmp_path: Path, params: dict[str, object], message: str
) -> None:
    path = _write(tmp_path, _config({"model_id": "m", "kind": "momentum", "instruments": ["X"], "params": params}))
    with pytest.raises(ConfigError, match=message):
        load_strategies(path)


def test_load_strategies_when_model_ids_repeat_raises_config_error(tmp_path: Path) -> None:
    model = {"model_id": "m", "kind": "momentum", "instruments": ["X"]}
    data = {
        "strategies": [{"name": "a", "token": "t", "models": [model]}, {"name": "b", "token": "u", "models": [model]}]
    }
    with pytest.raises(ConfigError, match="model ids must be unique"):
        load_strategies(_write(tmp_path, data))


def test_load_strategies_when_unknown_top_level_key_raises_config_error(tmp_path: Path) -> None:
    data = {**_config({"model_id": "m", "kind": "momentum", "instruments": ["X"]}), "min_target_chnage": 0.1}
    with pytest.raises(ConfigError, match="min_target_chnage"):
        load_strategies(_write(tmp_path, data))


def test_build_model_when_int_given_for_float_param_accepts_it() -> None:
    model = build_model("mean_reversion", {"window": 5, "entry_z": 2})
    assert isinstance(model, MeanReversionModel)
    assert model.config.entry_z == 2.0


# --- planner -----------------------------------------------------------------------------------


def test_plan_when_target_moves_less_than_min_change_sends_nothing() -> None:
    model = ScriptedModel([0.10, 0.12, 0.14, 0.21])
    planner = SignalPlanner([("m1", model, ["BTC-USD"])], min_target_change=0.05, run_id="r")
    sent = [planner.plan([("BTC-USD", 100.0, i + 1)], now_ns=i) for i in range(4)]
    # first target always; 0.12 and 0.14 are within 0.05 of 0.10; 0.21 is 0.11 away
    assert [[s.target for s in frame] for frame in sent] == [[0.10], [], [], [0.21]]


def test_plan_when_move_equals_min_change_sends_signal() -> None:
    planner = SignalPlanner([("m1", ScriptedModel([0.10, 0.15]), ["X"])], min_target_change=0.05, run_id="r")
    planner.plan([("X", 1.0, 1)], now_ns=1)
    assert [s.target for s in planner.plan([("X", 1.0, 2)], now_ns=2)] == [0.15]


def test_plan_when_frame_has_several_quotes_batches_one_signal_per_model_and_instrument() -> None:
    momentum = ScriptedModel([0.2, 0.3, 0.9])
    meanrev = ScriptedModel([-0.5])
    planner = SignalPlanner(
        [("mom", momentum, ["BTC-USD", "ETH-USD"]), ("mr", meanrev, ["ETH-USD"])], min_target_change=0.05, run_id="r"
    )
    frame = [("BTC-USD", 100.0, 1), ("ETH-USD", 10.0, 1), ("BTC-USD", 101.0, 2), ("SOL-USD", 5.0, 1)]
    signals = planner.plan(frame, now_ns=42)
    by_key = {(s.model_id, s.instrument): s for s in signals}
    assert len(signals) == 3
    # The latest target of the frame wins; "mom" spreads its quota over its two instruments.
    assert by_key[("mom", "BTC-USD")].target == 0.9 / 2
    assert by_key[("mom", "ETH-USD")].target == 0.3 / 2
    assert by_key[("mr", "ETH-USD")].target == -0.5
    assert all(s.created_at_unix_nanos == 42 and s.confidence == 1.0 for s in signals)
    assert len(momentum.fed) == 3 and all(inst != "SOL-USD" for inst, _, _ in momentum.fed)


def test_plan_when_ids_generated_are_unique_and_prefixed_by_run() -> None:
    planner = SignalPlanner([("m1", ScriptedModel([0.1, -0.1, 0.1, -0.1]), ["X"])], 0.05, run_id="run42")
    ids = [s.signal_id for i in range(4) for s in planner.plan([("X", 1.0, i + 1)], now_ns=i)]
    assert len(ids) == len(set(ids)) == 4
    assert all(i.startswith("run42-m1-X-") for i in ids)


def test_plan_when_not_emitting_feeds_models_without_marking_sent() -> None:
    model = ScriptedModel([0.5, 0.51])
    planner = SignalPlanner([("m1", model, ["X"])], 0.05, run_id="r")
    assert planner.plan([("X", 1.0, 1)], now_ns=1, emit=False) == []
    # nothing was recorded as sent, so the next target goes out even though it barely moved
    assert [s.target for s in planner.plan([("X", 1.0, 2)], now_ns=2)] == [0.51]
    assert len(model.fed) == 2


def test_plan_when_sent_targets_forgotten_resends_unchanged_target() -> None:
    planner = SignalPlanner([("m1", ScriptedModel([0.5, 0.5, 0.5]), ["X"])], 0.05, run_id="r")
    assert len(planner.plan([("X", 1.0, 1)], now_ns=1)) == 1
    assert planner.plan([("X", 1.0, 2)], now_ns=2) == []
    planner.forget_sent()
    assert len(planner.plan([("X", 1.0, 3)], now_ns=3)) == 1


def test_plan_when_quote_is_stale_or_invalid_ignores_it() -> None:
    model = ScriptedModel([0.1, 0.9, 0.9, 0.9])
    planner = SignalPlanner([("m1", model, ["X"])], 0.05, run_id="r")
    planner.plan([("X", 1.0, 10)], now_ns=1)
    assert planner.plan([("X", 1.0, 10), ("X", 1.0, 9), ("X", float("nan"), 11), ("X", -1.0, 12)], now_ns=2) == []
    assert len(model.fed) == 1


# --- runner core -------------------------------------------------------------------------------


def _quote(instrument: str, mid: str, ts: int, venue: str = "sim") -> common_pb2.Quote:
    return common_pb2.Quote(instrument=instrument, venue=venue, mid=mid, ts_unix_nanos=ts)


def _runner(models: Sequence[tuple[str, object, Sequence[str]]], tracing: Tracing | None = None) -> StrategyRunner:
    return StrategyRunner("demo", "token", models, "127.0.0.1:1", "127.0.0.1:2", tracing, 0.05)  # type: ignore[arg-type]


def test_frames_for_when_quote_frame_yields_signals_batches_them_into_one_request() -> None:
    runner = _runner(
        [("a", ScriptedModel([0.5, 0.6]), ["BTC-USD", "ETH-USD"]), ("b", ScriptedModel([-0.3]), ["ETH-USD"])]
    )
    frames = runner.frames_for([_quote("BTC-USD", "100", 1), _quote("ETH-USD", "10", 1)], emit=True)
    assert len(frames) == 1
    assert sorted((s.model_id, s.instrument) for s in frames[0].signals) == [
        ("a", "BTC-USD"),
        ("a", "ETH-USD"),
        ("b", "ETH-USD"),
    ]
    assert runner.in_flight == 3
    assert runner.snapshot()["models"]["a"]["signals"] == 2


def test_frames_for_when_ops_not_connected_returns_no_frames() -> None:
    runner = _runner([("a", ScriptedModel([0.5]), ["BTC-USD"])])
    assert runner.frames_for([_quote("BTC-USD", "100", 1)]) == []
    assert runner.snapshot()["signals"] == 0


def test_frames_for_when_quote_venue_set_ignores_other_venues() -> None:
    model = ScriptedModel([0.5, 0.5])
    runner = StrategyRunner("d", "t", [("a", model, ["X"])], "h:1", "h:2", None, 0.05, quote_venue="sim")
    runner.frames_for([_quote("X", "1", 1, venue="paper"), _quote("X", "2", 2, venue="sim")], emit=True)
    assert [mid for _, mid, _ in model.fed] == [2.0]


def test_frames_for_when_tracing_enabled_injects_trace_context(tmp_path: Path) -> None:
    tracing = Tracing("strategy-test", span_file=tmp_path / "spans.jsonl")
    try:
        runner = _runner([("a", ScriptedModel([0.5]), ["X"])], tracing)
        (frame,) = runner.frames_for([_quote("X", "1", 1)], emit=True)
    finally:
        tracing.shutdown()
    assert frame.signals[0].trace.traceparent.startswith("00-")
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert [(s["name"], s["kind"], s["attributes"]["nautilus.model_id"]) for s in spans] == [
        ("strategy.signal send", "PRODUCER", "a")
    ]


def test_handle_response_when_accepted_then_filled_records_latencies_and_clears_in_flight() -> None:
    runner = _runner([("a", ScriptedModel([0.5, -0.5]), ["X"])])
    (first,) = runner.frames_for([_quote("X", "1", 1)], emit=True)
    (second,) = runner.frames_for([_quote("X", "1", 2)], emit=True)
    s1, s2 = first.signals[0], second.signals[0]
    runner.handle_response(
        ops_pb2.StreamSignalsResponse(
            decisions=[
                ops_pb2.SignalDecision(signal_id=s1.signal_id, model_id="a", status=ops_pb2.DECISION_STATUS_ACCEPTED),
                ops_pb2.SignalDecision(
                    signal_id=s2.signal_id,
                    model_id="a",
                    status=ops_pb2.DECISION_STATUS_REJECTED,
                    error=common_pb2.ErrorDetail(code="INVALID_QUOTE"),
                ),
            ]
        )
    )
    assert runner.in_flight == 1
    fill = ops_pb2.Fill(model_id="a", signal_id=s1.signal_id, exec_id="e1")
    runner.handle_response(ops_pb2.StreamSignalsResponse(fills=[fill, fill]))  # a second partial fill
    snap = runner.snapshot()
    assert runner.in_flight == 0
    assert snap["models"]["a"] == {
        "signals": 2,
        "decisions": {"ACCEPTED": 1, "REJECTED": 1},
        "accepted": 1,
        "fills": 2,
        "rejected": 1,
    }
    assert snap["rejections_by_code"] == {"INVALID_QUOTE": 1}
    assert snap["decision_latency_ms"]["count"] == 2
    assert snap["fill_latency_ms"]["count"] == 1  # signal -> FIRST fill only
    assert snap["fill_latency_ms"]["p50"] >= 0


def test_combined_snapshot_when_two_runners_sums_totals() -> None:
    one = _runner([("a", ScriptedModel([0.5]), ["X"])])
    two = StrategyRunner("other", "t", [("b", ScriptedModel([0.5]), ["X"])], "h:1", "h:2")
    one.frames_for([_quote("X", "1", 1)], emit=True)
    two.frames_for([_quote("X", "1", 1)], emit=True)
    combined = combined_snapshot([one, two])
    assert combined["totals"]["signals"] == 2
    assert set(combined["models"]) == {"a", "b"}
    assert set(combined["strategies"]) == {"demo", "other"}


def test_stats_file_when_written_by_the_runtime_reads_back_through_its_schema(tmp_path: Path) -> None:
    one = _runner([("a", ScriptedModel([0.5]), ["X"])])
    one.frames_for([_quote("X", "1", 1)], emit=True)
    path = tmp_path / "strategies.json"
    write_stats(path, [one])
    read = read_stats_file(path)
    assert read["totals"]["signals"] == 1 and read["models"]["a"]["signals"] == 1
    assert read["strategies"]["demo"]["in_flight"] == 1
    path.write_text(json.dumps({"totals": {"signals": "many"}}))
    assert read_stats_file(path) == {}  # not the declared shape: treated as no stats yet, with a warning


# --- runner over real gRPC with fake servers ------------------------------------------------------


class FakeMarketData(engine_pb2_grpc.MarketDataServiceServicer):
    """Streams its quotes once ``ready`` is set, then holds the stream open."""

    def __init__(self, quotes: Sequence[common_pb2.Quote], ready: asyncio.Event) -> None:
        self.quotes = list(quotes)
        self.ready = ready

    async def StreamQuotes(
        self, request: engine_pb2.StreamQuotesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[engine_pb2.StreamQuotesResponse]:
        await self.ready.wait()
        for quote in self.quotes:
            yield engine_pb2.StreamQuotesResponse(quotes=[quote])
        await asyncio.Event().wait()  # keep the stream open like a real engine


class FakeOps(ops_pb2_grpc.OpsServiceServicer):
    """Accepts every signal and fills it at once (or, with ``reject``, refuses each with that code); remembers what it
    saw."""

    def __init__(self, expected: int, frame_limit: int = 0, reject: str = "", newest_fill_seq: int = 0) -> None:
        self.reject = reject
        self.newest_fill_seq = newest_fill_seq
        self.resumes: list[tuple[int, bool]] = []
        self.signals: list[ops_pb2.Signal] = []
        self.frame_sizes: list[int] = []
        self.frame_limit = frame_limit
        self.tokens: list[str] = []
        self.enough = asyncio.Event()
        self.opened = asyncio.Event()
        self.closed_by_client = asyncio.Event()
        self._expected = expected

    async def StreamSignals(
        self,
        request_iterator: AsyncIterator[ops_pb2.StreamSignalsRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        self.tokens.append(dict(context.invocation_metadata() or ()).get("x-strategy-token", ""))
        self.opened.set()
        async for frame in request_iterator:
            if frame.resume_after_fill_seq or frame.resume_fills:
                self.resumes.append((frame.resume_after_fill_seq, frame.resume_fills))
            self.signals.extend(frame.signals)
            self.frame_sizes.append(len(frame.signals))
            if self.reject:
                refused = common_pb2.ErrorDetail(kind="validation", code=self.reject, message="refused by the fake")
                decisions = [
                    ops_pb2.SignalDecision(
                        signal_id=s.signal_id,
                        model_id=s.model_id,
                        status=ops_pb2.DECISION_STATUS_REJECTED,
                        error=refused,
                    )
                    for s in frame.signals
                ]
                fills = []
            else:
                decisions = [
                    ops_pb2.SignalDecision(
                        signal_id=s.signal_id, model_id=s.model_id, status=ops_pb2.DECISION_STATUS_ACCEPTED
                    )
                    for s in frame.signals
                ]
                fills = [
                    ops_pb2.Fill(model_id=s.model_id, signal_id=s.signal_id, exec_id=s.signal_id) for s in frame.signals
                ]
            yield ops_pb2.StreamSignalsResponse(decisions=decisions, fills=fills)
            if len(self.signals) >= self._expected:
                self.enough.set()
        self.closed_by_client.set()

    async def ListFills(
        self, request: ops_pb2.ListFillsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ops_pb2.ListFillsResponse:
        if not self.newest_fill_seq:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no fills")
        return ops_pb2.ListFillsResponse(fills=[ops_pb2.Fill(seq=self.newest_fill_seq)])

    async def GetStreamLimits(
        self, request: ops_pb2.GetStreamLimitsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ops_pb2.GetStreamLimitsResponse:
        if not self.frame_limit:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no limits")
        return ops_pb2.GetStreamLimitsResponse(max_signals_per_frame=self.frame_limit)


@contextlib.asynccontextmanager
async def fake_servers(ops: FakeOps, market: FakeMarketData) -> AsyncIterator[str]:
    """The ops and market data fakes on one in-process server; yields its address, stops it on exit."""
    server = grpc.aio.server()
    engine_pb2_grpc.add_MarketDataServiceServicer_to_server(market, server)
    ops_pb2_grpc.add_OpsServiceServicer_to_server(ops, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_run_when_ops_declares_a_frame_limit_sends_no_bigger_frame() -> None:
    quotes = [_quote("X", str(100 + i), i + 1) for i in range(5)]
    ops = FakeOps(expected=3, frame_limit=1)  # type: ignore[abstract]  # only the RPCs the runner uses
    market = FakeMarketData(quotes, ready=ops.opened)  # type: ignore[abstract]
    async with fake_servers(ops, market) as address:
        models = [("a", ScriptedModel([0.1, 0.2, 0.3, 0.4, 0.5]), ["X"]), ("b", ScriptedModel([0.2, 0.4] * 3), ["X"])]
        runner = StrategyRunner("demo", "t", models, address, address, None, 0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.wait_for(ops.enough.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert runner.frame_limit == 1
    assert ops.frame_sizes and max(ops.frame_sizes) == 1  # two models signal per quote: split into frames of one


async def test_run_when_servers_answer_sends_signals_and_books_fills() -> None:
    quotes = [_quote("X", str(100 + i), i + 1) for i in range(5)]
    ops = FakeOps(expected=3)  # type: ignore[abstract]  # only the RPCs the runner uses
    # Quotes flow only once the signal stream is open: earlier ones would only warm the model up.
    market = FakeMarketData(quotes, ready=ops.opened)  # type: ignore[abstract]
    async with fake_servers(ops, market) as address:
        model = ScriptedModel([0.1, 0.2, 0.3, 0.4, 0.5])
        runner = StrategyRunner("demo", "secret-token", [("a", model, ["X"])], address, address, None, 0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.wait_for(ops.enough.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    snap = runner.snapshot()
    assert ops.tokens and set(ops.tokens) == {"secret-token"}
    assert snap["signals"] == len(ops.signals) >= 3
    assert snap["fills"] == snap["orders"] == len(ops.signals)
    assert snap["in_flight"] == 0
    assert ops.closed_by_client.is_set()  # half-closed cleanly, not cancelled


async def run_until_enough(ops: FakeOps) -> StrategyRunner:
    """One model on five quotes of X against ``ops`` (and a market fake) until ``ops`` saw enough signals."""
    quotes = [_quote("X", str(100 + i), i + 1) for i in range(5)]
    market = FakeMarketData(quotes, ready=ops.opened)  # type: ignore[abstract]  # only the RPCs the runner uses
    async with fake_servers(ops, market) as address:
        runner = StrategyRunner("demo", "t", [("a", ScriptedModel([0.1, 0.2, 0.3, 0.4, 0.5]), ["X"])], address, address)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.wait_for(ops.enough.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    return runner


async def test_run_when_every_signal_is_refused_warns_once_per_code(caplog: pytest.LogCaptureFixture) -> None:
    """A strategy whose every signal is refused (e.g. ids longer than ops' signal_id_max_length: INVALID_ID) must not
    look healthy at the default log level: the first refusal of a code is a warning, the repeats are counted."""
    ops = FakeOps(expected=3, reject="INVALID_ID")  # type: ignore[abstract]  # only the RPCs the runner uses
    caplog.set_level("INFO", logger="strategies")
    runner = await run_until_enough(ops)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "rejected" in r.getMessage()]
    assert len(warnings) == 1 and "INVALID_ID" in warnings[0], warnings
    assert runner.snapshot()["rejections_by_code"] == {"INVALID_ID": len(ops.signals)} and len(ops.signals) >= 3


async def test_run_when_its_first_stream_opens_resumes_from_the_newest_fill_at_start() -> None:
    """The resume point is read once (ListFills, newest first): a stream lost before the runner's first fill still
    resumes from there, and older fills are not replayed as this run's."""
    ops = FakeOps(expected=3, newest_fill_seq=7)  # type: ignore[abstract]  # only the RPCs the runner uses
    await run_until_enough(ops)
    assert ops.resumes == [(7, True)]


def test_plan_when_target_unchanged_past_refresh_resends_it() -> None:
    planner = SignalPlanner(
        [("m1", ScriptedModel([0.3, 0.3, 0.3]), ["X"])], min_target_change=0.05, run_id="r", refresh_seconds=5
    )
    assert [s.target for s in planner.plan([("X", 1.0, 1)], now_ns=0)] == [0.3]
    assert planner.plan([("X", 1.0, 2)], now_ns=4_000_000_000) == []  # unchanged and fresh: nothing
    resent = planner.plan([("X", 1.0, 3)], now_ns=5_000_000_000)
    assert [s.target for s in resent] == [0.3]  # unchanged but stale: sent again with a new id
    assert resent[0].signal_id.endswith("-2")


def _frame(*ids: str) -> ops_pb2.StreamSignalsRequest:
    return ops_pb2.StreamSignalsRequest(signals=[ops_pb2.Signal(signal_id=i) for i in ids])


def _ids(frame: ops_pb2.StreamSignalsRequest | None) -> list[str]:
    assert frame is not None
    return [s.signal_id for s in frame.signals]


async def test_coalescer_when_frames_queued_then_merged_up_to_the_limit_in_order() -> None:
    queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
    for frame in (_frame("a", "b"), _frame("c"), _frame("d", "e"), _frame("f")):
        queue.put_nowait(frame)
    queue.put_nowait(None)
    coalescer = FrameCoalescer(queue, limit=3)
    assert _ids(await coalescer.next()) == ["a", "b", "c"]
    assert _ids(await coalescer.next()) == ["d", "e", "f"]
    assert await coalescer.next() is None


async def test_coalescer_when_a_queued_frame_asks_to_resume_fills_then_the_merged_frame_keeps_it() -> None:
    """A resume frame merged behind others lost its resume_after_fill_seq: ops then replayed no missed fill."""
    queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
    resume = _frame("b")
    resume.resume_after_fill_seq = 41
    resume.resume_fills = True
    for frame in (_frame("a"), resume, _frame("c")):
        queue.put_nowait(frame)
    merged = await FrameCoalescer(queue, limit=100).next()
    assert merged is not None and _ids(merged) == ["a", "b", "c"] and merged.resume_after_fill_seq == 41
    assert merged.resume_fills


async def test_coalescer_when_queue_empty_then_frame_leaves_at_once_without_waiting() -> None:
    queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
    queue.put_nowait(_frame("a"))
    coalescer = FrameCoalescer(queue, limit=100)
    assert _ids(await asyncio.wait_for(coalescer.next(), 1.0)) == ["a"]
    waiting = asyncio.create_task(coalescer.next())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing queued: it waits for the producer, not for a timer
    queue.put_nowait(_frame("b"))
    assert _ids(await asyncio.wait_for(waiting, 1.0)) == ["b"]


async def test_coalescer_when_end_queued_behind_frames_then_frames_first_then_none() -> None:
    queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
    for item in (_frame("a"), _frame("b"), None):
        queue.put_nowait(item)
    coalescer = FrameCoalescer(queue)
    assert _ids(await coalescer.next()) == ["a", "b"]
    assert await coalescer.next() is None


def test_signal_ids_when_names_are_as_long_as_the_config_allows_stay_within_ops_bound() -> None:
    """A 64-character strategy name and model id made 148-character ids, every one refused INVALID_ID."""
    from strategies.planner import signal_id

    short = signal_id("momentum-1a2b3c4d", "momentum_v1", "BTC-USD", 7)
    assert short == "momentum-1a2b3c4d-momentum_v1-BTC-USD-7"
    run, model = "s" * 64 + "-1a2b3c4d", "m" * 64
    ids = {signal_id(run, model, instrument, n) for instrument in ("BTC-USD", "ETH-USD") for n in (1, 2)}
    assert len(ids) == 4 and all(len(i) <= 128 for i in ids)
