"""``nautilus-mesh up``: start engine, ops and the demo strategies, watch them, stop them in order.

The servers run as subprocesses of the same interpreter (``python -m engine_server``,
``python -m ops_server``, ``python -m strategies``) in their own sessions, so a Ctrl-C in the
terminal reaches only the launcher, which then stops them in dependency order: strategies
first (they close their signal streams and wait for fills), then ops, then the engine. Their
logs go to ``var/log/<name>.log`` and their pids to ``var/run/<name>.pid``.

Supervision: a child that dies is reported at once (``error: <name> exited with code N; last lines:`` and the tail of
its log) and restarted after a backoff (0.5 s, doubling up to 10 s) as long as it has been restarted fewer than
``max_restarts`` (5) times; past the limit the whole mesh stops with exit code 1. ``--no-restart`` keeps the strict
behaviour (the first death stops everything, exit 1), which tests and CI rely on.

Output contract (scripts and tests rely on it):

- once both servers report SERVING: exactly one line
  ``ready: ops=HOST:PORT engine=HOST:PORT metrics=HOST:PORT,HOST:PORT``;
- every few seconds a status table (rich on a terminal, plain text otherwise);
- at the end a summary whose last line is
  ``summary: signals=N orders=N fills=N rejected=N p50_ms=X p99_ms=Y``
  (signal-to-fill latency percentiles; orders = accepted decisions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from clients.config_dir import (
    WORKER_PORT_STRIDE,
    MeshEndpoints,
    demo_admin_token,
    demo_strategy_token,
    endpoints_from_config,
    ops_config,
    state_dirs_from_config,
)
from clients.ops_view import OpsReader, OpsView
from clients.processes import (
    MAX_RESTARTS,
    ChildSpec,
    Supervisor,
    start_process,
    stop_all,
    wait_ready,
)
from clients.strategy_stats import StatsFile, read_stats_file
from clients.traces import print_table
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.instance_lock import address_in_use, lock_holder

log = logging.getLogger(__name__)

STATUS_INTERVAL = 3.0
STATS_FILE = Path("var/run/strategies.json")


def preflight(endpoints: MeshEndpoints, state_dirs: Mapping[str, Path]) -> list[str]:
    """Why the mesh cannot start here (another instance holds a state directory or a port); [] when it can."""
    problems = [
        f"{service} already running on {directory} (pid {pid})"
        for service, directory in state_dirs.items()
        if (pid := lock_holder(directory)) is not None
    ]
    for name, address in (
        ("ops", endpoints.ops),
        ("engine", endpoints.engine),
        ("ops metrics", endpoints.ops_metrics),
        ("engine metrics", endpoints.engine_metrics),
    ):
        if address and address_in_use(address):
            problems.append(f"{name} address {address} is already in use")
    return problems


def ops_worker_specs(config_dir: str | os.PathLike[str], ops_address: str) -> list[ChildSpec]:
    """The ops processes to start: one, or with ``OPS_WORKERS`` (else ``ops_workers`` of ``ops.json``) above 1, one
    per worker at its ``worker_addresses`` entry (each told its index by ``OPS_WORKER_INDEX``), or on ports base,
    base+100, ... when ``ops.json`` names no address per worker."""
    root = Path(config_dir)
    args = ("--config", str(root / "ops.json"))
    config = ops_config(root)
    raw = os.environ.get("OPS_WORKERS", "").strip() or str(config.ops_workers if config else 1)
    workers = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    if workers == 1:
        return [ChildSpec("ops", "ops_server", args, ops_address)]
    host, port = ops_address.rsplit(":", 1)
    named = config.worker_addresses if config is not None and len(config.worker_addresses) == workers else ()
    return [
        ChildSpec(
            "ops" if i == 0 else f"ops-{i}",
            "ops_server",
            args,
            named[i] if named else f"{host}:{int(port) + WORKER_PORT_STRIDE * i}",
            env=(("OPS_WORKERS", str(workers)), ("OPS_WORKER_INDEX", str(i))),
        )
        for i in range(workers)
    ]


def sharding_problems(config_dir: str | os.PathLike[str], workers: int) -> list[str]:
    """Why ``workers`` ops workers cannot run on this config ([] when they can)."""
    config = ops_config(config_dir)
    url = config.database_url if config else ""
    if workers > 1 and url.partition(":")[0].lower() not in ("postgresql", "postgres"):
        return [
            f"OPS_WORKERS={workers} needs PostgreSQL: the workers share allocations, the kill switch and exposure "
            "through it, SQLite serves one worker. Set OPS_DATABASE_URL=postgresql://... (make run OPS_WORKERS=2 "
            "OPS_DATABASE_URL=...) or a postgresql:// database_url in ops.json; see docs/scale-out.md"
        ]
    return []


def ready_line(endpoints: MeshEndpoints) -> str:
    """The single line printed once engine and ops are SERVING."""
    return (
        f"ready: ops={endpoints.ops} engine={endpoints.engine} "
        f"metrics={endpoints.ops_metrics},{endpoints.engine_metrics}"
    )


def summary_line(stats: Mapping[str, Any]) -> str:
    """The final ``summary:`` line from a strategies stats snapshot (zeros when it is empty)."""
    totals = stats.get("totals") or {}
    fill = totals.get("fill_latency_ms") or {}
    return (
        f"summary: signals={int(totals.get('signals', 0))} orders={int(totals.get('orders', 0))} "
        f"fills={int(totals.get('fills', 0))} rejected={int(totals.get('rejected', 0))} "
        f"p50_ms={float(fill.get('p50', 0.0)):.2f} p99_ms={float(fill.get('p99', 0.0)):.2f}"
    )


def read_stats(path: Path = STATS_FILE) -> StatsFile:
    """The strategies' last stats snapshot ({} before the first one is written); see :mod:`clients.strategy_stats`."""
    return read_stats_file(path)


