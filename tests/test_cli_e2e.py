"""The nautilus-mesh CLI against a running mesh: canary, allocations, stats, risk, weights and events.

``main`` runs ``asyncio.run`` itself, so it is called on a worker thread while the servers keep
serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clients.cli import main
from clients.commands import ADMIN_TOKEN_ENV, TOKEN_ENV, _money, _price
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from tests.conftest import ADMIN_TOKEN, MEANREV_TOKEN, MOMENTUM_TOKEN, Mesh, wait_until

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def no_token_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the tokens a test passes count: no environment, no demo config."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)


async def cli(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    """Run the CLI on a worker thread; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def query(mesh: Mesh) -> list[str]:
    """An operator's reads: the strategy token plus the admin token, so every model is visible."""
    return ["--ops", mesh.ops_address, "--token", MOMENTUM_TOKEN, "--admin-token", ADMIN_TOKEN]


def strategy_query(mesh: Mesh) -> list[str]:
    """A strategy's reads: its own token only."""
    return ["--ops", mesh.ops_address, "--token", MOMENTUM_TOKEN]


def admin(mesh: Mesh, token: str = ADMIN_TOKEN) -> list[str]:
    return ["--ops", mesh.ops_address, "--admin-token", token]


def control(mesh: Mesh, reason: str, token: str = ADMIN_TOKEN) -> list[str]:
    """An operator's control: the reason it is audited with, plus the admin token."""
    return ["--reason", reason, *admin(mesh, token)]


def row(out: str, first: str) -> str:
    """The plain-text table row that starts with ``first``."""
    return next(line for line in out.splitlines() if line.split() and line.split()[0] == first)


# --- canary ------------------------------------------------------------------------------------


async def test_canary_status_when_mesh_starts_shows_shadow_with_schedule_and_weights(
    mesh: Mesh, capsys: Capture
) -> None:
    code, out, err = await cli(capsys, "canary", "status", *query(mesh))
    assert (code, err) == (0, "")
    line = row(out, "momentum")
    assert "momentum_v2 vs momentum_v1" in line
    assert " SHADOW " in line
    assert "5,10,25,50,100" in line
    assert "momentum_v1=1.00 momentum_v2=0.00" in line
    assert "DSR" in out  # the deflated Sharpe ratio's column, "-" until a check ran


async def test_canary_promote_when_reason_given_then_status_shows_stepping_5_percent(
    mesh: Mesh, capsys: Capture
) -> None:
    code, out, err = await cli(
        capsys, "canary", "promote", "--strategy", "momentum", *control(mesh, "shadow looks good")
    )
    assert (code, err) == (0, "")
    assert "STEPPING" in row(out, "momentum")

    code, out, _ = await cli(capsys, "canary", "status", "--strategy", "momentum", *query(mesh))
    line = row(out, "momentum")
    assert code == 0
    assert " STEPPING " in line and " 5% " in line
    assert "momentum_v1=0.95 momentum_v2=0.05" in line


async def test_canary_rollback_when_promoted_returns_weight_to_stable(mesh: Mesh, capsys: Capture) -> None:
    await cli(capsys, "canary", "promote", "--strategy", "momentum", *control(mesh, "step"))
    code, out, err = await cli(capsys, "canary", "rollback", "--strategy", "momentum", *control(mesh, "drawdown"))
    assert (code, err) == (0, "")
    line = row(out, "momentum")
    assert " ROLLED_BACK " in line
    assert "momentum_v1=1.00 momentum_v2=0.00" in line


async def test_canary_pause_when_reason_blank_exits_1_with_reason_required(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "canary", "pause", "--strategy", "momentum", *control(mesh, " "))
    assert (code, out) == (1, "")
    assert err.startswith("error: INVALID_ARGUMENT REASON_REQUIRED:")


