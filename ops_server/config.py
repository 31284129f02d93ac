"""The ops service's configuration (one JSON file, validated; secrets never logged)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pydantic

from nautilus_mesh.config import Secret, SentSecret, StrictModel, load_config
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.tls import ClientTls, ServerTls


class StrategyAccess(StrictModel):
    token: Secret = pydantic.Field(repr=False)
    """The strategy's token (sent as ``x-strategy-token``): plain, ``sha256:<hex>``, ``env:NAME`` or
    ``file:PATH``. Empty disables the strategy."""
    models: tuple[str, ...]
    """Models this token may signal for."""
    intake_signals_per_second: float | None = pydantic.Field(None, gt=0)
    """This strategy's own signal rate at intake, signals per second, in place of the top-level
    ``intake_signals_per_second`` (None: the top-level one)."""
    intake_burst: int | None = pydantic.Field(None, gt=0)
    """This strategy's own burst under its rate, in place of the top-level ``intake_burst`` (count of signals; None:
    the top-level one, else one second's worth of its rate)."""


class OpsConfig(StrictModel):
    host: str = "127.0.0.1"
    """Address the gRPC server binds (OpsService, OpsAdminService, health, reflection)."""
    port: int = pydantic.Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (tests)."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus /metrics server binds."""
    metrics_port: int | None = pydantic.Field(8002, ge=0, le=65535)
    """Port of /metrics; None disables it."""
    engine_address: str = "127.0.0.1:50052"
    """host:port of the engine ops dials for orders, reports and quotes."""
    engine_token: SentSecret = pydantic.Field("", repr=False)
    """Sent to the engine as ``x-engine-token``: plain, ``env:NAME`` or ``file:PATH``."""
    admin_token: Secret = pydantic.Field("", repr=False)
    """Required as ``x-ops-token`` by OpsAdminService: plain, ``sha256:<hex>``, ``env:NAME`` or ``file:PATH``;
    empty disables admin entirely."""
    strategies: dict[str, StrategyAccess] = {}
    """Strategy name -> its token and the models it may signal for."""
    registry_path: Path
    """The model registry file (strategies, models, weights, canaries); ops keeps a working copy in ``state_dir``."""
    capital_policy_path: Path
    """The capital allocator's policy file."""
    risk_limits_path: Path
    """The risk limits file (ops does not trade without risk limits)."""
    state_dir: Path = Path("var/ops")
    """Folder of the journal, audit log, registry working copy, SQLite state store and the instance lock."""
    database_url: str = pydantic.Field("", repr=False)
    """Where ops keeps its state: "" = the SQLite file ``<state_dir>/state.db``; ``sqlite:///<path>`` for another
    SQLite file; ``postgresql://user:password@host:port/db`` for PostgreSQL (schema ``nautilus``, or
    ``?schema=<name>``). May carry a password: never logged."""
    ops_workers: int = pydantic.Field(1, ge=1, le=64)
    """How many ops workers share the strategies, each its own process (count; env ``OPS_WORKERS`` overrides it).
    More than one needs a PostgreSQL ``database_url`` (see docs/scale-out.md); 1 is today's single ops."""
    worker_index: int = pydantic.Field(0, ge=0)
    """This worker's index, 0 .. ``ops_workers``-1 (env ``OPS_WORKER_INDEX`` overrides it)."""
    worker_addresses: tuple[str, ...] = ()
    """host:port of every worker, by index; empty derives them as ``host``:``port`` + 100 x i (the launcher's
    layout)."""
    shard_map: dict[str, int] = {}
    """Strategy -> worker index, for strategies placed by hand; the others go to sha256(name) mod ``ops_workers``. A
    name the registry does not have is refused at start (``UNKNOWN_STRATEGY``)."""
    coordination_interval_seconds: float = pydantic.Field(0.2, gt=0, le=1.0)
    """How often a worker of several polls the store for the shared state (kill switch, global trading state,
    allocations, the other workers' exposure) and writes its own, seconds."""
    account: str = "main"
    """Engine account the live orders are booked on."""
    live_venue: str = "sim"
    """Engine venue the LIVE models' orders go to."""
    paper_venue: str = "paper"
    """Engine venue the SHADOW models' (and paper twins') orders go to; it has no path to a live venue."""
    shadow_capital_usd: Decimal = pydantic.Field(Decimal(100_000), gt=0)
    """Paper capital a SHADOW model is sized on."""
    sample_interval_seconds: float = pydantic.Field(1.0, gt=0)
    """How often equity is sampled into the return series, seconds."""
    stats_bar_seconds: float = pydantic.Field(60.0, gt=0)
    """Horizon the sampled returns are summed to before the Sharpe ratio and hit rate shown in metrics, ``stats``
    and ``GetModelStats`` (annualised from these bars), seconds; rounded to a whole number of samples."""
    stats_min_bars: int = pydantic.Field(30, ge=2)
    """Bars (of ``stats_bar_seconds``) a Sharpe ratio needs before metrics, ``stats``, ``status`` and
    ``GetModelStats`` report it (count); below it the Sharpe ratio is 0 in metrics and ``GetModelStats`` and "-" in
    tables. An annualised Sharpe ratio from ``n`` bars has a standard error of about ``sqrt(bars per year / n)``."""
    allocation_interval_seconds: float = pydantic.Field(10.0, gt=0)
    """How often the capital allocator runs a cycle (its cooldown still applies)."""
    canary_interval_seconds: float = pydantic.Field(2.0, gt=0)
    """How often the canary controller evaluates its checks and guards, seconds."""
    canary_window_samples: int = pydantic.Field(86_400, ge=100)
    """Most samples of each canary return series a check reads and the state store keeps (count; a day at 1 s
    sampling; memory trims its list once it holds a tenth more). Samples before the current step and the live track
    record are dropped anyway; a step or track record longer than this is judged on its most recent
    ``canary_window_samples`` samples."""
    max_signals_per_frame: int = pydantic.Field(1000, gt=0)
    """Most signals one StreamSignals frame may carry (count); a larger frame gets one ``FRAME_TOO_LARGE`` rejection."""
    signal_id_max_length: int = pydantic.Field(128, gt=0)
    """Longest ``signal_id`` (and instrument) accepted, in characters."""
    intake_signals_per_second: float | None = pydantic.Field(None, gt=0)
    """Signals per second each strategy may send (all its streams and SubmitSignal together, a token bucket per
    strategy; a strategy's own ``intake_signals_per_second`` in ``strategies`` overrides it). The excess is answered
    in-band ``REJECTED`` with code ``RATE_LIMITED`` (rail ``intake``) without being decided, counted in
    ``intake_rejections_total{strategy}`` and logged at most once per 10 s per strategy. None: no limit."""
    intake_burst: int | None = pydantic.Field(None, gt=0)
    """Signals a strategy may send back to back under ``intake_signals_per_second`` (count; default: one second's
    worth)."""
    stream_max_pending_answers: int = pydantic.Field(2_000, gt=0)
    """Answers (decisions and fills) of one signal stream waiting to be sent at which ops pauses the stream: none of
    its signals is read or decided until half of them are sent (count). A strategy that does not read its answers
    is paused once its HTTP/2 receive window is full as well (64 KiB, or up to 4 MiB when its gRPC client probes
    the bandwidth-delay product, the default)."""
    stream_backlog_share: float = pydantic.Field(0.1, gt=0, le=1)
    """Fraction of ops' deciding time (0-1] that the signal streams with a backlog get, together, while another
    strategy's stream without a backlog is active (a frame of it decided in the last second): a strategy flooding
    ops is held back to this share while a neighbour trades, whether or not it reads its answers; the neighbour's
    frames never wait for it. A stream alone, or streams that all have a backlog, are not held back. 1: never."""
    journal_fsync: Literal["never", "batch", "always"] = "never"
    """Durability of ops' journal (``<state_dir>/journal.bin``), one write per frame in every case: ``never``
    survives a process crash (kill -9), ``batch`` adds one fsync per frame and survives power loss, ``always``
    fsyncs every record."""
    journal_segment_bytes: int = pydantic.Field(64 * 1024 * 1024, ge=1024)
    """Size at which ops closes the journal segment being written, bytes (checked every
    ``sample_interval_seconds``): a snapshot of what the closed segments rebuild goes to ``journal.snapshot.json``
    beside the journal and they are deleted, so the journal on disk stays within about two segments and a restart
    replays only what follows."""
    dedup_window: int = pydantic.Field(200_000, gt=0)
    """Strategies' signal ids remembered for duplicate detection (per process; older ids fall out). A paper twin's
    decision, journaled with its order, takes no place in it: while a shadow canary runs, the window still holds this
    many of the strategies' signals."""
    order_history: int = pydantic.Field(100_000, gt=0)
    """Orders and fills kept in memory for ``ListOrders``/``ListFills`` (count each); finished orders beyond it leave
    memory, oldest finished first (open orders always stay), for the on-disk archive (``order_archive``)."""
    order_archive: int | None = pydantic.Field(1_000_000, gt=0)
    """Orders and fills that left memory kept on disk for ``ListOrders``/``ListFills`` (count each; ``history.db`` in
    ``state_dir``, about 300 bytes each with its indexes: ~600 MB at the default); older ones are deleted and no
    longer listed. None keeps none."""
    tracing: bool = True
    """Record spans; False makes every span a no-op."""
    span_file: Path | None = None
    """JSONL span file when no OTLP endpoint is set; None is ``var/traces/ops.jsonl``."""
    tls: ServerTls | None = None
    """Certificate paths of the ops server (``client_ca_file`` makes clients present certificates). None serves
    plaintext, the loopback default."""
    engine_tls: ClientTls | None = None
    """How ops checks the engine's certificate (``ca_file``) and proves itself to it (``cert_file``/``key_file``,
    mutual TLS). None dials the engine in plaintext."""


