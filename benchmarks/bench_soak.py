"""Soak: the mesh at a steady signal rate for a long time, how the memory of ops and engine moves, and its latency.

Runs the mesh as three processes (engine and ops as ``python -m ...`` on free ports, this script as the strategy),
sends signals at ``--rate`` per second in frames every 100 ms (every signal id new, each signal moving its
target so each one trades), reads every answer, and samples the resident set size (RSS) of ops and engine every
``--sample-seconds``. It prints, per service, the RSS after the warm-up (``--baseline-seconds``, default the first
minute), at the end and the growth between them in percent (target: <= 5%), then the engine's journal on disk
(its segments and snapshot, MB) at the same moments, and with ``--json PATH`` writes the figures and every sample.
It also times each signal from its frame's write to its first fill at the strategy (milliseconds): p50, p99 and max
over the run, and the p99 of its worst second, where a journal snapshot or a garbage collection that holds a service
back shows (``--retention 0`` snapshots at the services' default sizes, tens of MB).

Memory is bounded by retention windows, not by the run's length, so the windows must fill during the warm-up for
the growth to say anything: by default the soak runs with small windows (``--retention 5000``: ops'
``dedup_window`` and ``order_history``, the engine's ``order_retention``, its ``dedupe_window`` at 2x, its
``report_history`` and ``execution_retention`` at 4x, and in both services a journal snapshot every ``--snapshot-mb``
MB: the engine's compaction, ops' checkpoint). A checkpoint's transient lists and text leave the C heap with more
free space than before, up to a level it then keeps: at ops' default 64 MiB segments the first checkpoints fall after
the first minute at 700 signals/s and the growth would measure that warm-up, not a leak.
``--retention 0`` keeps the services' defaults (the windows then take hours to fill at a modest rate, and RSS grows
until they do).

    .venv/bin/python benchmarks/bench_soak.py                      # 10 minutes at 200 signals/s
    .venv/bin/python benchmarks/bench_soak.py --duration 180 --json var/bench/soak.json
    .venv/bin/python benchmarks/bench_soak.py --rate 1000 --duration 150 --retention 0   # steady-state tail

Not a test: timing and memory figures are printed, never asserted (tests/test_bench_smoke.py runs it briefly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
sys.path.insert(0, str(SCRIPT.parents[1]))

import bench_mesh  # noqa: E402
import grpc  # noqa: E402
from bench_mesh import (  # noqa: E402
    INSTRUMENTS,
    META,
    MODEL,
    TARGET,
    SignalCall,
    cpu_seconds,
    percentile,
    rss_mb,
    write_figures,
)

from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc  # noqa: E402

TARGET_GROWTH_PERCENT = 5.0
FRAME_SECONDS = 0.1


def rss_of(pid: int) -> float:
    """RSS in MB: psutil when installed, else /proc."""
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)
    except ImportError:
        return rss_mb(pid)


def retention_settings(retention: int, snapshot_mb: float = 4.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ops and engine config overrides for the retention windows and journal snapshots (none for 0: the services'
    defaults)."""
    if retention <= 0:
        return {}, {}
    ops = {
        "dedup_window": retention,
        "order_history": retention,
        "journal_segment_bytes": int(snapshot_mb * 1024 * 1024),
    }
    engine = {
        "order_retention": retention,
        "dedupe_window": 2 * retention,
        "report_history": 4 * retention,
        "execution_retention": 4 * retention,
        "snapshot_every_bytes": int(snapshot_mb * 1024 * 1024),
        "journal_segment_bytes": int(snapshot_mb * 1024 * 1024),
    }
    return ops, engine


def journal_mb(folder: Path) -> float:
    """The engine journal on disk in MB: every segment and the snapshot (0 before the first write)."""
    total = 0
    for file in folder.glob("journal*"):
        with contextlib.suppress(FileNotFoundError):  # a segment deleted by a compaction in between
            total += file.stat().st_size
    return total / (1024 * 1024)


