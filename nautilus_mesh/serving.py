"""gRPC server plumbing: health, reflection, keepalive, bounded sizes, graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import pydantic
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stubs predate grpc.aio health
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from nautilus_mesh.errors import ConfigError
from nautilus_mesh.instance_lock import InstanceLock
from nautilus_mesh.log_format import LOG_FORMATS, configure_logging, log_format_from_env
from nautilus_mesh.request_guard import guard
from nautilus_mesh.rpc_spans import RpcMetrics, RpcMetricsInterceptor, RpcSpanInterceptor
from nautilus_mesh.span_export import span_file_max_bytes
from nautilus_mesh.telemetry import MetricsServer, Tracing, count_dropped_spans
from nautilus_mesh.tls import ServerTls

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
MIN_CLIENT_PING_INTERVAL_MS = 5_000
MAX_RECONNECT_BACKOFF_MS = 500
MIN_CONNECT_TIMEOUT_MS = 2_000

SERVER_OPTIONS: list[tuple[str, int]] = [
    # Bounded message size: a frame larger than this is refused by the transport.
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Ping idle long-lived streams so a dead peer is noticed within ~15 s (10 s interval + 5 s ack timeout).
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # Accept the clients' keepalive pings even without active calls...
    ("grpc.keepalive_permit_without_calls", 1),
    # ...as often as every 5 s: below the clients' 10 s interval, so the server never answers GOAWAY
    # (too_many_pings) to a client that keeps the agreed interval.
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ("grpc.http2.max_pings_without_data", 0),
    # One process per port: with SO_REUSEPORT (gRPC's default on Linux) a second server binds the same port
    # and the kernel splits connections between the two.
    ("grpc.so_reuseport", 0),
    # Flow control that means something: no BDP probing on what this server receives. With probing, gRPC's
    # transport announces a receive window of max(4 MiB, 2 x the measured bandwidth-delay product) whenever memory
    # is not short (chttp2 flow_control.cc, "anything goes" below 20% memory pressure), whether or not the
    # application reads: a stream ops stopped reading (fair intake, a paused stream) kept taking the sender's frames
    # into ops' memory, 4 MiB per stream. Without it a stream's window stays at HTTP/2's 64 KiB, and a sender whose
    # stream is not read is held after 64 KiB. Measured (benchmarks/bench_flood.py, docs/performance.md): the
    # flooder's unread frames in ops fell from ~100,000 to ~2,000 signals (its writes block instead), and the
    # throughput of one stream of large frames on loopback did not change (a 64 KiB window holds 10+ frames of
    # 100 signals). It does nothing for what ops sends: the window a client announces for its answers is the
    # client's own (4 MiB with probing, the default), which is why a stream that does not read its answers is
    # paused by ops itself (stream_max_pending_answers, ops_server/fair_intake.py), and why a stream with a backlog
    # is held back while another stream is active (stream_backlog_share): the pause comes only after that window.
    ("grpc.http2.bdp_probe", 0),
]

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keepalive agreed with SERVER_OPTIONS: ping every 10 s (>= the server's 5 s minimum), 5 s to answer.
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect backoff capped low. gRPC's default (1 s initial, x1.6, up to 120 s) leaves a channel waiting 6 s or
    # more after a 20 s outage before it tries again; with these caps it tries every <= 0.5 s, so a peer that comes
    # back is reached within ~0.5 s whatever the outage length. Cheap: one TCP connect attempt per try on loopback/LAN.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    # Despite its name, gRPC uses this as the minimum time one connection attempt may take (default 20 s), not as a
    # backoff: at 100 ms a loaded host times out its own handshakes. 2 s bounds an attempt against a peer whose
    # packets are dropped (a partition), while a refused connection (peer process down) still fails at once.
    ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
]


@dataclass
class RunningServer:
    """A started gRPC server with its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    service_names: tuple[str, ...]

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, stop."""
        await self.set_serving(False)
        await self.server.stop(grace)


class HostConfig(Protocol):
    """The config fields every service's server reads."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tls(self) -> ServerTls | None: ...
    @property
    def metrics_host(self) -> str: ...
    @property
    def metrics_port(self) -> int | None: ...


