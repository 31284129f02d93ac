"""`nautilus-mesh status` and the launcher's status table on ops run as two workers: every worker is read (through the
shard map) and each model's row comes from the worker owning its strategy (real gRPC, real PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from clients.ops_view import OpsReader
from tests.conftest import ADMIN_TOKEN, MOMENTUM_TOKEN, wait_until
from tests.test_cli_e2e import Capture, cli
from tests.test_shards import (  # noqa: F401  (pg_schema, shards: fixtures)
    Shards,
    all_filled,
    pg_schema,
    run_script,
    shards,
)

OWNERS = {"momentum_v1": 0, "momentum_v2": 0, "meanrev_v1": 1}


async def filled(mesh: Shards) -> None:
    await run_script([mesh.address(0), mesh.address(1)])
    await wait_until(lambda: all_filled(mesh.workers))
    await wait_until(lambda: all(len(w.core.tracker.fills) > 0 for w in mesh.workers))


async def test_ops_reader_when_ops_runs_as_two_workers_takes_each_model_from_its_owner(
    shards: Shards,  # noqa: F811
) -> None:
    await filled(shards)
    async with OpsReader(shards.address(1), strategy_token=MOMENTUM_TOKEN, admin_token=ADMIN_TOKEN) as reader:
        view = await reader.read()  # asked on worker 1: it finds worker 0 through the shard map
    assert view.workers == 2 and not view.error
    assert view.owners == OWNERS
    assert sorted(m.model_id for m in view.models) == sorted(OWNERS)
    for model, owner in OWNERS.items():
        own = {s.model_id: s for s in shards.workers[owner].core.queries.stats().models}[model]
        assert view.stats[model].fills == own.fills
    assert view.stats["meanrev_v1"].fills > 0 and view.stats["momentum_v1"].fills > 0  # from both workers
    meanrev = [p for p in shards.workers[1].core.queries.positions("meanrev_v1") if Decimal(p.quantity)]
    assert view.positions["meanrev_v1"] == " ".join(f"{p.instrument}:{p.quantity}" for p in meanrev)
    assert view.allocations is not None and len(view.allocations.allocations) == 2


async def test_status_command_when_ops_runs_as_two_workers_shows_each_model_with_its_worker(
    shards: Shards,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    await filled(shards)
    capture: Capture = capsys
    query = ["--ops", shards.address(0), "--token", MOMENTUM_TOKEN, "--admin-token", ADMIN_TOKEN]
    code, out, err = await cli(capture, "status", *query)
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("models (2 ops workers)") for line in lines), out
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in OWNERS}
    assert set(rows) == set(OWNERS)
    for model, owner in OWNERS.items():
        assert rows[model][2] == str(owner), rows[model]  # model, strategy, worker, ...
        fills = {s.model_id: s.fills for s in shards.workers[owner].core.queries.stats().models}[model]
        assert rows[model][7] == str(fills), rows[model]
    assert int(rows["meanrev_v1"][7]) > 0  # worker 1's fills, not worker 0's zero


async def test_status_command_when_a_worker_is_down_lists_its_models_without_figures_names_it_and_exits_1(
    shards: Shards,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/scale-out.md: the rows of a worker that does not answer, without figures, and its name in the error line
    (the whole command failed, naming the worker that had answered)."""
    await filled(shards)
    await shards.workers[1].stop(grace=0.2)
    capture: Capture = capsys
    query = ["--ops", shards.address(0), "--token", MOMENTUM_TOKEN, "--admin-token", ADMIN_TOKEN]
    code, out, err = await cli(capture, "status", *query)
    assert code == 1, (out, err)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in OWNERS}
    assert set(rows) == set(OWNERS)
    assert rows["meanrev_v1"][7] == "0" and rows["momentum_v1"][7] != "0"  # no figures from the worker that is down
    assert "ops worker 1" in err and shards.address(1) in err, err