@contextlib.asynccontextmanager
async def soak_mesh(tmp: Path, retention: int, snapshot_mb: float = 4.0) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """The benchmark mesh's engine and ops processes with the soak's retention windows."""
    ops_extra, engine_extra = retention_settings(retention, snapshot_mb)
    ops_settings, engine_settings = bench_mesh.ops_settings, bench_mesh.engine_settings

    def ops_with(tmp_dir: Path, port: int, engine_port: int) -> dict[str, Any]:
        return {**ops_settings(tmp_dir, port, engine_port), **ops_extra}

    def engine_with(tmp_dir: Path, port: int) -> dict[str, Any]:
        return {**engine_settings(tmp_dir, port), **engine_extra}

    bench_mesh.ops_settings, bench_mesh.engine_settings = ops_with, engine_with
    try:
        async with bench_mesh.mesh_processes(tmp) as (address, procs):
            yield address, {"engine": procs[0].pid, "ops": procs[1].pid}
    finally:
        bench_mesh.ops_settings, bench_mesh.engine_settings = ops_settings, engine_settings


SOAK_TARGET_STEP = 0.04
"""Each signal moves its instrument's target by this fraction of ``TARGET`` (up, then back down)."""
MAX_FRAME_SIGNALS = 100
"""Signals per frame at most (a sender that fell behind catches up in several frames, within the frame limit)."""


