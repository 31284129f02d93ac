"""What each ``nautilus-mesh`` command does: token resolution, the clients, and one handler per command.

Handlers print with rich and return the exit code; a failed ops call raises ``MeshRpcError``, which
:func:`clients.cli.main` maps to a message and an exit code in one place (:func:`rpc_failure`).
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
from typing import Any

from google.protobuf import json_format
from rich.console import Console

from clients.config_dir import demo_admin_token, demo_engine_token, demo_strategy_token
from clients.launcher import sharpe_cell
from clients.ops_view import OpsReader
from clients.sdk import EngineClient, MeshRpcError, OpsAdminClient, OpsClient
from clients.traces import print_table
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.ops.v1 import admin_pb2, ops_pb2
from nautilus_mesh.health import health_name
from nautilus_mesh.healthcheck import probe

DEFAULT_OPS = "127.0.0.1:50051"
DEFAULT_ENGINE = "127.0.0.1:50052"
DEFAULT_CONFIG_DIR = "config/demo"
TOKEN_ENV = "NAUTILUS_STRATEGY_TOKEN"  # noqa: S105  an environment variable's name, not a token
ADMIN_TOKEN_ENV = "NAUTILUS_ADMIN_TOKEN"  # noqa: S105  an environment variable's name, not a token
ENGINE_TOKEN_ENV = "NAUTILUS_ENGINE_TOKEN"  # noqa: S105  an environment variable's name, not a token
CLI_TIMEOUT = 5.0
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED")
CANARY_ACTIONS = ("promote", "rollback", "pause", "resume", "confirm")

Command = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]


class CliError(Exception):
    """A user-facing failure: a one-line message and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_token(
    explicit: str | None,
    env: Mapping[str, str],
    config_dir: str | os.PathLike[str] = DEFAULT_CONFIG_DIR,
    model: str = "",
) -> str | None:
    """``--token``, else ``$NAUTILUS_STRATEGY_TOKEN``, else a strategy token of ``<config_dir>/ops.json``: the one
    bound to ``model`` when given (``signal --model``), else the first."""
    return explicit or env.get(TOKEN_ENV) or demo_strategy_token(config_dir, model)


def resolve_admin_token(
    explicit: str | None, env: Mapping[str, str], config_dir: str | os.PathLike[str] = DEFAULT_CONFIG_DIR
) -> str | None:
    """``--admin-token``, else ``$NAUTILUS_ADMIN_TOKEN``, else ``admin_token`` of ``<config_dir>/ops.json``."""
    return explicit or env.get(ADMIN_TOKEN_ENV) or demo_admin_token(config_dir)


def rpc_failure(exc: MeshRpcError, address: str, service: str = "ops") -> CliError:
    if exc.unreachable:
        return CliError(f"{service} not reachable at {address}", 2)
    text = f"{exc.code.name}: {exc.message}"
    if exc.detail is not None and exc.detail.code:
        details = " ".join(f"{k}={v}" for k, v in sorted(exc.detail.details.items()))
        text = f"{exc.code.name} {exc.detail.code}: {exc.detail.message}" + (f" ({details})" if details else "")
    return CliError(text, 1)


def _money(text: str) -> str:
    """A USD amount (PnL, fees, capital) to the cent, grouped by thousands."""
    try:
        return f"{Decimal(text):,.2f}"
    except (InvalidOperation, ValueError):
        return text or "-"


def _price(text: str) -> str:
    """A price as ops sends it (an average cost at the instrument's tick, a mark at the venue's), every digit kept and
    grouped by thousands: rounding it to the cent would show 0.08 for 0.07995."""
    try:
        return f"{Decimal(text):,f}"
    except (InvalidOperation, ValueError):
        return text or "-"


def _mode(mode: ops_pb2.RoutingMode.ValueType) -> str:
    return ops_pb2.RoutingMode.Name(mode).removeprefix("ROUTING_MODE_")


