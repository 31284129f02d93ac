"""The nautilus-mesh CLI: argument parsing, token resolution, output lines, unreachable services."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from clients.cli import TOKEN_ENV, build_parser, main, resolve_token
from clients.launcher import MeshEndpoints, endpoints_from_config, ready_line, summary_line

DEMO_DIR = Path(__file__).resolve().parents[1] / "config" / "demo"


def _ops_config(tmp_path: Path, tokens: dict[str, str]) -> Path:
    strategies = {name: {"token": token, "models": []} for name, token in tokens.items()}
    (tmp_path / "ops.json").write_text(json.dumps({"strategies": strategies}))
    return tmp_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def test_resolve_token_when_nothing_configured_returns_none(tmp_path: Path) -> None:
    assert resolve_token(None, {TOKEN_ENV: ""}, tmp_path) is None


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


def test_summary_line_when_no_stats_reports_zeros() -> None:
    assert summary_line({}) == "summary: signals=0 orders=0 fills=0 rejected=0 p50_ms=0.00 p99_ms=0.00"


def test_ready_line_when_demo_config_lists_every_endpoint() -> None:
    assert ready_line(endpoints_from_config(DEMO_DIR)) == (
        "ready: ops=127.0.0.1:50051 engine=127.0.0.1:50052 metrics=127.0.0.1:8002,127.0.0.1:8003"
    )


def test_endpoints_from_config_when_files_missing_uses_defaults(tmp_path: Path) -> None:
    assert endpoints_from_config(tmp_path) == MeshEndpoints()


# --- unreachable services ----------------------------------------------------------------------


def test_main_when_ops_unreachable_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    code = main(["status", "--ops", address, "--token", "t"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: ops not reachable at {address}\n"


def test_main_when_no_token_anywhere_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    code = main(["positions", "--config-dir", str(tmp_path), "--ops", f"127.0.0.1:{_free_port()}"])
    assert code == 2
    assert "no strategy token" in capsys.readouterr().err