def load_ops_config(path: str | os.PathLike[str]) -> OpsConfig:
    """Load the ops config; the relative paths of the registry, capital policy and risk limits files are resolved
    against the file's folder (``state_dir``, ``span_file`` and TLS files against the working directory).

    ``OPS_DATABASE_URL``, ``OPS_WORKERS`` and ``OPS_WORKER_INDEX`` override ``database_url``, ``ops_workers`` and
    ``worker_index``; a worker of several then gets its own port, metrics port and state folder (see
    :func:`env_workers`)."""
    config = load_config(OpsConfig, path)
    config = env_workers(config)
    base = Path(path).resolve().parent

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    return config.model_copy(
        update={
            "registry_path": resolve(config.registry_path),
            "capital_policy_path": resolve(config.capital_policy_path),
            "risk_limits_path": resolve(config.risk_limits_path),
        }
    )


WORKER_PORT_STRIDE = 100
"""Worker ``i`` of several serves gRPC on ``port + 100 * i`` (50051, 50151, ... in the demo, clear of the engine's
50052) and /metrics on ``metrics_port + 100 * i`` (8002, 8102, ..., clear of the engine's 8003)."""
WORKER_METRICS_STRIDE = WORKER_PORT_STRIDE


def env_workers(config: OpsConfig) -> OpsConfig:
    """``config`` with ``OPS_DATABASE_URL``, ``OPS_WORKERS`` and ``OPS_WORKER_INDEX`` applied and, for a worker of
    several, its own port (base + 100 x index, unless ``worker_addresses`` names it), metrics port (base + 100 x
    index: both clear of the engine's ports, next to ops' in the demo) and state folder
    (``<state_dir>/worker-<index>``)."""
    updates: dict[str, object] = {}
    database_url = os.environ.get("OPS_DATABASE_URL", "").strip()
    if database_url:  # e.g. `make run OPS_WORKERS=2 OPS_DATABASE_URL=postgresql://...` on the SQLite demo config
        updates["database_url"] = database_url
    for name, field in (("OPS_WORKERS", "ops_workers"), ("OPS_WORKER_INDEX", "worker_index")):
        raw = os.environ.get(name, "").strip()
        if raw:
            if not raw.isdigit() or (field == "ops_workers" and not 1 <= int(raw) <= 64):
                raise ConfigError(f"{name} must be a whole number (ops_workers 1..64), got {raw!r}")
            updates[field] = int(raw)
    config = config.model_copy(update=updates)
    if config.ops_workers == 1:
        return config
    index = config.worker_index
    addresses = config.worker_addresses or tuple(
        f"{config.host}:{config.port + WORKER_PORT_STRIDE * i}" for i in range(config.ops_workers)
    )
    port = int(addresses[index].rsplit(":", 1)[1]) if index < len(addresses) else config.port
    metrics = config.metrics_port
    return config.model_copy(
        update={
            "worker_addresses": addresses,
            "port": port,
            "metrics_port": None if metrics is None else metrics + WORKER_METRICS_STRIDE * index,
            "state_dir": Path(config.state_dir) / f"worker-{index}",
        }
    )
