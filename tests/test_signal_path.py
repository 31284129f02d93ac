"""The signal path as a unit of frames: group commit, one command batch per frame, errors at the stream boundary."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import grpc
import pytest

from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import Principal
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import RiskRejectedError, UnavailableError
from nautilus_mesh.journal import JournalWriter, read_journal
from nautilus_mesh.status import from_rpc_error
from ops_server import engine_link
from ops_server.allocation import CapitalAllocator, CapitalPolicy
from ops_server.config import StrategyAccess
from ops_server.exposure import ExposureView
from ops_server.measurement import Measurement
from ops_server.model_registry import ModelRegistry, RoutingMode
from ops_server.order_tracker import OrderTracker
from ops_server.risk import TradingState
from ops_server.router import SignalRouter
from tests.conftest import MOMENTUM_META, MOMENTUM_TOKEN, Mesh, running_mesh, wait_until


def signal(signal_id: str, target: float, model: str = "momentum_v1", instrument: str = "BTC-USD") -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id=model, instrument=instrument, target=target, confidence=1.0)


async def test_frame_when_decided_is_journaled_with_one_write_before_one_command_batch(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = mesh.ops.core
    writes: list[int] = []
    batches: list[int] = []
    original_commit = JournalWriter.commit
    original_send = core.link.send

    def counting_commit(self: JournalWriter, *, sync: bool = True) -> int:
        written = original_commit(self, sync=sync)
        if self.path.name == "journal.bin" and written:
            writes.append(written)
            assert len(batches) < len(writes), "a frame's orders left before its journal write"
        return written

    def counting_send(commands: Sequence[object]) -> None:
        batches.append(len(commands))
        original_send(commands)  # type: ignore[arg-type]

    monkeypatch.setattr(JournalWriter, "commit", counting_commit)
    monkeypatch.setattr(core.link, "send", counting_send)
    principal = core.auth.authenticate(MOMENTUM_META)
    frame = [signal("gc-1", 0.1), signal("gc-2", 0.1, instrument="ETH-USD"), signal("gc-3", 0.1, model="momentum_v2")]

    decisions = core.signals.handle_frame(frame, principal)

    assert [d.status for d in decisions] == [ops_pb2.DECISION_STATUS_ACCEPTED] * 3
    # One write and one batch for the frame: each order (live, shadow canary, paper twins of the stable model)
    # has its decision record in the write and its command in the batch.
    assert len(writes) == 1 and len(batches) == 1 and writes[0] == batches[0] >= 3
    journaled = [r.message for r in read_journal(mesh.tmp / "ops" / "journal.bin") if r.tag == 1]
    assert {"gc-1", "gc-2", "gc-3"} <= {r.decision.signal_id for r in journaled}  # type: ignore[attr-defined]


def commands_sent(core: object, monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, str]]]:
    """The (model_id, venue) of each command of each batch ops sends the engine from now on."""
    link = core.link  # type: ignore[attr-defined]
    original, batches = link.send, []

    def recording_send(commands: Sequence[engine_pb2.OrderCommand]) -> None:
        batches.append([(c.new_order.model_id, c.new_order.venue) for c in commands])
        original(commands)

    monkeypatch.setattr(link, "send", recording_send)
    return batches


async def test_frame_when_canary_in_shadow_sends_the_live_order_before_its_paper_twin(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = mesh.ops.core
    assert "momentum_v1" in core.parts.canaries.shadow_twins()  # the demo canary is in shadow
    batches = commands_sent(core, monkeypatch)
    principal = core.auth.authenticate(MOMENTUM_META)

    (decision,) = core.signals.handle_frame([signal("order-1", 0.1)], principal)

    assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
    # First in the frame, the live order reaches the engine ahead of the twin, which only measures.
    assert batches == [[("momentum_v1", "sim"), ("momentum_v1@paper", "paper")]]


async def test_frame_when_the_live_order_is_refused_still_trades_the_paper_twin(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = mesh.ops.core
    batches = commands_sent(core, monkeypatch)

    def refuse(*_: object) -> None:
        raise RiskRejectedError("MAX_ORDER_NOTIONAL", "refused by the test")

    monkeypatch.setattr(core.parts.risk, "check", refuse)
    principal = core.auth.authenticate(MOMENTUM_META)

    (decision,) = core.signals.handle_frame([signal("refused-1", 0.1)], principal)

    assert decision.status == ops_pb2.DECISION_STATUS_REJECTED and decision.error.code == "MAX_ORDER_NOTIONAL"
    # The twin measures the stable model's intent on paper, whatever the rails said of its live order.
    assert batches == [[("momentum_v1@paper", "paper")]]


async def test_dedup_window_when_a_shadow_canary_runs_holds_as_many_strategy_signals_as_it_says(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, ops={"dedup_window": 3}) as mesh:
        core = mesh.ops.core
        assert "momentum_v1" in core.parts.canaries.shadow_twins()  # each live order below has a paper twin
        principal = core.auth.authenticate(MOMENTUM_META)
        frame = [signal("dw-1", 0.1), signal("dw-2", -0.1), signal("dw-3", 0.1)]  # each one trades

        decided = core.signals.handle_frame(frame, principal)
        again = core.signals.handle_frame(frame, principal)

        assert [d.status for d in decided] == [ops_pb2.DECISION_STATUS_ACCEPTED] * 3
        # The twins' decisions are journaled with their orders but take no place in the window: all three ids of
        # a window of three are still recognised.
        assert [d.status for d in again] == [ops_pb2.DECISION_STATUS_DUPLICATE] * 3
        assert [d.client_order_id for d in again] == [d.client_order_id for d in decided]


async def test_frame_when_two_signals_target_one_model_sizes_the_second_against_the_first(mesh: Mesh) -> None:
    core = mesh.ops.core
    principal = core.auth.authenticate(MOMENTUM_META)
    first, second = core.signals.handle_frame([signal("same-1", 0.1), signal("same-2", 0.1)], principal)
    assert first.status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert second.status == ops_pb2.DECISION_STATUS_NO_ACTION  # the first order's open quantity already reaches 0.1


async def test_stream_when_deciding_fails_unexpectedly_answers_internal_in_band_and_stays_open(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    core = mesh.ops.core
    original = core.signals.handle_frame
    calls = {"n": 0}

    def flaky(signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return original(signals, principal)

    monkeypatch.setattr(core.signals, "handle_frame", flaky)
    requests: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[ops_pb2.StreamSignalsRequest]:
        while (item := await requests.get()) is not None:
            yield item

    async with mesh.channel() as channel:
        call = mesh.ops_stub(channel).StreamSignals(outgoing(), metadata=MOMENTUM_META)
        await requests.put(ops_pb2.StreamSignalsRequest(signals=[signal("boom-1", 0.1)]))
        await requests.put(ops_pb2.StreamSignalsRequest(signals=[signal("fine-1", 0.1)]))
        decisions: list[ops_pb2.SignalDecision] = []
        async for frame in call:
            decisions.extend(frame.decisions)
            if len(decisions) >= 2:
                break
        await requests.put(None)
        call.cancel()
    assert decisions[0].signal_id == "boom-1" and decisions[0].status == ops_pb2.DECISION_STATUS_REJECTED
    assert decisions[0].error.code == "INTERNAL"
    assert decisions[1].signal_id == "fine-1" and decisions[1].status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert "deciding signals 'boom-1' failed" in caplog.text
    assert core.queries.previous_decision("momentum_v1", "boom-1") is None  # nothing was traded


def test_quota_when_two_half_weights_split_odd_cents_rounds_down_within_the_allocation(tmp_path: Path) -> None:
    registry = ModelRegistry.from_dict(
        {
            "strategies": {
                "s": {
                    "stable_model": "a",
                    "models": {
                        "a": {"version": "1", "instruments": ["BTC-USD"], "weight": 0.5},
                        "b": {"version": "1", "instruments": ["BTC-USD"], "weight": 0.5},
                    },
                }
            }
        }
    )
    policy = CapitalPolicy.from_dict(
        {
            "total_capital": "100.03",
            "strategies": {"s": {"min_fraction": 0.0, "max_fraction": 1.0}},
            "cooldown_seconds": 0,
            "lookback": 10,
            "min_observations": 2,
            "shrinkage_n0": 0,
            "turnover_cap": 1.0,
            "deadband": 0.0,
        }
    )
    exposure = ExposureView(
        registry,
        CapitalAllocator(policy),
        Measurement(1.0),
        OrderTracker(None),
        shadow_capital_usd=Decimal(1),
        live_venue="sim",
        paper_venue="paper",
    )
    quotas = [exposure.quota(registry.route(m)) for m in ("a", "b")]
    assert quotas == [Decimal("50.01"), Decimal("50.01")]
    assert sum(quotas) <= Decimal("100.03")


def test_risk_context_when_a_model_holds_more_than_its_quota_gives_the_overdraft() -> None:
    registry = ModelRegistry.from_dict(
        {"strategies": {"s": {"stable_model": "a", "models": {"a": {"instruments": ["BTC-USD"], "weight": 1.0}}}}}
    )
    policy = CapitalPolicy.from_dict({"total_capital": "100", "strategies": {"s": {}}})
    measurement = Measurement(1.0)
    exposure = ExposureView(
        registry,
        CapitalAllocator(policy),
        measurement,
        OrderTracker(None),
        Decimal(1),
        live_venue="sim",
        paper_venue="paper",
    )
    measurement.set_mark("BTC-USD", Decimal(100))
    measurement.apply_fill("a", "BTC-USD", Decimal(5), Decimal(100), Decimal(0))  # 500 held on a quota of 100
    route = registry.route("a")
    assert exposure.risk_context(route, "BTC-USD").available_quota == Decimal(-400)  # what the quota rail reads
    assert exposure.available_quota(route) == 0  # what GetModelQuota shows: nothing left


def engine_frames(mesh: Mesh) -> float:
    """Commands frames the engine has executed (its frame-latency histogram's count)."""
    for family in mesh.engine.metrics.frame_latency.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return sample.value
    return 0.0


async def test_frame_when_decided_in_slices_reaches_the_engine_as_one_commands_frame(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame of 80 signals is decided in slices (other streams may take turns between them); its 160 orders (live
    and paper twin) still leave as one commands frame, not one per slice. (The link's 20 ms bound on waiting is
    lifted here so a slow test machine does not cut the frame by time.)"""
    monkeypatch.setattr(engine_link, "SETTLE_SECONDS", 30.0)
    await wait_until(lambda: mesh.ops.core.queries.mark("BTC-USD") is not None)
    before = engine_frames(mesh)
    frame = [
        signal(f"burst-{i}", 0.2 if i % 2 else -0.2, instrument=("BTC-USD", "ETH-USD")[i // 2 % 2]) for i in range(80)
    ]

    async def outgoing() -> AsyncIterator[ops_pb2.StreamSignalsRequest]:
        yield ops_pb2.StreamSignalsRequest(signals=frame)
        await asyncio.sleep(30)

    decided: list[ops_pb2.SignalDecision] = []
    async with mesh.channel() as channel:
        call = mesh.ops_stub(channel).StreamSignals(outgoing(), metadata=MOMENTUM_META)
        async for answer in call:
            decided.extend(answer.decisions)
            if len(decided) == len(frame):
                break
        call.cancel()
    accepted = [d for d in decided if d.status == ops_pb2.DECISION_STATUS_ACCEPTED]
    assert len(accepted) > 32, "more than one slice (SLICE_SIGNALS) of orders"
    await wait_until(lambda: engine_frames(mesh) > before)
    await asyncio.sleep(0.2)  # a second frame, if any, would have arrived by now
    assert engine_frames(mesh) - before == 1


async def test_signal_when_its_model_or_instrument_is_unknown_or_disabled_answers_the_documented_kind(
    tmp_path: Path,
) -> None:
    access = StrategyAccess(token=MOMENTUM_TOKEN, models=("momentum_v1", "momentum_v2", "ghost_v1"))
    async with running_mesh(tmp_path, ops={"strategies": {"momentum": access}}) as mesh:
        core = mesh.ops.core
        principal = core.auth.authenticate(MOMENTUM_META)
        core.registry.set_weights(
            "momentum", {"momentum_v1": 1.0, "momentum_v2": 0.0}, modes={"momentum_v2": RoutingMode.DISABLED}
        )
        frame = [
            signal("k-1", 0.1, model="ghost_v1"),
            signal("k-2", 0.1, instrument="XYZ-USD"),
            signal("k-3", 0.1, model="momentum_v2"),
            signal("k-4", 0.1, model=""),
        ]
        decisions = core.signals.handle_frame(frame, principal)
        assert [(d.error.kind, d.error.code, d.error.field) for d in decisions] == [
            ("not_found", "UNKNOWN_MODEL", "model_id"),
            ("not_found", "UNKNOWN_INSTRUMENT", "instrument"),
            ("permission_denied", "MODEL_DISABLED", "model_id"),
            ("validation_failed", "MISSING_FIELD", "model_id"),  # a missing field before the token is asked
        ]
        async with mesh.channel() as channel:
            stub = ops_pb2_grpc.OpsServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                request = ops_pb2.SubmitSignalRequest(signal=signal("k-5", 0.1, instrument="XYZ-USD"))
                await stub.SubmitSignal(request, metadata=MOMENTUM_META)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


async def test_signal_when_refused_on_its_merits_answers_a_repeat_duplicate(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = mesh.ops.core
    principal = core.auth.authenticate(MOMENTUM_META)
    (refused,) = core.signals.handle_frame([signal("once-1", 1.5)], principal)  # target out of range
    (again,) = core.signals.handle_frame([signal("once-1", 0.001)], principal)
    assert refused.status == ops_pb2.DECISION_STATUS_REJECTED and refused.error.code == "OUT_OF_RANGE"
    assert again.status == ops_pb2.DECISION_STATUS_DUPLICATE and again.error.code == "OUT_OF_RANGE"


async def test_submit_signal_when_a_refused_signal_is_sent_again_refuses_it_again_with_the_same_status(
    mesh: Mesh,
) -> None:
    """A unary client retrying after a deadline must not read a refusal as success; an accepted signal's repeat
    answers DUPLICATE."""
    async with mesh.channel() as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                request = ops_pb2.SubmitSignalRequest(signal=signal("retry-1", 2.0))
                await stub.SubmitSignal(request, metadata=MOMENTUM_META)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert from_rpc_error(refused.value).code == "OUT_OF_RANGE"  # type: ignore[union-attr]
        accepted = ops_pb2.SubmitSignalRequest(signal=signal("retry-2", 0.001))
        first = await stub.SubmitSignal(accepted, metadata=MOMENTUM_META)
        repeat = await stub.SubmitSignal(accepted, metadata=MOMENTUM_META)
    assert first.decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
    assert repeat.decision.status == ops_pb2.DECISION_STATUS_DUPLICATE


async def test_signal_when_refused_for_want_of_the_engine_is_decided_again_and_its_twin_sent_once(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = mesh.ops.core
    assert "momentum_v1" in core.parts.canaries.shadow_twins()
    principal = core.auth.authenticate(MOMENTUM_META)
    batches = commands_sent(core, monkeypatch)

    def unavailable(*_: object) -> None:
        raise UnavailableError("ENGINE_UNAVAILABLE", "the engine link is backlogged")

    monkeypatch.setattr(core.parts.risk, "check", unavailable)
    # The same signal id sent again, with another target: its twin would be a new order under the same id.
    first, second = (core.signals.handle_frame([signal("retry-1", target)], principal)[0] for target in (0.1, 0.2))
    assert [d.error.code for d in (first, second)] == ["ENGINE_UNAVAILABLE"] * 2  # decided again, not DUPLICATE
    # The paper twin's order went out with the first decision; the second does not send its id again.
    assert batches == [[("momentum_v1@paper", "paper")]]


async def test_model_quota_of_a_shadow_model_counts_what_its_paper_book_holds(mesh: Mesh) -> None:
    core = mesh.ops.core
    principal = core.auth.authenticate(MOMENTUM_META)
    await wait_until(lambda: core.exposure.mark("BTC-USD") is not None)
    (decision,) = core.signals.handle_frame([signal("paper-quota-1", 0.5, model="momentum_v2")], principal)
    assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED and decision.mode == ops_pb2.ROUTING_MODE_SHADOW
    quota = core.queries.quota("momentum_v2")
    held = abs(core.exposure.exposure_qty("momentum_v2@paper", "BTC-USD")) * core.exposure.mark("BTC-USD")
    assert quota.quota_usd == fmt(core.config.shadow_capital_usd)
    assert Decimal(quota.used_usd) == held > 0
    assert Decimal(quota.available_usd) == max(Decimal(0), Decimal(quota.quota_usd) - held)


async def test_signal_id_max_length_bounds_the_signal_id_not_the_model_id(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, ops={"signal_id_max_length": 8}) as mesh:
        core = mesh.ops.core
        principal = core.auth.authenticate(MOMENTUM_META)
        short, long = core.signals.handle_frame([signal("s-1", 0.001), signal("s-123456789", 0.001)], principal)
    assert len("momentum_v1") > 8
    assert short.error.code != "INVALID_ID"
    assert (long.error.code, long.error.field) == ("INVALID_ID", "signal_id")


async def test_trading_halted_sends_no_paper_order_either(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kill switch halts everything: the SHADOW model's signal is refused TRADING_HALTED (counted as the rails
    count theirs) and the stable model's paper twin is not sent; released, both trade again."""
    core = mesh.ops.core
    assert "momentum_v1" in core.parts.canaries.shadow_twins()
    principal = core.auth.authenticate(MOMENTUM_META)
    await wait_until(lambda: core.exposure.mark("BTC-USD") is not None)
    batches = commands_sent(core, monkeypatch)
    core.parts.risk.set_state(None, TradingState.HALTED, "test")
    live, shadow = core.signals.handle_frame(
        [signal("halt-1", 0.01), signal("halt-2", 0.01, model="momentum_v2")], principal
    )
    assert [(d.status, d.error.code) for d in (live, shadow)] == [
        (ops_pb2.DECISION_STATUS_REJECTED, "TRADING_HALTED")
    ] * 2
    assert batches == []
    assert core.parts.risk.rejections.get(("trading_state", "momentum_v2")) == 1
    core.parts.risk.set_state(None, TradingState.ACTIVE, "test")
    core.signals.handle_frame([signal("halt-3", 0.01), signal("halt-4", 0.01, model="momentum_v2")], principal)
    assert sorted(model for batch in batches for model, _ in batch) == [
        "momentum_v1",
        "momentum_v1@paper",
        "momentum_v2@paper",
    ]


async def test_a_signal_without_a_mark_is_refused_by_the_rail_that_comes_first_and_counted(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mark yet: STALE_MARK, counted under risk_rejections_total{rail="stale_mark"} like any rail's refusal; while
    trading is HALTED the halt comes first, as in the rails' order."""
    core = mesh.ops.core
    principal = core.auth.authenticate(MOMENTUM_META)
    monkeypatch.setattr(core.exposure, "mark", lambda instrument: None)
    (stale,) = core.signals.handle_frame([signal("no-mark-1", 0.01)], principal)
    assert (stale.error.code, stale.error.details["mark_age_seconds"]) == ("STALE_MARK", "none")
    assert core.parts.risk.rejections.get(("stale_mark", "momentum_v1")) == 1
    # A SHADOW model's signal (momentum_v2, the demo's canary) is refused and counted the same way, the limit named,
    # and its canary's error rate leaves it out as any rail's refusal.
    (paper,) = core.signals.handle_frame([signal("no-mark-3", 0.01, model="momentum_v2")], principal)
    assert paper.error.code == "STALE_MARK" and set(paper.error.details) == {"mark_age_seconds", "max_age_seconds"}
    assert core.parts.risk.rejections.get(("stale_mark", "momentum_v2")) == 1
    assert core.periodic.canary_guards("momentum_v2").error_rate == 0.0
    core.parts.risk.set_state(None, TradingState.HALTED, "test")
    (halted,) = core.signals.handle_frame([signal("no-mark-2", 0.01)], principal)
    assert halted.error.code == "TRADING_HALTED"


def test_size_rounds_toward_zero_to_the_lot_even_beyond_28_digits() -> None:
    """2/3 of a 45,489,426,346.38 USD quota at a mark of 3 in lots of 1e-18: the floor needs 29 digits, where the
    default context rounded the quotient half-even first, up past the floor."""
    registry = ModelRegistry.from_dict(
        {"strategies": {"s": {"stable_model": "a", "models": {"a": {"instruments": ["X-USD"], "weight": 1.0}}}}}
    )
    policy = CapitalPolicy.from_dict({"total_capital": "45489426346.38", "strategies": {"s": {}}})
    measurement = Measurement(1.0)
    exposure = ExposureView(
        registry, CapitalAllocator(policy), measurement, OrderTracker(None), Decimal(1), live_venue="v", paper_venue="p"
    )
    lot = "0.000000000000000001"
    exposure.set_instruments(
        {"v": [engine_pb2.InstrumentInfo(instrument="X-USD", lot_size=lot, min_quantity=lot, tick_size="0.01")]}
    )
    measurement.set_mark("X-USD", Decimal(3))
    target = 0.6666666666666666
    sized = SignalRouter(registry, exposure).size(
        ops_pb2.Signal(signal_id="s-1", model_id="a", instrument="X-USD", target=target), registry.route("a")
    )
    assert sized is not None
    exact = Fraction(Decimal(repr(target))) * Fraction(exposure.quota(registry.route("a"))) / 3
    assert Fraction(sized.order.quantity) == Fraction(math.floor(exact / Fraction(Decimal(lot)))) * Fraction(
        Decimal(lot)
    )
