"""One clock for everything: ops, engine, venues and strategies read time only through ``nautilus_mesh.clock``.

The scan forbids every *reading* of the system clocks (``time.time``, ``time.time_ns``, ``time.monotonic``,
``time.monotonic_ns``, ``datetime.now``/``utcnow``/``today``) outside the clock module, as a call or as a
reference (a default argument such as ``clock=time.monotonic`` is a reading too). ``time.perf_counter`` is
allowed: it only measures durations for latency metrics and health probes, never a time that a decision, a
timestamp or a report depends on, so a backtest's results do not change with it.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nautilus_mesh.clock import REAL_CLOCK, Clock, RealClock, SimClock

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("ops_server", "engine_server", "strategies", "nautilus_mesh", "backtests")
CLOCK_MODULE = ROOT / "nautilus_mesh" / "clock.py"
FORBIDDEN_TIME = {"time", "time_ns", "monotonic", "monotonic_ns"}
FORBIDDEN_DATETIME = {"now", "utcnow", "today"}


def clock_readings(path: Path) -> list[str]:
    """Each forbidden clock reading in ``path`` as ``line: expression``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            found.extend(f"{node.lineno}: from time import {a.name}" for a in node.names if a.name in FORBIDDEN_TIME)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if (owner == "time" and attr in FORBIDDEN_TIME) or (
                owner in ("datetime", "date") and attr in FORBIDDEN_DATETIME
            ):
                found.append(f"{node.lineno}: {owner}.{attr}")
    return found


def test_mesh_code_when_scanned_reads_time_only_through_the_clock_module() -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{hit}"
        for top in SCANNED
        if (ROOT / top).is_dir()
        for path in sorted((ROOT / top).rglob("*.py"))
        if path != CLOCK_MODULE and "_pb2" not in path.name
        for hit in clock_readings(path)
    ]
    assert violations == []


def test_clock_scan_when_given_direct_readings_reports_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nfrom datetime import datetime\nfrom time import monotonic\n"
        "a = time.time()\nb = time.perf_counter()\ndef f(c=time.monotonic): ...\nd = datetime.now()\n"
    )
    assert [hit.split(": ")[1] for hit in clock_readings(bad)] == [
        "from time import monotonic",
        "time.time",
        "time.monotonic",
        "datetime.now",
    ]


def test_sim_clock_when_advanced_moves_forward_only_and_agrees_across_units() -> None:
    clock = SimClock(1_700_000_000_000_000_000)
    clock.advance_to(1_700_000_001_500_000_000)
    clock.advance_to(1_700_000_000_000_000_000)  # earlier: ignored
    assert clock.time_ns() == 1_700_000_001_500_000_000
    assert clock.time() == pytest.approx(1_700_000_001.5)
    assert clock.monotonic() == clock.time()
    assert clock.now() == datetime.fromtimestamp(1_700_000_001.5, UTC)


def test_clocks_when_checked_satisfy_the_protocol() -> None:
    assert isinstance(REAL_CLOCK, RealClock)
    assert isinstance(REAL_CLOCK, Clock)
    assert isinstance(SimClock(), Clock)
    assert REAL_CLOCK.now().tzinfo is UTC