class ServiceHost:
    """What every service's server has, written once: its gRPC server on ``host:port`` (TLS when configured, health
    and reflection), its ``/metrics`` endpoint, the bound port and address, and the order it stops in.

    A service sets :attr:`tracing` and fills in :meth:`stop_parts` (and :meth:`stop_health_updates` when it
    refreshes health of its own).

    Args:
        config: the service's config (host, port, tls, metrics_host, metrics_port).
    """

    def __init__(self, config: HostConfig) -> None:
        self._host_config = config
        self.grpc: RunningServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.tracing: Tracing | None = None

    @property
    def port(self) -> int:
        """The port the gRPC server is bound to (known once it started)."""
        assert self.grpc is not None
        return self.grpc.port

    @property
    def address(self) -> str:
        return f"{self._host_config.host}:{self.port}"

    async def serve(
        self,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        registry: CollectorRegistry,
        tracing: Tracing | None = None,
    ) -> RunningServer:
        """Start the gRPC server and, when a metrics port is configured, ``/metrics`` on ``registry``."""
        cfg = self._host_config
        self.grpc = await start_server(
            register, service_names, cfg.host, cfg.port, cfg.tls, registry=registry, tracing=tracing
        )
        if cfg.metrics_port is not None:
            self.metrics_server = MetricsServer(registry, cfg.metrics_host, cfg.metrics_port)
        return self.grpc

    async def stop_serving(self, grace: float) -> None:
        """NOT_SERVING, let in-flight calls finish for ``grace`` seconds, stop the gRPC server."""
        if self.grpc is not None:
            await self.grpc.stop(grace)

    def close_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful: stop refreshing health, NOT_SERVING and let in-flight calls and streams finish for ``grace``
        seconds, stop the gRPC server, then the service's own parts (which persist their state), ``/metrics``
        and tracing (its last spans flushed)."""
        await self.stop_health_updates()
        await self.stop_serving(grace)
        await self.stop_parts()
        self.close_metrics()
        if self.tracing is not None:
            self.tracing.shutdown()

    async def stop_health_updates(self) -> None:
        """Stop what the service runs to refresh its health services (nothing by default)."""

    async def stop_parts(self) -> None:
        """Stop the service's own parts once no call is served any more (nothing by default)."""


async def start_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    host: str,
    port: int,
    tls: ServerTls | None = None,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
) -> RunningServer:
    """Create, register and start a grpc.aio server with health and reflection.

    Args:
        register: adds the service implementations to the server.
        service_names: full names of the registered services, for health and reflection.
        host: address to bind (127.0.0.1 in tests).
        port: port to bind; 0 picks a free one.
        tls: certificate (and client CA for mutual TLS); None serves plaintext, the loopback default.
        registry: where ``malformed_requests_total{method}`` and the RPC metrics (``grpc_server_handled_total``,
            ``grpc_server_handling_seconds``; every method's OK series starts at zero) are counted, and, with
            ``tracing``, ``spans_dropped_total{reason}``.
        tracing: the service's tracing; unary RPCs then get ``rpc.*`` SERVER spans (:mod:`nautilus_mesh.rpc_spans`).
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if registry is not None:
        rpc_metrics = RpcMetrics.of(registry)
        rpc_metrics.initialize(service_names)
        interceptors.append(RpcMetricsInterceptor(rpc_metrics))
    if tracing is not None and registry is not None:
        count_dropped_spans(tracing, registry)
    if tracing is not None and tracing.provider is not None:
        interceptors.append(RpcSpanInterceptor(tracing))
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    register(guard(server, registry))  # undecodable request bytes answer INVALID_ARGUMENT, not UNKNOWN or a silent OK
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        if tls is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", tls.credentials())
    except RuntimeError as exc:  # grpc raises RuntimeError when the address is taken
        raise OSError(f"could not bind {host}:{port}: address in use") from exc
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}: address in use")
    await server.start()
    running = RunningServer(server, bound, health_servicer, tuple(service_names))
    await running.set_serving(True)
    transport = tls.mode if tls is not None else "plaintext (no TLS configured: fine on loopback only)"
    log.info("[SERVER] serving %s on %s:%d over %s", ", ".join(service_names), host, bound, transport)
    if tls is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("[SERVER] %s:%d serves plaintext on a non-loopback address; configure tls", host, bound)
    return running


class Service(Protocol):
    """A runnable server (engine or ops): started, then stopped gracefully."""

    @property
    def address(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float = 5.0) -> None: ...


ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)


GC_THRESHOLDS = (20_000, 20, 20)
"""Cyclic GC thresholds of the service processes. The defaults (700, 10, 10) run a collection every few signals and
a full one, which walks every retained order, decision and report, every ~70,000 allocations: measured at about
55 us of ops' CPU per signal (9 us with these). The ledgers make few reference cycles, so collecting 30x less often
costs little memory; what exists once a service has started is frozen out of collections altogether. Once serving,
the collections run on a clock (:func:`collect_on_schedule`); these thresholds still start one in a burst."""


YOUNG_GC_SECONDS = 0.1
"""Seconds between the services' scheduled collections of the youngest generation (:func:`collect_on_schedule`)."""
MIDDLE_GC_EVERY = 5
"""Scheduled collections of the youngest generation per collection of the middle one (count): it then holds what
survived the last half second, walked in a few ms, where the thresholds' 20 let two seconds' survivors pile up."""
FULL_GC_SECONDS = 300.0
"""Seconds between the scheduled full collections (:func:`collect_on_schedule`). A full collection walks every
retained order, decision and report (~150-220 ms at the default windows), so it is rare; the services make few
reference cycles, and what they do make waits at most this long to be freed."""


def scheduled_collection(since_full_seconds: float) -> int:
    """One scheduled collection: a full one once ``FULL_GC_SECONDS`` passed since the last, else the middle
    generation after ``MIDDLE_GC_EVERY`` collections of the youngest, else the youngest; returns the generation
    collected."""
    if since_full_seconds >= FULL_GC_SECONDS:
        generation = 2
    elif gc.get_count()[1] >= MIDDLE_GC_EVERY:
        generation = 1
    else:
        generation = 0
    gc.collect(generation)
    return generation


