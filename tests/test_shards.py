"""Ops as two workers sharded by strategy on one engine and the real PostgreSQL (real gRPC on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from clients.sdk import MeshRpcError, OpsClient
from engine_server.server import EngineServer
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.status import from_rpc_error
from ops_server.config import load_ops_config
from ops_server.core import OpsCore
from ops_server.risk import TradingState
from ops_server.server import OpsServer
from ops_server.sharding import ShardMap, check_deployment, stable_index, worker_database_url
from tests.conftest import (
    MEANREV_TOKEN,
    MOMENTUM_TOKEN,
    engine_config,
    flat_instruments,
    ops_config,
    start_mesh,
    stop_mesh,
    wait_until,
)
from tests.localhost import free_ports
from tests.test_crash_recovery import start_ops, write_ops_config
from tests.test_store import PG_URL, postgres_accepts_connections

SHARDS = {"momentum": 0, "meanrev": 1}
FLAT_VENUES = [
    {"name": "sim", "adapter": "sim", "seed": 1, "instruments": flat_instruments()},
    {"name": "paper", "adapter": "paper", "follows": "sim"},
]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema prefix on the real PostgreSQL; the shared schema and every worker's are dropped after."""
    if not postgres_accepts_connections():
        pytest.skip("PostgreSQL does not accept connections on 127.0.0.1:5432")
    schema = f"test_shards_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for name in (schema, f"{schema}_w0", f"{schema}_w1"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@dataclass
class Shards:
    engine: EngineServer
    workers: list[OpsServer]

    def address(self, index: int) -> str:
        return f"127.0.0.1:{self.workers[index].port}"


def worker_overrides(tmp: Path, schema: str, index: int, ports: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "port": ports[index],
        "ops_workers": 2,
        "worker_index": index,
        "worker_addresses": tuple(f"127.0.0.1:{p}" for p in ports),
        "shard_map": SHARDS,
        "database_url": f"{PG_URL}?schema={schema}",
        "state_dir": tmp / f"ops-{index}",
        "coordination_interval_seconds": 0.1,
        **extra,
    }


async def start_shards(tmp: Path, schema: str, **extra: Any) -> Shards:
    engine = EngineServer(engine_config(tmp, venues=FLAT_VENUES))
    await engine.start()
    ports = free_ports(2)
    workers = []
    for index in range(2):
        worker = OpsServer(ops_config(tmp, engine.port, **worker_overrides(tmp, schema, index, ports, **extra)))
        await worker.start()
        workers.append(worker)
    for worker in workers:
        core = worker.core
        await wait_until(lambda core=core: core.engine_connected and len(core.queries.marks()) >= 3)  # type: ignore[misc]
    return Shards(engine, workers)


async def stop_shards(shards: Shards) -> None:
    for worker in shards.workers:
        await worker.stop(grace=0.5)
    await shards.engine.stop(grace=0.5)


@pytest.fixture
async def shards(tmp_path: Path, pg_schema: str) -> AsyncIterator[Shards]:
    s = await start_shards(tmp_path, pg_schema)
    try:
        yield s
    finally:
        await stop_shards(s)


def make_signal(signal_id: str, model_id: str, instrument: str, target: float) -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id=model_id, instrument=instrument, target=target)


SCRIPT = [
    ("m-1", "momentum_v1", "BTC-USD", 0.002, MOMENTUM_TOKEN),
    ("r-1", "meanrev_v1", "SOL-USD", -0.002, MEANREV_TOKEN),
    ("m-2", "momentum_v1", "ETH-USD", -0.001, MOMENTUM_TOKEN),
    ("r-2", "meanrev_v1", "ETH-USD", 0.001, MEANREV_TOKEN),
    ("m-3", "momentum_v1", "BTC-USD", 0.003, MOMENTUM_TOKEN),
]


async def run_script(addresses: list[str]) -> None:
    """Submit the script's signals through the SDK, each on the first address (redirected when it is not the owner)."""
    for signal_id, model, instrument, target, token in SCRIPT:
        async with OpsClient(addresses[0], strategy_token=token) as ops:
            decision = await ops.submit_signal(make_signal(signal_id, model, instrument, target))
            assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED


def positions_of(servers: list[OpsServer]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for server in servers:
        for p in server.core.queries.positions():
            if Decimal(p.quantity):
                key = (p.model_id, p.instrument)
                assert key not in out, f"{key} held by two workers"
                out[key] = Decimal(p.quantity)
    return out


def all_filled(servers: list[OpsServer]) -> bool:
    return all(not o.open_quantity for s in servers for o in s.core.tracker.orders.values())


async def test_ops_when_two_workers_without_postgres_refuses_to_start(tmp_path: Path) -> None:
    config = ops_config(tmp_path, 1, ops_workers=2, worker_addresses=("127.0.0.1:1", "127.0.0.1:2"))
    with pytest.raises(ConfigError) as raised:
        OpsCore(config)
    assert raised.value.code == "SHARDING_NEEDS_POSTGRES"
    assert "PostgreSQL" in raised.value.message


async def test_ops_when_its_shard_map_names_an_unknown_strategy_refuses_to_start(tmp_path: Path) -> None:
    """A misspelled name left the strategy it meant placed by hash, on another worker, without a word."""
    with pytest.raises(ConfigError) as raised:
        OpsCore(ops_config(tmp_path, 1, shard_map={"mean-rev": 0}))
    assert raised.value.code == "UNKNOWN_STRATEGY"
    assert "mean-rev" in raised.value.message and "meanrev" in raised.value.message


async def test_submit_signal_when_sent_to_the_wrong_worker_is_refused_with_the_owner_address(shards: Shards) -> None:
    async with grpc.aio.insecure_channel(shards.address(1)) as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        metadata = (("x-strategy-token", MOMENTUM_TOKEN),)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=make_signal("w-1", "momentum_v1", "BTC-USD", 0.1)), metadata=metadata
            )
        shard_map = await stub.GetShardMap(ops_pb2.GetShardMapRequest(), metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    detail = from_rpc_error(raised.value)
    assert detail is not None and detail.code == "WRONG_SHARD"
    assert detail.details["owner_address"] == shards.address(0)
    assert shard_map.workers == 2 and shard_map.worker_index == 1
    assert {(a.strategy_id, a.worker_index, a.address) for a in shard_map.assignments} == {
        ("momentum", 0, shards.address(0)),
        ("meanrev", 1, shards.address(1)),
    }
    assert not shards.workers[1].core.tracker.orders


async def test_signal_stream_when_opened_on_the_wrong_worker_follows_to_the_owner_once(shards: Shards) -> None:
    ids = [f"s-{i}" for i in range(30)]
    decided: list[str] = []
    async with OpsClient(shards.address(1), strategy_token=MOMENTUM_TOKEN) as ops:
        stream = ops.stream_signals()
        for i in range(0, len(ids), 10):  # three frames written before any answer
            frame = [make_signal(s, "momentum_v1", "BTC-USD", 0.001 * (n + 1)) for n, s in enumerate(ids[i : i + 10])]
            await stream.write(ops_pb2.StreamSignalsRequest(signals=frame))
        async for response in stream:
            decided.extend(d.signal_id for d in response.decisions)
            if len(decided) >= len(ids):
                stream.cancel()
                break
    assert sorted(decided) == sorted(ids)  # every signal decided once: none lost, none doubled
    owner, other = shards.workers[0].core, shards.workers[1].core
    assert {o.signal_id for o in owner.tracker.orders.values()} == set(ids) and not other.tracker.orders


async def test_two_workers_when_given_the_same_signals_hold_what_one_worker_holds(
    tmp_path: Path, shards: Shards
) -> None:
    await run_script([shards.address(1), shards.address(0)])
    await wait_until(lambda: all_filled(shards.workers))
    await wait_until(lambda: len(positions_of(shards.workers)) == 4)
    sharded = positions_of(shards.workers)
    fills = [f for w in shards.workers for f in w.core.tracker.fills.values()]
    exec_ids = [exec_id for exec_id, _, _, _ in fills]
    assert len(exec_ids) == len(set(exec_ids))  # no fill applied by two workers

    def reconciled(server: OpsServer) -> float:
        return server.core.metrics.registry.get_sample_value("reconciled_reports_total") or 0.0

    # Each worker fetches the other's reports by ListExecutions reconciliation, and applies none of them.
    await wait_until(lambda: all(reconciled(w) > 0 for w in shards.workers), within=10)
    assert positions_of(shards.workers) == sharded

    single = await start_mesh(tmp_path / "single", engine={"venues": FLAT_VENUES})
    try:
        await run_script([single.ops_address])
        await wait_until(lambda: all_filled([single.ops]))
        await wait_until(lambda: len(positions_of([single.ops])) == 4)
        assert positions_of([single.ops]) == sharded
        assert len(single.ops.core.tracker.fills) == len(fills)
    finally:
        await stop_mesh(single)


async def test_kill_switch_when_engaged_on_one_worker_halts_the_other_within_a_second(shards: Shards) -> None:
    first, second = shards.workers[0].core, shards.workers[1].core
    await first.controls.engage_kill_switch("test")
    await wait_until(lambda: second.risk.kill_switch_engaged, within=1.0)
    async with OpsClient(shards.address(1), strategy_token=MEANREV_TOKEN) as ops:
        with pytest.raises(MeshRpcError) as halted:
            await ops.submit_signal(make_signal("k-1", "meanrev_v1", "SOL-USD", 0.001))
    assert halted.value.detail is not None and halted.value.detail.code == "TRADING_HALTED"
    first.controls.release_kill_switch("test over")
    await wait_until(lambda: not second.risk.kill_switch_engaged, within=1.0)


async def test_kill_switch_when_another_worker_changes_the_global_state_before_seeing_it_stays_engaged(
    shards: Shards,
) -> None:
    """Worker 1 set REDUCING before it had seen worker 0's kill switch and published its stale copy of the shared
    rails over it: both workers ended released. A change is published field by field, and the kill switch wins."""
    first, second = shards.workers[0].core, shards.workers[1].core
    await first.controls.engage_kill_switch("test")
    second.controls.set_trading_state(None, TradingState.REDUCING, "test: the same moment")
    await wait_until(lambda: second.risk.kill_switch_engaged, within=2.0)
    await asyncio.sleep(0.5)  # several intervals: nothing releases it afterwards
    for core in (first, second):
        assert core.risk.kill_switch_engaged and core.risk.global_state is TradingState.HALTED


async def test_allocation_when_two_workers_run_has_one_leader_and_sums_to_the_policy_capital(
    tmp_path: Path, pg_schema: str
) -> None:
    s = await start_shards(tmp_path, pg_schema, allocation_interval_seconds=0.5)
    try:
        coordinators = [w.coordinator for w in s.workers]
        assert all(c is not None for c in coordinators)
        await wait_until(lambda: sum(bool(c and c.leader) for c in coordinators) == 1, within=5)
        leaders = [w.core.metrics.registry.get_sample_value("ops_allocator_leader") for w in s.workers]
        assert sorted(leaders) == [0.0, 1.0]
        await wait_until(lambda: all(c is not None and c.applied_cycle >= 0 for c in coordinators), within=5)
        for worker in s.workers:
            allocations = worker.core.allocator.allocations_usd()
            assert sum(allocations.values()) == worker.core.allocator.policy.total_capital
        assert s.workers[0].core.allocator.weights == s.workers[1].core.allocator.weights
    finally:
        await stop_shards(s)


def shared_documents(schema: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The shared documents whose key starts with ``prefix``, read behind the workers' backs."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT key, value FROM {} WHERE key LIKE %s").format(sql.Identifier(schema, "documents")),
            (prefix + "%",),
        ).fetchall()
    return {key: value for key, value in rows}


def latest_allocation(schema: str) -> dict[str, Any] | None:
    try:
        return shared_documents(schema, "allocation/latest").get("allocation/latest")
    except psycopg.errors.UndefinedTable:
        return None


def audit_kinds(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e.get("kind") == kind]


async def test_allocator_leader_when_sigkilled_moves_to_the_other_worker_within_five_seconds(
    tmp_path: Path, pg_schema: str
) -> None:
    engine = EngineServer(engine_config(tmp_path))
    await engine.start()
    ports = free_ports(2)
    procs: dict[int, asyncio.subprocess.Process] = {}
    try:
        for index in range(2):
            folder = tmp_path / f"w{index}"
            folder.mkdir()
            config = write_ops_config(
                folder,
                engine.port,
                ports[0],
                ops_workers=2,
                worker_index=index,
                worker_addresses=[f"127.0.0.1:{p}" for p in ports],
                shard_map=SHARDS,
                database_url=f"{PG_URL}?schema={pg_schema}",
                allocation_interval_seconds=0.5,
                coordination_interval_seconds=0.1,
            )
            procs[index] = await start_ops(config, ports[index], folder / "ops.log")

        await wait_until(lambda: latest_allocation(pg_schema) is not None, within=10)
        first = latest_allocation(pg_schema)
        assert first is not None
        leader = int(first["leader"])
        follower = 1 - leader
        procs[leader].send_signal(signal.SIGKILL)
        await procs[leader].wait()
        killed_at = time.monotonic()

        def taken_over() -> bool:
            doc = latest_allocation(pg_schema)
            return doc is not None and int(doc["leader"]) == follower

        await wait_until(taken_over, within=5)
        assert time.monotonic() - killed_at < 5
        await wait_until(
            lambda: (
                len([d for d in shared_documents(pg_schema, "allocation/cycle/").values() if d["leader"] == follower])
                >= 2
            ),
            within=5,
        )

        procs[follower].send_signal(signal.SIGTERM)  # a graceful stop: its audit log is complete
        await asyncio.wait_for(procs[follower].wait(), 10)
        cycles = shared_documents(pg_schema, "allocation/cycle/")
        assert all(key == f"allocation/cycle/{doc['cycle_id']}" for key, doc in cycles.items())
        # The new leader ran a cycle only for the ids it then decided: none ran twice, none decided by two leaders.
        led = sorted(int(d["cycle_id"]) for d in cycles.values() if d["leader"] == follower)
        before = [int(d["cycle_id"]) for d in cycles.values() if d["leader"] == leader]
        assert not set(led) & set(before)
        audit = tmp_path / f"w{follower}" / "ops" / f"worker-{follower}" / "audit.jsonl"
        ran = [e for e in audit_kinds(audit, "ALLOCATION") if "cycle_id" not in e]
        assert len(ran) >= len(led)  # every decided cycle was run by it (the last run may not be written yet)
        assert len(ran) <= len(led) + 1
        assert len(audit_kinds(audit, "LEADER")) == 1
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
        await engine.stop(grace=0.1)


def test_stable_index_when_asked_twice_is_sha256_of_the_name_mod_n() -> None:
    digest = hashlib.sha256(b"momentum").digest()
    assert stable_index("momentum", 7) == int.from_bytes(digest, "big") % 7
    assert [stable_index("momentum", 2), stable_index("meanrev", 2)] == [0, 0]  # fixed across runs and processes


def test_shard_map_when_one_worker_owns_every_strategy(tmp_path: Path) -> None:
    shards = ShardMap.from_config(ops_config(tmp_path, 1, shard_map={"momentum": 3}), ["momentum", "meanrev"])
    assert not shards.sharded and shards.owns("momentum") and shards.owns("meanrev")
    shards.check("momentum")
    assert shards.describe().workers == 1


def test_check_deployment_when_a_placement_or_an_index_is_out_of_range_refuses(tmp_path: Path) -> None:
    base = {"ops_workers": 2, "database_url": PG_URL, "worker_addresses": ("a:1", "a:2")}
    check_deployment(ops_config(tmp_path, 1, **base))
    for bad in ({"shard_map": {"momentum": 2}}, {"worker_index": 2}, {"worker_addresses": ("a:1",)}):
        with pytest.raises(ConfigError):
            check_deployment(ops_config(tmp_path, 1, **{**base, **bad}))


def test_load_ops_config_when_ops_workers_env_is_set_gives_the_worker_its_ports_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_ops_config(tmp_path, 1, 6000, metrics_port=7000, database_url=PG_URL)
    monkeypatch.setenv("OPS_WORKERS", "3")
    monkeypatch.setenv("OPS_WORKER_INDEX", "2")
    config = load_ops_config(path)
    assert (config.ops_workers, config.worker_index, config.port, config.metrics_port) == (3, 2, 6200, 7200)
    assert config.worker_addresses == ("127.0.0.1:6000", "127.0.0.1:6100", "127.0.0.1:6200")
    assert config.state_dir == tmp_path / "ops" / "worker-2"
    assert worker_database_url(config) == f"{PG_URL}?schema=nautilus_w2"
    monkeypatch.setenv("OPS_WORKERS", "zero")
    with pytest.raises(ConfigError):
        load_ops_config(path)


async def test_gross_exposure_when_one_worker_holds_positions_counts_them_on_the_other(shards: Shards) -> None:
    await run_script([shards.address(0), shards.address(1)])
    first, second = shards.workers[0].core, shards.workers[1].core
    await wait_until(lambda: all_filled(shards.workers) and first.exposure.own_gross_exposure() > 0)
    await wait_until(
        lambda: (
            second.exposure.other_workers_gross == first.exposure.own_gross_exposure()
            and first.exposure.other_workers_gross == second.exposure.own_gross_exposure()
        ),
        within=2,
    )
    assert second.exposure.gross_exposure() == first.exposure.gross_exposure() > first.exposure.own_gross_exposure()
    # Each worker tracks only its own strategies' orders (reports of the other's reach it by reconciliation only).
    assert {o.model_id.split("@")[0] for o in first.tracker.orders.values()} == {"momentum_v1"}
    assert {o.model_id.split("@")[0] for o in second.tracker.orders.values()} == {"meanrev_v1"}
