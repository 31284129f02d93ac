"""`nautilus-mesh up` with OPS_WORKERS=2: two ops workers on ports base and base+100, the strategies trading on both."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from clients.launcher import ops_worker_specs, sharding_problems
from clients.sdk import OpsClient
from tests.launcher import CLI, ROOT, demo_config_on, fills, interrupt_up, read_until, run_up, start_up, status_rows
from tests.localhost import free_ports
from tests.test_shards import pg_schema  # noqa: F401  (fixture)
from tests.test_store import PG_URL

ADMIN = "demo-admin-token"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports_with_neighbours() -> tuple[int, int, int, int]:
    """ops (and ops+100), engine, ops metrics (and +100), engine metrics: all free right now."""
    for _ in range(50):
        ops, engine, ops_metrics, engine_metrics = free_ports(4)
        taken = {ops, engine, ops_metrics, engine_metrics}
        neighbours = {ops + 100, ops_metrics + 100}
        if len(neighbours) == 2 and not neighbours & taken and all(port_is_free(p) for p in neighbours):
            return ops, engine, ops_metrics, engine_metrics
    raise AssertionError("no free ports with free neighbours")


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return bytes(response.read())


def test_ops_worker_specs_when_ops_workers_is_2_gives_each_worker_its_port_and_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = demo_config_on(tmp_path, 7000, 7001, 7200, 7300)
    monkeypatch.setenv("OPS_WORKERS", "2")
    specs = ops_worker_specs(config, "127.0.0.1:7000")
    assert [(s.name, s.address, dict(s.env)["OPS_WORKER_INDEX"]) for s in specs] == [
        ("ops", "127.0.0.1:7000", "0"),
        ("ops-1", "127.0.0.1:7100", "1"),
    ]
    (problem,) = sharding_problems(config, 2)  # the demo config stores in SQLite
    assert "needs PostgreSQL" in problem and "OPS_DATABASE_URL" in problem
    monkeypatch.delenv("OPS_WORKERS")
    assert [s.name for s in ops_worker_specs(config, "127.0.0.1:7000")] == ["ops"]
    assert sharding_problems(config, 1) == []


@pytest.mark.skipif(CLI is None, reason="the console script is installed by `make test`")
@pytest.mark.timeout(120)
async def test_up_when_ops_workers_is_2_starts_two_workers_and_both_trade(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
) -> None:
    ops_port, engine_port, ops_metrics, engine_metrics = ports_with_neighbours()
    config = demo_config_on(tmp_path, ops_port, engine_port, ops_metrics, engine_metrics)  # meanrev placed on 1
    # What `make run OPS_WORKERS=2 OPS_DATABASE_URL=...` runs (see test_make_run_when_given_ops_workers_passes_them).
    env = {**os.environ, "OPS_WORKERS": "2", "OPS_DATABASE_URL": f"{PG_URL}?schema={pg_schema}"}
    proc, stdout = await start_up(config, tmp_path, 60, env=env)
    seen: list[str] = []
    workers = [f"127.0.0.1:{ops_port}", f"127.0.0.1:{ops_port + 100}"]
    try:
        line = await read_until(stdout, "ops workers:", seen, 60)
        assert line.split() == ["ops", "workers:", f"ops={workers[0]}", f"ops-1={workers[1]}"]
        await read_until(stdout, "ready:", seen, 30)
        async with OpsClient(workers[0], admin_token=ADMIN) as ops:
            shard_map = await ops.get_shard_map()
        assert {a.strategy_id: a.address for a in shard_map.assignments} == {
            "momentum": workers[0],
            "meanrev": workers[1],
        }
        # The strategies dial worker 0; meanrev's stream is refused there and follows to worker 1.
        deadline = time.monotonic() + 40
        while await fills(workers[0], "demo-momentum-token") == 0 or await fills(workers[1], "demo-meanrev-token") == 0:
            assert time.monotonic() < deadline, "both workers should fill:\n" + "\n".join(seen[-40:])
            await asyncio.sleep(0.2)
        for port in (ops_metrics, ops_metrics + 100):  # each worker its own /metrics
            assert b"signals_routed_total" in await asyncio.to_thread(scrape, port)
        # The status table reads both workers: meanrev's row is worker 1's, with its fills (worker 0 has none).
        deadline = time.monotonic() + 30
        while not any(
            row["model"] == "meanrev_v1" and row["worker"] == "1" and int(row["fills"]) > 0 for row in status_rows(seen)
        ):
            assert time.monotonic() < deadline, "no status row of meanrev from worker 1:\n" + "\n".join(seen[-40:])
            await read_until(stdout, "meanrev_v1", seen, 30)
        assert {row["model"]: row["worker"] for row in status_rows(seen)} == {
            "momentum_v1": "0",
            "momentum_v2": "0",
            "meanrev_v1": "1",
        }
    finally:
        code = await interrupt_up(proc, stdout, seen)
    assert code == 0, "\n".join(seen[-40:])


def test_up_when_ops_workers_is_2_on_sqlite_refuses_before_starting_anything(tmp_path: Path) -> None:
    if CLI is None:
        pytest.skip("the console script is installed by `make test`")
    ops_port, engine_port, ops_metrics, engine_metrics = ports_with_neighbours()
    config = demo_config_on(tmp_path, ops_port, engine_port, ops_metrics, engine_metrics)
    result = run_up(config, tmp_path, 5, {**os.environ, "OPS_WORKERS": "2"}, timeout_s=60)
    assert result.returncode == 2
    assert "OPS_WORKERS=2 needs PostgreSQL" in result.stderr and "OPS_DATABASE_URL" in result.stderr
    assert not (tmp_path / "var").exists()  # refused before any process, log or state folder


def test_make_run_when_given_ops_workers_passes_them_and_the_database_url_to_the_launcher() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    url = "postgresql://postgres@127.0.0.1:5432/test?schema=demo"
    result = subprocess.run(
        [make, "-n", "run", "OPS_WORKERS=2", f"OPS_DATABASE_URL={url}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (line,) = [line for line in result.stdout.splitlines() if "nautilus-mesh up" in line]
    assert line.startswith(f'OPS_WORKERS="2" OPS_DATABASE_URL="{url}" ')
    assert line.endswith("/nautilus-mesh up --duration 0")


def test_ops_worker_specs_when_ops_json_names_each_workers_address_starts_them_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker listens on its worker_addresses entry; the launcher started, printed and waited on base+100 x i."""
    config = demo_config_on(tmp_path, 7000, 7001, 7200, 7300)
    ops_json = Path(config) / "ops.json"
    data = json.loads(ops_json.read_text())
    ops_json.write_text(json.dumps({**data, "worker_addresses": ["127.0.0.1:7000", "127.0.0.1:7005"]}))
    monkeypatch.setenv("OPS_WORKERS", "2")
    assert [s.address for s in ops_worker_specs(config, "127.0.0.1:7000")] == ["127.0.0.1:7000", "127.0.0.1:7005"]
