"""``python -m strategies``: run every strategy of a strategies.json concurrently.

One runner per strategy entry (one signal stream each), a combined stats snapshot written
atomically every second and at exit, graceful stop on SIGINT/SIGTERM or after ``--duration``. The strategies run on
the event loop ``NAUTILUS_EVENT_LOOP`` names, as ops and the engine do (uvloop unless it says ``asyncio``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import atomic_write_text
from nautilus_mesh.log_format import LOG_FORMATS, configure_logging, log_format_from_env
from nautilus_mesh.serving import event_loop_factory
from nautilus_mesh.span_export import span_file_max_bytes
from nautilus_mesh.tasks import cancel_and_wait
from nautilus_mesh.telemetry import MetricsServer, Tracing
from strategies.config import StrategiesConfig, build_models, load_strategies
from strategies.metrics import StrategyMetrics
from strategies.runtime import StrategyRunner, combined_snapshot

log = logging.getLogger("strategies")

STATS_INTERVAL = 1.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/demo/strategies.json", help="strategies.json path")
    parser.add_argument("--stats-file", default="var/run/strategies.json", help="combined stats snapshot (JSON)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until SIGINT/SIGTERM")
    parser.add_argument("--span-file", default="var/traces/strategies.jsonl", help="JSONL span file (no OTLP)")
    parser.add_argument("--no-tracing", action="store_true", help="disable per-message spans")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics on this port (0 = any free port); overrides metrics_port",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log_format_from_env(),
        help="json lines (with trace_id/span_id) or text, both in UTC; default $LOG_FORMAT or text",
    )
    return parser.parse_args(argv)


def build_runners(config: StrategiesConfig, tracings: dict[str, Tracing | None]) -> list[StrategyRunner]:
    """One runner per strategy entry of ``config``."""
    runners = []
    for entry in config.strategies:
        models = [(b.model_id, b.model, b.instruments) for b in build_models(entry)]
        runners.append(
            StrategyRunner(
                entry.name,
                entry.token,
                models,
                config.ops_address,
                config.engine_address,
                tracings.get(entry.name),
                config.min_target_change,
                quote_venue=config.quote_venue,
                refresh_seconds=config.refresh_seconds,
            )
        )
    return runners


def write_stats(path: Path, runners: Sequence[StrategyRunner]) -> None:
    atomic_write_text(path, json.dumps(combined_snapshot(runners), indent=2, sort_keys=True) + "\n")


async def run(config: StrategiesConfig, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tracings: dict[str, Tracing | None] = {
        entry.name: None if args.no_tracing else Tracing(f"strategy-{entry.name}", span_file=args.span_file)
        for entry in config.strategies
    }
    runners = build_runners(config, tracings)
    stats_path = Path(args.stats_file)
    metrics_port = args.metrics_port if args.metrics_port is not None else config.metrics_port
    metrics_server = None
    if metrics_port is not None:
        metrics = StrategyMetrics()
        metrics.watch(runners)
        metrics_server = MetricsServer(metrics.registry, config.metrics_host, metrics_port)

    async def report() -> None:
        while True:
            write_stats(stats_path, runners)
            await asyncio.sleep(STATS_INTERVAL)

    async def stop_after(seconds: float) -> None:
        await asyncio.sleep(seconds)
        log.info("[STRATEGIES] duration of %gs reached; stopping", seconds)
        stop.set()

    helpers = [asyncio.create_task(report())]
    if args.duration > 0:
        helpers.append(asyncio.create_task(stop_after(args.duration)))
    log.info("[STRATEGIES] starting %d strategies: %s", len(runners), ", ".join(r.name for r in runners))
    try:
        results = await asyncio.gather(*(r.run(stop) for r in runners), return_exceptions=True)
    finally:
        await cancel_and_wait(*helpers)
        write_stats(stats_path, runners)
        if metrics_server is not None:
            metrics_server.close()
        for tracing in tracings.values():
            if tracing is not None:
                tracing.shutdown()
    failed = [(r.name, res) for r, res in zip(runners, results, strict=True) if isinstance(res, BaseException)]
    for name, exc in failed:
        log.error("[STRATEGIES] runner %s failed: %r", name, exc)
    totals = combined_snapshot(runners)["totals"]
    log.info(
        "[STRATEGIES] stopped: signals=%d orders=%d fills=%d rejected=%d",
        totals["signals"],
        totals["orders"],
        totals["fills"],
        totals["rejected"],
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = load_strategies(args.config)
        loop_factory = event_loop_factory()  # NAUTILUS_EVENT_LOOP, as ops and the engine read it
        span_file_max_bytes()  # NAUTILUS_SPAN_FILE_MAX_BYTES, checked before anything starts
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    log.info("[STRATEGIES] event loop: %s", "uvloop" if loop_factory else "asyncio")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run(config, args))


if __name__ == "__main__":
    sys.exit(main())
