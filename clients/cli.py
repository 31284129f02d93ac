"""``nautilus-mesh``: run the mesh and talk to it from a terminal.

Subcommands: ``up`` (start engine, ops and demo strategies), ``status``, ``positions``,
``signal`` (one SubmitSignal), ``traces`` (the embedded latency dashboard).

Token resolution (every OpsService call needs a strategy token): ``--token``, else the
``NAUTILUS_STRATEGY_TOKEN`` environment variable, else the first strategy token in
``config/demo/ops.json`` (a demo convenience so the CLI works out of the box against
``nautilus-mesh up``; set a real token in production).

Exit codes: 0 success; 1 the call was refused (e.g. a rejected signal) or a service failed;
2 a service is not reachable, or the command line / config is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from rich.console import Console

from clients.launcher import demo_strategy_token, run_mesh
from clients.sdk import MeshRpcError, OpsClient
from clients.traces import load_spans, print_table, render_summary, summarize_spans
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2

DEFAULT_OPS = "127.0.0.1:50051"
DEFAULT_ENGINE = "127.0.0.1:50052"
DEFAULT_CONFIG_DIR = "config/demo"
TOKEN_ENV = "NAUTILUS_STRATEGY_TOKEN"
CLI_TIMEOUT = 5.0


class CliError(Exception):
    """A user-facing failure: a one-line message and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nautilus-mesh", description="Run and inspect the nautilus-mesh.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start engine, ops and the demo strategies")
    up.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    up.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="directory with engine/ops/strategies JSON")
    up.add_argument("--no-strategies", action="store_true", help="start only engine and ops")

    def ops_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ops", default=DEFAULT_OPS, help="ops address (host:port)")
        p.add_argument("--token", default=None, help=f"strategy token (else ${TOKEN_ENV}, else the demo config)")
        p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="where the demo token is looked up")

    status = sub.add_parser("status", help="models, routing, PnL, Sharpe and allocations")
    ops_options(status)

    positions = sub.add_parser("positions", help="positions per model and instrument")
    ops_options(positions)
    positions.add_argument("--model", default="", help="only this model")

    signal = sub.add_parser("signal", help="submit one signal (SubmitSignal) and print the decision")
    ops_options(signal)
    signal.add_argument("--model", required=True, help="model id")
    signal.add_argument("--instrument", required=True, help="instrument, e.g. BTC-USD")
    signal.add_argument("--target", required=True, type=float, help="target exposure in [-1, 1]")
    signal.add_argument("--signal-id", default=None, help="signal id (default: a fresh unique id)")

    traces = sub.add_parser("traces", help="per-stage latency percentiles from local span files")
    traces.add_argument("--dir", default="var/traces", help="directory of span JSONL files")
    return parser


def resolve_token(
    explicit: str | None, env: Mapping[str, str], config_dir: str | os.PathLike[str] = DEFAULT_CONFIG_DIR
) -> str | None:
    """``--token``, else ``$NAUTILUS_STRATEGY_TOKEN``, else the first strategy token of ``<config_dir>/ops.json``."""
    if explicit:
        return explicit
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    return demo_strategy_token(Path(config_dir) / "ops.json")


def _fail(exc: MeshRpcError, address: str, service: str = "ops") -> CliError:
    if exc.unreachable:
        return CliError(f"{service} not reachable at {address}", 2)
    text = f"{exc.code.name}: {exc.message}"
    if exc.detail is not None and exc.detail.code:
        details = " ".join(f"{k}={v}" for k, v in sorted(exc.detail.details.items()))
        text = f"{exc.code.name} {exc.detail.code}: {exc.detail.message}" + (f" ({details})" if details else "")
    return CliError(text, 1)


def _money(text: str) -> str:
    try:
        return f"{Decimal(text):,.2f}"
    except (InvalidOperation, ValueError):
        return text or "-"


def _mode(mode: ops_pb2.RoutingMode.ValueType) -> str:
    return ops_pb2.RoutingMode.Name(mode).removeprefix("ROUTING_MODE_")


