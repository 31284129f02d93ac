"""Flooding neighbour: a well-behaved strategy's decision latency alone, and while another strategy floods ops.

The mesh runs as processes (engine and ops as ``python -m ...`` on free ports). The well-behaved strategy
(``meanrev``, this process) sends one signal per frame at ``--rate`` per second and reads every answer; the
flooder (``momentum``, its own process: this script with ``--flooder``) writes frames of ``--flood-frame`` signals
as fast as the transport takes them and never reads an answer. Each signal trades (targets flip), so the flood
costs ops and engine real work. Printed: the well-behaved strategy's signal-to-decision p50/p99 alone and with the
flooder, and their ratio (target: p99 within 2x), the CPU ops and the engine used in each phase, and what became of
the flood: signals written, decided by ops, orders booked, and how often ops paused the flooder's stream and held
it back (from ops' ``/metrics``).

    .venv/bin/python benchmarks/bench_flood.py                    # 20 s alone, 20 s flooded, 50 signals/s
    .venv/bin/python benchmarks/bench_flood.py --rounds 3 --seconds 10   # phases alternated: host noise hits both
    .venv/bin/python benchmarks/bench_flood.py --seconds 30 --json var/bench/flood.json
    .venv/bin/python benchmarks/bench_flood.py --intake-rate 500   # ops refusing a strategy's excess at intake
    .venv/bin/python benchmarks/bench_flood.py --backlog-share 1   # ops never holding a backlogged stream back

Not a test: timing is printed, never asserted (tests/test_bench_smoke.py runs it briefly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
sys.path.insert(0, str(SCRIPT.parents[1]))

import bench_mesh  # noqa: E402
import grpc  # noqa: E402
from bench_mesh import META, TARGET, SignalCall, cpu_seconds, percentile, write_figures  # noqa: E402

from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc  # noqa: E402
from tests.localhost import free_ports  # noqa: E402

CALM_TOKEN = "bench-meanrev-token"
CALM_META = (("x-strategy-token", CALM_TOKEN),)
TARGET_RATIO = 2.0


def signal(prefix: str, model: str, instrument: str, k: int) -> ops_pb2.Signal:
    return ops_pb2.Signal(
        signal_id=f"{prefix}-{k}", model_id=model, instrument=instrument, target=TARGET if k % 2 == 0 else -TARGET
    )


@dataclasses.dataclass
class FloodMesh:
    """The running mesh: ops' address, its /metrics URL, and the engine and ops processes (in that order)."""

    address: str
    metrics_url: str
    procs: list[asyncio.subprocess.Process]

    def cpu(self) -> list[float]:
        """CPU seconds engine and ops have used so far."""
        return [cpu_seconds(p.pid) for p in self.procs]

    async def settle(self, busy: float = 0.3, within: float = 180.0) -> float:
        """Wait until engine and ops each use less than ``busy`` of a core over a second (the flood's orders, reports
        and fills worked off); returns the seconds waited."""
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            before = self.cpu()
            await asyncio.sleep(1.0)
            if all(b - a < busy for a, b in zip(before, self.cpu(), strict=True)):
                break
        return time.perf_counter() - started

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ops' samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:  # noqa: S310 (our own loopback URL)
            text = reply.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


@contextlib.asynccontextmanager
async def flood_mesh(
    tmp: Path, frame: int, intake_rate: float | None, backlog_share: float | None = None
) -> AsyncIterator[FloodMesh]:
    """The benchmark mesh with a second strategy (``meanrev``) for the well-behaved stream, and ops' /metrics."""
    ops_settings = bench_mesh.ops_settings
    (metrics_port,) = free_ports(1)

    def with_meanrev(tmp_dir: Path, port: int, engine_port: int) -> dict[str, Any]:
        settings = ops_settings(tmp_dir, port, engine_port)
        settings["strategies"]["meanrev"] = {"token": CALM_TOKEN, "models": ["meanrev_v1"]}
        settings["max_signals_per_frame"] = max(frame, 1000)
        settings["metrics_port"] = metrics_port
        if intake_rate:
            settings["intake_signals_per_second"] = intake_rate
        if backlog_share is not None:
            settings["stream_backlog_share"] = backlog_share
        return settings

    bench_mesh.ops_settings = with_meanrev
    try:
        async with bench_mesh.mesh_processes(tmp) as (address, procs):
            yield FloodMesh(address, f"http://127.0.0.1:{metrics_port}/metrics", procs)
    finally:
        bench_mesh.ops_settings = ops_settings