def _client(args: argparse.Namespace, model: str = "") -> OpsClient:
    token = resolve_token(args.token, os.environ, args.config_dir, model)
    if not token:
        raise CliError(f"no strategy token: pass --token or set {TOKEN_ENV}", 2)
    admin = resolve_admin_token(args.admin_token, os.environ, args.config_dir)
    return OpsClient(args.ops, strategy_token=token, admin_token=admin, timeout=CLI_TIMEOUT)


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
    """Every model's row from the ops worker owning it: ``--ops`` names any worker, the shard map the rest."""
    token = resolve_token(args.token, os.environ, args.config_dir)
    if not token:
        raise CliError(f"no strategy token: pass --token or set {TOKEN_ENV}", 2)
    admin = resolve_admin_token(args.admin_token, os.environ, args.config_dir)
    async with OpsReader(args.ops, strategy_token=token, admin_token=admin, timeout=CLI_TIMEOUT) as reader:
        view, failure = await reader.collect()
    if failure is not None and not view.models:  # no worker answered
        raise failure
    sharded = bool(view.owners)
    rows = []
    for m in view.models:
        s = view.stats.get(m.model_id)
        state = common_pb2.TradingState.Name(m.trading_state).removeprefix("TRADING_STATE_")
        rows.append(
            [
                m.model_id,
                m.strategy_id,
                *([str(view.owners.get(m.model_id, "-"))] if sharded else []),
                _mode(m.mode),
                f"{m.routing_weight:.2f}",
                _money(m.quota_usd),
                state,
                str(s.fills) if s else "0",
                view.positions.get(m.model_id, "flat"),
                _money(s.equity) if s else "-",
                sharpe_cell(s),
                str(s.observations) if s else "-",
            ]
        )
    headers = ["model", "strategy", *(["worker"] if sharded else []), "mode", "weight", "quota usd", "state"]
    headers += ["fills", "position", "pnl", "sharpe/yr", "bars"]  # "-" for Sharpe below ops' stats_min_bars
    print_table(console, f"models ({view.workers} ops workers)" if sharded else "models", headers, rows)
    allocations = view.allocations or ops_pb2.GetAllocationsResponse()
    alloc_rows = [[a.strategy_id, f"{a.fraction:.3f}", _money(a.capital_usd)] for a in allocations.allocations]
    title = f"allocations (total {_money(allocations.total_capital_usd)}, last {allocations.last_reason or '-'})"
    print_table(console, title, ["strategy", "fraction", "capital usd"], alloc_rows)
    if view.error:  # a worker did not answer: its models are listed without figures
        print(f"error: {view.error}", file=sys.stderr)
        return 1
    return 0


