"""Fixtures that run the real mesh: engine and ops gRPC servers on loopback, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from engine_server.config import EngineConfig
from engine_server.server import EngineServer
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2_grpc, ops_pb2_grpc
from ops_server.config import OpsConfig, StrategyAccess
from ops_server.server import OpsServer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo"
ENGINE_TOKEN = "test-engine-token"
ADMIN_TOKEN = "test-admin-token"
MOMENTUM_TOKEN = "test-momentum-token"
MOMENTUM_META = (("x-strategy-token", MOMENTUM_TOKEN),)
"""gRPC metadata of a call as the momentum strategy."""
ADMIN_META = (("x-ops-token", ADMIN_TOKEN),)
"""gRPC metadata of an operator's call."""
MEANREV_TOKEN = "test-meanrev-token"


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true or fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def flat_instruments(price: str = "100.00") -> list[dict[str, Any]]:
    """Instruments whose mid never moves (volatility 0): exact, hand-checkable sizes and PnL."""
    return [
        {
            "symbol": s,
            "tick_size": "0.01",
            "lot_size": "0.01",
            "min_qty": "0.01",
            "maker_fee_bps": "0",
            "taker_fee_bps": "0",
            "initial_price": price,
            "volatility": 0.0,
        }
        for s in ("BTC-USD", "ETH-USD", "SOL-USD")
    ]


@dataclass
class Mesh:
    engine: EngineServer
    ops: OpsServer
    tmp: Path

    @property
    def ops_address(self) -> str:
        return f"127.0.0.1:{self.ops.port}"

    @property
    def engine_address(self) -> str:
        return f"127.0.0.1:{self.engine.port}"

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.ops_address)

    def ops_stub(self, channel: grpc.aio.Channel) -> ops_pb2_grpc.OpsServiceStub:
        return ops_pb2_grpc.OpsServiceStub(channel)

    @contextlib.asynccontextmanager
    async def stubs(self) -> AsyncIterator[tuple[ops_pb2_grpc.OpsServiceStub, admin_pb2_grpc.OpsAdminServiceStub]]:
        """An OpsService and an OpsAdminService stub on one channel to ops, closed on exit."""
        async with self.channel() as channel:
            yield self.ops_stub(channel), admin_pb2_grpc.OpsAdminServiceStub(channel)


def engine_config(tmp: Path, **overrides: Any) -> EngineConfig:
    values: dict[str, Any] = {
        "port": 0,
        "metrics_port": None,
        "ops_token": ENGINE_TOKEN,
        "journal_path": tmp / "engine" / "journal.bin",
        "journal_fsync": "never",
        "tick_interval_ms": 20,
        "span_file": tmp / "spans" / "engine.jsonl",
    }
    values.update(overrides)
    return EngineConfig(**values)


def ops_config(tmp: Path, engine_port: int, **overrides: Any) -> OpsConfig:
    values: dict[str, Any] = {
        "port": 0,
        "metrics_port": None,
        "engine_address": f"127.0.0.1:{engine_port}",
        "engine_token": ENGINE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "strategies": {
            "momentum": StrategyAccess(token=MOMENTUM_TOKEN, models=("momentum_v1", "momentum_v2")),
            "meanrev": StrategyAccess(token=MEANREV_TOKEN, models=("meanrev_v1",)),
        },
        "registry_path": DEMO / "registry.json",
        "capital_policy_path": DEMO / "capital_policy.json",
        "risk_limits_path": DEMO / "risk_limits.json",
        "state_dir": tmp / "ops",
        "span_file": tmp / "spans" / "ops.jsonl",
        "sample_interval_seconds": 0.2,
        "allocation_interval_seconds": 3600,
    }
    values.update(overrides)
    return OpsConfig(**values)


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


async def start_mesh(tmp: Path, *, engine: dict[str, Any] | None = None, ops: dict[str, Any] | None = None) -> Mesh:
    engine_server = EngineServer(engine_config(tmp, **(engine or {})))
    await engine_server.start()
    try:
        ops_server = OpsServer(ops_config(tmp, engine_server.port, **(ops or {})))
        await ops_server.start()
    except BaseException:  # ops refused its config: the engine is not left serving
        await engine_server.stop(grace=0.1)
        raise
    core = ops_server.core
    await wait_until(lambda: core.engine_connected and len(core.queries.marks()) >= 3)
    return Mesh(engine_server, ops_server, tmp)


