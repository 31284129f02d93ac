"""End-to-end mesh throughput and signal-to-fill latency against its reference points, in one run and one table.

Run: .venv/bin/python benchmarks/bench_mesh.py [--signals N] [--batch B] [--window W] [--rates 1000,5000]
     [--duration S] [--sampling R] [--only a,b,...] [--journal-mib M] [--json PATH] [--plot PATH] [--default-gc]

Scenarios (``--only`` picks some; names in brackets):

* [mesh3] the mesh as three processes, as deployed: ``python -m engine_server``, ``python -m ops_server``
  and a load client (this script with ``--load-client``), each its own process, on loopback.
* [floor] the mesh's messages with no work behind them: stand-ins for engine and ops (``benchmarks/mesh_floor.py``),
  each its own process, that carry every message the mesh carries for a signal (its decision, its order and paper
  twin, their ACCEPTED and FILL reports, its fill) as the mesh frames them, and decide, journal, check and trace
  nothing; driven by the same load client with the same loads as mesh3. What no Python implementation of the same
  protocol on the same transport exceeds on this machine; mesh3 against it is what the mesh's work costs.
* [mesh1] the mesh in one process: the real engine and ops gRPC servers started as the tests start
  them (``tests/conftest.py``) with the load client on the same event loop.
* [mesh2w] ops scaled out: the engine and two ops workers sharded by strategy (``ops_workers: 2``, momentum on
  worker 0, meanrev on worker 1, coordinated on PostgreSQL at ``BENCH_DATABASE_URL``, default the local
  ``postgresql://postgres@127.0.0.1:5432/test``; skipped when it does not answer), each worker its own process, with
  one load-client process per strategy running at once. The closed-loop row ``both`` is the two clients' signals
  over the wall time from the first send to the last decision; compare it with ``mesh3``'s single ops.
* [pipeline] ops' signal path in process: ``SignalPath.handle_frame`` called in a loop on the real,
  connected servers (no client hop); first fills are taken from a fill subscription inside ops.
* [echo] the transport ceiling: a raw grpc.aio bidi echo on the OpsService descriptor (one
  SignalDecision per signal, no logic) driven by the same client code, same framing.
* [tracing] what tracing costs: the three-process closed loop (``--tracing-signals``, default 10,000, a round) with
  tracing off, at ``--sampling`` and at 100%, on fresh processes, alternated ``--tracing-rounds`` times (default 3);
  the median round of each, with its throughput and CPU-per-signal cost against tracing off.
* [http] the design the mesh replaces: FastAPI + HTTPX (uvicorn in a thread) answering the same
  echo as JSON, batched (one POST per frame) and one POST per signal.

Two loads:

* **closed loop** (throughput): N signals (default 3000) in frames of B (default 100), at most W
  frames (default 20) in flight; ``signals/s`` = decided signals from the first send to the last
  decision. The three-process mesh also runs with one signal per frame.
* **open loop** (latency): signals are created on a fixed schedule at each rate of ``--rates`` for
  ``--duration`` seconds; the sender coalesces the signals that are due into one frame (up to B) and
  never waits for answers. Latency is measured at the strategy from the signal's scheduled creation
  to its first fill (mesh) or its decision (echo), so a sender that falls behind shows up in it.

Workload: target-exposure signals for ``momentum_v1``, alternating BTC-USD / ETH-USD, each
instrument's target flipping so every signal sends an order (the demo registry's shadow canary adds
a paper-twin order per signal). The demo risk limits' order-rate bucket and loss limits are raised
in a copy so those rails do not decide the result; every other rail, the journals (engine: binary, fsync per frame)
and exactly-once processing stay as deployed. Tracing samples ``--sampling`` of the signals
(default 0.1, as ``make run``) through ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``.

``rss_mb`` is the resident memory of engine + ops after the scenario (three processes) or of this
one process (in-process scenarios). This process collects garbage and allocates as the services do
(``nautilus_mesh.serving.GC_THRESHOLDS``, glibc's mmap threshold), so the in-process scenarios run the services' code
under the services' settings; ``--default-gc`` keeps Python's and glibc's defaults. The load-client processes keep
those defaults and run on the event loop ``python -m strategies`` runs on (``NAUTILUS_EVENT_LOOP``, uvloop by
default), as a strategy does. Timing is never pass/fail: figures and ratios only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
import pydantic  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from clients.sdk import wait_serving  # noqa: E402
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc  # noqa: E402
from nautilus_mesh.health import OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE  # noqa: E402
from nautilus_mesh.journal_segments import list_segments  # noqa: E402
from nautilus_mesh.serving import GC_THRESHOLDS, event_loop_factory, fix_mmap_threshold  # noqa: E402
from tests.localhost import free_ports, stop  # noqa: E402

MODEL = "momentum_v1"
JOURNAL_BYTES: int | None = None
"""``--journal-mib`` in bytes: ops' ``journal_segment_bytes`` and the engine's ``snapshot_every_bytes`` (None: the
services' defaults, 64 MiB each)."""
INSTRUMENTS = ("BTC-USD", "ETH-USD")
TARGET = 0.005
RAISED_RATE = 1_000_000
SERVICE = ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name
FILL_QUIET_SECONDS = 3.0
FILL_MAX_WAIT_SECONDS = 20.0
DECISION_TIMEOUT_SECONDS = 120.0
SCENARIOS = ("mesh3", "floor", "mesh2w", "mesh1", "pipeline", "echo", "http", "tracing")
DEMO = ROOT / "config" / "demo"
ENGINE_TOKEN = "bench-engine-token"
STRATEGY_TOKEN = "bench-momentum-token"
META = (("x-strategy-token", STRATEGY_TOKEN),)
MEANREV_TOKEN = "bench-meanrev-token"
LOAD_STRATEGIES = {
    "momentum": ("momentum_v1", ("BTC-USD", "ETH-USD"), STRATEGY_TOKEN),
    "meanrev": ("meanrev_v1", ("SOL-USD", "ETH-USD"), MEANREV_TOKEN),
}

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


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), in MB (Linux /proc)."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds (Linux /proc, clock-tick resolution)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    scenario: str
    load: str
    signals: int
    seconds: float
    latency_ms: list[float]
    latency_label: str
    fill_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    rss_mb: float = math.nan
    rate_offered: float = 0.0
    note: str = ""
    cpu_us_per_signal: dict[str, float] = field(default_factory=dict)
    """Three processes: CPU time (user + system) each service used per signal in the run, microseconds."""

    @property
    def rate(self) -> float:
        return self.signals / self.seconds if self.seconds > 0 else math.nan

    def figures(self) -> dict[str, Any]:
        def num(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 3)

        return {
            "scenario": self.scenario,
            "load": self.load,
            "signals": self.signals,
            "signals_per_s": num(self.rate),
            "p50_ms": num(percentile(self.latency_ms, 0.5)),
            "p99_ms": num(percentile(self.latency_ms, 0.99)),
            "first_fill_p50_ms": num(percentile(self.fill_ms, 0.5)),
            "first_fill_p99_ms": num(percentile(self.fill_ms, 0.99)),
            "rss_mb": num(self.rss_mb),
            "latency_measured": self.latency_label,
            **{f"{name}_cpu_us_per_signal": num(us) for name, us in self.cpu_us_per_signal.items()},
        }

    def to_wire(self) -> dict[str, Any]:
        """What a load-client process hands back to the benchmark (raw samples)."""
        return {name: getattr(self, name) for name in WIRE_FIELDS}

    @classmethod
    def from_wire(cls, wire: dict[str, Any], *, load: str, rate_offered: float) -> Result:
        """The result a load-client process handed back (:meth:`to_wire`), signal to decision latency."""
        counted = {"statuses": Counter(wire["statuses"]), "rejections": Counter(wire["rejections"])}
        return cls("", load, latency_label="signal->decision", rate_offered=rate_offered, **{**wire, **counted})