_COUNTS = ("signals", "orders", "fills", "rejected")
_MODEL_COUNTS = ("signals", "accepted", "fills", "rejected")


def carry_stats(earlier: StatsFile, later: StatsFile) -> StatsFile:
    """The stats of a run whose strategies process was restarted: the counts of the process before (``earlier``, as it
    last wrote them) added to those of the one after (``later``), elapsed time too, so the summary and the table count
    the whole run. Latency percentiles cannot be added up: they stay the latest process's."""
    before: dict[str, Any] = dict(earlier.get("totals") or {})
    if not before:
        return later
    after: dict[str, Any] = dict(later.get("totals") or {})
    merged: dict[str, Any] = dict(later)
    if not after:
        merged["totals"] = before
    else:
        for key in _COUNTS:
            after[key] = int(before.get(key, 0)) + int(after.get(key, 0))
        elapsed = float(before.get("elapsed_s", 0.0)) + float(after.get("elapsed_s", 0.0))
        after["elapsed_s"] = elapsed
        after["signals_per_s"] = after["signals"] / elapsed if elapsed > 0 else 0.0
        merged["totals"] = after
    models: dict[str, dict[str, Any]] = {name: dict(counts) for name, counts in (later.get("models") or {}).items()}
    for name, model in (earlier.get("models") or {}).items():
        counts: dict[str, Any] = dict(model)
        mine = models.setdefault(name, {key: 0 for key in _MODEL_COUNTS} | {"decisions": {}})
        for key in _MODEL_COUNTS:
            mine[key] = int(mine.get(key, 0)) + int(counts.get(key, 0))
        decisions = dict(mine.get("decisions") or {})
        for status, n in counts.get("decisions", {}).items():
            decisions[status] = decisions.get(status, 0) + n
        mine["decisions"] = decisions
    merged["models"] = models
    return cast(StatsFile, merged)


# --- status table ----------------------------------------------------------------------------

MIN_BARS_SHOWN = 30
"""Bars (of ops' ``stats_bar_seconds``) before a table shows a Sharpe ratio when ops does not say (an ops that
predates ``ModelStats.min_bars``); otherwise ops' ``stats_min_bars`` decides."""


def sharpe_cell(s: ops_pb2.ModelStats | None) -> str:
    """The annualised Sharpe ratio for a table, or "-" while it rests on fewer bars than ops' ``stats_min_bars``.

    An annualised Sharpe ratio from ``n`` bars has a standard error of about ``sqrt(bars per year / n)``: from a few
    minutes of data it is noise of thousands, so a table shows none rather than a number that means nothing.
    """
    if s is None or s.observations < (s.min_bars or MIN_BARS_SHOWN):
        return "-"
    return f"{s.sharpe:.2f}"


def _money(text: str) -> str:
    try:
        return f"{Decimal(text):,.2f}"
    except (InvalidOperation, ValueError):
        return text or "-"


def _count(counts: Mapping[str, Any], key: str, known: bool = True) -> str:
    """A strategy-side count, or ``-`` while the stats file has no figure for it yet (not a misleading 0)."""
    value = counts.get(key)
    return "-" if value is None or not known else str(int(value))