async def stop_mesh(mesh: Mesh) -> None:
    await mesh.ops.stop(grace=0.5)
    await mesh.engine.stop(grace=0.5)


@contextlib.asynccontextmanager
async def running_mesh(
    tmp: Path, *, engine: dict[str, Any] | None = None, ops: dict[str, Any] | None = None
) -> AsyncIterator[Mesh]:
    """An in-process mesh (engine and ops, config overrides as in :func:`start_mesh`), stopped on exit."""
    mesh = await start_mesh(tmp, engine=engine, ops=ops)
    try:
        yield mesh
    finally:
        await stop_mesh(mesh)


@contextlib.asynccontextmanager
async def running_engine(tmp: Path, **overrides: Any) -> AsyncIterator[EngineServer]:
    """An in-process engine on :func:`engine_config` with ``overrides``, stopped on exit."""
    server = EngineServer(engine_config(tmp, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


def order_command(
    coid: str,
    qty: str = "1",
    price: str = "",
    *,
    side: common_pb2.Side.ValueType = common_pb2.SIDE_BUY,
    tif: common_pb2.TimeInForce.ValueType | None = None,
    venue: str = "sim",
    account: str = "main",
    model_id: str = "momentum_v1",
    instrument: str = "BTC-USD",
) -> engine_pb2.OrderCommand:
    """A new-order command: LIMIT at ``price`` (GTC unless ``tif``), or MARKET IOC when no price is given."""
    return engine_pb2.OrderCommand(
        new_order=engine_pb2.NewOrder(
            client_order_id=coid,
            venue=venue,
            account=account,
            model_id=model_id,
            instrument=instrument,
            side=side,
            order_type=common_pb2.ORDER_TYPE_LIMIT if price else common_pb2.ORDER_TYPE_MARKET,
            time_in_force=tif or (common_pb2.TIME_IN_FORCE_GTC if price else common_pb2.TIME_IN_FORCE_IOC),
            quantity=qty,
            limit_price=price,
        )
    )


def flat_venues() -> list[dict[str, Any]]:
    """The ``sim`` venue on :func:`flat_instruments` (seed 1) and a ``paper`` venue following it."""
    return [
        {"name": "sim", "adapter": "sim", "seed": 1, "instruments": flat_instruments()},
        {"name": "paper", "adapter": "paper", "follows": "sim"},
    ]


def seed_returns(mesh: Mesh) -> None:
    """Measured per-period returns: momentum earns steadily, mean reversion does not."""
    periodic = mesh.ops.core.periodic
    momentum = [0.002, 0.001, 0.003, 0.0015] * 10
    meanrev = [0.0005, -0.0005, 0.001, -0.001] * 10
    for m, r in zip(momentum, meanrev, strict=True):
        periodic.record_strategy_returns({"momentum_v1": m, "meanrev_v1": r})


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The mesh on the demo registry with a seeded, moving market."""
    async with running_mesh(tmp_path) as m:
        yield m


@pytest.fixture
async def metered_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The mesh with /metrics served by ops and engine (ports picked by the OS)."""
    async with running_mesh(tmp_path, engine={"metrics_port": 0}, ops={"metrics_port": 0}) as m:
        yield m


@pytest.fixture
async def flat_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The mesh with a market whose mid stays at 100.00 (exact numbers)."""
    async with running_mesh(tmp_path, engine={"venues": flat_venues()}) as m:
        yield m


@pytest.fixture
async def small_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The flat market with 4000 of capital: momentum's allocation, its quota, is exactly 2000."""
    policy = json.loads((DEMO / "capital_policy.json").read_text())
    policy["total_capital"] = "4000"
    risk_file = tmp_path / "risk_limits.json"
    shutil.copy(DEMO / "risk_limits.json", risk_file)
    ops = {"capital_policy_path": write_json(tmp_path / "policy.json", policy), "risk_limits_path": risk_file}
    async with running_mesh(tmp_path, engine={"venues": flat_venues()}, ops=ops) as m:
        yield m