async def collect_on_schedule() -> None:
    """Collect the cyclic GC's generations on a clock, the youngest every ``YOUNG_GC_SECONDS``.

    CPython starts a collection when its youngest generation's count passes the threshold, and counts allocations
    minus deallocations of any age. At a steady rate the services free old orders, reports and decisions as fast as
    they make new ones, so the count hovers under 20,000 while tens of thousands of new objects pile up in the
    youngest generation, and the collection that finally runs walks them all on the event loop: 30-55 ms in ops every
    ~9 s at 1,000 signals/s, ~150 ms in the engine when a compaction's lists arrive. Collected every 100 ms, the
    youngest generation holds what 100 ms made. Since these collections keep its count under the threshold, the
    older ones are collected here too (the middle one every ``MIDDLE_GC_EVERY`` young collections, a full one every
    ``FULL_GC_SECONDS``); a burst that passes the threshold still starts a collection the usual way."""
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    while True:
        await asyncio.sleep(YOUNG_GC_SECONDS)
        if scheduled_collection(loop.time() - last_full) == 2:
            last_full = loop.time()


async def serve_until_signalled(service: Service, label: str) -> None:
    """Start ``service``, wait for SIGINT or SIGTERM, then stop it gracefully.

    Once started, everything alive (modules, config, replayed state) is moved out of the GC's generations
    (``gc.freeze``), so later full collections only walk what the service made since; from then on the GC runs
    on a clock (:func:`collect_on_schedule`).
    """
    await service.start()
    gc.collect()
    gc.freeze()
    collector = asyncio.create_task(collect_on_schedule(), name="gc-schedule")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("[%s] ready on %s", label, service.address)
    await stop.wait()
    log.info("[%s] shutting down", label)
    collector.cancel()
    await service.stop()


EVENT_LOOPS = ("uvloop", "asyncio")
"""What ``NAUTILUS_EVENT_LOOP`` may name: uvloop (the default) or the standard library's loop."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on, from ``NAUTILUS_EVENT_LOOP``: ``uvloop`` (default; libuv underneath, which
    takes less CPU per gRPC message than the standard loop) or ``asyncio`` (the standard library's loop; returns
    None). Raises ConfigError for any other value."""
    choice = os.environ.get("NAUTILUS_EVENT_LOOP", "uvloop").strip().lower() or "uvloop"
    if choice not in EVENT_LOOPS:
        raise ConfigError(
            f"NAUTILUS_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}", code="BAD_EVENT_LOOP"
        )
    if choice == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


MMAP_THRESHOLD_BYTES = 128 * 1024
"""Allocations of this size or more get pages of their own from the OS, given back when freed (glibc's default,
held fixed by :func:`fix_mmap_threshold`)."""


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Hold glibc's mmap threshold at ``threshold`` bytes; True when it was set.

    glibc starts at 128 KiB and raises the threshold to the size of each mmapped block freed (up to 32 MiB). After
    the first snapshot (engine compaction, ops checkpoint) freed its buffers of several MB, the next snapshots'
    buffers came from the heap instead and left it fragmented: in the engine, 1,000,000 orders driven in one process
    at the default windows kept 211-222 MB with the moving threshold and 204-206 MB with it held (190 MB after
    100,000 either way; docs/performance.md, "The engine's memory at its default windows"). A threshold set in the
    environment (``MALLOC_MMAP_THRESHOLD_``) is left as it is, and so is any C library other than glibc.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # <malloc.h> M_MMAP_THRESHOLD; setting it also turns the dynamic adjustment off
    return bool(mallopt(m_mmap_threshold, threshold) == 1)


def service_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    load: Callable[[str], ConfigT],
    build: Callable[[ConfigT], Service],
    label: str,
    state_dir: Callable[[ConfigT], Path | None] = lambda _config: None,
) -> int:
    """The ``python -m <server> --config FILE [--port N]`` entry point shared by the servers.

    ``state_dir`` names the directory the service owns; its exclusive lock is taken before the service
    is built (before any journal, store or file is opened). A bad config, a state directory another
    process holds, or a port in use prints one line and exits 2 (no traceback).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="config JSON")
    parser.add_argument("--port", type=int, help="override the gRPC port")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log_format_from_env(),
        help="json lines (with trace_id/span_id) or text, both in UTC; default $LOG_FORMAT or text",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    gc.set_threshold(*GC_THRESHOLDS)
    fix_mmap_threshold()
    try:
        loop_factory = event_loop_factory()
        span_file_max_bytes()  # a bad NAUTILUS_SPAN_FILE_MAX_BYTES stops the service here, named, not at its first span
        config = load(args.config)
        if args.port is not None:
            config = config.model_copy(update={"port": args.port})
        directory = state_dir(config)
        with contextlib.ExitStack() as stack:
            if directory is not None:
                stack.enter_context(InstanceLock(directory, label.lower()))
            log.info("[%s] event loop: %s", label, "uvloop" if loop_factory else "asyncio")
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(serve_until_signalled(build(config), label))
    except (ConfigError, OSError) as exc:  # a ConfigError's str() is its message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
