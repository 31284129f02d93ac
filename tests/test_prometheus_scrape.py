"""A real Prometheus server (Debian's package, installed by .ci/run) scrapes ops and engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from clients.sdk import OpsClient
from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import MEANREV_TOKEN, MOMENTUM_TOKEN, Mesh, wait_until
from tests.localhost import free_port
from tests.test_shards import (  # noqa: F401  (pg_schema: fixture)
    make_signal,
    pg_schema,
    run_script,
    start_shards,
    stop_shards,
)

PROMETHEUS = shutil.which("prometheus")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES_DIR = DEPLOY / "rules"
if PROMETHEUS is None and os.environ.get("NAUTILUS_REQUIRE_PROMETHEUS") == "1":
    raise RuntimeError("prometheus is required here (NAUTILUS_REQUIRE_PROMETHEUS=1) but not installed")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) is installed by .ci/run")


def log_tail(path: Path) -> str:
    return path.read_text()[-2000:]


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, config: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """Prometheus on ``config`` with its web port picked free; yields the process and the port, stops it on exit."""
    web = free_port()
    assert PROMETHEUS is not None
    with (tmp_path / "prometheus.log").open("w") as log:  # the child keeps its own descriptor
        server = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield server, web
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})

    def get() -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except OSError:
            return []  # not up yet
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    return await asyncio.to_thread(get)


async def test_prometheus_when_scraping_the_mesh_sees_routed_signals_and_both_targets_up(
    metered_mesh: Mesh, tmp_path: Path
) -> None:
    assert metered_mesh.ops.metrics_server is not None and metered_mesh.engine.metrics_server is not None
    ops_port, engine_port = metered_mesh.ops.metrics_server.port, metered_mesh.engine.metrics_server.port
    async with metered_mesh.channel() as channel:
        decision = await metered_mesh.ops_stub(channel).SubmitSignal(
            ops_pb2.SubmitSignalRequest(
                signal=ops_pb2.Signal(signal_id="p-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)
            ),
            metadata=(("x-strategy-token", MOMENTUM_TOKEN),),
        )
    core = metered_mesh.ops.core
    await wait_until(lambda: not core.queries.order(decision.decision.client_order_id).open_quantity)

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: ops, static_configs: [{{targets: ['127.0.0.1:{ops_port}']}}]}}\n"
        f"  - {{job_name: engine, static_configs: [{{targets: ['127.0.0.1:{engine_port}']}}]}}\n"
    )
    async with prometheus(tmp_path, config) as (server, web):
        deadline = asyncio.get_running_loop().time() + 60
        routed: list[dict[str, Any]] = []
        up: list[dict[str, Any]] = []
        while asyncio.get_running_loop().time() < deadline:
            assert server.returncode is None, log_tail(tmp_path / "prometheus.log")
            routed = await query(web, 'signals_routed_total{model="momentum_v1",mode="LIVE"}')
            up = await query(web, "up")
            if routed and len(up) == 2:
                break
            await asyncio.sleep(0.5)
        assert routed, "Prometheus never saw signals_routed_total"
        assert routed[0]["metric"]["mode"] == "LIVE" and float(routed[0]["value"][1]) == 1.0
        assert {(u["metric"]["job"], u["value"][1]) for u in up} == {("ops", "1"), ("engine", "1")}
        orders = await query(web, 'engine_orders_total{venue="sim"}')
        assert orders and float(orders[0]["value"][1]) == 1.0


async def alerts(port: int) -> dict[str, str]:
    """Alert name -> state (inactive, pending, firing) of every alerting rule Prometheus loaded."""
    url = f"http://127.0.0.1:{port}/api/v1/rules?type=alert"

    def get() -> dict[str, str]:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except OSError:
            return {}
        return {r["name"]: r["state"] for g in body["data"]["groups"] for r in g["rules"]}

    return await asyncio.to_thread(get)


async def test_prometheus_when_loading_the_deployed_rules_raises_engine_link_down_on_a_real_outage(
    metered_mesh: Mesh, tmp_path: Path
) -> None:
    """The deployed rules, on the metrics the services really export: EngineLinkDown goes pending when the engine
    stops (its labels and names match what ops exports), and stays inactive while the link is up."""
    assert metered_mesh.ops.metrics_server is not None and metered_mesh.engine.metrics_server is not None
    ops_port, engine_port = metered_mesh.ops.metrics_server.port, metered_mesh.engine.metrics_server.port
    rules = RULES_DIR
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{rules}/*.yml']\n"
        "scrape_configs:\n"
        f"  - {{job_name: ops, static_configs: [{{targets: ['127.0.0.1:{ops_port}']}}]}}\n"
        f"  - {{job_name: engine, static_configs: [{{targets: ['127.0.0.1:{engine_port}']}}]}}\n"
    )
    async with prometheus(tmp_path, config) as (server, web):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await query(web, 'component_up{job="ops", component="engine_link"} == 1'):
            assert server.returncode is None, log_tail(tmp_path / "prometheus.log")
            assert loop.time() < deadline, "Prometheus never saw component_up{component=engine_link} == 1"
            await asyncio.sleep(0.5)
        states = await alerts(web)
        assert {"EngineLinkDown", "MarkStale", "KillSwitchEngaged", "SpanExportFailing"} <= set(states)
        assert states["EngineLinkDown"] == "inactive"
        await metered_mesh.engine.stop(grace=0.1)
        deadline = loop.time() + 30
        while (await alerts(web)).get("EngineLinkDown") != "pending":
            assert loop.time() < deadline, f"EngineLinkDown never went pending: {await alerts(web)}"
            await asyncio.sleep(0.5)


@pytest.mark.timeout(120)
async def test_prometheus_when_scraping_two_ops_workers_labels_each_by_worker_and_the_rules_split_and_sum_them(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
) -> None:
    """The deployed scrape config and rules (their clocks at 1 s) on two real ops workers sharing PostgreSQL: each
    worker's series carry its `worker` label, the worker rules split by it and the mesh-wide ones sum over it."""
    shards = await start_shards(tmp_path, pg_schema, metrics_port=0)
    try:
        ports = []
        for worker in shards.workers:
            assert worker.metrics_server is not None
            ports.append(worker.metrics_server.port)
        deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        (ops_job,) = [job for job in deployed["scrape_configs"] if job["job_name"] == "ops"]
        local = {"ops:8002": f"127.0.0.1:{ports[0]}", "ops-1:8102": f"127.0.0.1:{ports[1]}"}
        for static in ops_job["static_configs"]:
            static["targets"] = [local[target] for target in static["targets"]]
        rules = yaml.safe_load((RULES_DIR / "nautilus.yml").read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "nautilus.yml").write_text(yaml.safe_dump(rules))
        deployed |= {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules" / "*.yml")],
            "scrape_configs": [ops_job],
        }
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(deployed))

        async with prometheus(tmp_path, config) as (server, web):
            loop = asyncio.get_running_loop()

            async def until(promql: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
                deadline = loop.time() + 30
                while not done(result := await query(web, promql)):
                    assert server.returncode is None, log_tail(tmp_path / "prometheus.log")
                    assert loop.time() < deadline, f"{promql}: {result}"
                    await asyncio.sleep(0.5)
                return result

            def workers(result: list[dict[str, Any]]) -> set[str]:
                return {r["metric"].get("worker", "") for r in result}

            up = await until('up{job="ops"} == 1', lambda r: workers(r) == {"0", "1"})
            assert {(r["metric"]["worker"], r["metric"]["instance"]) for r in up} == {
                ("0", f"127.0.0.1:{ports[0]}"),
                ("1", f"127.0.0.1:{ports[1]}"),
            }
            await run_script([shards.address(0), shards.address(1)])  # momentum on worker 0, meanrev on worker 1
            accepted = await until(
                'sum by (worker) (decisions_total{status="ACCEPTED"})',
                lambda r: {x["metric"].get("worker"): float(x["value"][1]) for x in r} == {"0": 3.0, "1": 2.0},
            )
            assert len(accepted) == 2
            routed = await query(web, 'signals_routed_total{model="meanrev_v1"} > 0')
            assert workers(routed) == {"1"}  # a model's signals counted by its owner only
            # A series' first sample is no increase: a second batch on each worker gives the rates something to see.
            for address, token, model, instrument in (
                (shards.address(0), MOMENTUM_TOKEN, "momentum_v1", "BTC-USD"),
                (shards.address(1), MEANREV_TOKEN, "meanrev_v1", "SOL-USD"),
            ):
                async with OpsClient(address, strategy_token=token) as ops:
                    decision = await ops.submit_signal(make_signal(f"{model}-again", model, instrument, 0.001))
                assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED
            await until('worker:decisions:rate1m{status="ACCEPTED"} > 0', lambda r: workers(r) == {"0", "1"})
            await until("worker:signal_latency_seconds:p99_1m > 0", lambda r: workers(r) == {"0", "1"})
            total = await until("nautilus:signal_latency_seconds:p99_1m > 0", lambda r: len(r) == 1)
            assert workers(total) == {""}  # the mesh-wide quantile sums over the workers
            leaders = await query(web, "sum(ops_allocator_leader)")
            assert leaders and float(leaders[0]["value"][1]) == 1.0
    finally:
        await stop_shards(shards)