WIRE_FIELDS = ("signals", "seconds", "latency_ms", "fill_ms", "statuses", "accepted", "rejections", "note")
"""The fields of a :class:`Result` a load-client process hands back (JSON on its standard output)."""


# -- gRPC stream client (mesh and echo) -----------------------------------------------------------


class StreamClient:
    """One ``StreamSignals`` call driven by the write/read API: closed loop (window) or open loop (schedule)."""

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
        self.frame_sizes: list[int] = []
        self._reader = asyncio.create_task(self._read(), name="bench-stream-reader")

    def reset_stats(self) -> None:
        self.decision_ms = []
        self.fill_ms = {}
        self.statuses = Counter()
        self.rejections = Counter()
        self.accepted = set()
        self.frame_sizes = []

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
                    if frame >= 0:
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

    async def send_closed(self, frames: Sequence[ops_pb2.StreamSignalsRequest]) -> tuple[float, float]:
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
            self.frame_sizes.append(len(frame.signals))
            await self.call.write(frame)  # waits while the transport holds it back (HTTP/2 flow control)
        await self._wait_decided()
        return first_send, self.last_decision_at

    async def send_open(self, signals: Sequence[ops_pb2.Signal], rate: float, batch: int) -> tuple[float, float]:
        """Create signals on a fixed schedule at ``rate``/s; each frame carries what is due (at most ``batch``)."""
        self._all_decided.clear()
        self._outstanding = len(signals)
        started = time.perf_counter()
        i, n = 0, len(signals)
        while i < n and not self._closed:
            elapsed = time.perf_counter() - started
            due = min(n, int(elapsed * rate) + 1)
            if due <= i:
                await asyncio.sleep(max(0.0, i / rate - elapsed))
                continue
            end = min(due, i + batch)
            for k in range(i, end):
                sid = signals[k].signal_id
                self.sent_at[sid] = started + k / rate  # created on schedule: lag of the sender counts
                self._frame_of[sid] = -1
            self.frame_sizes.append(end - i)
            frame = ops_pb2.StreamSignalsRequest(signals=signals[i:end])
            i = end
            await self.call.write(frame)
        await self._wait_decided()
        return started, self.last_decision_at

    async def _wait_decided(self) -> None:
        await asyncio.wait_for(self._all_decided.wait(), DECISION_TIMEOUT_SECONDS)
        if self._outstanding:
            raise RuntimeError(f"stream closed with {self._outstanding} signal(s) undecided: {self.call.code()}")

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