async def calm_stream(address: str, rate: float, seconds: float, prefix: str) -> list[float]:
    """One signal per frame at ``rate``/s for ``seconds``; every signal's send -> decision time, ms."""
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        call = cast(SignalCall, stub.StreamSignals(metadata=CALM_META))  # type: ignore[call-arg]

        async def read() -> None:
            while True:
                response = await call.read()
                if not isinstance(response, ops_pb2.StreamSignalsResponse):
                    return
                now = time.perf_counter()
                for decision in response.decisions:
                    sent = sent_at.pop(decision.signal_id, None)
                    if sent is not None:
                        latencies.append((now - sent) * 1000)

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        k = 0
        while time.perf_counter() - started < seconds:
            item = signal(prefix, "meanrev_v1", "SOL-USD", k)
            sent_at[item.signal_id] = time.perf_counter()
            await call.write(ops_pb2.StreamSignalsRequest(signals=[item]))
            k += 1
            await asyncio.sleep(max(0.0, started + k / rate - time.perf_counter()))
        await call.done_writing()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 30)
        call.cancel()
    return latencies


async def flooder_main(address: str, frame: int, seconds: float) -> None:
    """Write frames as fast as the transport takes them; never read an answer. Prints frames written."""
    written = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = cast(SignalCall, ops_pb2_grpc.OpsServiceStub(channel).StreamSignals(metadata=META))  # type: ignore[call-arg]
        started = time.perf_counter()
        k = 0

        async def flood() -> None:
            nonlocal k, written
            while True:
                signals = [signal("flood", "momentum_v1", "BTC-USD", k + i) for i in range(frame)]
                k += frame
                await call.write(ops_pb2.StreamSignalsRequest(signals=signals))
                written += 1

        with contextlib.suppress(asyncio.TimeoutError, grpc.RpcError):
            await asyncio.wait_for(flood(), max(0.0, seconds - (time.perf_counter() - started)))
        call.cancel()
    print(json.dumps({"frames_written": written, "signals_written": written * frame}), flush=True)