async def cmd_positions(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        positions = await ops.get_positions(args.model)
    rows = [
        [
            p.model_id,
            p.instrument,
            _mode(p.mode),
            p.quantity,
            _price(p.avg_cost),
            _price(p.mark),
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
    async with _client(args, model=args.model) as ops:  # the demo token of the strategy that owns the model
        decision = await ops.submit_signal(signal)
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
            (c.backtest.status + (" (required)" if c.backtest.required else "")) if c.HasField("backtest") else "-",
        ]
        for c in canaries
    ]
    headers = ["strategy", "canary", "state", "step", "schedule", "weights", "failed", "inconclusive", "last check"]
    headers += ["DSR", "backtest"]
    print_table(console, title, headers, rows)
    for c in canaries:
        if c.last_check.outcome:
            check = c.last_check
            rows = [["outcome", check.outcome], ["at", _timestamp(check.at_unix_nanos)]]
            rows += [[name, _number(value)] for name, value in sorted(check.statistics.items())]
            print_table(console, f"last check of {c.strategy_id}", ["statistic", "value"], rows)
        if c.HasField("backtest"):
            b = c.backtest
            rows = [["report", b.report or "-"], ["status", b.status], ["required", "yes" if b.required else "no"]]
            rows += [["Sharpe (annualised)", _number(b.sharpe_annual) if b.HasField("sharpe_annual") else "-"]]
            rows += [
                ["max drawdown (ratio)", _number(b.max_drawdown_ratio) if b.HasField("max_drawdown_ratio") else "-"]
            ]
            rows += [["PnL (USD)", b.pnl_usd or "-"], ["note", b.note]]
            print_table(console, f"backtest of {c.canary_model}", ["figure", "value"], rows)


async def cmd_canary_status(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        canaries = await ops.get_canary_status(args.strategy)
    _print_canaries(console, "canaries", canaries)
    return 0


async def cmd_canary_control(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
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
    _print_canaries(console, f"canary after {args.action}", [status])
    return 0


# --- allocations, stats, weights -----------------------------------------------------------------


def _print_allocations(console: Console, title: str, allocations: Sequence[ops_pb2.Allocation]) -> None:
    rows = [[a.strategy_id, f"{a.fraction:.3f}", _money(a.capital_usd)] for a in allocations]
    print_table(console, title, ["strategy", "fraction", "capital usd"], rows)


async def cmd_allocations(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        response = await ops.get_allocations()
    title = (
        f"allocations (total {_money(response.total_capital_usd)}, last reason {response.last_reason or '-'}, "
        f"updated {_timestamp(response.updated_at_unix_nanos)})"
    )
    _print_allocations(console, title, response.allocations)
    return 0


async def cmd_allocations_trigger(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        response = await admin.trigger_allocation(reason=args.reason)
    title = f"allocation {response.reason}: {response.message or '-'}"
    if response.cycle_id:  # several ops workers: the allocator leader ran it for every worker
        title += f" (cycle {response.cycle_id}, run by ops worker {response.leader_worker_index})"
    _print_allocations(console, title, response.allocations)
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
        sharpe_cell(s),
        f"{s.drawdown_ratio:.2%}",
        f"{s.max_drawdown_ratio:.2%}",
        f"{s.max_drawdown_usd:,.2f}",
        f"{s.hit_rate:.2f}",
        str(s.observations),
        str(s.fills),
    ]


async def cmd_stats(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        response = await ops.get_model_stats(args.model)
    # Sharpe is annualised from bars; drawdown is a fraction of peak equity, or the fall of PnL in USD.
    # "pnl" is ModelStats.equity: realized + unrealized - fees, without the capital base (as `status` heads it).
    common = ["mode", "pnl", "realized", "unrealized", "fees", "slippage", "sharpe/yr", "drawdown ratio"]
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
        models = await admin.set_routing_weights(args.strategy, weights, reason=args.reason)
    rows = [[m.model_id, m.strategy_id, f"{m.routing_weight:.2f}", _money(m.quota_usd)] for m in models]
    print_table(console, f"routing of {args.strategy}", ["model", "strategy", "weight", "quota usd"], rows)
    return 0


# --- risk --------------------------------------------------------------------------------------


async def cmd_risk_limits(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        response = await ops.get_risk_limits()
    print(json.dumps(json_format.MessageToDict(response.limits), indent=2, sort_keys=True))
    return 0


async def cmd_risk_state(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as ops:
        response = await ops.get_trading_state()
    kill = "ENGAGED" if response.kill_switch_engaged else "off"
    print(f"global={_trading_state(response.global_state)} kill_switch={kill}")
    rows = [[model, _trading_state(state)] for model, state in sorted(response.models.items())]
    print_table(console, "trading state per model", ["model", "state"], rows)
    return 0


async def cmd_risk_set_state(args: argparse.Namespace, console: Console) -> int:
    state = common_pb2.TradingState.Value(f"TRADING_STATE_{args.state}")
    async with _admin_client(args) as admin:
        response = await admin.set_trading_state(state, model_id=args.model, reason=args.reason)
    line = f"global={_trading_state(response.global_state)}"
    if args.model:
        line += f" {args.model}={_trading_state(response.model_state)}"
    print(line)
    return 0


async def cmd_risk_kill_switch(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        if args.switch == "engage":
            engaged = await admin.engage_kill_switch(reason=args.reason)
            line = (
                f"kill switch engaged: canceled={engaged.canceled_count} "
                f"resting={engaged.resting_remaining} confirmed={'yes' if engaged.cancels_confirmed else 'no'}"
            )
        else:
            state = await admin.release_kill_switch(reason=args.reason)
            line = f"kill switch released: global={_trading_state(state)}"
    print(line)
    return 0


async def cmd_risk_reload(args: argparse.Namespace, console: Console) -> int:
    async with _admin_client(args) as admin:
        message = await admin.reload_config(admin_pb2.CONFIG_TARGET_RISK_LIMITS)
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
    kinds = [kind.strip().upper() for kind in args.kinds]  # kinds are upper case: `--kind canary` is CANARY
    if kinds:  # a kind no event has matches nothing: say what is awaited, so a typo is seen
        print(f"events of kind {', '.join(kinds)} (Ctrl-C stops)", file=sys.stderr, flush=True)
    async with _client(args) as ops:
        stream = ops.watch_events(kinds, include_recent=args.recent)
        async with contextlib.aclosing(stream):
            async for event in stream:
                print(event_line(event), flush=True)  # flushed: the stream is read line by line by pipes
                seen += 1
                if args.count and seen >= args.count:
                    break
    return 0


def _health_rows(checks: Sequence[common_pb2.HealthCheck], source: str) -> list[list[str]]:
    return [[source, c.name, health_name(c.status), f"{c.age_seconds:.1f}", c.detail] for c in checks]


async def cmd_health(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when everything is HEALTHY, 1 when DEGRADED or UNHEALTHY (or, with --probe, not SERVING)."""
    if args.probe:
        return await asyncio.to_thread(probe, args.ops, args.service, CLI_TIMEOUT)
    async with _admin_client(args) as admin:
        response = await admin.get_health()
    rows = _health_rows(response.checks, "ops")
    worst = response.status
    print(f"ops: {health_name(response.status)}")
    if args.engine:
        token = args.engine_token or os.environ.get(ENGINE_TOKEN_ENV) or demo_engine_token(args.config_dir)
        async with EngineClient(args.engine, engine_token=token, timeout=CLI_TIMEOUT) as engine:
            try:
                engine_health = await engine.get_health()
            except MeshRpcError as exc:  # ops' checks still say what they see of the engine: print them first
                print_table(console, "health checks", ["service", "check", "status", "age_s", "detail"], rows)
                raise rpc_failure(exc, args.engine, "engine") from None
        rows += _health_rows(engine_health.checks, "engine")
        worst = max(worst, engine_health.status)
        print(f"engine: {health_name(engine_health.status)}")
    print_table(console, "health checks", ["service", "check", "status", "age_s", "detail"], rows)
    return 0 if worst == common_pb2.HEALTH_STATUS_HEALTHY else 1
