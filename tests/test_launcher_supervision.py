"""`nautilus-mesh up` supervises its children: a killed ops is reported, restarted, and the mesh trades again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.launcher import CLI, demo_config_on, fills, interrupt_up, read_until, start_up
from tests.localhost import free_ports

pytestmark = [
    pytest.mark.skipif(CLI is None, reason="the console script is installed by `make test`"),
    pytest.mark.timeout(120),
]


async def test_up_when_ops_is_killed_restarts_it_and_the_mesh_trades_again(tmp_path: Path) -> None:
    ops_port, engine_port, ops_metrics, engine_metrics = free_ports(4)
    config = demo_config_on(tmp_path, ops_port, engine_port, ops_metrics, engine_metrics)
    proc, stdout = await start_up(config, tmp_path, 90)
    seen: list[str] = []
    address = f"127.0.0.1:{ops_port}"
    token = "demo-momentum-token"
    try:
        await read_until(stdout, "ready:", seen, 60)
        pid = int((tmp_path / "var" / "run" / "ops.pid").read_text())
        deadline = time.monotonic() + 30
        while await fills(address, token) == 0:
            assert time.monotonic() < deadline, "no fill before the kill"
            await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        died = await read_until(stdout, "error: ops exited", seen, 10)
        assert "code -9" in died
        await read_until(stdout, "restarting ops in", seen, 5)
        restarted = await read_until(stdout, "restarted: ops", seen, 30)
        assert int(restarted.rsplit("pid=", 1)[1]) != pid
        restarted_at = time.monotonic()
        before = await fills(address, token)  # restored from the journal
        deadline = time.monotonic() + 30
        while await fills(address, token) <= before:  # new fills: the strategies trade through the new ops
            assert time.monotonic() < deadline, "no new fill after ops was restarted:\n" + "\n".join(seen[-40:])
            await asyncio.sleep(0.05)
        print(f"strategies filled again {time.monotonic() - restarted_at:.2f}s after ops was back")
        assert proc.returncode is None  # the mesh kept running
    finally:
        code = await interrupt_up(proc, stdout, seen)
    assert code == 0, "\n".join(seen[-40:])


async def test_up_when_no_restart_and_ops_is_killed_stops_everything_with_exit_1(tmp_path: Path) -> None:
    ops_port, engine_port, ops_metrics, engine_metrics = free_ports(4)
    config = demo_config_on(tmp_path, ops_port, engine_port, ops_metrics, engine_metrics)
    proc, stdout = await start_up(config, tmp_path, 90, "--no-restart")
    seen: list[str] = []
    try:
        await read_until(stdout, "ready:", seen, 60)
        pid = int((tmp_path / "var" / "run" / "ops.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        await read_until(stdout, "error: ops exited with code -9", seen, 10)
        rest = await asyncio.wait_for(stdout.read(), 60)
        seen.extend(rest.decode().splitlines())
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 1
    assert not any(line.startswith("restarting") for line in seen), seen
    assert seen[-1].startswith("summary:")


async def test_up_when_strategies_is_killed_the_summary_counts_the_whole_run(tmp_path: Path) -> None:
    """The restarted strategies process counts from zero: the summary adds what the one before had counted."""
    ops_port, engine_port, ops_metrics, engine_metrics = free_ports(4)
    config = demo_config_on(tmp_path, ops_port, engine_port, ops_metrics, engine_metrics)
    proc, stdout = await start_up(config, tmp_path, 90)
    seen: list[str] = []
    stats_file = tmp_path / "var" / "run" / "strategies.json"
    try:
        await read_until(stdout, "ready:", seen, 60)
        deadline = time.monotonic() + 30
        counted = 0
        while counted < 20:  # the first process has sent some signals and written them down
            assert time.monotonic() < deadline, "no strategies stats before the kill"
            await asyncio.sleep(0.2)
            with contextlib.suppress(OSError, ValueError, KeyError):
                counted = json.loads(stats_file.read_text())["totals"]["signals"]
        pid = int((tmp_path / "var" / "run" / "strategies.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        await read_until(stdout, "restarted: strategies", seen, 30)
        await asyncio.sleep(2)
    finally:
        code = await interrupt_up(proc, stdout, seen)
    assert code == 0, "\n".join(seen[-40:])
    after_restart = json.loads(stats_file.read_text())["totals"]["signals"]  # the second process's own count
    signals = int(seen[-1].split("signals=")[1].split()[0])
    assert signals >= counted + after_restart, (counted, after_restart, seen[-1])
