"""Two ops workers on the real PostgreSQL: an operator's forced allocation cycle, asked on any worker, is run once by
the allocator leader under one cycle id and applied by both workers."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from clients.sdk import MeshRpcError, OpsAdminClient
from ops_server import coordination
from ops_server.coordination import Coordinator
from tests.conftest import ADMIN_TOKEN, DEMO, wait_until, write_json
from tests.test_cli_e2e import cli
from tests.test_shards import (  # noqa: F401  (pg_schema, shards: fixtures)
    Shards,
    pg_schema,
    shards,
    shared_documents,
    start_shards,
    stop_shards,
)
from tests.test_store import PG_URL


def cycles_run(mesh: Shards, index: int) -> float:
    """Allocator cycles worker ``index`` ran itself (any reason)."""
    registry = mesh.workers[index].core.metrics.registry
    reasons = ("APPLIED", "FORCED", "COOLDOWN", "DEADBAND", "KEPT")
    return sum(registry.get_sample_value("allocation_decisions_total", {"reason": r}) or 0.0 for r in reasons)


async def leader_and_follower(mesh: Shards) -> tuple[int, int]:
    coordinators: list[Coordinator] = [w.coordinator for w in mesh.workers if w.coordinator is not None]
    assert len(coordinators) == 2
    await wait_until(lambda: sum(c.leader for c in coordinators) == 1, within=5)
    await wait_until(lambda: all(c.applied_cycle >= 0 for c in coordinators), within=5)  # the first periodic cycle
    leader = next(i for i, c in enumerate(coordinators) if c.leader)
    return leader, 1 - leader


async def test_trigger_allocation_when_asked_on_the_follower_runs_one_cycle_on_the_leader_applied_by_both(
    shards: Shards,  # noqa: F811
    pg_schema: str,  # noqa: F811
) -> None:
    leader, follower = await leader_and_follower(shards)
    ran_before = [cycles_run(shards, i) for i in range(2)]
    periodic = max(int(d["cycle_id"]) for d in shared_documents(pg_schema, "allocation/cycle/").values())

    async with OpsAdminClient(shards.address(follower), admin_token=ADMIN_TOKEN, timeout=15) as admin:
        response = await admin.trigger_allocation(reason="rebalance after the close")

    assert response.leader_worker_index == leader
    assert response.cycle_id == periodic + 1  # the next free id (the periodic cycle of the hour was decided)
    cycles = shared_documents(pg_schema, "allocation/cycle/")
    forced = [d for d in cycles.values() if d.get("forced")]
    assert len(forced) == 1, cycles  # recorded once, under its cycle id
    assert forced[0]["cycle_id"] == response.cycle_id and forced[0]["leader"] == leader
    assert forced[0]["requested_by"] == [follower]
    assert f"allocation/cycle/{response.cycle_id}" in cycles
    assert shared_documents(pg_schema, "allocation/latest")["allocation/latest"]["cycle_id"] == response.cycle_id
    # Run by the leader alone, once; the follower ran nothing.
    assert [cycles_run(shards, i) - ran_before[i] for i in (leader, follower)] == [1.0, 0.0]
    # Every worker applied that cycle and holds the same allocation, which is what the answer showed.
    for worker in shards.workers:
        assert worker.coordinator is not None and worker.coordinator.applied_cycle == response.cycle_id
    first, second = (w.core.allocator for w in shards.workers)
    assert first.weights == second.weights
    for worker in shards.workers:  # the follower reports the applied cycle as its last one, like the leader
        assert worker.core.queries.allocations().last_reason == response.reason
        allocator_check = next(c for c in worker.health.report()[1] if c.name == "allocator")
        assert allocator_check.detail.startswith("runs every"), allocator_check  # not "no cycle yet"
    answered = {a.strategy_id: a.capital_usd for a in response.allocations}
    assert answered == {a.strategy_id: a.capital_usd for a in shards.workers[leader].core.controls.allocations()}
    assert not shared_documents(pg_schema, "allocation/request/")  # the answered request is gone
    requests = shards.workers[follower].core.metrics.registry
    assert requests.get_sample_value("ops_allocation_requests_total", {"outcome": "RAN"}) == 1.0

    # Asked on the leader, the next forced cycle takes the next id: still one cycle per call.
    async with OpsAdminClient(shards.address(leader), admin_token=ADMIN_TOKEN, timeout=15) as admin:
        again = await admin.trigger_allocation(reason="again")
    assert again.cycle_id == response.cycle_id + 1 and again.leader_worker_index == leader
    assert len([d for d in shared_documents(pg_schema, "allocation/cycle/").values() if d.get("forced")]) == 2
    await wait_until(
        lambda: all(w.coordinator and w.coordinator.applied_cycle == again.cycle_id for w in shards.workers)
    )


async def test_trigger_allocation_when_the_policy_forbids_it_is_refused_on_the_follower_and_runs_nothing(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
) -> None:
    policy = json.loads((DEMO / "capital_policy.json").read_text())
    policy["allow_manual"] = False
    s = await start_shards(tmp_path, pg_schema, capital_policy_path=write_json(tmp_path / "policy.json", policy))
    try:
        leader, follower = await leader_and_follower(s)
        before = shared_documents(pg_schema, "allocation/cycle/")
        async with OpsAdminClient(s.address(follower), admin_token=ADMIN_TOKEN, timeout=15) as admin:
            with pytest.raises(MeshRpcError) as refused:
                await admin.trigger_allocation(reason="not allowed")
        assert refused.value.detail is not None and refused.value.detail.code == "MANUAL_ALLOCATION_DISABLED"
        assert shared_documents(pg_schema, "allocation/cycle/") == before
        assert not shared_documents(pg_schema, "allocation/request/")
        registry = s.workers[follower].core.metrics.registry
        assert registry.get_sample_value("ops_allocation_requests_total", {"outcome": "REFUSED"}) == 1.0
        assert s.workers[leader].coordinator is not None
    finally:
        await stop_shards(s)


async def test_trigger_allocation_when_no_worker_leads_is_withdrawn_after_the_timeout_and_never_runs(
    tmp_path: Path,
    pg_schema: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(coordination, "FORCED_CYCLE_TIMEOUT_SECONDS", 1.0)
    with psycopg.connect(PG_URL, autocommit=True) as lock:  # the allocator's lock, held here: no worker can lead
        lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"nautilus_mesh.allocator:{pg_schema}",))
        s = await start_shards(tmp_path, pg_schema)
        try:
            async with OpsAdminClient(s.address(1), admin_token=ADMIN_TOKEN, timeout=15) as admin:
                with pytest.raises(MeshRpcError) as refused:
                    await admin.trigger_allocation(reason="nobody leads")
            assert refused.value.detail is not None and refused.value.detail.code == "ALLOCATOR_LEADER_UNAVAILABLE"
            # A caller with a nearer deadline hears the same answer before it, not DEADLINE_EXCEEDED.
            async with OpsAdminClient(s.address(0), admin_token=ADMIN_TOKEN, timeout=1.0) as hurried:
                with pytest.raises(MeshRpcError) as refused:
                    await hurried.trigger_allocation(reason="nobody leads, in a hurry")
            assert refused.value.detail is not None and refused.value.detail.code == "ALLOCATOR_LEADER_UNAVAILABLE"
            assert not shared_documents(pg_schema, "allocation/request/")  # withdrawn: a later leader runs nothing
            for worker in s.workers:
                registry = worker.core.metrics.registry
                assert registry.get_sample_value("ops_allocation_requests_total", {"outcome": "TIMEOUT"}) == 1.0
            lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"nautilus_mesh.allocator:{pg_schema}",))
            await leader_and_follower(s)
            cycles = shared_documents(pg_schema, "allocation/cycle/")
            assert cycles and not [d for d in cycles.values() if d.get("forced")]
        finally:
            await stop_shards(s)


async def test_allocations_trigger_command_when_asked_on_the_follower_prints_the_cycle_and_its_leader(
    shards: Shards,  # noqa: F811
    pg_schema: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    leader, follower = await leader_and_follower(shards)
    argv = ["--ops", shards.address(follower), "--admin-token", ADMIN_TOKEN, "--reason", "from the CLI"]
    code, out, err = await cli(capsys, "allocations", "trigger", *argv)
    assert code == 0, err
    (forced,) = [d for d in shared_documents(pg_schema, "allocation/cycle/").values() if d.get("forced")]
    assert f"(cycle {forced['cycle_id']}, run by ops worker {leader})" in out
