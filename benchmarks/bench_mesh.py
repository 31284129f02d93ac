"""End-to-end mesh throughput and latency against three reference points, measured in one run.

Run: .venv/bin/python benchmarks/bench_mesh.py [--signals N] [--batch B] [--window W]

One workload for every scenario: N target-exposure signals (default 3000; about a minute in all on
two cores, the mesh with tracing on decides under 200 signals/s) for ``momentum_v1`` sent in frames
of B signals (default 50), alternating BTC-USD / ETH-USD, each instrument's target flipping between
+T and -T so that every signal sends an order (small enough that the sim book fills it). The demo
registry runs ``momentum_v2`` as a shadow canary, so ops also sends a paper-twin order per signal.
At most W frames (default 20) are in flight: a frame leaves the window when all its decisions are
back; the gRPC client may hold fewer, as ``call.write`` waits while HTTP/2 flow control holds a frame
back (the mean and max actually in flight are printed). Before timing, each scenario sends a
warm-up round (two frames on the one gRPC stream; one request per pooled HTTP connection).

Scenarios (all servers in this process on 127.0.0.1, port 0; the client shares the process):

* mesh: the real engine and ops gRPC servers started as the tests start them (``tests/conftest.py``)
  with a strategy client on ``OpsService/StreamSignals``; run with tracing on (the default) and off.
  Throughput is decided signals/s, from the first send to the last decision; latencies are
  signal->decision and signal->first fill, taken at the client from the send of the signal's frame.
  The demo risk limits' order-rate bucket (200/s, burst 400 per model) is raised in a copy of
  ``config/demo/risk_limits.json`` so the rail does not decide the result.
* (a) pipeline in process: the same servers, but ``SignalPath.handle`` called directly in a loop
  (yielding to the event loop after each frame, so the engine link sends and the engine executes as
  in the mesh); latency is the ``handle_signal`` call, first fill is taken where the service would
  forward it (a fill queue subscribed with ``ExecutionFeedback.subscribe``). The rate of the calls alone
  (no engine work) is printed as well.
* (b) gRPC transport: a raw grpc.aio bidi echo on the OpsService descriptor (generic handler, one
  SignalDecision per signal, no logic); same client code as mesh; latency is the round trip.
* (c) FastAPI + HTTPX: uvicorn (in a background thread) serving a POST of a JSON batch answered with
  JSON decisions by the same trivial echo; an httpx.AsyncClient with W concurrent requests.

Only figures and ratios are printed: timing is never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
import pydantic  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc  # noqa: E402
from ops_server.core import OpsCore  # noqa: E402
from tests.conftest import DEMO, MOMENTUM_TOKEN, start_mesh, stop_mesh  # noqa: E402

MODEL = "momentum_v1"
INSTRUMENTS = ("BTC-USD", "ETH-USD")
TARGET = 0.005
META = (("x-strategy-token", MOMENTUM_TOKEN),)
RAISED_RATE = 1_000_000
SERVICE = ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name
FILL_QUIET_SECONDS = 3.0
FILL_MAX_WAIT_SECONDS = 20.0
DECISION_TIMEOUT_SECONDS = 120.0

SignalCall = grpc.aio.StreamStreamCall[ops_pb2.StreamSignalsRequest, ops_pb2.StreamSignalsResponse]


# -- workload -------------------------------------------------------------------------------------


def make_signals(count: int, prefix: str) -> list[ops_pb2.Signal]:
    """Alternating instruments; each instrument's target flips sign every time, so each signal trades."""
    out = []
    for i in range(count):
        target = TARGET if (i // 2) % 2 == 0 else -TARGET
        out.append(
            ops_pb2.Signal(
                signal_id=f"{prefix}-{i}",
                model_id=MODEL,
                instrument=INSTRUMENTS[i % 2],
                target=target,
                confidence=1.0,
            )
        )
    return out


def make_frames(signals: Sequence[ops_pb2.Signal], batch: int) -> list[ops_pb2.StreamSignalsRequest]:
    return [ops_pb2.StreamSignalsRequest(signals=signals[i : i + batch]) for i in range(0, len(signals), batch)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Result:
    name: str
    signals: int
    seconds: float
    latency_ms: list[float]
    latency_label: str
    fill_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.signals / self.seconds if self.seconds > 0 else math.nan


# -- gRPC stream client (mesh and echo) -----------------------------------------------------------


class StreamClient:
    """One ``StreamSignals`` call driven by the write/read API, with a bounded window of frames."""

    def __init__(self, stub: ops_pb2_grpc.OpsServiceStub, window: int) -> None:
        self.call: SignalCall = cast(SignalCall, stub.StreamSignals(metadata=META))  # type: ignore[call-arg]
        self._slots = asyncio.Semaphore(window)
        self._window = window
        self.sent_at: dict[str, float] = {}
        self._frame_of: dict[str, int] = {}
        self._remaining: dict[int, int] = {}
        self._outstanding = 0
        self._all_decided = asyncio.Event()
        self._closed = False
        self._frames_sent = 0
        self.last_decision_at = 0.0
        self.last_fill_at = 0.0
        self.decision_ms: list[float] = []
        self.fill_ms: dict[str, float] = {}
        self.statuses: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.in_flight: list[int] = []
        self._reader = asyncio.create_task(self._read(), name="bench-stream-reader")

    def reset_stats(self) -> None:
        self.decision_ms = []
        self.fill_ms = {}
        self.statuses = Counter()
        self.rejections = Counter()
        self.accepted = set()
        self.in_flight = []

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if not isinstance(response, ops_pb2.StreamSignalsResponse):  # grpc.aio.EOF
                    return
                now = time.perf_counter()
                for decision in response.decisions:
                    frame = self._frame_of.pop(decision.signal_id, None)
                    if frame is None:
                        continue
                    self.decision_ms.append((now - self.sent_at[decision.signal_id]) * 1000)
                    self.statuses[ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")] += 1
                    if decision.status == ops_pb2.DECISION_STATUS_ACCEPTED:
                        self.accepted.add(decision.signal_id)
                    elif decision.status == ops_pb2.DECISION_STATUS_REJECTED:
                        self.rejections[decision.error.code] += 1
                    self.last_decision_at = now
                    self._remaining[frame] -= 1
                    if self._remaining[frame] == 0:
                        del self._remaining[frame]
                        self._slots.release()
                    self._outstanding -= 1
                    if self._outstanding == 0:
                        self._all_decided.set()
                for fill in response.fills:
                    sent = self.sent_at.get(fill.signal_id)
                    if sent is not None and fill.signal_id not in self.fill_ms:
                        self.fill_ms[fill.signal_id] = (now - sent) * 1000
                        self.last_fill_at = now
        finally:
            self._closed = True
            self._all_decided.set()
            for _ in range(self._window):
                self._slots.release()

    async def send_all(self, frames: Sequence[ops_pb2.StreamSignalsRequest]) -> tuple[float, float]:
        """Send every frame (window-bounded); returns (first send, last decision) perf_counter times."""
        self._all_decided.clear()
        self._outstanding = sum(len(f.signals) for f in frames)
        first_send = 0.0
        for frame in frames:
            await self._slots.acquire()
            if self._closed:
                break
            frame_id = self._frames_sent
            self._frames_sent += 1
            self._remaining[frame_id] = len(frame.signals)
            now = time.perf_counter()
            first_send = first_send or now
            for sig in frame.signals:
                self.sent_at[sig.signal_id] = now
                self._frame_of[sig.signal_id] = frame_id
            self.in_flight.append(len(self._remaining))
            await self.call.write(frame)  # waits while the transport holds it back (HTTP/2 flow control)
        await asyncio.wait_for(self._all_decided.wait(), DECISION_TIMEOUT_SECONDS)
        if self._outstanding:
            raise RuntimeError(f"stream closed with {self._outstanding} signal(s) undecided: {self.call.code()}")
        return first_send, self.last_decision_at

    async def wait_fills(self) -> None:
        """Until every accepted signal has a fill, or no fill came for a few quiet seconds (IOC may not fill)."""
        started = time.perf_counter()
        self.last_fill_at = max(self.last_fill_at, started)
        while not self.accepted <= self.fill_ms.keys() and not self._closed:
            now = time.perf_counter()
            if now - self.last_fill_at > FILL_QUIET_SECONDS or now - started > FILL_MAX_WAIT_SECONDS:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await self.call.done_writing()
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await self._reader


async def drive_stream(
    channel: grpc.aio.Channel, name: str, prefix: str, args: argparse.Namespace, *, fills: bool
) -> Result:
    stub = ops_pb2_grpc.OpsServiceStub(channel)
    client = StreamClient(stub, args.window)
    try:
        await client.send_all(make_frames(make_signals(2 * args.batch, f"{prefix}-warm"), args.batch))
        if fills:
            await client.wait_fills()
        client.reset_stats()
        frames = make_frames(make_signals(args.signals, prefix), args.batch)
        first, last = await client.send_all(frames)
        if fills:
            await client.wait_fills()
        return Result(
            name,
            args.signals,
            last - first,
            client.decision_ms,
            "signal->decision" if fills else "round trip",
            fill_ms=list(client.fill_ms.values()),
            statuses=client.statuses,
            accepted=len(client.accepted) if fills else 0,
            rejections=client.rejections,
            note=f"frames in flight when a frame was sent: mean {sum(client.in_flight) / len(client.in_flight):.1f}, "
            f"max {max(client.in_flight)} (window {args.window})",
        )
    finally:
        await client.close()


# -- mesh -----------------------------------------------------------------------------------------


def raised_risk_limits(tmp: Path) -> Path:
    """A copy of the demo risk limits whose order-rate bucket is out of the way."""
    limits = json.loads((DEMO / "risk_limits.json").read_text(encoding="utf-8"))
    limits["default_model"]["order_rate_per_second"] = RAISED_RATE
    limits["default_model"]["order_burst"] = RAISED_RATE
    for model in limits.get("models", {}).values():
        model["order_rate_per_second"] = RAISED_RATE
        model["order_burst"] = RAISED_RATE
    path = tmp / "risk_limits.json"
    path.write_text(json.dumps(limits), encoding="utf-8")
    return path


def order_outcomes(core: OpsCore, prefix: str) -> str:
    """Read after timing, from ops' order tracker: how the measured signals' live orders ended."""
    orders = [
        o
        for o in core.tracker.orders.values()
        if o.model_id == MODEL
        and o.signal_id.startswith(f"{prefix}-")
        and not o.signal_id.startswith(f"{prefix}-warm-")
    ]
    filled = sum(1 for o in orders if o.filled > 0)
    still_open = sum(1 for o in orders if o.filled == 0 and o.open_quantity > 0)
    return (
        f"ops tracker: {len(orders)} live orders, {filled} (partly) filled, "
        f"{len(orders) - filled - still_open} ended unfilled (IOC), {still_open} still open"
    )


def mesh_overrides(tmp: Path, tracing: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    ops: dict[str, Any] = {"risk_limits_path": raised_risk_limits(tmp), "metrics_port": None}
    engine: dict[str, Any] = {}
    if not tracing:
        ops["tracing"] = False
        engine["tracing"] = False
    return engine, ops


async def run_mesh(args: argparse.Namespace, tracing: bool) -> Result:
    label = "on" if tracing else "off"
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp_name:
        tmp = Path(tmp_name)
        engine, ops = mesh_overrides(tmp, tracing)
        mesh = await start_mesh(tmp, engine=engine, ops=ops)
        try:
            async with mesh.channel() as channel:
                result = await drive_stream(channel, f"mesh, tracing {label}", f"mesh-{label}", args, fills=True)
            result.note += "; " + order_outcomes(mesh.ops.core, f"mesh-{label}")
        finally:
            await stop_mesh(mesh)
    return result


async def run_pipeline(args: argparse.Namespace, tracing: bool) -> Result:
    """(a): SignalPath.handle in a loop on the real, connected servers; no client hop."""
    label = "on" if tracing else "off"
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp_name:
        tmp = Path(tmp_name)
        engine, ops = mesh_overrides(tmp, tracing)
        mesh = await start_mesh(tmp, engine=engine, ops=ops)
        core = mesh.ops.core
        principal = core.auth.authenticate(META)
        fills: asyncio.Queue[ops_pb2.Fill] = asyncio.Queue()
        core.feedback.subscribe(principal.models, fills)
        sent_at: dict[str, float] = {}
        fill_ms: dict[str, float] = {}
        last_fill = [0.0]

        async def consume() -> None:
            while True:
                fill = await fills.get()
                now = time.perf_counter()
                sent = sent_at.get(fill.signal_id)
                if sent is not None and fill.signal_id not in fill_ms:
                    fill_ms[fill.signal_id] = (now - sent) * 1000
                    last_fill[0] = now

        consumer = asyncio.create_task(consume(), name="bench-fill-consumer")
        try:
            for prefix, count in ((f"core-{label}-warm", 2 * args.batch), (f"core-{label}", args.signals)):
                sent_at.clear()
                fill_ms.clear()
                latency: list[float] = []
                statuses: Counter[str] = Counter()
                rejections: Counter[str] = Counter()
                accepted: set[str] = set()
                frames = make_frames(make_signals(count, prefix), args.batch)
                first = time.perf_counter()
                for frame in frames:
                    for sig in frame.signals:
                        started = time.perf_counter()
                        sent_at[sig.signal_id] = started
                        decision = core.signals.handle(sig, principal)
                        latency.append((time.perf_counter() - started) * 1000)
                        statuses[ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")] += 1
                        if decision.status == ops_pb2.DECISION_STATUS_ACCEPTED:
                            accepted.add(sig.signal_id)
                        elif decision.status == ops_pb2.DECISION_STATUS_REJECTED:
                            rejections[decision.error.code] += 1
                    await asyncio.sleep(0)  # as the service does between frames: let the engine link send
                last = time.perf_counter()
                waited = time.perf_counter()
                last_fill[0] = max(last_fill[0], waited)
                while not accepted <= fill_ms.keys():
                    now = time.perf_counter()
                    if now - last_fill[0] > FILL_QUIET_SECONDS or now - waited > FILL_MAX_WAIT_SECONDS:
                        break
                    await asyncio.sleep(0.01)
            alone = args.signals / (sum(latency) / 1000)
            outcomes = order_outcomes(core, f"core-{label}")
            return Result(
                f"(a) pipeline in process, tracing {label}",
                args.signals,
                last - first,
                latency,
                "handle_signal call",
                fill_ms=list(fill_ms.values()),
                statuses=statuses,
                accepted=len(accepted),
                rejections=rejections,
                note=f"handle_signal alone (sum of call times, no engine work): {alone:,.0f} signals/s; {outcomes}",
            )
        finally:
            core.feedback.unsubscribe(fills)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await stop_mesh(mesh)


# -- (b) raw grpc.aio echo ------------------------------------------------------------------------


async def echo_stream(
    request_iterator: AsyncIterator[ops_pb2.StreamSignalsRequest], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
    async for frame in request_iterator:
        yield ops_pb2.StreamSignalsResponse(
            decisions=[
                ops_pb2.SignalDecision(
                    signal_id=s.signal_id,
                    model_id=s.model_id,
                    status=ops_pb2.DECISION_STATUS_ACCEPTED,
                    mode=ops_pb2.ROUTING_MODE_LIVE,
                )
                for s in frame.signals
            ]
        )


async def run_grpc_echo(args: argparse.Namespace) -> Result:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        echo_stream,
        request_deserializer=ops_pb2.StreamSignalsRequest.FromString,
        response_serializer=ops_pb2.StreamSignalsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"StreamSignals": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await drive_stream(channel, "(b) grpc.aio echo", "echo", args, fills=False)
    finally:
        await server.stop(0.5)


# -- (c) FastAPI + HTTPX --------------------------------------------------------------------------


class SignalIn(pydantic.BaseModel):
    signal_id: str
    model_id: str
    instrument: str
    target: float
    confidence: float = 0.0


class SignalBatch(pydantic.BaseModel):
    signals: list[SignalIn]


class DecisionOut(pydantic.BaseModel):
    signal_id: str
    model_id: str
    status: str
    mode: str


class DecisionBatch(pydantic.BaseModel):
    decisions: list[DecisionOut]


def build_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/signals")
    async def decide(batch: SignalBatch) -> DecisionBatch:
        return DecisionBatch(
            decisions=[
                DecisionOut(signal_id=s.signal_id, model_id=s.model_id, status="ACCEPTED", mode="LIVE")
                for s in batch.signals
            ]
        )

    return app


@contextlib.asynccontextmanager
async def uvicorn_in_thread(app: FastAPI) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bench-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        sock.close()


def json_batches(signals: Sequence[ops_pb2.Signal], batch: int) -> list[dict[str, Any]]:
    rows = [
        {
            "signal_id": s.signal_id,
            "model_id": s.model_id,
            "instrument": s.instrument,
            "target": s.target,
            "confidence": s.confidence,
        }
        for s in signals
    ]
    return [{"signals": rows[i : i + batch]} for i in range(0, len(rows), batch)]


async def post_all(
    client: httpx.AsyncClient, batches: Sequence[dict[str, Any]], window: int, latency: list[float]
) -> tuple[float, float]:
    pending: Iterator[dict[str, Any]] = iter(batches)
    last = [0.0]

    async def worker() -> None:
        for payload in pending:
            sent = time.perf_counter()
            response = await client.post("/v1/signals", json=payload)
            response.raise_for_status()
            decisions = response.json()["decisions"]
            now = time.perf_counter()
            if len(decisions) != len(payload["signals"]):
                raise RuntimeError("decision count does not match the batch")
            latency.extend([(now - sent) * 1000] * len(decisions))
            last[0] = max(last[0], now)

    first = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(window):
            group.create_task(worker())
    return first, last[0]


async def run_fastapi(args: argparse.Namespace) -> Result:
    async with uvicorn_in_thread(build_app()) as port:
        limits = httpx.Limits(max_connections=args.window, max_keepalive_connections=args.window)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
            warm = json_batches(make_signals(args.window * args.batch, "http-warm"), args.batch)
            await post_all(client, warm, args.window, [])
            latency: list[float] = []
            batches = json_batches(make_signals(args.signals, "http"), args.batch)
            first, last = await post_all(client, batches, args.window, latency)
    return Result("(c) FastAPI + HTTPX echo", args.signals, last - first, latency, "round trip")


# -- report ---------------------------------------------------------------------------------------


def fmt_ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f}"


def report(results: Sequence[Result], mesh_on: Result, mesh_off: Result) -> None:
    header = (
        f"{'scenario':<37} {'signals/s':>10} {'p50 / p99 ms':>16} {'first fill p50 / p99 ms':>24} "
        f"{'x mesh(on)':>11} {'x mesh(off)':>12}  latency measured"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<37} {r.rate:>10,.0f} {fmt_ms(r.latency_ms):>16} {fmt_ms(r.fill_ms):>24} "
            f"{r.rate / mesh_on.rate:>10.2f}x {r.rate / mesh_off.rate:>11.2f}x  {r.latency_label}"
        )
    print()
    for r in results:
        line = f"{r.name}: {r.signals} signals in {r.seconds:.2f} s"
        if r.statuses:
            line += "; decisions " + ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
        if r.rejections:
            line += " (rejected: " + ", ".join(f"{k} {v}" for k, v in r.rejections.most_common()) + ")"
        if r.fill_ms or r.accepted:
            line += f"; first fill seen for {len(r.fill_ms)} of {r.accepted} accepted"
        if r.note:
            line += f"; {r.note}"
        print(line)


async def run(args: argparse.Namespace) -> None:
    print("command: " + " ".join([".venv/bin/python benchmarks/bench_mesh.py", *sys.argv[1:]]))
    print(
        f"workload: {args.signals} target-exposure signals for {MODEL}, frames of {args.batch}, at most "
        f"{args.window} frames in flight, {'/'.join(INSTRUMENTS)} alternating, each instrument's target "
        f"flipping +-{TARGET} so every signal sends an order (the demo registry's shadow canary momentum_v2 "
        "adds a paper-twin order per signal: 2 engine orders per signal)"
    )
    print(
        "risk limits: a copy of config/demo/risk_limits.json with order_rate_per_second and order_burst raised "
        f"from 200/s (burst 400) to {RAISED_RATE:,} so the order-rate rail does not decide the result"
    )
    print(
        f"python {platform.python_version()}, grpcio {grpc.__version__}, uvicorn {uvicorn.__version__} "
        f"(asyncio loop, h11), {os.cpu_count()} CPU(s); client, engine and ops share one process and event loop "
        "(as the tests run them); uvicorn runs in a thread of the same process"
    )
    print()
    started = time.perf_counter()
    mesh_on = await run_mesh(args, tracing=True)
    mesh_off = await run_mesh(args, tracing=False)
    core_on = await run_pipeline(args, tracing=True)
    core_off = await run_pipeline(args, tracing=False)
    echo = await run_grpc_echo(args)
    http = await run_fastapi(args)
    report([mesh_on, mesh_off, core_on, core_off, echo, http], mesh_on, mesh_off)
    print(
        "\nsignals/s: decided signals from the first send to the last decision (mesh), the loop of handle_signal "
        "calls\nwith the engine link draining between frames (a), the last echoed decision (b, c). Latencies are "
        "taken from\nthe send of a signal's frame; first fill is the first fill of the signal's order seen by the "
        "client (mesh)\nor by a fill subscriber inside ops (a)."
    )
    print(f"total run time {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--signals", type=int, default=3000, help="signals per scenario (default 3000)")
    parser.add_argument("--batch", type=int, default=50, help="signals per frame / request (default 50)")
    parser.add_argument("--window", type=int, default=20, help="frames / requests in flight (default 20)")
    args = parser.parse_args()
    if args.signals <= 0 or args.batch <= 0 or args.window <= 0:
        parser.error("--signals, --batch and --window must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