async def warm_up(client: StreamClient, batch: int, prefix: str, *, fills: bool) -> None:
    """Rounds of two frames until a signal is accepted (ops may still be waiting for its first marks)."""
    for round_no in range(50):
        client.reset_stats()
        await client.send_closed(make_frames(make_signals(2 * batch, f"{prefix}-warm{round_no}"), batch))
        if client.accepted or not fills:
            break
        await asyncio.sleep(0.2)
    if fills:
        await client.wait_fills()
    client.reset_stats()


async def drive(
    channel: grpc.aio.Channel, prefix: str, args: argparse.Namespace, *, fills: bool, rate: float, batch: int
) -> Result:
    """One load on one stream: closed loop when ``rate`` is 0, else open loop at ``rate`` signals/s."""
    client = StreamClient(ops_pb2_grpc.OpsServiceStub(channel), args.window)
    try:
        await warm_up(client, min(batch, 100), prefix, fills=fills)
        if rate:
            signals = make_signals(max(1, int(rate * args.duration)), prefix)
            first, last = await client.send_open(signals, rate, batch)
            load = f"open {rate:,.0f}/s"
        else:
            signals = make_signals(args.signals, prefix)
            first, last = await client.send_closed(make_frames(signals, batch))
            load = f"closed, frames of {batch}"
        if fills:
            await client.wait_fills()
        sizes = client.frame_sizes
        return Result(
            "",
            load,
            len(signals),
            last - first,
            client.decision_ms,
            "signal->decision" if fills else "round trip",
            fill_ms=list(client.fill_ms.values()),
            statuses=client.statuses,
            accepted=len(client.accepted) if fills else 0,
            rejections=client.rejections,
            rate_offered=rate,
            note=f"{len(sizes)} frames, mean {sum(sizes) / max(1, len(sizes)):.1f} signals per frame",
        )
    finally:
        await client.close()


