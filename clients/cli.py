"""``nautilus-mesh``: run the mesh and talk to it from a terminal.

Subcommands: ``up`` (start engine, ops and demo strategies), ``status``, ``positions``,
``signal`` (one SubmitSignal), ``traces`` (the embedded latency dashboard), and the operator's
view and controls:

- ``canary status`` and ``canary promote|rollback|pause|resume|confirm --strategy S --reason R``;
- ``allocations`` and ``allocations trigger --reason R``;
- ``stats`` (performance per model and per strategy);
- ``risk limits|state``, ``risk set-state``, ``risk kill-switch engage|release``, ``risk reload``;
- ``weights --strategy S --set model=w ... --reason R``;
- ``events [--kind K ...] [--recent] [--count N]`` (one line per ops event, until Ctrl-C).

Token resolution. Queries (OpsService) need a strategy token: ``--token``, else the
``NAUTILUS_STRATEGY_TOKEN`` environment variable, else the first strategy token in
``config/demo/ops.json``. Controls (OpsAdminService) need the admin token: ``--admin-token``,
else ``NAUTILUS_ADMIN_TOKEN``, else ``admin_token`` in ``config/demo/ops.json``. The config
fallbacks are a demo convenience so the CLI works out of the box against ``nautilus-mesh up``;
set real tokens in production.

Exit codes: 0 success; 1 the call was refused (e.g. a rejected signal, a wrong admin token) or
a service failed, with the status code, message and details on stderr; 2 a service is not
reachable, or the command line / config is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.console import Console

from clients.launcher import demo_strategy_token, run_mesh
from clients.sdk import MeshRpcError, OpsAdminClient, OpsClient
from clients.traces import load_spans, print_table, render_summary, summarize_spans
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, ops_pb2
from nautilus_mesh.auth import is_plain_token

DEFAULT_OPS = "127.0.0.1:50051"
DEFAULT_ENGINE = "127.0.0.1:50052"
DEFAULT_CONFIG_DIR = "config/demo"
TOKEN_ENV = "NAUTILUS_STRATEGY_TOKEN"  # noqa: S105  an environment variable's name, not a token
ADMIN_TOKEN_ENV = "NAUTILUS_ADMIN_TOKEN"  # noqa: S105  an environment variable's name, not a token
CLI_TIMEOUT = 5.0
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
CANARY_ACTIONS = ("promote", "rollback", "pause", "resume", "confirm")

Command = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]


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

    traces = sub.add_parser("traces", help="per-stage latency percentiles from local span files")
    traces.add_argument("--dir", default="var/traces", help="directory of span JSONL files")

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

    events = sub.add_parser("events", help="ops events as they happen, one line each, until Ctrl-C")
    _query_options(events, cmd_events)
    events.add_argument("--kind", dest="kinds", action="append", default=[], help="only this kind (repeat)")
    events.add_argument("--recent", action="store_true", help="start with the recent events kept in memory")
    events.add_argument("--count", type=int, default=0, help="stop after this many events (0 = never)")
    return parser


def _query_options(p: argparse.ArgumentParser, handler: Command) -> None:
    p.add_argument("--ops", default=DEFAULT_OPS, help="ops address (host:port)")
    p.add_argument("--token", default=None, help=f"strategy token (else ${TOKEN_ENV}, else the demo config)")
    p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="where the demo tokens are looked up")
    p.set_defaults(handler=handler)


def _admin_options(p: argparse.ArgumentParser, handler: Command, *, suppress: bool = False) -> None:
    ops_default = argparse.SUPPRESS if suppress else DEFAULT_OPS
    config_default = argparse.SUPPRESS if suppress else DEFAULT_CONFIG_DIR
    p.add_argument("--ops", default=ops_default, help="ops address (host:port)")
    p.add_argument("--admin-token", default=None, help=f"admin token (else ${ADMIN_TOKEN_ENV}, else the demo config)")
    p.add_argument("--config-dir", default=config_default, help="where the demo tokens are looked up")
    p.set_defaults(handler=handler)


def resolve_token(
    explicit: str | None, env: Mapping[str, str], config_dir: str | os.PathLike[str] = DEFAULT_CONFIG_DIR
) -> str | None:
    """``--token``, else ``$NAUTILUS_STRATEGY_TOKEN``, else the first strategy token of ``<config_dir>/ops.json``."""
    if explicit:
        return explicit
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    return demo_strategy_token(Path(config_dir) / "ops.json")


def resolve_admin_token(
    explicit: str | None, env: Mapping[str, str], config_dir: str | os.PathLike[str] = DEFAULT_CONFIG_DIR
) -> str | None:
    """``--admin-token``, else ``$NAUTILUS_ADMIN_TOKEN``, else ``admin_token`` of ``<config_dir>/ops.json``."""
    if explicit:
        return explicit
    if env.get(ADMIN_TOKEN_ENV):
        return env[ADMIN_TOKEN_ENV]
    try:
        config = json.loads((Path(config_dir) / "ops.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    token = config.get("admin_token") if isinstance(config, dict) else None
    return token if isinstance(token, str) and is_plain_token(token) else None


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


def _admin_client(args: argparse.Namespace) -> OpsAdminClient:
    token = resolve_admin_token(args.admin_token, os.environ, args.config_dir)
    if not token:
        raise CliError(f"no admin token: pass --admin-token or set {ADMIN_TOKEN_ENV}", 2)
    return OpsAdminClient(args.ops, admin_token=token, timeout=CLI_TIMEOUT)


def _trading_state(state: common_pb2.TradingState.ValueType) -> str:
    return common_pb2.TradingState.Name(state).removeprefix("TRADING_STATE_")


def _timestamp(unix_nanos: int) -> str:
    if not unix_nanos:
        return "-"
    seconds, nanos = divmod(unix_nanos, 1_000_000_000)  # integer split: no float rounding of the milliseconds
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: float) -> str:
    return f"{value:.4g}"


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
    headers = ["model", "strategy", "mode", "weight", "quota usd", "state", "fills", "position", "pnl", "sharpe/yr"]
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


# --- canary --------------------------------------------------------------------------------------


def _print_canaries(console: Console, title: str, canaries: Sequence[ops_pb2.CanaryStatus]) -> None:
    rows = [
        [
            c.strategy_id,
            f"{c.canary_model} vs {c.stable_model}",
            ops_pb2.CanaryState.Name(c.state).removeprefix("CANARY_STATE_"),
            f"{c.step_percent:g}%",
            ",".join(f"{step:g}" for step in c.schedule) or "-",
            " ".join(f"{model}={weight:.2f}" for model, weight in sorted(c.weights.items())) or "-",
            str(c.failed_checks),
            str(c.inconclusive_checks),
            c.last_check.outcome or "-",
            f"{c.deflated_sharpe_ratio:.4f} ({c.trials} trials)" if c.last_check.outcome else "-",
        ]
        for c in canaries
    ]
    headers = ["strategy", "canary", "state", "step", "schedule", "weights", "failed", "inconclusive", "last check"]
    headers.append("DSR")
    print_table(console, title, headers, rows)
    for c in canaries:
        if c.last_check.outcome:
            check = c.last_check
            rows = [["outcome", check.outcome], ["at", _timestamp(check.at_unix_nanos)]]
            rows += [[name, _number(value)] for name, value in sorted(check.statistics.items())]
            print_table(console, f"last check of {c.strategy_id}", ["statistic", "value"], rows)


async def cmd_canary_status(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            canaries = await ops.get_canary_status(args.strategy)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    _print_canaries(console, "canaries", canaries)
    return 0


async def cmd_canary_control(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        try:
            if args.action == "promote":
                status = await admin.promote_canary(args.strategy, reason=args.reason, to_full=args.to_full)
            else:
                control = {
                    "rollback": admin.rollback_canary,
                    "pause": admin.pause_canary,
                    "resume": admin.resume_canary,
                    "confirm": admin.confirm_canary,
                }[args.action]
                status = await control(args.strategy, reason=args.reason)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    _print_canaries(console, f"canary after {args.action}", [status])
    return 0


# --- allocations, stats, weights -----------------------------------------------------------------


def _print_allocations(console: Console, title: str, allocations: Sequence[ops_pb2.Allocation]) -> None:
    rows = [[a.strategy_id, f"{a.fraction:.3f}", _money(a.capital_usd)] for a in allocations]
    print_table(console, title, ["strategy", "fraction", "capital usd"], rows)


async def cmd_allocations(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            response = await ops.get_allocations()
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    title = (
        f"allocations (total {_money(response.total_capital_usd)}, last reason {response.last_reason or '-'}, "
        f"updated {_timestamp(response.updated_at_unix_nanos)})"
    )
    _print_allocations(console, title, response.allocations)
    return 0


async def cmd_allocations_trigger(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        try:
            response = await admin.trigger_allocation(reason=args.reason)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    _print_allocations(console, f"allocation {response.reason}: {response.message or '-'}", response.allocations)
    return 0


def _stats_row(first: str, s: ops_pb2.ModelStats) -> list[str]:
    return [
        first,
        _mode(s.mode),
        _money(s.equity),
        _money(s.realized_pnl),
        _money(s.unrealized_pnl),
        _money(s.fees),
        _money(s.slippage),
        f"{s.sharpe:.2f}",
        f"{s.drawdown_ratio:.2%}",
        f"{s.max_drawdown_ratio:.2%}",
        f"{s.max_drawdown_usd:,.2f}",
        f"{s.hit_rate:.2f}",
        str(s.observations),
        str(s.fills),
    ]


async def cmd_stats(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            response = await ops.get_model_stats(args.model)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    # Sharpe is annualised from bars; drawdown is a fraction of peak equity, or the fall of PnL in USD.
    common = ["mode", "equity", "realized", "unrealized", "fees", "slippage", "sharpe/yr", "drawdown ratio"]
    common += ["max drawdown ratio", "max drawdown usd", "hit rate", "bars", "fills"]
    model_rows = [[s.model_id, *_stats_row(s.strategy_id, s)] for s in response.models]
    print_table(console, "models", ["model", "strategy", *common], model_rows)
    strategy_rows = [_stats_row(s.strategy_id, s) for s in response.strategies]
    print_table(console, "strategies (combined by routing weight)", ["strategy", *common], strategy_rows)
    return 0


def _parse_weights(items: Sequence[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in items:
        model, sep, value = item.partition("=")
        try:
            if not sep or not model.strip():
                raise ValueError(item)
            weights[model.strip()] = float(value)
        except ValueError:
            raise CliError(f"--set wants MODEL=WEIGHT, got {item!r}", 2) from None
    return weights


async def cmd_weights(args: argparse.Namespace, console: Console) -> int:
    weights = _parse_weights(args.weights)
    async with _admin_client(args) as admin:
        try:
            models = await admin.set_routing_weights(args.strategy, weights, reason=args.reason)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    rows = [[m.model_id, m.strategy_id, f"{m.routing_weight:.2f}", _money(m.quota_usd)] for m in models]
    print_table(console, f"routing of {args.strategy}", ["model", "strategy", "weight", "quota usd"], rows)
    return 0


# --- risk --------------------------------------------------------------------------------------


async def cmd_risk_limits(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            response = await ops.get_risk_limits()
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    print(json.dumps(json_format.MessageToDict(response.limits), indent=2, sort_keys=True))
    return 0


async def cmd_risk_state(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        try:
            response = await ops.get_trading_state()
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    kill = "ENGAGED" if response.kill_switch_engaged else "off"
    print(f"global={_trading_state(response.global_state)} kill_switch={kill}")
    rows = [[model, _trading_state(state)] for model, state in sorted(response.models.items())]
    print_table(console, "trading state per model", ["model", "state"], rows)
    return 0


async def cmd_risk_set_state(args: argparse.Namespace, console: Console) -> int:
    state = common_pb2.TradingState.Value(f"TRADING_STATE_{args.state}")
    async with _admin_client(args) as admin:
        try:
            response = await admin.set_trading_state(state, model_id=args.model, reason=args.reason)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    line = f"global={_trading_state(response.global_state)}"
    if args.model:
        line += f" {args.model}={_trading_state(response.model_state)}"
    print(line)
    return 0


async def cmd_risk_kill_switch(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        try:
            if args.switch == "engage":
                engaged = await admin.engage_kill_switch(reason=args.reason)
                line = (
                    f"kill switch engaged: canceled={engaged.canceled_count} "
                    f"resting={engaged.resting_remaining} confirmed={'yes' if engaged.cancels_confirmed else 'no'}"
                )
            else:
                state = await admin.release_kill_switch(reason=args.reason)
                line = f"kill switch released: global={_trading_state(state)}"
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    print(line)
    return 0


async def cmd_risk_reload(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        try:
            message = await admin.reload_config(admin_pb2.CONFIG_TARGET_RISK_LIMITS)
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
    print(message)
    return 0


# --- events ------------------------------------------------------------------------------------


def event_line(event: ops_pb2.Event) -> str:
    """One ops event on one line: ``seq time kind message key=value ...``."""
    attributes = " ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
    text = f"{event.seq} {_timestamp(event.at_unix_nanos)} {event.kind} {event.message}"
    return f"{text} {attributes}" if attributes else text


async def cmd_events(args: argparse.Namespace, console: Console) -> int:
    if args.count < 0:
        raise CliError("--count must be >= 0", 2)
    seen = 0
    async with _client(args) as ops:
        try:
            stream = ops.watch_events(args.kinds, include_recent=args.recent)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    print(event_line(event), flush=True)  # flushed: the stream is read line by line by pipes
                    seen += 1
                    if args.count and seen >= args.count:
                        break
        except MeshRpcError as exc:
            raise _fail(exc, args.ops) from None
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
        handler: Command = args.handler
        return asyncio.run(handler(args, console))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
