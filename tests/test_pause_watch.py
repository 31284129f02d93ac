"""scripts/pause_watch: GC pauses and event-loop lags printed by a process that only has it on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import asyncio, gc, time, uvloop

def blocker():
    time.sleep(0.3)  # holds the loop

async def main():
    await asyncio.sleep(0.05)
    blocker()
    await asyncio.sleep(0.05)

gc.collect()
loop = uvloop.new_event_loop()
loop.run_until_complete(main())
loop.close()
"""


def test_pause_watch_when_on_pythonpath_reports_collections_and_a_blocked_loop_with_where_it_was() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts" / "pause_watch"), PAUSE_WATCH_GC_MS="0")
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("GCPAUSE ") and " gen2 " in line and "thread=MainThread" in line for line in lines)
    lags = [line for line in lines if line.startswith("LOOPLAG ")]
    assert len(lags) == 1, lines  # one report per stall
    lag_ms = int(lags[0].split("lag=")[1].split("ms")[0])
    assert 60 <= lag_ms <= 1000 and ":blocker" in lags[0]


def test_pause_watch_gc_log_when_set_logs_every_collection_and_the_summary_totals_them(tmp_path: Path) -> None:
    folder = tmp_path / "gc"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts" / "pause_watch"), PAUSE_WATCH_GC_LOG=str(folder))
    program = "import gc\nfor _ in range(3):\n    gc.collect(0)\ngc.collect()\n"
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    summary = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pause_watch" / "gc_summary.py"), str(folder)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    young = [line for line in summary if " gen0 " in line]
    assert len(young) == 1 and int(young[0].split("collections ")[1].split()[0]) >= 3
    assert any(" gen2 collections " in line for line in summary)