async def decided_by(address: str, model: str) -> int:
    """Orders ops booked for ``model`` (ListOrders with the admin token): a proxy for its decided signals."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        count, token = 0, ""
        while True:
            page = await stub.ListOrders(
                ops_pb2.ListOrdersRequest(model_id=model, page_size=1000, page_token=token),
                metadata=(("x-ops-token", "bench-admin-token"),),
            )
            count += len(page.orders)
            token = page.next_page_token
            if not token:
                return count


async def flooded_phase(mesh: FloodMesh, args: argparse.Namespace, prefix: str) -> tuple[list[float], int]:
    """The well-behaved stream while a flooder process floods; its latencies and the signals the flooder wrote."""
    cmd = [
        sys.executable, str(SCRIPT), "--flooder", mesh.address, "--flood-frame", str(args.flood_frame),
        "--seconds", str(args.seconds + 2),
    ]  # fmt: skip
    flooder = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await asyncio.sleep(0.2)  # the flooder's stream is open; the measurement covers the whole flood
    flooded = await calm_stream(mesh.address, args.rate, args.seconds, prefix)
    out, err = await flooder.communicate()
    if flooder.returncode != 0:
        raise RuntimeError(f"flooder failed: {err.decode(errors='replace')[-2000:]}")
    return flooded, int(json.loads(out.decode().strip().splitlines()[-1])["signals_written"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    alone: list[float] = []
    flooded: list[float] = []
    cpu = {"alone": [0.0, 0.0], "flooded": [0.0, 0.0]}  # CPU seconds of engine and ops in each phase
    wall = {"alone": 0.0, "flooded": 0.0}
    written = 0
    settled = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp_name:
        async with flood_mesh(Path(tmp_name), args.flood_frame, args.intake_rate, args.backlog_share) as mesh:
            await calm_stream(mesh.address, args.rate, min(2.0, args.seconds), "warm")  # first quotes, first fills
            for round_ in range(args.rounds):  # alternated, so a noisy minute on the host hits both phases
                if round_:
                    settled += await mesh.settle()  # the last flood's aftermath is not measured as "alone"
                before, started = mesh.cpu(), time.perf_counter()
                alone += await calm_stream(mesh.address, args.rate, args.seconds, f"alone{round_}")
                middle, switched = mesh.cpu(), time.perf_counter()
                latencies, signals = await flooded_phase(mesh, args, f"flooded{round_}")
                flooded += latencies
                written += signals
                after, ended = mesh.cpu(), time.perf_counter()
                for phase, (a, b), seconds in (
                    ("alone", (before, middle), switched - started),
                    ("flooded", (middle, after), ended - switched),
                ):
                    cpu[phase] = [c + (y - x) for c, x, y in zip(cpu[phase], a, b, strict=True)]
                    wall[phase] += seconds
            flood = {
                "signals_written": written,
                "signals_decided": int(mesh.metric("signal_decisions_total", model="momentum_v1")),
                "rate_limited": int(mesh.metric("intake_rejections_total", strategy="momentum")),
                "stream_pauses": int(mesh.metric("signal_stream_pauses_total", strategy="momentum")),
                "stream_holds": int(mesh.metric("signal_stream_holds_total", strategy="momentum")),
                "orders_booked": await decided_by(mesh.address, "momentum_v1"),
            }
    p99_alone, p99_flooded = percentile(alone, 0.99), percentile(flooded, 0.99)
    return {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "flood_frame": args.flood_frame,
        "intake_rate": args.intake_rate,
        "backlog_share": args.backlog_share,
        "alone": {"n": len(alone), "p50_ms": percentile(alone, 0.5), "p99_ms": p99_alone},
        "flooded": {"n": len(flooded), "p50_ms": percentile(flooded, 0.5), "p99_ms": p99_flooded},
        "p99_ratio": p99_flooded / p99_alone if p99_alone else None,
        "target_ratio": TARGET_RATIO,
        "cpu_share": {  # CPU seconds per wall second of the phase (1.0 = one core)
            phase: dict(zip(("engine", "ops"), (c / wall[phase] for c in used), strict=True))
            for phase, used in cpu.items()
        },
        "flooder": flood,
        "settle_seconds": settled,
    }


def report(figures: dict[str, Any]) -> None:
    rounds = f", {figures['rounds']} rounds alternated" if figures["rounds"] > 1 else ""
    print(
        f"well-behaved strategy at {figures['rate_per_s']:g} signals/s (one per frame), {figures['seconds']:g} s each"
        f"{rounds}; flooder: frames of {figures['flood_frame']}, never reads; intake limit "
        f"{figures['intake_rate'] or 'none'}; backlog share {figures['backlog_share'] or 'default'}"
    )
    for name in ("alone", "flooded"):
        row, cpu = figures[name], figures["cpu_share"][name]
        print(
            f"  {name:<8} n={row['n']:<6} p50 {row['p50_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms"
            f"   CPU ops {cpu['ops']:4.0%} engine {cpu['engine']:4.0%}"
        )
    ratio = figures["p99_ratio"]
    verdict = "ok" if ratio is not None and ratio <= TARGET_RATIO else f"over {TARGET_RATIO:g}x"
    print(f"  p99 flooded / alone: {ratio:.2f}x ({verdict})")
    if figures["rounds"] > 1:
        print(f"  settling after each flood before the next round: {figures['settle_seconds']:.1f} s in all")
    flood = figures["flooder"]
    print(
        f"  flooder: {flood['signals_written']} signals written, {flood['signals_decided']} decided by ops,"
        f" {flood['rate_limited']} answered RATE_LIMITED, {flood['orders_booked']} orders booked;"
        f" its stream paused {flood['stream_pauses']} time(s), held back {flood['stream_holds']} time(s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured alone, then flooded")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alone/flooded pairs, alternated (figures pool the rounds)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="the well-behaved strategy's signals per second")
    parser.add_argument("--flood-frame", type=int, default=100, help="signals per flooder frame")
    parser.add_argument(
        "--intake-rate", type=float, help="ops' intake_signals_per_second (per strategy; default: no limit)"
    )
    parser.add_argument(
        "--backlog-share", type=float, help="ops' stream_backlog_share (default: ops' default; 1: never held back)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--flooder", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flooder:
        asyncio.run(flooder_main(args.flooder, args.flood_frame, args.seconds))
        return
    figures = asyncio.run(run(args))
    report(figures)
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
