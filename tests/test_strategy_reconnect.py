"""Strategies -> ops: after an ops outage longer than the old backoff allowed for, a strategy is back within 1 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ops_server.server import OpsServer
from strategies.runtime import StrategyRunner
from tests.conftest import MOMENTUM_TOKEN, ops_config, start_mesh, stop_mesh, wait_until

OUTAGE_SECONDS = 4.0  # the old strategy backoff (0.1 s doubling to 5 s) was 3.2 s into its wait by then


class SteadyModel:
    """Always wants the same small long target (so every reconnect re-states it and gets a decision)."""

    def on_price(self, instrument: str, mid: float, ts_ns: int) -> float | None:
        return 0.05


def decisions(runner: StrategyRunner) -> int:
    return sum(sum(c.values()) for c in runner.stats.decisions.values())


async def test_strategy_when_ops_returns_after_an_outage_gets_decisions_within_1s(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path)
    ops_port = mesh.ops.port
    runner = StrategyRunner(
        "momentum",
        MOMENTUM_TOKEN,
        [("momentum_v1", SteadyModel(), ["BTC-USD"])],  # type: ignore[list-item]
        mesh.ops_address,
        mesh.engine_address,
        None,
        0.05,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: decisions(runner) > 0)
        await mesh.ops.stop(grace=0.1)
        down_at = time.monotonic()
        await wait_until(lambda: runner.stats.reconnects["ops"] >= 1)
        # The outage lasts a fixed time (the scenario, not a synchronisation); the strategy keeps retrying meanwhile.
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        before = decisions(runner)
        mesh.ops = OpsServer(ops_config(tmp_path, mesh.engine.port, port=ops_port))
        await mesh.ops.start()
        ready_at = time.monotonic()
        await wait_until(lambda: decisions(runner) > before, within=5, interval=0.005)
        back = time.monotonic() - ready_at
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await stop_mesh(mesh)
    print(f"strategy decisions again {back:.3f}s after ops was serving")
    assert back < 1.0, f"first decision {back:.2f}s after ops was back"
