"""Honest health in one process: dependency health services, GetHealth, ENGINE_UNAVAILABLE, the circuit breaker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.cli import main
from engine_server.server import EngineServer
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.health import OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE, OPS_STORE_SERVICE
from nautilus_mesh.status import from_rpc_error
from ops_server.circuit_breaker import CircuitBreaker, CircuitState
from tests.conftest import (
    ADMIN_META,
    ADMIN_TOKEN,
    DEMO,
    ENGINE_TOKEN,
    MOMENTUM_META,
    Mesh,
    engine_config,
    running_mesh,
    wait_until,
    write_json,
)
from tests.localhost import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_status(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


def sample(mesh: Mesh, name: str, labels: dict[str, str]) -> float | None:
    return mesh.ops.core.metrics.registry.get_sample_value(name, labels)


async def submit(channel: grpc.aio.Channel, signal_id: str, target: float) -> str:
    """One SubmitSignal: "ACCEPTED", "NO_ACTION" or the rejection's code (from the rich status)."""
    try:
        response = await ops_pb2_grpc.OpsServiceStub(channel).SubmitSignal(
            ops_pb2.SubmitSignalRequest(
                signal=ops_pb2.Signal(signal_id=signal_id, model_id="momentum_v1", instrument="BTC-USD", target=target)
            ),
            metadata=MOMENTUM_META,
        )
    except grpc.aio.AioRpcError as exc:
        detail = from_rpc_error(exc)
        return detail.code if detail is not None else exc.code().name
    return ops_pb2.DecisionStatus.Name(response.decision.status).removeprefix("DECISION_STATUS_")