def soak_signal(k: int) -> ops_pb2.Signal:
    """Signal number ``k``: alternating instruments, each instrument's target moving between two nearby levels.

    Every signal trades, a small order (~100 USD with the demo's quota). Flipping the whole position instead would
    pay the spread on it each time: after ~140,000 signals the model has lost its capital, the drawdown rail moves it
    to REDUCING and the soak measures rejections.
    """
    target = TARGET if (k // 2) % 2 == 0 else TARGET * (1 - SOAK_TARGET_STEP)
    return ops_pb2.Signal(signal_id=f"soak-{k}", model_id=MODEL, instrument=INSTRUMENTS[k % 2], target=target)


class SteadyStrategy:
    """One StreamSignals stream sending ``rate`` new signals per second and reading every answer."""

    def __init__(self, stub: ops_pb2_grpc.OpsServiceStub, rate: float) -> None:
        self.call = cast(SignalCall, stub.StreamSignals(metadata=META))  # type: ignore[call-arg]
        self.rate = rate
        self.sent = 0
        self.decisions: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        """Rejected signals by error code (a soak whose signals are rejected measures the rejections, not trading)."""
        self.fills = 0
        self.started = time.perf_counter()
        self.sent_at: dict[str, float] = {}
        """perf_counter time each signal's frame was written, until its first fill (seconds)."""
        self.first_fills: list[tuple[float, float]] = []
        """(frame written, seconds since the run's start; its first fill's latency, milliseconds) per signal."""
        self._reader = asyncio.create_task(self._read(), name="soak-reader")

    async def _read(self) -> None:
        while True:
            response = await self.call.read()
            if not isinstance(response, ops_pb2.StreamSignalsResponse):
                return
            for decision in response.decisions:
                self.decisions[ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")] += 1
                if decision.status == ops_pb2.DECISION_STATUS_REJECTED:
                    self.rejections[decision.error.code] += 1
            self.fills += len(response.fills)
            now = time.perf_counter()
            for fill in response.fills:
                sent = self.sent_at.pop(fill.signal_id, None)
                if sent is not None:
                    self.first_fills.append((sent - self.started, (now - sent) * 1000))

    async def run(self, seconds: float) -> None:
        self.started = started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * self.rate) + 1
            while self.sent < due:
                end = min(due, self.sent + MAX_FRAME_SIGNALS)
                signals = [soak_signal(k) for k in range(self.sent, end)]
                written = time.perf_counter()
                for signal in signals:
                    self.sent_at[signal.signal_id] = written
                await self.call.write(ops_pb2.StreamSignalsRequest(signals=signals))
                self.sent = end
            await asyncio.sleep(FRAME_SECONDS)

    async def close(self) -> None:
        with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
            await self.call.done_writing()
        with contextlib.suppress(asyncio.TimeoutError, grpc.RpcError):
            await asyncio.wait_for(self._reader, 10)
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
            await self._reader


def sample(pids: dict[str, int], journal: Path, started: float, sent: int) -> dict[str, float]:
    """At one moment: RSS of each service (MB), its CPU time so far (``<name>_cpu_s``, seconds, user + system), the
    engine journal on disk (MB, ``engine_journal``) and the signals sent so far (``signals``)."""
    rss = {name: rss_of(pid) for name, pid in pids.items()}
    cpu = {f"{name}_cpu_s": round(cpu_seconds(pid), 2) for name, pid in pids.items()}
    return {
        "t": round(time.perf_counter() - started, 2),
        **rss,
        **cpu,
        "engine_journal": journal_mb(journal),
        "signals": sent,
    }


async def sample_rss(
    pids: dict[str, int],
    journal: Path,
    every: float,
    started: float,
    out: list[dict[str, float]],
    sent: Callable[[], int],
) -> None:
    while True:
        out.append(sample(pids, journal, started, sent()))
        await asyncio.sleep(every)


def cpu_per_signal(samples: list[dict[str, float]], baseline_seconds: float, name: str) -> float | None:
    """CPU time of service ``name`` per signal sent between the first sample after the warm-up and the last, in
    microseconds (None without two such samples)."""
    after = [s for s in samples if s["t"] >= baseline_seconds]
    if len(after) < 2 or after[-1]["signals"] <= after[0]["signals"]:
        return None
    used = after[-1][f"{name}_cpu_s"] - after[0][f"{name}_cpu_s"]
    return round(used / (after[-1]["signals"] - after[0]["signals"]) * 1e6, 1)


def growth(samples: list[dict[str, float]], baseline_seconds: float, name: str) -> dict[str, float | None]:
    """RSS after the warm-up, at the end, the maximum, and the growth between the first two in percent."""
    after = [s for s in samples if s["t"] >= baseline_seconds]
    if not after:
        return {"baseline_mb": None, "end_mb": None, "max_mb": None, "growth_percent": None}
    base, end = after[0][name], after[-1][name]
    return {
        "baseline_mb": round(base, 1),
        "end_mb": round(end, 1),
        "max_mb": round(max(s[name] for s in after), 1),
        "growth_percent": round((end - base) / base * 100, 2) if base else None,
    }


def first_fill_latency(first_fills: list[tuple[float, float]]) -> dict[str, Any]:
    """p50, p99 and max of the signals' first-fill latencies (ms), and the p99 of the worst second of the run."""
    if not first_fills:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "worst_second": None}
    latencies = [ms for _, ms in first_fills]
    by_second: dict[int, list[float]] = {}
    for at, ms in first_fills:
        by_second.setdefault(int(at), []).append(ms)
    worst = max(by_second, key=lambda second: percentile(by_second[second], 0.99))
    return {
        "count": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "worst_second": {"t_s": worst, "p99_ms": round(percentile(by_second[worst], 0.99), 2)},
    }