def _counted_models(stats: Mapping[str, Any]) -> set[str]:
    """Models whose strategy-side counts are figures: their strategy's snapshot was taken while it was connected to
    ops, or after it sent a signal. The first snapshot is written before the strategy connects, so its zeros say
    nothing yet, while ops may already report fills of signals sent since."""
    known: set[str] = set()
    for snap in (stats.get("strategies") or {}).values():
        if (snap.get("connected") or {}).get("ops") or snap.get("signals"):
            known.update(snap.get("models") or {})
    return known


def print_status(console: Console, view: OpsView, stats: Mapping[str, Any]) -> None:
    """The periodic status: per model and per strategy service."""
    model_stats: Mapping[str, Any] = stats.get("models") or {}
    names = [m.model_id for m in view.models] or sorted(model_stats)
    info = {m.model_id: m for m in view.models}
    counted = _counted_models(stats)
    sharded = bool(view.owners)
    rows = []
    for model_id in names:
        counts = model_stats.get(model_id) or {}
        m = info.get(model_id)
        s = view.stats.get(model_id)
        rows.append(
            [
                model_id,
                *([str(view.owners.get(model_id, "-"))] if sharded else []),
                ops_pb2.RoutingMode.Name(m.mode).removeprefix("ROUTING_MODE_") if m else "-",
                _count(counts, "signals", model_id in counted),
                _count(counts, "accepted", model_id in counted),
                str(s.fills) if s else _count(counts, "fills", model_id in counted),
                view.positions.get(model_id, "flat"),
                _money(s.equity) if s else "-",
                sharpe_cell(s),
                str(s.observations) if s else "-",
                f"{s.drawdown_ratio:.2%}" if s else "-",
                f"{m.routing_weight:.2f} / {_money(m.quota_usd)}" if m else "-",
            ]
        )
    # Sharpe annualised from the bars of ops' stats_bar_seconds ("-" below stats_min_bars); drawdown of peak equity.
    # Several ops workers: "worker" is the one owning the model's strategy, whose figures the row shows.
    headers = ["model", *(["worker"] if sharded else []), "mode", "signals", "orders", "fills", "position", "pnl"]
    headers += ["sharpe/yr", "bars", "drawdown ratio", "weight / quota usd"]
    print_table(console, f"models ({time.strftime('%H:%M:%S')})", headers, rows)
    service_rows = []
    for name, snap in sorted((stats.get("strategies") or {}).items()):
        decision = snap.get("decision_latency_ms") or {}
        fill = snap.get("fill_latency_ms") or {}
        service_rows.append(
            [
                f"strategy-{name}",
                f"{snap.get('signals_per_s', 0.0):.1f}",
                f"{decision.get('p50', 0.0):.2f} / {decision.get('p99', 0.0):.2f}",
                f"{fill.get('p50', 0.0):.2f} / {fill.get('p99', 0.0):.2f}",
                str(snap.get("rejected", 0)),
            ]
        )
    if service_rows:
        headers = ["service", "signals/s", "decision p50/p99 ms", "fill p50/p99 ms", "rejected"]
        print_table(console, "services", headers, service_rows)
    if view.allocations is not None:
        alloc_rows = [[a.strategy_id, f"{a.fraction:.3f}", _money(a.capital_usd)] for a in view.allocations.allocations]
        title = (
            f"allocations (total {_money(view.allocations.total_capital_usd)}, {view.allocations.last_reason or '-'})"
        )
        print_table(console, title, ["strategy", "fraction", "capital usd"], alloc_rows)
    if view.error:
        print(f"ops query failed: {view.error}", flush=True)


def _forget_stats() -> None:
    # The summary must describe this run only, not a stats file left by the previous one.
    STATS_FILE.unlink(missing_ok=True)


# --- the mesh --------------------------------------------------------------------------------


