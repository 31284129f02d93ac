"""The nautilus-mesh CLI: argument parsing, token resolution, output lines, unreachable services.

The commands against a running mesh are in ``test_cli_e2e.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from clients.cli import build_parser, main
from clients.commands import (
    ADMIN_TOKEN_ENV,
    TOKEN_ENV,
    cmd_allocations,
    cmd_allocations_trigger,
    cmd_canary_control,
    cmd_risk_kill_switch,
    event_line,
    resolve_admin_token,
    resolve_token,
)
from clients.config_dir import MeshEndpoints, endpoints_from_config
from clients.launcher import (
    MIN_BARS_SHOWN,
    OpsView,
    carry_stats,
    print_status,
    ready_line,
    sharpe_cell,
    summary_line,
)
from engine_server.order_manager import OrderManager
from engine_server.venues.base import OrderRequest, OrderType, Side, TimeInForce
from engine_server.venues.sim import SimVenue, SimVenueConfig
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.errors import ConfigError
from tests.localhost import free_port
from tests.venues import instrument

ROOT = Path(__file__).resolve().parents[1]

DEMO_DIR = Path(__file__).resolve().parents[1] / "config" / "demo"


def _ops_config(tmp_path: Path, tokens: dict[str, str], **fields: object) -> Path:
    """A valid ``ops.json`` in ``tmp_path`` with these strategy tokens and top-level fields."""
    strategies = {name: {"token": token, "models": []} for name, token in tokens.items()}
    config = {
        "registry_path": "registry.json",
        "capital_policy_path": "capital.json",
        "risk_limits_path": "risk.json",
        "strategies": strategies,
    }
    (tmp_path / "ops.json").write_text(json.dumps({**config, **fields}))
    return tmp_path


# --- parsing -----------------------------------------------------------------------------------


def test_parser_when_up_without_options_uses_demo_defaults() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.command, args.duration, args.config_dir, args.no_strategies) == ("up", 0.0, "config/demo", False)


def test_parser_when_signal_given_parses_target_as_float() -> None:
    args = build_parser().parse_args(
        ["signal", "--model", "momentum_v1", "--instrument", "BTC-USD", "--target", "-0.5", "--signal-id", "s1"]
    )
    assert (args.model, args.instrument, args.target, args.signal_id) == ("momentum_v1", "BTC-USD", -0.5, "s1")
    assert args.ops == "127.0.0.1:50051"


def test_parser_when_signal_lacks_target_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["signal", "--model", "m", "--instrument", "X"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status", "--ops", "h:1", "--token", "t"], ("status", "h:1", "t")),
        (["positions", "--model", "m"], ("positions", "127.0.0.1:50051", None)),
    ],
)
def test_parser_when_ops_command_given_reads_address_and_token(argv: list[str], expected: tuple[str, ...]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.ops, args.token) == expected


def test_parser_when_traces_given_defaults_to_var_traces() -> None:
    assert build_parser().parse_args(["traces"]).dir == "var/traces"


def test_parser_when_canary_promote_given_reads_strategy_reason_and_to_full() -> None:
    args = build_parser().parse_args(
        ["canary", "promote", "--strategy", "momentum", "--reason", "ok", "--to-full", "--admin-token", "a"]
    )
    assert (args.action, args.strategy, args.reason, args.to_full, args.admin_token) == (
        "promote",
        "momentum",
        "ok",
        True,
        "a",
    )
    assert args.handler is cmd_canary_control


@pytest.mark.parametrize("action", ["promote", "rollback", "pause", "resume", "confirm"])
def test_parser_when_canary_control_lacks_reason_exits_with_usage_error(action: str) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["canary", action, "--strategy", "momentum"])
    assert exc.value.code == 2


def test_parser_when_allocations_alone_shows_them() -> None:
    args = build_parser().parse_args(["allocations", "--ops", "h:1"])
    assert (args.action, args.ops, args.handler) == (None, "h:1", cmd_allocations)


@pytest.mark.parametrize(
    "argv",
    [
        ["allocations", "--ops", "h:1", "--config-dir", "c", "trigger", "--reason", "r"],
        ["allocations", "trigger", "--ops", "h:1", "--config-dir", "c", "--reason", "r"],
    ],
)
def test_parser_when_allocations_trigger_keeps_address_given_before_or_after(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.handler, args.ops, args.config_dir, args.reason) == (cmd_allocations_trigger, "h:1", "c", "r")


def test_parser_when_kill_switch_given_reads_engage_or_release() -> None:
    args = build_parser().parse_args(["risk", "kill-switch", "release", "--reason", "drill over"])
    assert (args.switch, args.reason, args.handler) == ("release", "drill over", cmd_risk_kill_switch)


def test_parser_when_set_state_unknown_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["risk", "set-state", "--state", "PANIC", "--reason", "r"])
    assert exc.value.code == 2


def test_parser_when_weights_set_repeated_collects_every_pair() -> None:
    args = build_parser().parse_args(
        ["weights", "--strategy", "s", "--set", "a=0.25", "--set", "b=0.75", "--reason", "r"]
    )
    assert args.weights == ["a=0.25", "b=0.75"]


def test_parser_when_events_given_collects_kinds_and_count() -> None:
    args = build_parser().parse_args(["events", "--kind", "CANARY", "--kind", "ADMIN", "--recent", "--count", "3"])
    assert (args.kinds, args.recent, args.count) == (["CANARY", "ADMIN"], True, 3)


# --- token resolution --------------------------------------------------------------------------


def test_resolve_token_when_flag_given_prefers_flag_over_env_and_config(tmp_path: Path) -> None:
    config_dir = _ops_config(tmp_path, {"a": "from-config"})
    assert resolve_token("from-flag", {TOKEN_ENV: "from-env"}, config_dir) == "from-flag"


def test_resolve_token_when_no_flag_prefers_env_over_config(tmp_path: Path) -> None:
    config_dir = _ops_config(tmp_path, {"a": "from-config"})
    assert resolve_token(None, {TOKEN_ENV: "from-env"}, config_dir) == "from-env"


def test_resolve_token_when_only_config_returns_first_strategy_token(tmp_path: Path) -> None:
    config_dir = _ops_config(tmp_path, {"a": "", "b": "second", "c": "third"})
    assert resolve_token(None, {}, config_dir) == "second"


def test_resolve_token_when_demo_config_returns_momentum_token() -> None:
    assert resolve_token(None, {}, DEMO_DIR) == "demo-momentum-token"


def test_resolve_token_when_a_model_is_named_returns_the_token_of_the_strategy_that_owns_it() -> None:
    """``signal --model meanrev_v1`` with the demo fallback: meanrev's token, not the first strategy's (refused
    MODEL_NOT_ALLOWED)."""
    assert resolve_token(None, {}, DEMO_DIR, model="meanrev_v1") == "demo-meanrev-token"
    assert resolve_token(None, {}, DEMO_DIR, model="momentum_v2") == "demo-momentum-token"
    assert resolve_token(None, {}, DEMO_DIR, model="nobody_v1") == "demo-momentum-token"  # ops then names the refusal
    assert resolve_token("from-flag", {}, DEMO_DIR, model="meanrev_v1") == "from-flag"


def test_resolve_token_when_nothing_configured_returns_none(tmp_path: Path) -> None:
    assert resolve_token(None, {TOKEN_ENV: ""}, tmp_path) is None


def test_resolve_admin_token_when_flag_given_prefers_flag_over_env_and_config(tmp_path: Path) -> None:
    _ops_config(tmp_path, {}, admin_token="from-config")
    assert resolve_admin_token("from-flag", {ADMIN_TOKEN_ENV: "from-env"}, tmp_path) == "from-flag"
    assert resolve_admin_token(None, {ADMIN_TOKEN_ENV: "from-env"}, tmp_path) == "from-env"
    assert resolve_admin_token(None, {}, tmp_path) == "from-config"


def test_resolve_admin_token_when_demo_config_returns_demo_admin_token() -> None:
    assert resolve_admin_token(None, {}, DEMO_DIR) == "demo-admin-token"


@pytest.mark.parametrize("token", ["", "sha256:" + "0" * 64])
def test_resolve_admin_token_when_config_has_none_or_only_a_hash_returns_none(tmp_path: Path, token: str) -> None:
    assert resolve_admin_token(None, {}, _ops_config(tmp_path, {}, admin_token=token)) is None


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"admin_token": 7}'])
def test_resolve_admin_token_when_config_invalid_raises_config_error_naming_the_file(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "ops.json").write_text(content)
    with pytest.raises(ConfigError, match=r"ops\.json"):
        resolve_admin_token(None, {}, tmp_path)


# --- output lines ------------------------------------------------------------------------------


def test_summary_line_when_stats_given_formats_counts_and_fill_latency() -> None:
    stats = {
        "totals": {
            "signals": 120,
            "orders": 80,
            "fills": 95,
            "rejected": 7,
            "fill_latency_ms": {"p50": 3.14159, "p99": 12.0, "count": 80},
            "decision_latency_ms": {"p50": 1.0, "p99": 2.0, "count": 120},
        }
    }
    assert summary_line(stats) == "summary: signals=120 orders=80 fills=95 rejected=7 p50_ms=3.14 p99_ms=12.00"


def _status_row(capsys: pytest.CaptureFixture[str], stats: dict[str, object]) -> list[str]:
    model = ops_pb2.ModelInfo(model_id="momentum_v1", mode=ops_pb2.ROUTING_MODE_LIVE, routing_weight=1.0)
    ops_stats = ops_pb2.ModelStats(model_id="momentum_v1", fills=2)
    print_status(Console(force_terminal=False), OpsView([model], {"momentum_v1": ops_stats}, {}, None), stats)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("momentum_v1"))
    return row.split()[:5]


def _stats(connected: bool, signals: int) -> dict[str, object]:
    counts = {"signals": signals, "accepted": signals, "fills": 0}
    snap = {"connected": {"ops": connected}, "signals": signals, "models": {"momentum_v1": counts}}
    return {"models": {"momentum_v1": counts}, "strategies": {"momentum": snap}}


def test_status_table_when_stats_file_not_written_shows_dash_for_signal_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _status_row(capsys, {}) == ["momentum_v1", "LIVE", "-", "-", "2"]


def test_status_table_when_stats_written_before_strategy_connected_shows_dash_not_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _status_row(capsys, _stats(connected=False, signals=0)) == ["momentum_v1", "LIVE", "-", "-", "2"]


def test_status_table_when_strategy_connected_shows_its_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert _status_row(capsys, _stats(connected=True, signals=0)) == ["momentum_v1", "LIVE", "0", "0", "2"]
    assert _status_row(capsys, _stats(connected=False, signals=3)) == ["momentum_v1", "LIVE", "3", "3", "2"]


def test_summary_line_when_no_stats_reports_zeros() -> None:
    assert summary_line({}) == "summary: signals=0 orders=0 fills=0 rejected=0 p50_ms=0.00 p99_ms=0.00"


def test_ready_line_when_demo_config_lists_every_endpoint() -> None:
    assert ready_line(endpoints_from_config(DEMO_DIR)) == (
        "ready: ops=127.0.0.1:50051 engine=127.0.0.1:50052 metrics=127.0.0.1:8002,127.0.0.1:8003"
    )


def test_endpoints_from_config_when_files_missing_uses_defaults(tmp_path: Path) -> None:
    assert endpoints_from_config(tmp_path) == MeshEndpoints()


def test_event_line_when_attributes_given_sorts_them_after_the_message() -> None:
    event = ops_pb2.Event(
        seq=7,
        kind="CANARY",
        at_unix_nanos=1_700_000_000_123_000_000,
        message="promoted",
        attributes={"b": "2", "a": "1"},
    )
    assert event_line(event) == "7 2023-11-14T22:13:20.123Z CANARY promoted a=1 b=2"


def test_event_line_when_no_attributes_ends_with_the_message() -> None:
    assert event_line(ops_pb2.Event(seq=1, kind="ADMIN", message="hi")) == "1 - ADMIN hi"


# --- unreachable services ----------------------------------------------------------------------


def test_main_when_ops_unreachable_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    code = main(["status", "--ops", address, "--token", "t"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: ops not reachable at {address}\n"


def test_main_when_no_token_anywhere_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    code = main(["positions", "--config-dir", str(tmp_path), "--ops", f"127.0.0.1:{free_port()}"])
    assert code == 2
    assert "no strategy token" in capsys.readouterr().err


def test_main_when_admin_call_and_ops_unreachable_prints_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{free_port()}"
    code = main(["risk", "kill-switch", "engage", "--reason", "drill", "--ops", address, "--admin-token", "a"])
    assert code == 2
    assert capsys.readouterr().err == f"error: ops not reachable at {address}\n"


def test_main_when_events_and_ops_unreachable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert main(["events", "--ops", address, "--token", "t", "--count", "1"]) == 2
    assert capsys.readouterr().err == f"error: ops not reachable at {address}\n"


def test_main_when_no_admin_token_anywhere_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    argv = ["risk", "reload", "--config-dir", str(tmp_path), "--ops", f"127.0.0.1:{free_port()}"]
    assert main(argv) == 2
    assert "no admin token" in capsys.readouterr().err


@pytest.mark.parametrize("pair", ["m", "=0.5", "m=half"])
def test_main_when_weight_malformed_exits_2_before_calling(pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["weights", "--strategy", "s", "--set", pair, "--reason", "r", "--admin-token", "a"]
    assert main([*argv, "--ops", f"127.0.0.1:{free_port()}"]) == 2
    assert "--set wants MODEL=WEIGHT" in capsys.readouterr().err


D = Decimal


def test_journal_dump_when_engine_journal_given_prints_every_record_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.bin"
    venue = SimVenue(SimVenueConfig(instruments=(instrument(),), seed=1))
    manager = OrderManager({"sim": venue}, journal_path=path, clock=lambda: 1_000)
    order = OrderRequest("c1", "s1", "acct", "m1", "TST-USD", Side.BUY, OrderType.MARKET, TimeInForce.IOC, D("1.5"))
    reports = manager.submit("sim", order)
    manager.close()
    assert main(["journal", "dump", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["type"] for line in lines] == [
        "nautilus.engine.v1.OrderRecord",
        *["nautilus.engine.v1.ExecutionReport"] * len(reports),
    ]
    assert lines[0]["record"]["order"]["client_order_id"] == "c1" and lines[0]["record"]["order"]["quantity"] == "1.5"
    assert [int(line["record"]["seq"]) for line in lines[1:]] == [r.seq for r in reports]
    assert lines[-1]["record"]["exec_type"] == "EXEC_TYPE_FILL" and lines[-1]["record"]["cum_qty"] == "1.5"
    assert all(isinstance(line["offset"], int) for line in lines)


def test_journal_dump_when_its_reader_stops_early_exits_0_without_a_traceback(tmp_path: Path) -> None:
    """``nautilus-mesh journal dump PATH | head -1``: the rest of a journal larger than the pipe's buffer has nowhere to
    go; the CLI stops quietly."""
    path = tmp_path / "journal.bin"
    venue = SimVenue(SimVenueConfig(instruments=(instrument(),), seed=1))
    manager = OrderManager({"sim": venue}, journal_path=path, clock=lambda: 1_000)
    for i in range(600):  # ~2,000 records, several hundred KB of JSON lines
        side = Side.BUY if i % 2 else Side.SELL
        manager.submit("sim", OrderRequest(f"c{i}", "s1", "acct", "m1", "TST-USD", side, OrderType.MARKET,
                                           TimeInForce.IOC, D("1")))  # fmt: skip
    manager.close()
    cmd = [sys.executable, "-m", "clients.cli", "journal", "dump", str(path)]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does once it has its line
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, err
    assert json.loads(first)["type"] == "nautilus.engine.v1.OrderRecord"
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_journal_dump_when_jsonl_journal_given_prints_its_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"type":"decision","n":1}\n{"type":"report","n":2}\n{"torn', encoding="utf-8")
    assert main(["journal", "dump", str(path)]) == 0
    records = [json.loads(line)["record"] for line in capsys.readouterr().out.splitlines()]
    assert records == [{"type": "decision", "n": 1}, {"type": "report", "n": 2}]


def test_journal_dump_when_file_missing_exits_2(tmp_path: Path) -> None:
    assert main(["journal", "dump", str(tmp_path / "none.bin")]) == 2


def test_sharpe_cell_when_fewer_bars_than_ops_minimum_shows_dash_then_the_figure() -> None:
    def stats(observations: int, min_bars: int) -> ops_pb2.ModelStats:
        return ops_pb2.ModelStats(sharpe=1.234, observations=observations, min_bars=min_bars)

    assert sharpe_cell(None) == "-"
    assert sharpe_cell(stats(29, 30)) == "-"
    assert sharpe_cell(stats(30, 30)) == "1.23"
    assert sharpe_cell(stats(5, 5)) == "1.23"  # ops' stats_min_bars decides
    # An ops that predates min_bars: the client's own minimum.
    assert sharpe_cell(stats(MIN_BARS_SHOWN - 1, 0)) == "-"
    assert sharpe_cell(stats(MIN_BARS_SHOWN, 0)) == "1.23"


def test_carry_stats_when_strategies_restarted_adds_the_counts_and_keeps_the_latest_latencies() -> None:
    latency = {"count": 1, "p50": 1.0, "p99": 2.0}
    earlier = {
        "totals": {"elapsed_s": 10.0, "signals": 100, "signals_per_s": 10.0, "orders": 90, "fills": 80, "rejected": 5,
                   "decision_latency_ms": latency, "fill_latency_ms": latency},
        "models": {"m1": {"signals": 100, "decisions": {"ACCEPTED": 90, "REJECTED": 5}, "accepted": 90, "fills": 80,
                          "rejected": 5}},
    }  # fmt: skip
    later_latency = {"count": 3, "p50": 3.0, "p99": 9.0}
    later = {
        "totals": {"elapsed_s": 5.0, "signals": 20, "signals_per_s": 4.0, "orders": 18, "fills": 17, "rejected": 1,
                   "decision_latency_ms": later_latency, "fill_latency_ms": later_latency},
        "models": {"m1": {"signals": 20, "decisions": {"ACCEPTED": 18, "REJECTED": 1}, "accepted": 18, "fills": 17,
                          "rejected": 1}},
    }  # fmt: skip
    merged = carry_stats(earlier, later)  # type: ignore[arg-type]
    totals = merged["totals"]
    assert (totals["signals"], totals["orders"], totals["fills"], totals["rejected"]) == (120, 108, 97, 6)
    assert totals["elapsed_s"] == 15.0 and totals["signals_per_s"] == 8.0
    assert totals["fill_latency_ms"] == later_latency  # percentiles do not add up: the latest process's
    assert merged["models"]["m1"]["decisions"] == {"ACCEPTED": 108, "REJECTED": 6}
    assert merged["models"]["m1"]["signals"] == 120
    assert summary_line(merged).startswith("summary: signals=120 orders=108 fills=97 rejected=6 ")
    assert carry_stats({}, later) == later  # type: ignore[arg-type]
    assert carry_stats(earlier, {})["totals"]["signals"] == 100  # type: ignore[arg-type]  # before the new one writes
