"""How long a journal checkpoint (ops) and a journal compaction (engine) hold the event loop, on a realistic state.

Run: .venv/bin/python scripts/bench_stall.py [--orders N] [--repeat R]

* ops: an ``OrderTracker`` with ``--orders`` decisions, each sending an order that got one fill (the state behind the
  ops journal of the three-process mesh after ~40,000 signals with their paper twins), checkpointed into a SQLite
  state store by ``JournalCompaction.checkpoint_off_loop`` while a ticker task on the same loop wakes every 1 ms.
* engine: an ``OrderManager`` whose journal holds ``--orders`` filled market orders, compacted the way the engine
  server compacts (on the loop, or off it when the ledger offers ``compact_off_loop``) under the same ticker.
* ops archive: batches of ``ARCHIVE_BATCH`` orders and fills that left memory written to the archive
  (``history.db``), as the tracker writes one at steady state, under the same ticker.
* ops full GC: one full collection of the cyclic GC over the ops state above (``gc.collect()``), the pause a service
  takes when it walks every retained object, and how many objects the GC tracks.

``longest_gap_ms`` is the longest interval the ticker saw between two wake-ups (the loop stall), ``wall_ms`` the
time from the start of the checkpoint to its end; both in milliseconds, the median of ``--repeat`` runs (for the
archive, the median of its batches, and its worst gap). The cyclic GC runs with the services' thresholds
(``nautilus_mesh.serving.GC_THRESHOLDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine_server.order_manager import OrderManager  # noqa: E402
from engine_server.venues.base import TimeInForce  # noqa: E402
from engine_server.venues.sim import SimVenue, SimVenueConfig  # noqa: E402
from nautilus_mesh.api.common.v1 import common_pb2  # noqa: E402
from nautilus_mesh.api.engine.v1 import engine_pb2  # noqa: E402
from nautilus_mesh.api.ops.v1 import ops_pb2  # noqa: E402
from nautilus_mesh.serving import GC_THRESHOLDS  # noqa: E402
from nautilus_mesh.store import SqliteStore  # noqa: E402
from ops_server.engine_link import ReportCursor  # noqa: E402
from ops_server.journal_compaction import JournalCompaction  # noqa: E402
from ops_server.measurement import Measurement  # noqa: E402
from ops_server.order_archive import OrderArchive  # noqa: E402
from ops_server.order_tracker import ARCHIVE_BATCH, OrderTracker, TrackedOrder  # noqa: E402
from tests.venues import instrument, order_request  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def timed(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(longest gap between 1 ms ticks, wall time) while ``work`` runs, milliseconds."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await work()
    wall = time.perf_counter() - start
    done = True
    await task
    return longest * 1e3, wall * 1e3


def ops_state(tmp: Path, orders: int) -> tuple[JournalCompaction, OrderTracker]:
    tracker = OrderTracker(tmp / "journal.bin", history=100_000)
    measurement, cursor = Measurement(1.0), ReportCursor()
    compaction = JournalCompaction(SqliteStore(tmp / "state.db"), tracker, measurement, cursor, 1 << 30)
    compaction.restore()
    tracker.replay(lambda r: None)
    for n in range(orders):
        coid = f"momentum_v1-sig-{n:08d}-live"
        decision = ops_pb2.SignalDecision(
            signal_id=f"sig-{n:08d}",
            model_id="momentum_v1",
            status=ops_pb2.DECISION_STATUS_ACCEPTED,
            mode=ops_pb2.ROUTING_MODE_LIVE,
            client_order_id=coid,
            side=common_pb2.SIDE_BUY,
            quantity="0.01",
            trace=common_pb2.TraceContext(traceparent=TRACEPARENT),
        )
        order = TrackedOrder(
            coid, f"sig-{n:08d}", "momentum_v1", "momentum", "BTC-USD", "BUY", Decimal("0.01"), "LIVE", "sim",
            Decimal("50000.5"), time.time_ns(), TRACEPARENT, "momentum_v1",
        )  # fmt: skip
        tracker.record(decision, order)
        report = engine_pb2.ExecutionReport(
            seq=n + 1, exec_id=f"sim-{n + 1}", client_order_id=coid, exec_type=engine_pb2.EXEC_TYPE_FILL,
            order_status=engine_pb2.ORDER_STATUS_FILLED, last_qty="0.01", last_price="50000.5", fee="0.05",
        )  # fmt: skip
        tracker.journal_reports([report])
        fill = tracker.apply_report(report, journal=False)
        assert fill is not None
        cursor.mark(report.seq)
        measurement.apply_fill("momentum_v1", "BTC-USD", fill.signed_qty, fill.price, fill.fee)
        tracker.remember_fill(
            ops_pb2.Fill(
                model_id="momentum_v1", signal_id=f"sig-{n:08d}", client_order_id=coid, exec_id=f"sim-{n + 1}",
                seq=n + 1, instrument="BTC-USD", side=common_pb2.SIDE_BUY, quantity="0.01", price="50000.5",
                fee="0.05", liquidity="TAKER", mode=ops_pb2.ROUTING_MODE_LIVE,
                trace=common_pb2.TraceContext(traceparent=TRACEPARENT), ts_unix_nanos=time.time_ns(),
            )
        )  # fmt: skip
    tracker.commit()
    return compaction, tracker


ARCHIVE_BATCHES = 200
"""Batches of ``ARCHIVE_BATCH`` rows the archive measurement writes (count): ~15 MB of rows, so SQLite's WAL is
checkpointed into the file (and fsynced) a few times, as it is at steady state."""


async def archive_batches(tmp: Path) -> list[tuple[float, float]]:
    """(longest gap, wall) of each batch of orders and fills written to the archive of orders that left memory, as
    the tracker writes one once ``ARCHIVE_BATCH`` are queued (steady state: every new order pushes one out)."""
    archive = OrderArchive(tmp / "history.db", retention=1_000_000)
    record = TrackedOrder(
        "c", "s", "momentum_v1", "momentum", "BTC-USD", "BUY", Decimal("0.01"), "LIVE", "sim", Decimal("50000.5"),
        time.time_ns(), TRACEPARENT, "momentum_v1",
    ).record_bytes()  # fmt: skip
    runs = []
    for batch in range(ARCHIVE_BATCHES):
        for n in range(ARCHIVE_BATCH // 2):
            at = batch * ARCHIVE_BATCH + n
            archive.add_order(f"momentum_v1-sig-{at:08d}", at, "momentum_v1", "", record, Decimal("0.01"), 2)
            fill = ops_pb2.Fill(exec_id=f"sim-{at}", model_id="momentum_v1", seq=at, quantity="0.01")
            archive.add_fill(fill.exec_id, fill.model_id, fill.SerializeToString())

        async def write() -> None:
            archive.commit()
            flush = getattr(archive, "flush", None)  # written by a thread of its own: wait for it too
            if flush is not None:
                await asyncio.to_thread(flush)

        runs.append(await timed(write))
    archive.close()
    return runs


def engine_state(tmp: Path, orders: int) -> OrderManager:
    venue = SimVenue(SimVenueConfig(instruments=(instrument(),), seed=1))
    manager = OrderManager({"sim": venue}, journal_path=tmp / "engine" / "journal.bin", journal_fsync="never")
    for n in range(orders):
        request = order_request(
            f"momentum_v1-sig-{n:08d}-live", qty="0.01", price=None, tif=TimeInForce.IOC, traced=True
        )
        with manager.frame():
            manager.submit("sim", request)
    return manager


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=80_000, help="decisions and orders in the state (count)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (count)")
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the services run (the state is made after their start: not frozen)
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as name:
        tmp = Path(name)
        compaction, tracker = ops_state(tmp, args.orders)
        full_gc = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            gc.collect()
            full_gc.append((time.perf_counter() - started) * 1e3)
        tracked = len(gc.get_objects())
        ops = [await timed(compaction.checkpoint_off_loop) for _ in range(args.repeat)]
        tracker.close()
        manager = engine_state(tmp, args.orders)
        off_loop = getattr(manager, "compact_off_loop", None)

        async def compact() -> None:
            if off_loop is None:
                manager.compact()
            else:
                await off_loop()

        engine = [await timed(compact) for _ in range(args.repeat)]
        manager.close()
        archive = await archive_batches(tmp)
    for label, runs in (("ops checkpoint", ops), ("engine compaction", engine)):
        gap = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{label:18s} {args.orders:,} orders: longest_gap_ms {gap:7.1f}  wall_ms {wall:7.1f}")
    full_ms = statistics.median(full_gc)
    print(f"ops full GC        {args.orders:,} orders: ms {full_ms:7.1f}  tracked objects {tracked:,}")
    gap, wall = statistics.median(r[0] for r in archive), statistics.median(r[1] for r in archive)
    worst = max(r[0] for r in archive)
    print(f"ops archive batch  {ARCHIVE_BATCH} rows: longest_gap_ms {gap:7.1f}  wall_ms {wall:7.1f}  worst {worst:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
