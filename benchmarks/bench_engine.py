"""The engine's work per order, in one process: EngineCore.execute on frames of order commands.

Run: .venv/bin/python benchmarks/bench_engine.py [--orders N] [--frame F] [--fsync never|batch|always]
     [--tracing] [--profile N] [--rss-every N] [--default-gc]

What ops sends, as the engine receives it: frames of F ``NewOrder`` commands (default 100) for the
demo's sim venue, market IOC orders small enough for the market maker to fill, alternating buy and
sell on BTC-USD and ETH-USD. Each frame goes through parsing, venue rails, matching, the ledger
(seq), the journal (in a temporary directory, with the given fsync policy) and the report frame
queued for the session, exactly as ``EngineService.StreamOrders`` does it. ``--profile N`` prints
the N most expensive functions (cProfile, cumulative time). ``--rss-every N`` prints the process's RSS every N
orders, with the journal's snapshots written on a worker thread as the server writes them (the memory over a long
run, e.g. ``--orders 1000000 --rss-every 100000``). Timing is never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_server.config import EngineConfig
from engine_server.engine_core import EngineCore
from engine_server.metrics import EngineMetrics
from engine_server.server import build_manager
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.serving import GC_THRESHOLDS, fix_mmap_threshold
from nautilus_mesh.telemetry import Tracing

SESSION = "bench"


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


CHUNK = 10_000
"""Orders built at a time outside the timed section (so the benchmark's own input does not fill memory)."""


def make_frames(orders: int, frame: int, prefix: str, first: int = 0) -> list[engine_pb2.StreamOrdersRequest]:
    commands = [
        engine_pb2.OrderCommand(
            new_order=engine_pb2.NewOrder(
                client_order_id=f"{prefix}-{i}",
                venue="sim",
                account="default",
                model_id="momentum_v1",
                instrument=("BTC-USD", "ETH-USD")[i % 2],
                side=common_pb2.SIDE_BUY if (i // 2) % 2 == 0 else common_pb2.SIDE_SELL,
                order_type=common_pb2.ORDER_TYPE_MARKET,
                time_in_force=common_pb2.TIME_IN_FORCE_IOC,
                quantity="0.001" if i % 2 == 0 else "0.01",
            )
        )
        for i in range(first, first + orders)
    ]
    return [engine_pb2.StreamOrdersRequest(commands=commands[i : i + frame]) for i in range(0, orders, frame)]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        config = EngineConfig(
            journal_path=Path(tmp) / "journal.bin",
            metrics_port=None,
            tracing=args.tracing,
            span_file=Path(tmp) / "spans.jsonl",
            **{"journal_fsync": args.fsync},  # type: ignore[arg-type]
        )
        metrics = EngineMetrics()
        tracing = Tracing("engine", config.span_file, enabled=args.tracing)
        core = EngineCore(build_manager(config, metrics), metrics, tracing)
        queue: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue()
        core.sessions[SESSION] = queue
        if args.rss_every:
            core.manager.compact_in_background()  # as the engine server runs: snapshots written on a worker thread
        warm = make_frames(2 * args.frame, args.frame, "warm")
        for frame in warm:
            core.execute(frame.commands, SESSION)
            core.manager.advance()
        while not queue.empty():
            queue.get_nowait()
        profiler = cProfile.Profile() if args.profile else None
        reports = frames_out = frames_in = 0
        seconds = cpu = 0.0
        for first in range(0, args.orders, CHUNK):
            frames = make_frames(min(CHUNK, args.orders - first), args.frame, "o", first)
            frames_in += len(frames)
            started = time.perf_counter()
            cpu_started = time.process_time()
            if profiler is not None:
                profiler.enable()
            for frame in frames:
                core.execute(frame.commands, SESSION)
                while not queue.empty():
                    out = queue.get_nowait()
                    frames_out += 1
                    reports += len(out or ())
                if args.rss_every:
                    await asyncio.sleep(0)  # a compaction's worker thread reports back through the loop
            if profiler is not None:
                profiler.disable()
            seconds += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
            done = min(args.orders, first + CHUNK)
            if args.rss_every and done // args.rss_every > first // args.rss_every:  # a multiple of N passed
                print(f"{done:>10,} orders: RSS {rss_mb():.1f} MB, {core.manager.snapshots} snapshots", flush=True)
        cpu_us = cpu / args.orders * 1e6
        orders_in_memory = core.manager.orders_in_memory
        core.manager.close()
    per_order_us = seconds / args.orders * 1e6
    print(
        f"engine: {args.orders} orders in frames of {args.frame}, fsync {args.fsync}, tracing "
        f"{'on' if args.tracing else 'off'}: {args.orders / seconds:,.0f} orders/s "
        f"({per_order_us:.1f} us/order, CPU {cpu_us:.1f} us/order), "
        f"{reports} reports in {frames_out} report frames for {frames_in} command frames; "
        f"{orders_in_memory} orders in memory, RSS {rss_mb():.0f} MB"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--frame", type=int, default=100)
    parser.add_argument("--fsync", choices=("never", "batch", "always"), default="batch")
    parser.add_argument("--tracing", action="store_true", help="trace every order (spans to a temp file)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N top cProfile entries")
    parser.add_argument(
        "--rss-every",
        type=int,
        default=0,
        metavar="N",
        help="print the RSS every N orders, snapshots written on a worker thread as in the server (memory runs)",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="keep Python's GC thresholds and glibc's malloc (not the services')"
    )
    args = parser.parse_args()
    if not args.default_gc:
        gc.set_threshold(*GC_THRESHOLDS)  # as the services run (nautilus_mesh.serving)
        fix_mmap_threshold()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