def write_figures(path: Path | None, figures: Any) -> None:
    """``figures`` as JSON in ``path``, its folder made first; nothing when ``path`` is None (no ``--json``)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=1), encoding="utf-8")


def loads(args: argparse.Namespace) -> list[tuple[float, int]]:
    """(rate, batch) per load: closed loop first (rate 0), then each open-loop rate."""
    return [(0.0, args.batch), *((rate, args.batch) for rate in args.rates)]


# -- mesh, three processes ------------------------------------------------------------------------


def raised_risk_limits(tmp: Path) -> Path:
    """A copy of the demo risk limits whose order-rate bucket and loss limits are out of the way.

    Every signal flips its target, so each one pays the spread: over tens of thousands of signals the
    demo's daily-loss limit would move the model to REDUCING and the run would measure rejections.
    """
    limits = json.loads((DEMO / "risk_limits.json").read_text(encoding="utf-8"))
    for model in (limits["default_model"], *limits.get("models", {}).values()):
        model["order_rate_per_second"] = RAISED_RATE
        model["order_burst"] = RAISED_RATE
        model["max_daily_loss"] = "1000000000"
        model["max_drawdown_ratio"] = 1.0
    path = tmp / "risk_limits.json"
    path.write_text(json.dumps(limits), encoding="utf-8")
    return path


BENCH_VENUES = [
    {"name": "sim", "adapter": "sim", "seed": 7, "market_maker": {"level_notional": "5000000"}},
    {"name": "paper", "adapter": "paper", "follows": "sim"},
]
"""The demo's venues with a book 100x deeper: a frame of 200 IOC orders arrives between two requotes, and the bench
measures the mesh, not the simulated liquidity (with the demo's depth, orders late in a frame find an empty side and
are cancelled unfilled)."""


def engine_settings(tmp: Path, port: int) -> dict[str, Any]:
    return {
        "port": port,
        "metrics_port": None,
        "ops_token": ENGINE_TOKEN,
        "journal_path": str(tmp / "engine" / "journal.bin"),
        "journal_fsync": "batch",
        "tick_interval_ms": 20,
        "span_file": str(tmp / "spans" / "engine.jsonl"),
        "venues": BENCH_VENUES,
    } | ({"snapshot_every_bytes": JOURNAL_BYTES} if JOURNAL_BYTES else {})


def ops_settings(tmp: Path, port: int, engine_port: int) -> dict[str, Any]:
    return {
        "port": port,
        "metrics_port": None,
        "engine_address": f"127.0.0.1:{engine_port}",
        "engine_token": ENGINE_TOKEN,
        "admin_token": "bench-admin-token",
        "strategies": {"momentum": {"token": STRATEGY_TOKEN, "models": ["momentum_v1", "momentum_v2"]}},
        "registry_path": str(DEMO / "registry.json"),
        "capital_policy_path": str(DEMO / "capital_policy.json"),
        "risk_limits_path": str(raised_risk_limits(tmp)),
        "state_dir": str(tmp / "ops"),
        "span_file": str(tmp / "spans" / "ops.jsonl"),
        "sample_interval_seconds": 0.2,
        "allocation_interval_seconds": 3600,
    } | ({"journal_segment_bytes": JOURNAL_BYTES} if JOURNAL_BYTES else {})


async def wait_ready(address: str, module: str, within: float = 60.0) -> None:
    """Wait until the service at ``address`` is SERVING; for ops also its engine link and marks, so that the first
    signal of a run finds the engine connected and every mark in (not ``ENGINE_UNAVAILABLE`` or ``NO_MARK``)."""
    services = ("", OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE) if module == "ops_server" else ("",)
    for service in services:
        await wait_serving(address, within, service=service)


def open_logs(tmp: Path, names: Sequence[str]) -> list[Any]:
    return [open(tmp / f"{name}.log", "wb") for name in names]


@contextlib.asynccontextmanager
async def mesh_processes(
    tmp: Path, sampling: float | None = -1.0
) -> AsyncIterator[tuple[str, list[asyncio.subprocess.Process]]]:
    """Engine and ops as two processes (``python -m ...``) on free ports; yields ops' address and both.

    ``sampling``: the trace sampling ratio of both services (negative: the run's ``--sampling``; ``None``: tracing
    off, ``tracing: false`` in both configs)."""
    engine_port, ops_port = free_ports(2)
    engine_cfg = tmp / "engine.json"
    ops_cfg = tmp / "ops.json"
    settings = engine_settings(tmp, engine_port), ops_settings(tmp, ops_port, engine_port)
    env = dict(os.environ)
    if sampling is None:
        for config in settings:
            config["tracing"] = False
    elif sampling >= 0:
        env["OTEL_TRACES_SAMPLER_ARG"] = str(sampling)
    engine_cfg.write_text(json.dumps(settings[0]), encoding="utf-8")
    ops_cfg.write_text(json.dumps(settings[1]), encoding="utf-8")
    procs: list[asyncio.subprocess.Process] = []
    logs = open_logs(tmp, ("engine", "ops"))
    try:
        for module, cfg, port, log_file in (
            ("engine_server", engine_cfg, engine_port, logs[0]),
            ("ops_server", ops_cfg, ops_port, logs[1]),
        ):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, "--config", str(cfg), "--log-level", "WARNING",
                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            procs.append(proc)
            await wait_ready(f"127.0.0.1:{port}", module)
        yield f"127.0.0.1:{ops_port}", procs
    finally:
        await stop_processes(procs, logs)


async def stop_processes(procs: Sequence[asyncio.subprocess.Process], logs: Sequence[Any]) -> None:
    """Stop the processes (last started first; see :func:`tests.localhost.stop`) and close their log files."""
    for proc in reversed(procs):
        await stop(proc)
    for log_file in logs:
        log_file.close()


def cpu_us_per_signal(
    names: Sequence[str], procs: Sequence[asyncio.subprocess.Process], before: Sequence[float], signals: int
) -> dict[str, float]:
    """CPU time each process used since ``before`` (its :func:`cpu_seconds` then), per signal, microseconds."""
    return {
        name: (cpu_seconds(p.pid) - start) / max(1, signals) * 1e6
        for name, p, start in zip(names, procs, before, strict=True)
    }


async def run_load_client(address: str, prefix: str, args: argparse.Namespace, rate: float, batch: int) -> Result:
    """The load client as its own process (this script with ``--load-client``); returns its figures."""
    cmd = [
        sys.executable, str(SCRIPT), "--load-client", address, "--prefix", prefix,
        "--rate", str(rate), "--batch", str(batch), "--signals", str(args.signals), "--window", str(args.window),
        "--duration", str(args.duration), "--strategy", getattr(args, "strategy", "momentum"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    load = f"open {rate:,.0f}/s" if rate else f"closed, frames of {batch}"
    return Result.from_wire(json.loads(out.decode().strip().splitlines()[-1]), load=load, rate_offered=rate)


async def run_mesh3(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-mesh3-") as tmp_name:
        async with mesh_processes(Path(tmp_name)) as (address, procs):
            runs = [(0.0, args.batch), (0.0, 1), *((rate, args.batch) for rate in args.rates)]
            for n, (rate, batch) in enumerate(runs):
                cpu_before = [cpu_seconds(p.pid) for p in procs]
                rolled = journal_rolls(Path(tmp_name))
                result = await run_load_client(address, f"m3-{n}", args, rate, batch)
                ops_rolls, engine_rolls = (b - a for a, b in zip(rolled, journal_rolls(Path(tmp_name)), strict=True))
                result.note += f"; journal segments closed during the run: ops {ops_rolls}, engine {engine_rolls}"
                result.scenario = "mesh, 3 processes"
                result.cpu_us_per_signal = cpu_us_per_signal(("engine", "ops"), procs, cpu_before, result.signals)
                result.rss_mb = sum(rss_mb(p.pid) for p in procs)
                results.append(result)
    return results


FLOOR = SCRIPT.parent / "mesh_floor.py"


@contextlib.asynccontextmanager
async def floor_processes(tmp: Path) -> AsyncIterator[tuple[str, list[asyncio.subprocess.Process]]]:
    """The floor's engine and ops stand-ins (``mesh_floor.py``) as two processes on free ports; yields ops' address
    and both."""
    engine_port, ops_port = free_ports(2)
    procs: list[asyncio.subprocess.Process] = []
    logs = open_logs(tmp, ("floor-engine", "floor-ops"))
    try:
        for role, port, extra, log_file in (
            ("engine", engine_port, [], logs[0]),
            ("ops", ops_port, ["--engine", f"127.0.0.1:{engine_port}"], logs[1]),
        ):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(FLOOR), role, "--port", str(port), *extra,
                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(proc)
            await wait_serving(f"127.0.0.1:{port}", 60.0)
        yield f"127.0.0.1:{ops_port}", procs
    finally:
        await stop_processes(procs, logs)


async def run_floor(args: argparse.Namespace) -> list[Result]:
    """The mesh3 loads on the floor's stand-ins: throughput and latency with every message and no work."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp_name:
        async with floor_processes(Path(tmp_name)) as (address, procs):
            runs = [(0.0, args.batch), (0.0, 1), *((rate, args.batch) for rate in args.rates)]
            for n, (rate, batch) in enumerate(runs):
                cpu_before = [cpu_seconds(p.pid) for p in procs]
                result = await run_load_client(address, f"floor-{n}", args, rate, batch)
                result.scenario = "mesh floor, 3 procs"
                result.cpu_us_per_signal = cpu_us_per_signal(("engine", "ops"), procs, cpu_before, result.signals)
                result.rss_mb = sum(rss_mb(p.pid) for p in procs)
                results.append(result)
    return results


