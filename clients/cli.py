"""``nautilus-mesh``: run the mesh and talk to it from a terminal.

Subcommands: ``up`` (start engine, ops and demo strategies), ``status``, ``positions``,
``signal`` (one SubmitSignal), ``traces`` (the slowest traces, stage by stage), ``dashboard`` (the embedded
latency dashboard), ``journal dump PATH``
(a journal as JSON lines), and the operator's view and controls:

- ``canary status`` and ``canary promote|rollback|pause|resume|confirm --strategy S --reason R``;
- ``allocations`` and ``allocations trigger --reason R``;
- ``stats`` (performance per model and per strategy);
- ``risk limits|state``, ``risk set-state``, ``risk kill-switch engage|release``, ``risk reload``;
- ``weights --strategy S --set model=w ... --reason R``;
- ``events [--kind K ...] [--recent] [--count N]`` (one line per ops event, until Ctrl-C);
- ``health [--engine ADDR] [--probe [--service S]]`` (every health check of ops and the engine; ``--probe``: the gRPC
  health status as an exit code, for container health checks).

Token resolution. Queries (OpsService) need a strategy token: ``--token``, else the ``NAUTILUS_STRATEGY_TOKEN``
environment variable, else a strategy token in ``config/demo/ops.json`` (for ``signal --model M`` the one bound to
``M``, else the first); a strategy token reads its own models only, so queries also send the admin token when one
resolves (below) and then read every model. Controls (OpsAdminService) need the admin token: ``--admin-token``, else
``NAUTILUS_ADMIN_TOKEN``, else ``admin_token`` in ``config/demo/ops.json``. The config fallbacks are a demo
convenience so the CLI works out of the box against ``nautilus-mesh up``;
set real tokens in production.

Exit codes: 0 success (also when the reader of the output goes away early, e.g. ``| head``: no traceback); 1 the
call was refused (e.g. a rejected signal, a wrong admin token) or a service failed, with the status code, message and
details on stderr; 2 a service is not reachable, or the command line / config is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from clients.backtest_cli import add_backtest_options, run_backtest
from clients.commands import (
    ADMIN_TOKEN_ENV,
    CANARY_ACTIONS,
    DEFAULT_CONFIG_DIR,
    DEFAULT_OPS,
    ENGINE_TOKEN_ENV,
    TOKEN_ENV,
    TRADING_STATES,
    CliError,
    Command,
    cmd_allocations,
    cmd_allocations_trigger,
    cmd_canary_control,
    cmd_canary_status,
    cmd_events,
    cmd_health,
    cmd_positions,
    cmd_risk_kill_switch,
    cmd_risk_limits,
    cmd_risk_reload,
    cmd_risk_set_state,
    cmd_risk_state,
    cmd_signal,
    cmd_stats,
    cmd_status,
    cmd_weights,
    rpc_failure,
)
from clients.dashboard import add_arguments as add_dashboard_arguments
from clients.dashboard import run_dashboard
from clients.journal_dump import cmd_journal_dump
from clients.launcher import run_mesh
from clients.sdk import MeshRpcError
from clients.trace_report import add_arguments as add_trace_arguments
from clients.trace_report import run_traces
from nautilus_mesh.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nautilus-mesh", description="Run and inspect the nautilus-mesh.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start engine, ops and the demo strategies")
    up.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    up.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="directory with engine/ops/strategies JSON")
    up.add_argument("--no-strategies", action="store_true", help="start only engine and ops")
    up.add_argument("--no-restart", action="store_true", help="stop everything when any child dies (no restarts)")

    status = sub.add_parser("status", help="models, routing, PnL, Sharpe and allocations")
    _query_options(status, cmd_status)

    positions = sub.add_parser("positions", help="positions per model and instrument")
    _query_options(positions, cmd_positions)
    positions.add_argument("--model", default="", help="only this model")

    signal = sub.add_parser("signal", help="submit one signal (SubmitSignal) and print the decision")
    _query_options(signal, cmd_signal)
    signal.add_argument("--model", required=True, help="model id")
    signal.add_argument("--instrument", required=True, help="instrument, e.g. BTC-USD")
    signal.add_argument("--target", required=True, type=float, help="target exposure in [-1, 1]")
    signal.add_argument("--signal-id", default=None, help="signal id (default: a fresh unique id)")

    backtest = sub.add_parser("backtest", help="replay quotes through ops and the engine in one process")
    add_backtest_options(backtest)
    backtest.set_defaults(handler=run_backtest)

    traces = sub.add_parser("traces", help="per-stage latency (spans, wire, queue) and waterfalls from span files")
    add_trace_arguments(traces)

    dashboard = sub.add_parser("dashboard", help="serve the latency dashboard page (metrics and span files)")
    add_dashboard_arguments(dashboard)

    journal = sub.add_parser("journal", help="read a service's journal")
    journal_sub = journal.add_subparsers(dest="action", required=True, metavar="ACTION")
    dump = journal_sub.add_parser("dump", help="print every record of a journal as JSON lines")
    dump.add_argument("path", help="journal file, e.g. var/engine/journal.bin")

    canary = sub.add_parser("canary", help="canary status and controls")
    canary_sub = canary.add_subparsers(dest="action", required=True, metavar="ACTION")
    canary_status = canary_sub.add_parser("status", help="state, step, weights and last check of each canary")
    _query_options(canary_status, cmd_canary_status)
    canary_status.add_argument("--strategy", default="", help="only this strategy")
    for action in CANARY_ACTIONS:
        control = canary_sub.add_parser(action, help=f"{action} a strategy's canary (audited, needs a reason)")
        _admin_options(control, cmd_canary_control)
        control.add_argument("--strategy", required=True, help="strategy id")
        control.add_argument("--reason", required=True, help="why (recorded in the audit log)")
        if action == "promote":
            control.add_argument("--to-full", action="store_true", help="straight to 100%% instead of one step")

    allocations = sub.add_parser("allocations", help="capital allocation per strategy")
    _query_options(allocations, cmd_allocations)
    allocations_sub = allocations.add_subparsers(dest="action", required=False, metavar="ACTION")
    trigger = allocations_sub.add_parser("trigger", help="run an allocation cycle now (bypasses the cooldown)")
    # SUPPRESS: options given before "trigger" (on "allocations") must not be reset by this parser's defaults.
    _admin_options(trigger, cmd_allocations_trigger, suppress=True)
    trigger.add_argument("--reason", required=True, help="why (recorded in the audit log)")

    stats = sub.add_parser("stats", help="performance per model and per strategy (GetModelStats)")
    _query_options(stats, cmd_stats)
    stats.add_argument("--model", default="", help="only this model")

    risk = sub.add_parser("risk", help="risk limits, trading states and the kill switch")
    risk_sub = risk.add_subparsers(dest="action", required=True, metavar="ACTION")
    _query_options(risk_sub.add_parser("limits", help="the risk limits in force, as JSON"), cmd_risk_limits)
    _query_options(risk_sub.add_parser("state", help="global and per-model trading states"), cmd_risk_state)
    set_state = risk_sub.add_parser("set-state", help="set the global (or one model's) trading state")
    _admin_options(set_state, cmd_risk_set_state)
    set_state.add_argument("--model", default="", help="this model only (default: the global state)")
    set_state.add_argument("--state", required=True, choices=TRADING_STATES, help="the new trading state")
    set_state.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    kill = risk_sub.add_parser("kill-switch", help="engage or release the kill switch")
    _admin_options(kill, cmd_risk_kill_switch)
    kill.add_argument("switch", choices=("engage", "release"), help="engage: halt and cancel everything")
    kill.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    _admin_options(risk_sub.add_parser("reload", help="reload the risk limits file"), cmd_risk_reload)

    weights = sub.add_parser("weights", help="set a strategy's routing weights (SetRoutingWeights)")
    _admin_options(weights, cmd_weights)
    weights.add_argument("--strategy", required=True, help="strategy id")
    weights.add_argument(
        "--set", dest="weights", action="append", required=True, metavar="MODEL=W", help="a model's weight (repeat)"
    )
    weights.add_argument("--reason", required=True, help="why (recorded in the audit log)")

    health = sub.add_parser("health", help="every health check of ops (and the engine), rolled up")
    _admin_options(health, cmd_health)
    health.add_argument("--engine", default=None, help="also the engine's checks (host:port)")
    health.add_argument(
        "--engine-token", default=None, help=f"engine token (else ${ENGINE_TOKEN_ENV}, else demo config)"
    )
    health.add_argument("--probe", action="store_true", help="only the gRPC health status of --ops as an exit code")
    health.add_argument("--service", default="", help="with --probe: the health service ('' = overall)")

    events = sub.add_parser("events", help="ops events as they happen, one line each, until Ctrl-C")
    _query_options(events, cmd_events)
    events.add_argument("--kind", dest="kinds", action="append", default=[], help="only this kind (repeat)")
    events.add_argument("--recent", action="store_true", help="start with the recent events kept in memory")
    events.add_argument("--count", type=int, default=0, help="stop after this many events (0 = never)")
    return parser


def _query_options(p: argparse.ArgumentParser, handler: Command) -> None:
    p.add_argument("--ops", default=DEFAULT_OPS, help="ops address (host:port)")
    p.add_argument("--token", default=None, help=f"strategy token (else ${TOKEN_ENV}, else the demo config)")
    p.add_argument(
        "--admin-token",
        default=None,
        help=f"read every model with the admin token (else ${ADMIN_TOKEN_ENV}, else the demo config)",
    )
    p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="where the demo tokens are looked up")
    p.set_defaults(handler=handler)


def _admin_options(p: argparse.ArgumentParser, handler: Command, *, suppress: bool = False) -> None:
    ops_default = argparse.SUPPRESS if suppress else DEFAULT_OPS
    config_default = argparse.SUPPRESS if suppress else DEFAULT_CONFIG_DIR
    p.add_argument("--ops", default=ops_default, help="ops address (host:port)")
    p.add_argument("--admin-token", default=None, help=f"admin token (else ${ADMIN_TOKEN_ENV}, else the demo config)")
    p.add_argument("--config-dir", default=config_default, help="where the demo tokens are looked up")
    p.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nautilus-mesh`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "up":
            return asyncio.run(
                run_mesh(
                    args.config_dir, args.duration, not args.no_strategies, console=console, restart=not args.no_restart
                )
            )
        if args.command == "backtest":
            return run_backtest(argv[argv.index("backtest") + 1 :])
        if args.command == "traces":
            return run_traces(args, console)
        if args.command == "dashboard":
            return run_dashboard(args)
        if args.command == "journal":
            return cmd_journal_dump(args, sys.stdout)
        handler: Command = args.handler
        try:
            return asyncio.run(handler(args, console))
        except MeshRpcError as exc:  # every ops call's failure is mapped here, once
            raise rpc_failure(exc, args.ops) from None
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:  # a config file read for its addresses or tokens
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): nothing more to write, and no traceback
        quiet_stdout()
        return 0


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what was buffered for a closed pipe does not
    fail again at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
