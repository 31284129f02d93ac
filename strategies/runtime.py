"""The strategy runtime: quotes in from the engine, signals out to ops, decisions and fills back.

One :class:`StrategyRunner` per strategy entry keeps two long-lived streams alive, each
reconnecting with exponential backoff and jitter:

- ``MarketDataService/StreamQuotes`` on the engine (public market data, no token);
- one ``OpsService/StreamSignals`` bidi stream to ops, authenticated with ``x-strategy-token``.

The decision logic is free of I/O (:class:`strategies.planner.SignalPlanner`, which decides which targets
are worth a signal); :meth:`StrategyRunner.frames_for` turns one quote
frame into request frames (all signals of one quote frame in one request) and
:meth:`StrategyRunner.handle_response` books decisions and fills into :class:`RunnerStats`.

In-flight bookkeeping (signal sent -> decision -> first fill) lives in a bounded ordered dict,
and latency samples in bounded deques, so memory stays flat however long the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, InitVar, dataclass

import grpc

from clients.sdk import MAX_SIGNALS_PER_FRAME, EngineClient, FrameCoalescer, MeshRpcError, OpsClient, SignalStream
from clients.strategy_stats import ModelCounts, StatsFile, StrategySnapshot
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.backoff import Backoff
from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.tasks import cancel_and_wait
from nautilus_mesh.telemetry import OPS_SIGNAL_STREAM, Tracing, frame_received
from strategies.planner import ModelSpec, SignalPlanner
from strategies.run_stats import RunnerStats, latency_summary

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 50_000
"""Signals remembered between send and decision / first fill; the oldest are forgotten first."""

_STATUS_NAMES: dict[int, str] = {
    int(value): name.removeprefix("DECISION_STATUS_") for name, value in ops_pb2.DecisionStatus.items() if value != 0
}


def status_name(status: int) -> str:
    """``DECISION_STATUS_ACCEPTED`` -> ``ACCEPTED`` (``UNSPECIFIED`` for unknown values)."""
    return _STATUS_NAMES.get(status, "UNSPECIFIED")


def combined_snapshot(runners: Sequence[StrategyRunner]) -> StatsFile:
    """One snapshot over several runners: per-strategy snapshots plus totals with merged percentiles."""
    strategies = {r.name: r.snapshot() for r in runners}
    decision: list[float] = []
    fill: list[float] = []
    for r in runners:
        decision.extend(r.stats.decision_latency_ms)
        fill.extend(r.stats.fill_latency_ms)
    elapsed = max((r.stats.elapsed() for r in runners), default=1e-9)
    signals = sum(s["signals"] for s in strategies.values())
    models: dict[str, ModelCounts] = {}
    for snap in strategies.values():
        models.update(snap.get("models", {}))
    return {
        "updated_at_unix": round(REAL_CLOCK.time(), 3),
        "totals": {
            "elapsed_s": round(elapsed, 3),
            "signals": signals,
            "signals_per_s": round(signals / elapsed, 3),
            "orders": sum(s["orders"] for s in strategies.values()),
            "fills": sum(s["fills"] for s in strategies.values()),
            "rejected": sum(s["rejected"] for s in strategies.values()),
            "decision_latency_ms": latency_summary(decision),
            "fill_latency_ms": latency_summary(fill),
        },
        "models": models,
        "strategies": strategies,
    }


@dataclass
class _Pending:
    model_id: str
    sent_ns: int
    accepted: bool = False


@dataclass(eq=False, repr=False)
class StrategyRunner:
    """Runs one strategy's models against live quotes and streams their signals to ops.

    Args:
        name: strategy name (logs, stats, span service name).
        token: the strategy token (``x-strategy-token``); never logged.
        models: (model_id, model, instruments) triples.
        ops_address: ops host:port.
        engine_address: engine host:port (market data).
        tracing: per-message spans; None disables them.
        min_target_change: smallest target move worth a signal.
        refresh_seconds: re-send an unchanged target after this many seconds (0 = never).
        quote_venue: only quotes of this venue feed the models ("" = any venue).
        drain_timeout: on stop, seconds to wait for decisions and fills of signals already sent.
        backoff_initial: first reconnect delay in seconds (doubles up to ``backoff_max``).
        backoff_max: largest reconnect delay in seconds before jitter (each delay is drawn from 0.5x to 1.5x).
        outbox_size: bound of the queue of frames waiting for the signal stream.
        clock: wall time stamped on signals (``created_at_unix_nanos``).
    """

    name: str
    token: str
    models: InitVar[Sequence[ModelSpec]]
    ops_address: str
    engine_address: str
    tracing: Tracing | None = None
    min_target_change: float = 0.05
    _: KW_ONLY
    quote_venue: str = ""
    refresh_seconds: float = 0.0
    drain_timeout: float = 2.0
    backoff_initial: float = 0.1
    backoff_max: float = 0.25
    outbox_size: int = 1000
    clock: Clock = REAL_CLOCK

    def __post_init__(self, models: Sequence[ModelSpec]) -> None:
        self.last_fill_seq = 0
        """The resume point: the newest fill seq of the models when the runner started (``ListFills``), then the highest
        seen; sent when a stream (re)opens, so ops replays the fills missed meanwhile."""
        self._resume_point_known = False
        """True once the newest fill seq at start was read: from then on every stream resumes, from seq 0 too."""
        self.frame_limit = MAX_SIGNALS_PER_FRAME
        """Signals per request frame: our own bound until ops says a smaller one (GetStreamLimits)."""
        # Run-unique prefix: signal ids stay unique per model across restarts (ops deduplicates by id).
        self.planner = SignalPlanner(
            models,
            self.min_target_change,
            run_id=f"{self.name}-{uuid.uuid4().hex[:8]}",
            refresh_seconds=self.refresh_seconds,
        )
        self.stats = RunnerStats()
        self._pending: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self._ops_connected = False
        self._progress = asyncio.Event()
        self._spans = self.tracing or Tracing(self.name, enabled=False)  # off: spans that cost nothing and make nothing

    # --- pure core ---------------------------------------------------------------------------

    def frames_for(
        self, quotes: Iterable[common_pb2.Quote], *, emit: bool | None = None
    ) -> list[ops_pb2.StreamSignalsRequest]:
        """Request frames for one quote frame: every signal it produces, batched (no I/O).

        Opens a PRODUCER span per signal whose context goes into ``signal.trace``, counts the
        signal and starts its latency clock. ``emit`` defaults to "the signal stream is
        connected": while it is not, the models still learn from the quotes but nothing is sent.
        """
        prices: list[tuple[str, float, int]] = []
        for quote in quotes:
            if self.quote_venue and quote.venue != self.quote_venue:
                continue
            try:
                mid = float(quote.mid)
            except ValueError:
                continue
            prices.append((quote.instrument, mid, quote.ts_unix_nanos))
        signals = self.planner.plan(prices, self.clock.time_ns(), emit=self._ops_connected if emit is None else emit)
        if not signals:
            return []
        for signal in signals:
            attrs = {
                "messaging.message.id": signal.signal_id,
                "nautilus.model_id": signal.model_id,
                "nautilus.signal_id": signal.signal_id,
            }
            # The PRODUCER span's context goes into signal.trace: ops parents its spans on it.
            with self._spans.produce("strategy.signal send", signal.trace, attrs, destination=OPS_SIGNAL_STREAM):
                self._track_sent(signal)
        return [
            ops_pb2.StreamSignalsRequest(signals=signals[i : i + self.frame_limit])
            for i in range(0, len(signals), self.frame_limit)
        ]

    def _track_sent(self, signal: ops_pb2.Signal) -> None:
        self.stats.signals[signal.model_id] += 1
        self._pending[(signal.model_id, signal.signal_id)] = _Pending(signal.model_id, time.perf_counter_ns())
        while len(self._pending) > MAX_IN_FLIGHT:
            self._pending.popitem(last=False)

    def handle_response(self, response: ops_pb2.StreamSignalsResponse) -> None:
        """Book one response frame: decision counts and latency, fills and signal-to-fill latency (no I/O)."""
        now = time.perf_counter_ns()
        for decision in response.decisions:
            status = status_name(decision.status)
            model_id = decision.model_id or "<frame>"
            self.stats.count_decision(model_id, status)
            key = (decision.model_id, decision.signal_id)
            pending = self._pending.get(key)
            if pending is not None and not pending.accepted:
                self.stats.decision_latency_ms.append((now - pending.sent_ns) / 1e6)
                if status == "ACCEPTED":
                    pending.accepted = True
                else:
                    del self._pending[key]
            if status == "REJECTED":
                self.stats.rejected[model_id] += 1
                code = decision.error.code or "UNKNOWN"
                self.stats.rejections_by_code[code] += 1
                # The first of each code is a warning (a strategy whose every signal is refused, e.g. INVALID_ID, must
                # not look healthy); repeats are counted (strategy_decisions_total) and logged at DEBUG.
                first = self.stats.rejections_by_code[code] == 1
                (log.warning if first else log.debug)(
                    "[STRATEGY] %s signal %s rejected: %s %s%s",
                    self.name,
                    decision.signal_id,
                    code,
                    decision.error.message,
                    " (the first with this code; later ones are logged at DEBUG)" if first else "",
                )
        for fill in response.fills:
            self.last_fill_seq = max(self.last_fill_seq, fill.seq)
            attrs = {
                "messaging.message.id": fill.exec_id,
                "nautilus.model_id": fill.model_id,
                "nautilus.signal_id": fill.signal_id,
                "nautilus.client_order_id": fill.client_order_id,
            }
            with self._spans.consume("strategy.fill receive", fill.trace, attrs, destination=OPS_SIGNAL_STREAM):
                self.stats.fills[fill.model_id] += 1
                pending = self._pending.pop((fill.model_id, fill.signal_id), None)
                if pending is not None:
                    self.stats.record_fill_latency((now - pending.sent_ns) / 1e6)
        self._progress.set()

    @property
    def in_flight(self) -> int:
        """Signals sent and still waiting for a decision or a first fill."""
        return len(self._pending)

    def snapshot(self) -> StrategySnapshot:
        """This runner's stats snapshot (see ``RunnerStats.snapshot``)."""
        snap = self.stats.snapshot(self.planner.model_ids)
        snap["in_flight"] = self.in_flight
        return snap

    # --- network -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then close gracefully.

        On stop: the quote stream is cancelled, decisions and fills of signals already sent
        are awaited for up to ``drain_timeout`` seconds, then the signal stream is half-closed
        so ops finishes it cleanly.
        """
        outbox: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue(self.outbox_size)
        closing = asyncio.Event()
        async with (
            OpsClient(self.ops_address, strategy_token=self.token) as ops,
            EngineClient(self.engine_address) as engine,
        ):
            quotes_task = asyncio.create_task(self._quote_loop(engine, outbox), name=f"{self.name}-quotes")
            signals_task = asyncio.create_task(self._signal_loop(ops, outbox, closing), name=f"{self.name}-signals")
            log.info("[STRATEGY] %s running models %s", self.name, ", ".join(self.planner.model_ids))
            try:
                await stop.wait()
            finally:
                await cancel_and_wait(quotes_task)
                await self._wait_drained(self.drain_timeout)
                closing.set()
                with contextlib.suppress(asyncio.QueueFull):
                    outbox.put_nowait(None)
                try:
                    await asyncio.wait_for(signals_task, timeout=self.drain_timeout + 1.0)
                except TimeoutError:
                    log.warning("[STRATEGY] %s signal stream did not close in time; cancelled", self.name)
                log.info("[STRATEGY] %s stopped (%d signals still in flight)", self.name, self.in_flight)

    async def _wait_drained(self, seconds: float) -> None:
        deadline = REAL_CLOCK.monotonic() + seconds  # a real-time wait on the stream (asyncio timeouts)
        while self._pending and self._ops_connected:
            remaining = deadline - REAL_CLOCK.monotonic()
            if remaining <= 0:
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _quote_loop(
        self, engine: EngineClient, outbox: asyncio.Queue[ops_pb2.StreamSignalsRequest | None]
    ) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while True:
            try:
                self.planner.forget_quotes()
                async for frame in engine.stream_quotes(self.planner.instruments):
                    if not self.stats.connected["engine"]:
                        self.stats.connected["engine"] = True
                        log.info("[STRATEGY] %s receiving quotes from %s", self.name, self.engine_address)
                    backoff.reset()
                    for request in self.frames_for(frame.quotes):
                        # Backpressure: a slow ops stream slows quote intake instead of growing memory.
                        await outbox.put(request)
                log.warning("[STRATEGY] %s quote stream ended by the engine", self.name)
            except MeshRpcError as exc:
                log.warning("[STRATEGY] %s quote stream failed: %s", self.name, exc)
            self.stats.connected["engine"] = False
            self.stats.reconnects["engine"] += 1
            await asyncio.sleep(backoff.next_delay())

    async def _signal_loop(
        self,
        ops: OpsClient,
        outbox: asyncio.Queue[ops_pb2.StreamSignalsRequest | None],
        closing: asyncio.Event,
    ) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not closing.is_set():
            await self._learn_frame_limit(ops)
            await self._learn_resume_point(ops)
            call = ops.stream_signals()
            # Frames sent on a dropped stream may be lost: re-state every target on this one. Signals planned from here
            # wait in the outbox until the writer starts, after the resume frame: ops reads resume from a first frame.
            self.planner.forget_sent()
            self._ops_connected = True
            self.stats.connected["ops"] = True
            if self._resume_point_known or self.last_fill_seq:  # fills applied while no stream was open first, once
                resume = ops_pb2.StreamSignalsRequest(resume_after_fill_seq=self.last_fill_seq, resume_fills=True)
                with contextlib.suppress(MeshRpcError):
                    await call.write(resume)
            writer = asyncio.create_task(self._write(call, outbox), name=f"{self.name}-signal-writer")
            try:
                async for response in call:
                    frame_received()
                    backoff.reset()
                    self.handle_response(response)
                if closing.is_set():
                    log.info("[STRATEGY] %s signal stream closed", self.name)
                    return
                log.warning("[STRATEGY] %s signal stream ended by ops", self.name)
            except MeshRpcError as error:
                level = logging.ERROR if error.code == grpc.StatusCode.UNAUTHENTICATED else logging.WARNING
                log.log(level, "[STRATEGY] %s signal stream failed: %s", self.name, error)
            finally:
                self._ops_connected = False
                self.stats.connected["ops"] = False
                writer.cancel()
                # The writer fails with whatever the dead call raises on write; the reader above
                # already reported why the stream ended.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
                call.cancel()
            self.stats.reconnects["ops"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), backoff.next_delay())

    async def _learn_resume_point(self, ops: OpsClient) -> None:
        """Once per run: the newest fill seq of our models now (0 when they have none), so that a stream lost before
        our first fill still resumes from here, and fills from before this run are not replayed as ours."""
        if self._resume_point_known:
            return
        try:
            newest = await ops.list_fills(page_size=1)  # our models' fills, newest first
        except MeshRpcError as exc:  # tried again before the next stream
            log.debug("[STRATEGY] %s could not read its newest fill seq: %s", self.name, exc)
            return
        self.last_fill_seq = max(self.last_fill_seq, newest.fills[0].seq if newest.fills else 0)
        self._resume_point_known = True

    async def _learn_frame_limit(self, ops: OpsClient) -> None:
        """Frames carry at most what ops says it accepts (``GetStreamLimits``), and at most our own bound."""
        try:
            limits = await ops.get_stream_limits()
        except MeshRpcError as exc:  # the stream itself will report an unreachable ops
            log.debug("[STRATEGY] %s could not read ops' stream limits: %s", self.name, exc)
            return
        if limits.max_signals_per_frame:
            self.frame_limit = min(MAX_SIGNALS_PER_FRAME, limits.max_signals_per_frame)

    async def _write(
        self,
        call: SignalStream,
        outbox: asyncio.Queue[ops_pb2.StreamSignalsRequest | None],
    ) -> None:
        # Frames queued while the previous write was in flight leave together (no timer: an empty
        # queue sends at once).
        coalescer = FrameCoalescer(outbox, self.frame_limit)
        while True:
            frame = await coalescer.next()
            if frame is None:
                await call.done_writing()
                return
            self.stats.frames_sent += 1
            await call.write(frame)