async def test_canary_promote_when_admin_token_wrong_exits_1_with_unauthenticated(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(
        capsys, "canary", "promote", "--strategy", "momentum", *control(mesh, "r", "not-the-token")
    )
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAUTHENTICATED")
    assert "not-the-token" not in err
    assert mesh.ops.core.canaries.runs["momentum"].controller.status().state.value == "SHADOW"


# --- allocations, stats, weights ---------------------------------------------------------------


async def test_allocations_when_mesh_running_lists_fraction_and_capital_per_strategy(
    mesh: Mesh, capsys: Capture
) -> None:
    code, out, err = await cli(capsys, "allocations", *query(mesh))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("allocations (total ")
    fractions = {name: float(row(out, name).split()[1]) for name in ("momentum", "meanrev")}
    assert sum(fractions.values()) == pytest.approx(1.0, abs=0.002)


async def test_allocations_trigger_when_reason_given_prints_the_decision(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "allocations", "trigger", *control(mesh, "rebalance now"))
    assert (code, err) == (0, "")
    assert out.startswith("allocation ")
    assert {"momentum", "meanrev"} <= {line.split()[0] for line in out.splitlines()[2:] if line.strip()}


async def test_stats_when_mesh_running_lists_every_model_and_strategy(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "stats", *query(mesh))
    assert (code, err) == (0, "")
    header = next(line for line in out.splitlines() if line.startswith("model "))
    for column in ("pnl", "realized", "unrealized", "fees", "slippage", "sharpe", "drawdown", "hit rate", "fills"):
        assert column in header
    for model in ("momentum_v1", "momentum_v2", "meanrev_v1"):
        assert row(out, model).split()[1] in ("momentum", "meanrev")
    assert "strategies (combined by routing weight)" in out


async def test_stats_when_read_with_a_strategy_token_lists_only_its_own_models(mesh: Mesh, capsys: Capture) -> None:
    code, out, _ = await cli(capsys, "stats", *strategy_query(mesh))
    assert code == 0
    assert row(out, "momentum_v1") and row(out, "momentum_v2")
    assert "meanrev_v1" not in out
    code, _, err = await cli(capsys, "stats", "--model", "meanrev_v1", *strategy_query(mesh))
    assert code == 1 and "MODEL_NOT_ALLOWED" in err


async def test_stats_when_model_given_lists_only_that_model(mesh: Mesh, capsys: Capture) -> None:
    code, out, _ = await cli(capsys, "stats", "--model", "meanrev_v1", *query(mesh))
    assert code == 0
    assert row(out, "meanrev_v1")
    assert "momentum_v1" not in out


async def test_weights_when_strategy_has_no_canary_sets_them(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(
        capsys, "weights", "--strategy", "meanrev", "--set", "meanrev_v1=1", *control(mesh, "reset")
    )
    assert (code, err) == (0, "")
    assert row(out, "meanrev_v1").split()[2] == "1.00"


async def test_weights_when_canary_in_progress_exits_1_with_canary_active(mesh: Mesh, capsys: Capture) -> None:
    code, _, err = await cli(
        capsys,
        "weights",
        "--strategy",
        "momentum",
        "--set",
        "momentum_v1=0.5",
        "--set",
        "momentum_v2=0.5",
        *control(mesh, "manual"),
    )
    assert code == 1
    assert "CANARY_ACTIVE" in err


# --- risk --------------------------------------------------------------------------------------


async def test_risk_limits_when_queried_prints_the_limits_as_json(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "risk", "limits", *query(mesh))
    assert (code, err) == (0, "")
    limits = json.loads(out)
    assert isinstance(limits, dict) and limits


async def test_risk_state_when_mesh_starts_is_active_with_kill_switch_off(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "risk", "state", *query(mesh))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "global=ACTIVE kill_switch=off"
    assert row(out, "momentum_v1").split()[1] == "ACTIVE"


async def test_risk_kill_switch_when_engaged_then_released_halts_then_restores(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "risk", "kill-switch", "engage", *control(mesh, "drill"))
    assert (code, err) == (0, "")
    assert out.startswith("kill switch engaged: canceled=")

    _, out, _ = await cli(capsys, "risk", "state", *query(mesh))
    assert out.splitlines()[0] == "global=HALTED kill_switch=ENGAGED"

    code, out, err = await cli(capsys, "risk", "kill-switch", "release", *control(mesh, "drill over"))
    assert (code, err) == (0, "")
    assert out.startswith("kill switch released: global=")

    _, out, _ = await cli(capsys, "risk", "state", *query(mesh))
    assert out.splitlines()[0].endswith("kill_switch=off")


async def test_risk_set_state_when_model_given_changes_only_that_model(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(
        capsys, "risk", "set-state", "--model", "momentum_v1", "--state", "REDUCING", *control(mesh, "wind down")
    )
    assert (code, err) == (0, "")
    assert out == "global=ACTIVE momentum_v1=REDUCING\n"


async def test_risk_reload_when_file_valid_reports_the_file(mesh: Mesh, capsys: Capture) -> None:
    code, out, err = await cli(capsys, "risk", "reload", *admin(mesh))
    assert (code, err) == (0, "")
    assert out == "risk limits reloaded from risk_limits.json\n"


# --- events ------------------------------------------------------------------------------------


async def test_events_when_recent_and_kind_given_prints_the_audited_control(mesh: Mesh, capsys: Capture) -> None:
    await cli(capsys, "canary", "pause", "--strategy", "momentum", *control(mesh, "look closer"))
    code, out, err = await cli(capsys, "events", "--kind", "admin", "--recent", "--count", "1", *query(mesh))
    assert (code, err) == (0, "events of kind ADMIN (Ctrl-C stops)\n")  # a kind in lower case is the same kind
    lines = out.splitlines()
    assert len(lines) == 1
    seq, _, kind, *_ = lines[0].split()
    assert int(seq) >= 1 and kind == "ADMIN"
    assert "action=canary.pause" in lines[0] and "reason=look closer" in lines[0]


async def test_events_when_watching_prints_a_live_event_and_stops_after_count(mesh: Mesh, capsys: Capture) -> None:
    watcher = asyncio.create_task(cli(capsys, "events", "--kind", "ADMIN", "--count", "1", *query(mesh)))
    # Publish until the watcher has subscribed and seen one: no sleep to guess when it is listening.
    while not watcher.done():
        mesh.ops.core.events.publish("ADMIN", "from the test", action="probe")
        await asyncio.wait({watcher}, timeout=0.05)
    code, out, err = await watcher
    assert (code, err) == (0, "events of kind ADMIN (Ctrl-C stops)\n")
    assert len(out.splitlines()) == 1 and "from the test" in out


async def test_positions_when_prices_are_finer_than_a_cent_shows_them_as_ops_answers(
    mesh: Mesh, capsys: Capture
) -> None:
    """SOL-USD's tick is 0.001: an average cost of 150.147 is not shown as 150.15."""
    async with mesh.channel() as channel:
        stub = ops_pb2_grpc.OpsServiceStub(channel)
        signal = ops_pb2.Signal(signal_id="cli-sol", model_id="meanrev_v1", instrument="SOL-USD", target=0.01)
        meta = (("x-strategy-token", MEANREV_TOKEN),)
        decision = (await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal), metadata=meta)).decision
        assert decision.status == ops_pb2.DECISION_STATUS_ACCEPTED, decision
        await wait_until(lambda: mesh.ops.core.queries.position("meanrev_v1", "SOL-USD") != 0)
        answer = await stub.GetPositions(ops_pb2.GetPositionsRequest(model_id="meanrev_v1"), metadata=meta)
    [position] = [p for p in answer.positions if p.instrument == "SOL-USD"]
    code, out, err = await cli(capsys, "positions", "--ops", mesh.ops_address, "--token", MEANREV_TOKEN)
    assert (code, err) == (0, "")
    cells = next(line.split() for line in out.splitlines() if line.split()[:2] == ["meanrev_v1", "SOL-USD"])
    assert cells[4].replace(",", "") == position.avg_cost  # the mark moves with the market between the two reads
    assert _price("0.07995") == "0.07995" and _price("64123.5") == "64,123.5" and _price("150.147") == "150.147"
    assert _price("") == "-" and _money("0.07995") == "0.08"  # a USD amount is shown to the cent
