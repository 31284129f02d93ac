"""Flooding neighbour: a well-behaved strategy's decision latency alone, and while another strategy floods ops.

The mesh runs as processes (engine and ops as ``python -m ...`` on free ports). The well-behaved strategy
(``meanrev``, this process) sends one signal per frame at ``--rate`` per second and reads every answer; the
flooder (``momentum``, its own process: this script with ``--flooder``) writes frames of ``--flood-frame`` signals
as fast as the transport takes them and never reads an answer. Each signal trades (targets flip), so the flood
costs ops and engine real work. Printed: the well-behaved strategy's signal-to-decision p50/p99 alone and with the
flooder, and their ratio (target: p99 within 2x), plus how many signals the flooder got decided (ops' metrics).

    .venv/bin/python benchmarks/bench_flood.py                    # 20 s alone, 20 s flooded, 50 signals/s
    .venv/bin/python benchmarks/bench_flood.py --seconds 30 --json var/bench/flood.json
    .venv/bin/python benchmarks/bench_flood.py --intake-rate 500   # ops refusing a strategy's excess at intake

Not a test: timing is printed, never asserted (tests/test_bench_smoke.py runs it briefly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
sys.path.insert(0, str(SCRIPT.parents[1]))

import bench_mesh  # noqa: E402
import grpc  # noqa: E402
from bench_mesh import META, TARGET, SignalCall, percentile  # noqa: E402

from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc  # noqa: E402

CALM_TOKEN = "bench-meanrev-token"
CALM_META = (("x-strategy-token", CALM_TOKEN),)
TARGET_RATIO = 2.0


def signal(prefix: str, model: str, instrument: str, k: int) -> ops_pb2.Signal:
    return ops_pb2.Signal(
        signal_id=f"{prefix}-{k}", model_id=model, instrument=instrument, target=TARGET if k % 2 == 0 else -TARGET
    )


@contextlib.asynccontextmanager
async def flood_mesh(tmp: Path, frame: int, intake_rate: float | None) -> AsyncIterator[str]:
    """The benchmark mesh with a second strategy (``meanrev``) for the well-behaved stream."""
    ops_settings = bench_mesh.ops_settings

    def with_meanrev(tmp_dir: Path, port: int, engine_port: int) -> dict[str, Any]:
        settings = ops_settings(tmp_dir, port, engine_port)
        settings["strategies"]["meanrev"] = {"token": CALM_TOKEN, "models": ["meanrev_v1"]}
        settings["max_signals_per_frame"] = max(frame, 1000)
        if intake_rate:
            settings["intake_signals_per_second"] = intake_rate
        return settings

    bench_mesh.ops_settings = with_meanrev
    try:
        async with bench_mesh.mesh_processes(tmp) as (address, _procs):
            yield address
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp_name:
        async with flood_mesh(Path(tmp_name), args.flood_frame, args.intake_rate) as address:
            await calm_stream(address, args.rate, min(2.0, args.seconds), "warm")  # first quotes, first fills
            alone = await calm_stream(address, args.rate, args.seconds, "alone")
            cmd = [
                sys.executable, str(SCRIPT), "--flooder", address, "--flood-frame", str(args.flood_frame),
                "--seconds", str(args.seconds + 2),
            ]  # fmt: skip
            flooder = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            await asyncio.sleep(0.2)  # the flooder's stream is open; the measurement covers the whole flood
            flooded = await calm_stream(address, args.rate, args.seconds, "flooded")
            out, err = await flooder.communicate()
            if flooder.returncode != 0:
                raise RuntimeError(f"flooder failed: {err.decode(errors='replace')[-2000:]}")
            flood = json.loads(out.decode().strip().splitlines()[-1])
            flood["orders_booked"] = await decided_by(address, "momentum_v1")
    p99_alone, p99_flooded = percentile(alone, 0.99), percentile(flooded, 0.99)
    return {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "flood_frame": args.flood_frame,
        "intake_rate": args.intake_rate,
        "alone": {"n": len(alone), "p50_ms": percentile(alone, 0.5), "p99_ms": p99_alone},
        "flooded": {"n": len(flooded), "p50_ms": percentile(flooded, 0.5), "p99_ms": p99_flooded},
        "p99_ratio": p99_flooded / p99_alone if p99_alone else None,
        "target_ratio": TARGET_RATIO,
        "flooder": flood,
    }


def report(figures: dict[str, Any]) -> None:
    print(
        f"well-behaved strategy at {figures['rate_per_s']:g} signals/s (one per frame), {figures['seconds']:g} s each;"
        f" flooder: frames of {figures['flood_frame']}, never reads; intake limit "
        f"{figures['intake_rate'] or 'none'}"
    )
    for name in ("alone", "flooded"):
        row = figures[name]
        print(f"  {name:<8} n={row['n']:<6} p50 {row['p50_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms")
    ratio = figures["p99_ratio"]
    verdict = "ok" if ratio is not None and ratio <= TARGET_RATIO else f"over {TARGET_RATIO:g}x"
    print(f"  p99 flooded / alone: {ratio:.2f}x ({verdict})")
    flood = figures["flooder"]
    print(f"  flooder: {flood['signals_written']} signals written, {flood['orders_booked']} orders booked by ops")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured alone, then flooded")
    parser.add_argument("--rate", type=float, default=50.0, help="the well-behaved strategy's signals per second")
    parser.add_argument("--flood-frame", type=int, default=100, help="signals per flooder frame")
    parser.add_argument(
        "--intake-rate", type=float, help="ops' intake_signals_per_second (per strategy; default: no limit)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--flooder", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flooder:
        asyncio.run(flooder_main(args.flooder, args.flood_frame, args.seconds))
        return
    figures = asyncio.run(run(args))
    report(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