def copy_logs(run_folder: Path, to: Path) -> None:
    """Copy the services' logs of a run (``engine.log``, ``ops.log``) into ``to``."""
    to.mkdir(parents=True, exist_ok=True)
    for log_file in run_folder.glob("*.log"):
        shutil.copy(log_file, to / log_file.name)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        journal = Path(tmp_name) / "engine"
        async with soak_mesh(Path(tmp_name), args.retention, args.snapshot_mb) as (address, pids):
            channel = grpc.aio.insecure_channel(address)
            strategy = SteadyStrategy(ops_pb2_grpc.OpsServiceStub(channel), args.rate)
            started = time.perf_counter()
            sampler = asyncio.create_task(
                sample_rss(pids, journal, args.sample_seconds, started, samples, lambda: strategy.sent)
            )
            try:
                await strategy.run(args.duration)
            finally:
                await strategy.close()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await channel.close()
            samples.append(sample(pids, journal, started, strategy.sent))
        if args.logs is not None:  # the services' logs outlive the run's folder
            copy_logs(Path(tmp_name), args.logs)
    services = {
        name: {
            **growth(samples, args.baseline_seconds, name),
            "cpu_us_per_signal": cpu_per_signal(samples, args.baseline_seconds, name),
        }
        for name in ("ops", "engine")
    }
    journal_row = growth(samples, args.baseline_seconds, "engine_journal")
    return {
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "retention": args.retention,
        "baseline_s": args.baseline_seconds,
        "signals_sent": strategy.sent,
        "decisions": dict(strategy.decisions),
        "rejections": dict(strategy.rejections),
        "fills": strategy.fills,
        "first_fill": first_fill_latency(strategy.first_fills),
        "services": services,
        "engine_journal": journal_row,
        "target_growth_percent": TARGET_GROWTH_PERCENT,
        "samples": samples,
    }


def report(figures: dict[str, Any]) -> None:
    print(
        f"soak: {figures['duration_s']:g} s at {figures['rate_per_s']:g} signals/s, {figures['signals_sent']} "
        f"signals, decisions {figures['decisions']}, {figures['fills']} fills, "
        f"retention windows {figures['retention'] or 'default'}"
    )
    if figures["rejections"]:
        print(f"rejected, by code: {figures['rejections']} (RSS then measures rejections, not trading)")
    print(
        f"{'service':<8} {'RSS after ' + str(figures['baseline_s']) + ' s':>18} {'end':>9} {'max':>9} {'growth':>9}"
        f"   CPU per signal after the warm-up"
    )
    for name, row in figures["services"].items():
        if row["baseline_mb"] is None:
            print(f"{name:<8} (no sample after the warm-up: run longer than --baseline-seconds)")
            continue
        pct = row["growth_percent"]
        over = f"  over {TARGET_GROWTH_PERCENT:g}%"
        verdict = "" if pct is None else ("  ok" if pct <= TARGET_GROWTH_PERCENT else over)
        cpu = row["cpu_us_per_signal"]
        print(
            f"{name:<8} {row['baseline_mb']:>15.1f} MB {row['end_mb']:>6.1f} MB {row['max_mb']:>6.1f} MB "
            f"{pct:>+8.2f}%{verdict}   {'-' if cpu is None else f'{cpu:,.0f} us'}"
        )
    latency = figures["first_fill"]
    if latency["count"]:
        worst = latency["worst_second"]
        print(
            f"signal -> first fill over {latency['count']} signals: p50 {latency['p50_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms; "
            f"worst second (at {worst['t_s']} s): p99 {worst['p99_ms']:.1f} ms"
        )
    journal = figures["engine_journal"]
    if journal["baseline_mb"] is not None:
        print(
            f"engine journal on disk (segments + snapshot): {journal['baseline_mb']:.1f} MB after the warm-up, "
            f"{journal['end_mb']:.1f} MB at the end, {journal['max_mb']:.1f} MB at most"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--rate", type=float, default=200.0, help="signals per second (default 200)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--baseline-seconds", type=float, default=60.0, help="warm-up before the baseline RSS")
    parser.add_argument("--retention", type=int, default=5000, help="retention windows (0: service defaults)")
    parser.add_argument("--snapshot-mb", type=float, default=4.0, help="journal MB between snapshots (engine and ops)")
    parser.add_argument("--json", type=Path, help="write the figures and samples here")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="copy the services' logs here at the end")
    args = parser.parse_args(argv)
    figures = asyncio.run(soak(args))
    report(figures)
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