async def run_mesh(
    config_dir: str | os.PathLike[str],
    duration: float,
    with_strategies: bool = True,
    *,
    console: Console | None = None,
    status_interval: float = STATUS_INTERVAL,
    restart: bool = True,
    max_restarts: int = MAX_RESTARTS,
) -> int:
    """Run engine, ops and (optionally) the strategies until ``duration`` seconds pass (0 = Ctrl-C).

    Args:
        restart: restart a child that dies (backoff, at most ``max_restarts`` times each); False stops everything.

    Returns:
        0 on a clean run; 1 when a service failed to start, or died (past the restart limit, or with restart off);
        2 when a config file is missing or invalid, or another mesh holds the state directories or the ports (checked
        before any log or stats file is touched).
    """
    console = console or Console()
    root = Path(config_dir)
    needed = ["engine.json", "ops.json", *(["strategies.json"] if with_strategies else [])]
    missing = [root / name for name in needed if not (root / name).is_file()]
    if missing:  # the services would each die on it; say so once, before anything starts
        for path in missing:
            print(f"error: config file not found: {path}", file=sys.stderr, flush=True)
        return 2
    endpoints = endpoints_from_config(root)
    ops_specs = ops_worker_specs(root, endpoints.ops)
    problems = preflight(endpoints, state_dirs_from_config(root)) + sharding_problems(root, len(ops_specs))
    if problems:
        for problem in problems:
            log.error("[LAUNCHER] %s", problem)
            print(f"error: {problem}", file=sys.stderr, flush=True)
        return 2
    token = demo_strategy_token(root)
    _forget_stats()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    specs = {
        "engine": ChildSpec("engine", "engine_server", ("--config", str(root / "engine.json")), endpoints.engine),
        **{spec.name: spec for spec in ops_specs},
        "strategies": ChildSpec(
            "strategies", "strategies", ("--config", str(root / "strategies.json"), "--stats-file", str(STATS_FILE))
        ),
    }
    engine = await start_process("engine", "engine_server", specs["engine"].args)
    workers = [await start_process(s.name, s.module, s.args, extra_env=s.env) for s in ops_specs]
    procs = [*workers, engine]  # stop order
    failures = await asyncio.gather(
        wait_ready(engine, endpoints.engine),
        *(wait_ready(proc, spec.address or endpoints.ops) for proc, spec in zip(workers, ops_specs, strict=True)),
    )
    for proc, failure in zip((engine, *workers), failures, strict=True):
        if failure:
            print(f"error: {failure}; last lines of {proc.log_path}:", file=sys.stderr)
            print(proc.log_tail(), file=sys.stderr, flush=True)
    if any(failures):
        await stop_all(procs)
        return 1

    if with_strategies:
        strategies = await start_process("strategies", "strategies", specs["strategies"].args)
        procs.insert(0, strategies)
    if len(ops_specs) > 1:
        print("ops workers: " + " ".join(f"{spec.name}={spec.address}" for spec in ops_specs), flush=True)
    print(ready_line(endpoints), flush=True)

    exit_code = 0
    deadline = time.monotonic() + duration if duration > 0 else None
    # The status table shows every model: read with the operator's token when the config has one.
    # Every ops worker is read (through the shard map): each model's row comes from the worker owning it.
    client = OpsReader(endpoints.ops, strategy_token=token, admin_token=demo_admin_token(root), timeout=2.0)
    supervisor = Supervisor(procs, specs, max_restarts)
    next_status = time.monotonic() + status_interval
    carried: StatsFile = {}  # what strategies processes that died counted (the run's summary counts them too)
    try:
        while not stop.is_set():
            wait = next_status - time.monotonic()
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if deadline - time.monotonic() <= 0:
                    break
            dead = await supervisor.wait_for_death(stop, wait)
            if stop.is_set():
                break
            if dead:
                for proc in dead:
                    print(f"error: {proc.name} exited with code {proc.process.returncode}; last lines:", flush=True)
                    print(proc.log_tail(), flush=True)
                    log.error("[LAUNCHER] %s exited with code %s", proc.name, proc.process.returncode)
                    if proc.name == "strategies":  # its restart starts counting at zero: keep what it counted so far
                        carried = carry_stats(carried, read_stats())
                        _forget_stats()
                if not restart or not all([await supervisor.restart(proc, stop) for proc in dead]):
                    exit_code = 1
                    break
                continue
            if time.monotonic() < next_status:
                continue
            next_status = time.monotonic() + status_interval
            if not stop.is_set():
                print_status(console, await client.view(), carry_stats(carried, read_stats()))
    finally:
        await client.close()
        await stop_all(supervisor.procs)

    stats = carry_stats(carried, read_stats())
    totals = stats.get("totals")
    if totals:
        decision = totals["decision_latency_ms"]
        print(
            f"signals/s={totals.get('signals_per_s', 0.0):.1f} over {totals.get('elapsed_s', 0.0):.1f}s; "
            f"decision latency p50={decision.get('p50', 0.0):.2f}ms p99={decision.get('p99', 0.0):.2f}ms"
        )
    print(summary_line(stats), flush=True)
    return exit_code