async def test_health_when_engine_is_up_serves_every_dependency_and_reports_healthy(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        for service in ("", OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE, OPS_STORE_SERVICE):
            await wait_until_async(lambda s=service: health_status(channel, s), SERVING, within=2)
        response = await admin_pb2_grpc.OpsAdminServiceStub(channel).GetHealth(
            admin_pb2.GetHealthRequest(), metadata=ADMIN_META
        )
    checks = {c.name: c for c in response.checks}
    assert {"engine_link", "engine_circuit", "report_seq", "store", "allocator", "sampler", "span_exporter"} <= set(
        checks
    )
    assert {"mark:BTC-USD", "mark:ETH-USD"} <= set(checks)
    assert checks["engine_link"].status == common_pb2.HEALTH_STATUS_HEALTHY
    assert "connected to" in checks["engine_link"].detail
    assert checks["mark:BTC-USD"].age_seconds < 5
    assert response.status == common_pb2.HEALTH_STATUS_HEALTHY, [c for c in response.checks if c.status != 1]
    assert sample(mesh, "component_up", {"component": "engine_link"}) == 1
    mark_age = sample(mesh, "mark_age_seconds", {"instrument": "BTC-USD"})
    assert mark_age is not None and mark_age < 5


async def test_get_health_when_admin_token_missing_is_refused(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin_pb2_grpc.OpsAdminServiceStub(channel).GetHealth(admin_pb2.GetHealthRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_engine_get_health_lists_venues_quotes_and_the_ops_session(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        response = await engine_pb2_grpc.EngineServiceStub(channel).GetHealth(
            engine_pb2.GetHealthRequest(), metadata=(("x-engine-token", ENGINE_TOKEN),)
        )
    checks = {c.name: c for c in response.checks}
    assert checks["venue:sim"].status == common_pb2.HEALTH_STATUS_HEALTHY
    assert checks["quotes"].status == common_pb2.HEALTH_STATUS_HEALTHY
    assert checks["ops_session"].status == common_pb2.HEALTH_STATUS_HEALTHY
    assert response.status == common_pb2.HEALTH_STATUS_HEALTHY


@pytest.fixture
async def quick_stale_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """Marks count as stale after 1 s, so an outage makes them stale within the test."""
    limits = json.loads((DEMO / "risk_limits.json").read_text())
    limits["global"]["stale_mark_seconds"] = 1
    async with running_mesh(tmp_path, ops={"risk_limits_path": write_json(tmp_path / "risk.json", limits)}) as mesh:
        yield mesh


async def test_engine_down_when_marks_go_stale_answers_engine_unavailable_not_a_stale_mark_rail(
    quick_stale_mesh: Mesh, tmp_path: Path
) -> None:
    mesh = quick_stale_mesh
    core = mesh.ops.core
    engine_port = mesh.engine.port
    async with mesh.channel() as channel:
        for service in ("", OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE):
            await wait_until_async(lambda s=service: health_status(channel, s), SERVING, within=2)
        await mesh.engine.stop(grace=0.1)
        await wait_until(lambda: not core.link.connected, within=2)
        await wait_until_async(lambda: health_status(channel, OPS_ENGINE_LINK_SERVICE), NOT_SERVING, within=1)
        await wait_until_async(lambda: health_status(channel, OPS_MARKS_SERVICE), NOT_SERVING, within=3)  # > 1 s old
        assert await health_status(channel, "") == SERVING  # ops still answers: orchestrators must not restart it
        assert await health_status(channel, "nautilus.ops.v1.OpsService") == SERVING
        decisions = [await submit(channel, f"down-{i}", 0.1 if i % 2 else -0.1) for i in range(8)]
        assert set(decisions) == {"ENGINE_UNAVAILABLE"}  # the marks are stale, but the cause is the engine link
        assert sample(mesh, "risk_rejections_total", {"rail": "stale_mark", "model": "momentum_v1"}) is None
        rejected = sample(
            mesh, "decisions_total", {"model": "momentum_v1", "status": "REJECTED", "code": "ENGINE_UNAVAILABLE"}
        )
        assert rejected == 8
        mark_age = sample(mesh, "mark_age_seconds", {"instrument": "BTC-USD"})
        assert mark_age is not None and mark_age > 1
        # Five consecutive refusals open the circuit: state in metrics and health.
        assert core.engine_gate.breaker.state is CircuitState.OPEN
        assert sample(mesh, "engine_circuit_state", {}) == 2
        response = await admin_pb2_grpc.OpsAdminServiceStub(channel).GetHealth(
            admin_pb2.GetHealthRequest(), metadata=ADMIN_META
        )
        checks = {c.name: c for c in response.checks}
        assert response.status == common_pb2.HEALTH_STATUS_UNHEALTHY
        assert checks["engine_link"].status == common_pb2.HEALTH_STATUS_UNHEALTHY
        assert checks["engine_circuit"].detail.startswith("OPEN")
        assert sample(mesh, "component_up", {"component": "engine_link"}) == 0

        mesh.engine = EngineServer(engine_config(tmp_path, port=engine_port))
        await mesh.engine.start()
        await wait_until(lambda: core.link.available, within=3)
        await wait_until_async(lambda: health_status(channel, OPS_ENGINE_LINK_SERVICE), SERVING, within=3)
        # The circuit closes once the link is back, before any signal comes to find out: metrics and health say so.
        await wait_until(lambda: sample(mesh, "engine_circuit_state", {}) == 0, within=2)
        assert core.engine_gate.breaker.state is CircuitState.CLOSED
        await wait_until(lambda: sample(mesh, "component_up", {"component": "engine_circuit"}) == 1, within=2)
        assert sample(mesh, "engine_circuit_transitions_total", {"state": "CLOSED"}) == 1
        outcomes = [await submit(channel, f"up-{i}", 0.1 if i % 2 else -0.1) for i in range(3)]
        assert outcomes[0] == "ACCEPTED", outcomes  # the first signal after the link is back trades
        assert core.engine_gate.breaker.state is CircuitState.CLOSED


async def wait_until_async(probe: Callable[[], Awaitable[int]], expected: int, within: float) -> None:
    """Poll an async probe until it returns ``expected`` (deadline, no fixed sleep)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expected}, still {value} after {within}s")
        await asyncio.sleep(0.02)


def test_circuit_breaker_opens_after_threshold_and_closes_when_a_probe_succeeds() -> None:
    now = [0.0]
    changes: list[CircuitState] = []
    breaker = CircuitBreaker(3, probe_interval=1.0, on_change=changes.append, clock=lambda: now[0])
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()  # answered at once, inside the probe interval
    now[0] = 1.5
    assert breaker.allow() and breaker.state is CircuitState.HALF_OPEN
    breaker.record_failure()  # the probe failed: open again, a new interval
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    now[0] = 3.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


async def test_health_cli_when_mesh_is_up_prints_every_check_and_probes_exit_by_status(
    mesh: Mesh, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no demo config fallbacks
    async with mesh.channel() as channel:
        for service in (OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE):
            await wait_until_async(lambda s=service: health_status(channel, s), SERVING, within=2)
    await wait_until(lambda: mesh.ops.core.periodic.last_sample_at is not None)
    args = ["health", "--ops", mesh.ops_address, "--admin-token", ADMIN_TOKEN]
    code = await asyncio.to_thread(main, [*args, "--engine", mesh.engine_address, "--engine-token", ENGINE_TOKEN])
    out = capsys.readouterr().out
    assert "ops: HEALTHY" in out and "engine: HEALTHY" in out, out
    for check in ("engine_link", "mark:BTC-USD", "store", "venue:sim", "ops_session"):
        assert check in out, check
    assert code == 0
    probe_args = ["health", "--probe", "--ops", mesh.ops_address, "--service"]
    assert await asyncio.to_thread(main, [*probe_args, OPS_ENGINE_LINK_SERVICE]) == 0
    assert await asyncio.to_thread(main, [*probe_args, "nautilus.ops.v1.nope"]) == 1
    await mesh.engine.stop(grace=0.1)
    await wait_until(lambda: not mesh.ops.core.link.connected, within=2)
    async with mesh.channel() as channel:
        await wait_until_async(lambda: health_status(channel, OPS_ENGINE_LINK_SERVICE), NOT_SERVING, within=1)
    assert await asyncio.to_thread(main, [*probe_args, OPS_ENGINE_LINK_SERVICE]) == 1
    assert await asyncio.to_thread(main, [*probe_args, ""]) == 0  # overall stays SERVING
    code = await asyncio.to_thread(main, args)
    out = capsys.readouterr().out
    assert code == 1 and "ops: UNHEALTHY" in out, out
    # With --engine and the engine down: ops' checks (which say what ops sees of it) are printed, then the error.
    code = await asyncio.to_thread(main, [*args, "--engine", mesh.engine_address, "--engine-token", ENGINE_TOKEN])
    out, err = capsys.readouterr()
    assert code == 2 and "engine_link" in out and "engine not reachable" in err, (out, err)
    assert await asyncio.to_thread(main, ["health", "--probe", "--ops", f"127.0.0.1:{free_port()}"]) == 2


async def test_health_when_a_store_read_waits_probes_it_off_the_event_loop(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store busy with a long write (a read waits for it) holds neither the loop nor GetHealth."""
    health = mesh.ops.health
    store = health.state_store
    started, release = threading.Event(), threading.Event()
    read = store.get

    def slow_get(key: str) -> object:
        started.set()
        release.wait(5)
        return read(key)

    monkeypatch.setattr(store, "get", slow_get)
    monkeypatch.setattr(health, "store_probe_interval", 0.0)
    refresh = asyncio.ensure_future(health.refresh())
    try:
        assert await asyncio.to_thread(started.wait, 5)
        waited = time.perf_counter()
        await asyncio.sleep(0.05)  # the loop keeps its turns while the probe waits on its thread
        assert time.perf_counter() - waited < 1.0
        _, checks = health.report()  # answers from the last probe, without reading the store
        assert not refresh.done() and {c.name: c for c in checks}["store"].status.name == "HEALTHY"
    finally:
        release.set()
    await refresh
    store_check = {c.name: c for c in health.report()[1]}["store"]
    took_ms = float(store_check.detail.split("read in ")[1].split()[0])
    assert store_check.status.name == "HEALTHY" and took_ms >= 40  # the probe that waited is the one reported
