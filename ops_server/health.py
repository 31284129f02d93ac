"""Ops health that tells the truth: per-dependency gRPC health services, ``GetHealth`` checks and their metrics.

gRPC health (``grpc.health.v1``), refreshed every ``interval`` seconds (0.2 s):

==============================  ======================================================================
service                         NOT_SERVING when
==============================  ======================================================================
``nautilus.ops.v1.engine_link`` the order stream to the engine is down or its quotes are not flowing
``nautilus.ops.v1.marks``       any routed instrument's mark is missing or older than its limit
``nautilus.ops.v1.store``       the state store does not answer a read
==============================  ======================================================================

The overall service (``""``) and ``OpsService``/``OpsAdminService`` stay SERVING while ops can answer calls, also
during an engine outage: ops still answers every signal (``ENGINE_UNAVAILABLE``), queries, admin calls and the kill
switch, and an orchestrator that restarted ops because the engine is down would only add a second outage. Probe
the dependency services to see the engine side.

``GetHealth`` (admin) lists every check with status, detail and age, rolled up (the worst): engine link, circuit
breaker, report seq, one mark per routed instrument, store, last allocation, last sample, each canary, span exporter.
Metrics: ``component_up{component}``, ``mark_age_seconds{instrument}``, ``span_export_failures_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.health import OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE, OPS_STORE_SERVICE, Check, Health, rollup
from nautilus_mesh.store import StateStore
from nautilus_mesh.tasks import cancel_and_wait
from nautilus_mesh.telemetry import Tracing
from ops_server.circuit_breaker import CircuitState, EngineGate
from ops_server.engine_link import EngineLink
from ops_server.metrics import OpsMetrics

if TYPE_CHECKING:
    from ops_server.core import OpsCore

log = logging.getLogger(__name__)

DEPENDENCY_SERVICES = (OPS_ENGINE_LINK_SERVICE, OPS_MARKS_SERVICE, OPS_STORE_SERVICE)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class OpsHealthInputs:
    """The narrow views health reads; each callable is cheap and runs on the event loop.

    Attributes:
        instruments: the instruments routed models trade.
        stale_mark_seconds: the mark age limit (seconds), from the risk limits.
        last_allocation_at: epoch seconds of the last allocator cycle, or None.
        allocation_interval: seconds between allocator cycles.
        last_sample_at: epoch seconds of the last equity sample, or None.
        sample_interval: seconds between equity samples.
        canaries: (strategy, canary model, state) of each canary run.
    """

    instruments: Callable[[], Iterable[str]]
    stale_mark_seconds: Callable[[], float]
    last_allocation_at: Callable[[], float | None]
    allocation_interval: float
    last_sample_at: Callable[[], float | None]
    sample_interval: float
    canaries: Callable[[], Iterable[tuple[str, str, str]]]


@dataclass(eq=False, repr=False)
class OpsHealth:
    """Computes ops' health checks, publishes them to gRPC health and metrics.

    Args:
        link: the engine link.
        gate: the engine-link circuit breaker's gate (probed on each refresh, so the circuit closes once the link is
            back without waiting for a signal).
        state_store: the state store (probed with a read at most every ``store_probe_interval`` seconds).
        tracing: ops' tracing (span export counts).
        metrics: ops metrics.
        inputs: the other views (marks limit, allocator, sampler, canaries).
        interval: seconds between refreshes of gRPC health and metrics.
        store_probe_interval: seconds between store probes.
        clock: wall and monotonic time of the checks (the core's clock).
    """

    link: EngineLink
    gate: EngineGate
    state_store: StateStore
    tracing: Tracing
    metrics: OpsMetrics
    inputs: OpsHealthInputs
    _: KW_ONLY
    interval: float = 0.2
    store_probe_interval: float = 5.0
    clock: Clock = REAL_CLOCK

    def __post_init__(self) -> None:
        self._store_check: Check | None = None
        self._store_probed_at = 0.0
        self._started_at = self.clock.time()
        self._exports_failed_seen = 0
        self._servicer: health_aio.HealthServicer | None = None
        self._published: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- checks ----------------------------------------------------------------------------

    def engine_link(self) -> Check:
        link = self.link
        age = self.clock.monotonic() - link.state_since
        if not link.connected:
            return Check("engine_link", Health.UNHEALTHY, f"order stream to {link.address} down", age)
        if not link.quotes_live:
            return Check("engine_link", Health.UNHEALTHY, f"connected to {link.address}, quote stream down", age)
        return Check(
            "engine_link",
            Health.HEALTHY,
            f"connected to {link.address} (session {link.session_id}, {link.reconnects} reconnect(s))",
            age,
        )

    def circuit(self) -> Check:
        breaker = self.gate.breaker
        age = self.clock.monotonic() - breaker.since
        detail = f"{breaker.state.value}, {breaker.consecutive_failures} consecutive failure(s)"
        status = Health.HEALTHY if breaker.state is CircuitState.CLOSED else Health.UNHEALTHY
        return Check("engine_circuit", status, detail, age)

    def report_seq(self) -> Check:
        cursor = self.link.cursor
        if cursor.highest > cursor.watermark:
            return Check(
                "report_seq",
                Health.DEGRADED,
                f"gap: applied up to {cursor.watermark} contiguously, highest {cursor.highest}; reconciling",
            )
        return Check("report_seq", Health.HEALTHY, f"applied every report up to seq {cursor.watermark}")

    def marks(self) -> list[Check]:
        now = self.clock.monotonic()
        limit = self.inputs.stale_mark_seconds()
        checks = []
        for instrument in sorted(set(self.inputs.instruments())):
            seen = self.link.quote_times.get(instrument)
            if seen is None:
                checks.append(Check(f"mark:{instrument}", Health.DEGRADED, "no quote received yet"))
                continue
            age = now - seen
            if age > limit:
                checks.append(Check(f"mark:{instrument}", Health.DEGRADED, f"stale: older than {limit:g}s", age))
            else:
                checks.append(Check(f"mark:{instrument}", Health.HEALTHY, f"fresh (limit {limit:g}s)", age))
        return checks

    def store(self) -> Check:
        """The state store's newest probe (a read; its age counts from the probe's start). The health loop probes
        on a worker thread (:meth:`refresh`); this reads the store itself only before the first probe."""
        if self._store_check is None:
            self.probe_store()
        check = self._store_check
        assert check is not None
        return Check(check.name, check.status, check.detail, self.clock.monotonic() - self._store_probed_at)

    def store_probe_due(self) -> bool:
        """True when no probe ran yet or the newest started ``store_probe_interval`` seconds ago or more."""
        return self._store_check is None or self.clock.monotonic() - self._store_probed_at >= self.store_probe_interval

    def probe_store(self) -> None:
        """Read a document from the state store and keep the outcome as the ``store`` check (any thread: a read
        waits while another thread writes, e.g. a journal checkpoint's snapshot, for a second or more)."""
        self._store_probed_at = self.clock.monotonic()
        started = time.perf_counter()
        try:
            self.state_store.get("allocator")
        except Exception as exc:
            if self._store_check is None or self._store_check.status is Health.HEALTHY:
                log.error("[HEALTH] state store %s failed a read: %s", self.state_store.location, type(exc).__name__)
            self._store_check = Check("store", Health.UNHEALTHY, f"{self.state_store.location}: {type(exc).__name__}")
        else:
            took = (time.perf_counter() - started) * 1000
            self._store_check = Check("store", Health.HEALTHY, f"{self.state_store.location}: read in {took:.1f} ms")

    def _periodic(self, name: str, last: float | None, interval: float) -> Check:
        now = self.clock.time()
        late_after = 3 * interval + 1.0
        if last is None:
            age = now - self._started_at
            status = Health.DEGRADED if age > late_after else Health.HEALTHY
            return Check(name, status, f"no cycle yet (every {interval:g}s)", age)
        age = now - last
        if age > late_after:
            return Check(name, Health.DEGRADED, f"late: last cycle {age:.1f}s ago, runs every {interval:g}s", age)
        return Check(name, Health.HEALTHY, f"runs every {interval:g}s", age)

    def canaries(self) -> list[Check]:
        out = []
        for strategy, model, state in self.inputs.canaries():
            status = Health.DEGRADED if state == "PAUSED" else Health.HEALTHY
            out.append(Check(f"canary:{strategy}", status, f"{model} {state}"))
        return out

    def span_exporter(self) -> Check:
        stats = self.tracing.export_stats
        kind = self.tracing.exporter_kind
        if kind == "off":
            return Check("span_exporter", Health.HEALTHY, "tracing disabled")
        last_ok = stats.last_ok_at or 0.0
        if stats.last_failure_at is not None and stats.last_failure_at > last_ok:
            age = REAL_CLOCK.monotonic() - stats.last_failure_at
            detail = f"{kind}: last export failed ({stats.last_error}), {stats.failed} failed batch(es)"
            return Check("span_exporter", Health.DEGRADED, detail, age)
        age = REAL_CLOCK.monotonic() - stats.last_ok_at if stats.last_ok_at is not None else 0.0
        return Check("span_exporter", Health.HEALTHY, f"{kind}: {stats.exported} batch(es) exported", age)

    def checks(self) -> list[Check]:
        inputs = self.inputs
        return [
            self.engine_link(),
            self.circuit(),
            self.report_seq(),
            *self.marks(),
            self.store(),
            self._periodic("allocator", inputs.last_allocation_at(), inputs.allocation_interval),
            self._periodic("sampler", inputs.last_sample_at(), inputs.sample_interval),
            *self.canaries(),
            self.span_exporter(),
        ]

    def report(self) -> tuple[Health, list[Check]]:
        """The checks and their rollup (the worst status)."""
        checks = self.checks()
        return rollup(checks), checks

    # -- publishing ------------------------------------------------------------------------

    async def refresh(self) -> list[Check]:
        """Recompute the checks (probing the state store on a worker thread when due, so a store busy with a long
        write never holds the event loop); update gRPC health of the dependency services and the metrics."""
        if self.store_probe_due():
            await asyncio.to_thread(self.probe_store)
        self.gate.probe()
        checks = self.checks()
        by_name = {c.name: c for c in checks}
        marks = [c for c in checks if c.name.startswith("mark:")]
        link_ok = by_name["engine_link"].status is Health.HEALTHY
        marks_ok = all(c.status is Health.HEALTHY for c in marks)
        store_ok = by_name["store"].status is Health.HEALTHY
        up = {
            "engine_link": link_ok,
            "quotes": self.link.quotes_live,
            "marks": marks_ok,
            "store": store_ok,
            "span_exporter": by_name["span_exporter"].status is Health.HEALTHY,
            "engine_circuit": by_name["engine_circuit"].status is Health.HEALTHY,
        }
        for component, ok in up.items():
            self.metrics.component_up.labels(component).set(1 if ok else 0)
        for check in marks:
            instrument = check.name.removeprefix("mark:")
            self.metrics.mark_age.labels(instrument).set(
                check.age_seconds if check.detail != "no quote received yet" else float("inf")
            )
        failed = self.tracing.export_stats.failed
        if failed > self._exports_failed_seen:
            self.metrics.span_export_failures.inc(failed - self._exports_failed_seen)
            self._exports_failed_seen = failed
        await self._publish(OPS_ENGINE_LINK_SERVICE, link_ok)
        await self._publish(OPS_MARKS_SERVICE, marks_ok)
        await self._publish(OPS_STORE_SERVICE, store_ok)
        return checks

    async def _publish(self, service: str, ok: bool) -> None:
        status = _SERVING if ok else _NOT_SERVING
        if self._published.get(service) == status:
            return
        previous = self._published.get(service)
        self._published[service] = status
        if previous is not None:
            log_at = log.info if ok else log.warning
            log_at("[HEALTH] %s %s", service, "SERVING" if ok else "NOT_SERVING")
        if self._servicer is not None:
            await self._servicer.set(service, status)

    async def start(self, servicer: health_aio.HealthServicer) -> None:
        """Publish into ``servicer`` now and every ``interval`` seconds."""
        self._servicer = servicer
        self._published.clear()
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="ops-health")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._servicer is not None:
            for service in DEPENDENCY_SERVICES:
                await self._servicer.set(service, _NOT_SERVING)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("[HEALTH] refresh failed")


def ops_health(core: OpsCore) -> OpsHealth:
    """The health of one ops core (the one place that knows where each input lives in the core)."""
    config = core.config
    return OpsHealth(
        core.link,
        core.engine_gate,
        core.state.store,
        core.tracing,
        core.metrics,
        OpsHealthInputs(
            instruments=lambda: {i for r in core.registry.routes() for i in r.instruments},
            stale_mark_seconds=lambda: core.risk.limits.stale_mark_seconds,
            last_allocation_at=lambda: last.at if (last := core.periodic.last_allocation) is not None else None,
            allocation_interval=config.allocation_interval_seconds,
            last_sample_at=lambda: core.periodic.last_sample_at,
            sample_interval=config.sample_interval_seconds,
            canaries=lambda: [
                (strategy, run.controller.status().canary_model, run.controller.state.value)
                for strategy, run in core.canaries.runs.items()
            ],
        ),
        clock=core.clock,
    )