def _client(args: argparse.Namespace) -> OpsClient:
    token = resolve_token(args.token, os.environ, args.config_dir)
    if not token:
        raise CliError(f"no strategy token: pass --token or set {TOKEN_ENV}", 2)
    return OpsClient(args.ops, strategy_token=token, timeout=CLI_TIMEOUT)


async def cmd_status(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            models = await ops.list_models()
            stats = await ops.get_model_stats()
            positions = await ops.get_positions()
            allocations = await ops.get_allocations()
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    by_model = {s.model_id: s for s in stats.models}
    held: dict[str, list[str]] = {}
    for p in positions:
        if p.quantity and p.quantity not in ("0", "0.0"):
            held.setdefault(p.model_id, []).append(f"{p.instrument}:{p.quantity}")
    rows = []
    for m in models:
        s = by_model.get(m.model_id)
        state = common_pb2.TradingState.Name(m.trading_state).removeprefix("TRADING_STATE_")
        rows.append(
            [
                m.model_id,
                m.strategy_id,
                _mode(m.mode),
                f"{m.routing_weight:.2f}",
                _money(m.quota_usd),
                state,
                str(s.fills) if s else "0",
                " ".join(held.get(m.model_id, [])) or "flat",
                _money(s.equity) if s else "-",
                f"{s.sharpe:.2f}" if s else "-",
            ]
        )
    headers = ["model", "strategy", "mode", "weight", "quota usd", "state", "fills", "position", "pnl", "sharpe"]
    print_table(console, "models", headers, rows)
    alloc_rows = [[a.strategy_id, f"{a.fraction:.3f}", _money(a.capital_usd)] for a in allocations.allocations]
    title = f"allocations (total {_money(allocations.total_capital_usd)}, last {allocations.last_reason or '-'})"
    print_table(console, title, ["strategy", "fraction", "capital usd"], alloc_rows)
    return 0


async def cmd_positions(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            positions = await ops.get_positions(args.model)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    rows = [
        [
            p.model_id,
            p.instrument,
            _mode(p.mode),
            p.quantity,
            _money(p.avg_cost),
            _money(p.mark),
            _money(p.realized_pnl),
            _money(p.unrealized_pnl),
            _money(p.fees),
        ]
        for p in positions
    ]
    headers = ["model", "instrument", "mode", "quantity", "avg cost", "mark", "realized", "unrealized", "fees"]
    print_table(console, "positions", headers, rows)
    return 0


async def cmd_signal(args: argparse.Namespace, console: Console) -> int:
    signal = ops_pb2.Signal(
        signal_id=args.signal_id or f"cli-{uuid.uuid4().hex[:12]}",
        model_id=args.model,
        instrument=args.instrument,
        target=args.target,
        confidence=1.0,
        created_at_unix_nanos=time.time_ns(),
    )
    async with _client(args) as ops:
        try:
            decision = await ops.submit_signal(signal)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    status = ops_pb2.DecisionStatus.Name(decision.status).removeprefix("DECISION_STATUS_")
    side = common_pb2.Side.Name(decision.side).removeprefix("SIDE_")
    print(
        f"{status} signal={decision.signal_id} model={decision.model_id} mode={_mode(decision.mode)}"
        + (
            f" order={decision.client_order_id} side={side} quantity={decision.quantity}"
            if decision.client_order_id
            else ""
        )
    )
    if decision.status == ops_pb2.DECISION_STATUS_REJECTED:
        print(f"rejected: {decision.error.code}: {decision.error.message}", file=sys.stderr)
        return 1
    return 0


def cmd_traces(args: argparse.Namespace, console: Console) -> int:
    stages, end_to_end = summarize_spans(load_spans(args.dir))
    render_summary(stages, end_to_end, console, source=args.dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nautilus-mesh`` console script."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "up":
            return asyncio.run(run_mesh(args.config_dir, args.duration, not args.no_strategies, console=console))
        if args.command == "traces":
            return cmd_traces(args, console)
        commands = {"status": cmd_status, "positions": cmd_positions, "signal": cmd_signal}
        return asyncio.run(commands[args.command](args, console))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