TRACING_SETTINGS: tuple[tuple[str, float | None], ...] = (("off", None), ("default", -1.0), ("every span", 1.0))
"""The tracing scenario's settings: tracing off, the run's ``--sampling`` ratio, and every signal sampled."""


async def run_tracing(args: argparse.Namespace) -> list[Result]:
    """What tracing costs: the three-process closed loop (``--tracing-signals`` in frames of ``--batch``) with tracing
    off, at ``--sampling`` and at 100%, each on fresh processes, the three settings alternated ``--tracing-rounds``
    times (one machine's drift spreads over all three). Rows: the median round of each setting; the note gives its cost
    against off, and the cost of its best round against off's best (the rounds least slowed by whatever else the host
    runs: on a shared host the steadier of the two figures)."""
    by_setting: dict[str, list[Result]] = {name: [] for name, _ in TRACING_SETTINGS}
    load = argparse.Namespace(**{**vars(args), "signals": args.tracing_signals})
    for round_no in range(args.tracing_rounds):
        for name, sampling in TRACING_SETTINGS:
            with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp_name:
                async with mesh_processes(Path(tmp_name), sampling) as (address, procs):
                    cpu_before = [cpu_seconds(p.pid) for p in procs]
                    result = await run_load_client(address, f"tr-{round_no}-{name}", load, 0.0, args.batch)
                    result.cpu_us_per_signal = cpu_us_per_signal(("engine", "ops"), procs, cpu_before, result.signals)
                    result.rss_mb = sum(rss_mb(p.pid) for p in procs)
            by_setting[name].append(result)
    off = sorted(by_setting["off"], key=lambda r: r.rate)[len(by_setting["off"]) // 2]
    off_cpu = sum(off.cpu_us_per_signal.values())
    off_best = max(r.rate for r in by_setting["off"])
    results = []
    for name, sampling in TRACING_SETTINGS:
        runs = sorted(by_setting[name], key=lambda r: r.rate)
        median = runs[len(runs) // 2]
        ratio = args.sampling if sampling is not None and sampling < 0 else sampling
        median.scenario = "mesh3, tracing " + ("off" if ratio is None else f"{ratio:.0%}")
        rates = ", ".join(f"{r.rate:,.0f}" for r in by_setting[name])
        cpu = sum(median.cpu_us_per_signal.values())
        best = max(r.rate for r in runs)
        median.note = (
            f"signals/s of the rounds {rates}; median {1 - median.rate / off.rate:+.1%} throughput cost, "
            f"{cpu / off_cpu - 1:+.1%} CPU per signal (engine + ops) against tracing off; "
            f"best round {1 - best / off_best:+.1%} throughput cost against off's best"
        )
        results.append(median)
    return results


def journal_rolls(tmp: Path) -> tuple[int, int]:
    """The index of the newest journal segment of ops and of the engine: each ops checkpoint closes one segment, and
    each engine compaction one (the engine also closes one at every 64 MiB)."""
    return tuple(  # type: ignore[return-value]
        max((index for index, _ in list_segments(tmp / name / "journal.bin")), default=0) for name in ("ops", "engine")
    )


def use_strategy(name: str) -> None:
    """Make this (load-client) process signal for ``name``'s model, instruments and token."""
    global MODEL, INSTRUMENTS, META
    model, instruments, token = LOAD_STRATEGIES[name]
    MODEL, INSTRUMENTS, META = model, instruments, (("x-strategy-token", token),)


# -- ops scaled out: two workers ------------------------------------------------------------------

BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_answers(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2):
            return True
    except Exception:
        return False


def drop_schemas(url: str, schemas: Sequence[str]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def run_load_client_for(
    address: str, prefix: str, args: argparse.Namespace, rate: float, batch: int, strategy: str
) -> Result:
    saved = args.strategy
    args.strategy = strategy
    try:
        return await run_load_client(address, prefix, args, rate, batch)
    finally:
        args.strategy = saved


async def run_mesh2w(args: argparse.Namespace) -> list[Result]:
    if not postgres_answers(BENCH_DATABASE_URL):
        print(f"mesh2w skipped: PostgreSQL does not answer at {BENCH_DATABASE_URL} (set BENCH_DATABASE_URL)")
        return []
    schema = f"bench_{os.getpid()}_{int(time.time())}"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-mesh2w-") as tmp_name:
        tmp = Path(tmp_name)
        engine_port, port0, port1 = free_ports(3)
        engine_cfg, ops_cfg = tmp / "engine.json", tmp / "ops.json"
        engine_cfg.write_text(json.dumps(engine_settings(tmp, engine_port)), encoding="utf-8")
        settings = ops_settings(tmp, port0, engine_port)
        settings["strategies"]["meanrev"] = {"token": MEANREV_TOKEN, "models": ["meanrev_v1"]}
        separator = "&" if "?" in BENCH_DATABASE_URL else "?"
        settings.update(
            ops_workers=2,
            worker_addresses=[f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"],
            shard_map={"momentum": 0, "meanrev": 1},
            database_url=f"{BENCH_DATABASE_URL}{separator}schema={schema}",
        )
        ops_cfg.write_text(json.dumps(settings), encoding="utf-8")
        logs = open_logs(tmp, ("engine", "ops-0", "ops-1"))
        procs: list[asyncio.subprocess.Process] = []
        try:
            for n, (module, cfg, port, env) in enumerate(
                (
                    ("engine_server", engine_cfg, engine_port, {}),
                    ("ops_server", ops_cfg, port0, {"OPS_WORKER_INDEX": "0"}),
                    ("ops_server", ops_cfg, port1, {"OPS_WORKER_INDEX": "1"}),
                )
            ):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", module, "--config", str(cfg), "--log-level", "WARNING",
                    cwd=ROOT, stdout=logs[n], stderr=subprocess.STDOUT, env={**os.environ, **env},
                )  # fmt: skip
                procs.append(proc)
                await wait_ready(f"127.0.0.1:{port}", module)
            for n, rate in enumerate([0.0, *args.rates]):
                cpu_before = [cpu_seconds(p.pid) for p in procs]
                started = time.perf_counter()
                pair = await asyncio.gather(
                    run_load_client_for(f"127.0.0.1:{port0}", f"w2-{n}-m", args, rate, args.batch, "momentum"),
                    run_load_client_for(f"127.0.0.1:{port1}", f"w2-{n}-r", args, rate, args.batch, "meanrev"),
                )
                wall = time.perf_counter() - started
                both = Result(
                    "ops, 2 workers",
                    (f"open 2 x {rate:,.0f}/s" if rate else f"closed, frames of {args.batch}") + ", both",
                    sum(r.signals for r in pair),
                    max(r.seconds for r in pair),
                    [x for r in pair for x in r.latency_ms],
                    "signal->decision",
                    fill_ms=[x for r in pair for x in r.fill_ms],
                    statuses=sum((r.statuses for r in pair), Counter()),
                    accepted=sum(r.accepted for r in pair),
                    rejections=sum((r.rejections for r in pair), Counter()),
                    rate_offered=2 * rate,
                    note=f"two load clients at once, {wall:.1f} s wall including start-up",
                )
                names = ("engine", "ops-0", "ops-1")
                both.cpu_us_per_signal = cpu_us_per_signal(names, procs, cpu_before, both.signals)
                both.rss_mb = sum(rss_mb(p.pid) for p in procs)
                results.append(both)
        finally:
            await stop_processes(procs, logs)
            drop_schemas(BENCH_DATABASE_URL, [schema, f"{schema}_w0", f"{schema}_w1"])
    return results


async def load_client_main(args: argparse.Namespace) -> None:
    use_strategy(args.strategy)
    async with grpc.aio.insecure_channel(args.load_client) as channel:
        result = await drive(channel, args.prefix, args, fills=True, rate=args.rate, batch=args.batch)
    print(json.dumps(result.to_wire()))


# -- mesh and pipeline in one process -------------------------------------------------------------


async def run_mesh1(args: argparse.Namespace) -> list[Result]:
    from tests.conftest import start_mesh, stop_mesh

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-mesh1-") as tmp_name:
        tmp = Path(tmp_name)
        mesh = await start_mesh(tmp, engine=in_process_engine(), ops=in_process_ops(tmp))
        try:
            async with mesh.channel() as channel:
                for n, (rate, batch) in enumerate(loads(args)):
                    result = await drive(channel, f"m1-{n}", args, fills=True, rate=rate, batch=batch)
                    result.scenario = "mesh, 1 process"
                    result.rss_mb = rss_mb()
                    results.append(result)
        finally:
            await stop_mesh(mesh)
    return results


def in_process_engine() -> dict[str, Any]:
    """Engine overrides of the tests' mesh: the journal's ``batch`` fsync and the bench's deeper venues, as the
    three-process mesh runs them."""
    return {"journal_fsync": "batch", "venues": BENCH_VENUES}


def in_process_ops(tmp: Path) -> dict[str, Any]:
    """Ops overrides of the tests' mesh: the bench's strategy token and the raised order-rate rail."""
    from ops_server.config import StrategyAccess

    access = StrategyAccess(token=STRATEGY_TOKEN, models=("momentum_v1", "momentum_v2"))
    return {"strategies": {"momentum": access}, "risk_limits_path": raised_risk_limits(tmp)}


async def run_pipeline(args: argparse.Namespace) -> list[Result]:
    """SignalPath.handle_frame in a loop on the real, connected servers; no client hop."""
    from tests.conftest import start_mesh, stop_mesh

    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp_name:
        tmp = Path(tmp_name)
        mesh = await start_mesh(tmp, engine=in_process_engine(), ops=in_process_ops(tmp))
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
            for prefix, count in (("core-warm", 2 * args.batch), ("core", args.signals)):
                sent_at.clear()
                fill_ms.clear()
                latency: list[float] = []
                statuses: Counter[str] = Counter()
                accepted: set[str] = set()
                frames = make_frames(make_signals(count, prefix), args.batch)
                first = time.perf_counter()
                for frame in frames:
                    started = time.perf_counter()
                    for sig in frame.signals:
                        sent_at[sig.signal_id] = started
                    decisions = core.signals.handle_frame(frame.signals, principal)
                    took = (time.perf_counter() - started) * 1000
                    for sig, decision in zip(frame.signals, decisions, strict=True):
                        latency.append(took)  # a signal is decided when its frame is (one journal write per frame)
                        statuses[ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")] += 1
                        if decision.status == ops_pb2.DECISION_STATUS_ACCEPTED:
                            accepted.add(sig.signal_id)
                    await asyncio.sleep(0)  # as the service does between frames: let the engine link send
                last = time.perf_counter()
                waited = time.perf_counter()
                last_fill[0] = max(last_fill[0], waited)
                while not accepted <= fill_ms.keys():
                    now = time.perf_counter()
                    if now - last_fill[0] > FILL_QUIET_SECONDS or now - waited > FILL_MAX_WAIT_SECONDS:
                        break
                    await asyncio.sleep(0.01)
            alone = args.signals / (sum(latency) / args.batch / 1000)
            return [
                Result(
                    "pipeline in process",
                    f"closed, frames of {args.batch}",
                    args.signals,
                    last - first,
                    latency,
                    "handle_frame call (per frame)",
                    fill_ms=list(fill_ms.values()),
                    statuses=statuses,
                    accepted=len(accepted),
                    rss_mb=rss_mb(),
                    note=f"handle_frame alone (sum of frame call times, no engine work): {alone:,.0f} signals/s",
                )
            ]
        finally:
            core.feedback.unsubscribe(fills)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await stop_mesh(mesh)


# -- raw grpc.aio echo ----------------------------------------------------------------------------


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


async def run_echo(args: argparse.Namespace) -> list[Result]:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        echo_stream,
        request_deserializer=ops_pb2.StreamSignalsRequest.FromString,
        response_serializer=ops_pb2.StreamSignalsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"StreamSignals": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results: list[Result] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # One signal per frame too: the transport's ceiling for the mesh's one-per-frame row.
            for n, (rate, batch) in enumerate([*loads(args)[:1], (0.0, 1), *loads(args)[1:]]):
                result = await drive(channel, f"echo-{n}", args, fills=False, rate=rate, batch=batch)
                result.scenario = "grpc.aio echo"
                result.rss_mb = rss_mb()
                results.append(result)
    finally:
        await server.stop(0.5)
    return results


# -- FastAPI + HTTPX ------------------------------------------------------------------------------


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


async def run_http(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    async with uvicorn_in_thread(build_app()) as port:
        limits = httpx.Limits(max_connections=args.window, max_keepalive_connections=args.window)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
            for batch, load in ((args.batch, f"closed, {args.batch} per POST"), (1, "closed, one POST per signal")):
                warm = json_batches(make_signals(args.window * batch, f"http-warm-{batch}"), batch)
                await post_all(client, warm, args.window, [])
                latency: list[float] = []
                batches = json_batches(make_signals(args.signals, f"http-{batch}"), batch)
                first, last = await post_all(client, batches, args.window, latency)
                seconds = last - first
                http = Result(
                    "FastAPI + HTTPX echo", load, args.signals, seconds, latency, "round trip", rss_mb=rss_mb()
                )
                results.append(http)
    return results


# -- report ---------------------------------------------------------------------------------------


def fmt_ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f}"


def echo_ratio(result: Result, echo: Sequence[Result]) -> str:
    """Closed loop: throughput / echo's; open loop: first-fill (or round-trip) p50 / echo's round-trip p50."""
    if not result.rate_offered:
        base = next((e for e in echo if not e.rate_offered), None)
        return f"{result.rate / base.rate:.3f}x" if base and base.rate else "-"
    base = next((e for e in echo if e.rate_offered == result.rate_offered), None)
    mine = result.fill_ms or result.latency_ms
    if base is None or not base.latency_ms or not mine:
        return "-"
    return f"{percentile(mine, 0.5) / percentile(base.latency_ms, 0.5):.1f}x lat"


def print_table(results: Sequence[Result]) -> None:
    echo = [r for r in results if r.scenario == "grpc.aio echo"]
    header = (
        f"{'scenario':<22} {'load':<28} {'signals/s':>10} {'x echo':>11} {'p50 / p99 ms':>17} "
        f"{'first fill p50 / p99 ms':>24} {'rss MB':>7}  latency measured"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.scenario:<22} {r.load:<28} {r.rate:>10,.0f} {echo_ratio(r, echo):>11} {fmt_ms(r.latency_ms):>17} "
            f"{fmt_ms(r.fill_ms):>24} {r.rss_mb:>7.0f}  {r.latency_label}"
        )
    print()
    for r in results:
        line = f"{r.scenario}, {r.load}: {r.signals} signals in {r.seconds:.2f} s"
        if r.statuses:
            line += "; decisions " + ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
        if r.rejections:
            line += " (rejected: " + ", ".join(f"{k} {v}" for k, v in r.rejections.most_common()) + ")"
        if r.fill_ms or r.accepted:
            line += f"; first fill seen for {len(r.fill_ms)} of {r.accepted} accepted"
        if r.cpu_us_per_signal:
            line += "; CPU per signal " + ", ".join(f"{k} {v:,.0f} us" for k, v in r.cpu_us_per_signal.items())
        if r.note:
            line += f"; {r.note}"
        print(line)


def plot(results: Sequence[Result], path: Path) -> None:
    """Latency against offered rate (open-loop rows): first fill for the mesh, round trip for the echo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scenario in dict.fromkeys(r.scenario for r in results if r.rate_offered):
        rows = sorted((r for r in results if r.scenario == scenario and r.rate_offered), key=lambda r: r.rate_offered)
        rates = [r.rate_offered for r in rows]
        for q, style in ((0.5, "o-"), (0.99, "s--")):
            values = [percentile(r.fill_ms or r.latency_ms, q) for r in rows]
            what = "round trip" if scenario == "grpc.aio echo" else "signal->first fill"
            ax.plot(rates, values, style, label=f"{scenario}: {what} p{int(q * 100)}")
    ax.set_xlabel("offered rate (signals/s, open loop)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("nautilus-mesh: latency vs rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args: argparse.Namespace) -> list[Result]:
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(args.sampling)
    print("command: " + " ".join([".venv/bin/python benchmarks/bench_mesh.py", *sys.argv[1:]]))
    print(
        f"closed loop: {args.signals} signals, frames of {args.batch}, at most {args.window} frames in flight; "
        f"open loop: {', '.join(f'{r:,.0f}' for r in args.rates)} signals/s for {args.duration} s each; "
        f"tracing samples {args.sampling:.0%}; engine journal fsync per frame (batch)"
    )
    print(
        f"python {platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPU(s); "
        "ratios in 'x echo': closed loop = signals/s over the echo's, open loop = latency p50 over the echo's"
    )
    print()
    started = time.perf_counter()
    runners = {
        "mesh3": run_mesh3,
        "floor": run_floor,
        "mesh2w": run_mesh2w,
        "mesh1": run_mesh1,
        "pipeline": run_pipeline,
        "echo": run_echo,
        "http": run_http,
        "tracing": run_tracing,
    }
    results: list[Result] = []
    for name in SCENARIOS:
        if name in args.only:
            results.extend(await runners[name](args))
    print_table(results)
    print(f"\ntotal run time {time.perf_counter() - started:.1f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--signals", type=int, default=3000, help="signals per closed-loop run (default 3000)")
    parser.add_argument("--batch", type=int, default=100, help="signals per frame / request, at most (default 100)")
    parser.add_argument("--window", type=int, default=20, help="closed loop: frames / requests in flight (default 20)")
    parser.add_argument("--rates", default="1000,5000", help="open-loop rates in signals/s (default 1000,5000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per open-loop rate (default 5)")
    parser.add_argument("--sampling", type=float, default=0.1, help="trace sampling ratio (default 0.1)")
    parser.add_argument(
        "--tracing-rounds", type=int, default=3, help="tracing scenario: rounds of off / default / 100%% (default 3)"
    )
    parser.add_argument(
        "--tracing-signals",
        type=int,
        default=10_000,
        help="tracing scenario: signals per round (default 10000: a round of --signals' 3,000 takes ~0.5 s, mostly "
        "warm-up, and its cost figures move by more than the targets' margins)",
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios to run (default {','.join(SCENARIOS)})")
    parser.add_argument("--json", default="", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", default="", metavar="PATH", help="draw latency vs rate (PNG, matplotlib)")
    parser.add_argument(
        "--journal-mib",
        type=float,
        default=0,
        help="ops journal segment and engine snapshot interval, MiB (default: the services' 64 MiB; 16 makes "
        "checkpoints and compactions happen within a 30 s run at 1,000 signals/s)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="in-process scenarios: keep Python's GC thresholds and glibc's malloc (not the services')",
    )
    parser.add_argument("--load-client", default="", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="load", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="momentum", choices=sorted(LOAD_STRATEGIES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global JOURNAL_BYTES
    JOURNAL_BYTES = int(args.journal_mib * (1 << 20)) or None
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if min(args.signals, args.batch, args.window, args.duration, args.tracing_rounds, args.tracing_signals) <= 0:
        parser.error(
            "--signals, --batch, --window, --duration, --tracing-rounds and --tracing-signals must be positive"
        )
    if unknown := args.only - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if args.load_client:  # a strategy process: on the loop `python -m strategies` runs on (NAUTILUS_EVENT_LOOP)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(load_client_main(args))
        return
    if not args.default_gc:
        gc.set_threshold(*GC_THRESHOLDS)  # as the services run (nautilus_mesh.serving)
        fix_mmap_threshold()
    results = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps([r.figures() for r in results], indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.plot:
        plot(results, Path(args.plot))
        print(f"latency-vs-rate plot written to {args.plot}")


if __name__ == "__main__":
    main()
