"""Engine health for ``EngineService.GetHealth``: venues, quotes, journal seq, ops sessions, span exporter.

Each check has a status, a detail and an age; the rollup is the worst. ``component_up{component}`` follows the checks
(venue:<name>, quotes, ops_session). The gRPC health protocol keeps its per-venue services
(``nautilus.engine.v1.venue.<name>``, see ``engine_server.server``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.health import Check, Health, rollup

if TYPE_CHECKING:
    from engine_server.engine_core import EngineCore

# Quotes older than this mean the ticker is stuck (the market maker requotes every tick).
QUOTE_STALE_SECONDS = 5.0


class EngineHealth:
    """Computes the engine's checks from its core.

    Args:
        core: the engine core (order manager, sessions, quote fan-out).
        clock: wall and monotonic time (quote age, session age).
    """

    def __init__(self, core: EngineCore, *, clock: Clock = REAL_CLOCK) -> None:
        self._core = core
        self._clock = clock
        self._started = self._clock.monotonic()

    def checks(self) -> list[Check]:
        core = self._core
        out = []
        for name, venue in core.manager.venues.items():
            status = venue.status()
            health = Health.HEALTHY if status.connected else Health.UNHEALTHY
            out.append(Check(f"venue:{name}", health, f"{status.kind} venue: {status.detail or 'ok'}"))
        quotes = core.live_quotes()
        if quotes:
            newest = max(q.ts_unix_nanos for q in quotes)
            age = max(0.0, self._clock.time() - newest / 1e9)
            health = Health.HEALTHY if age <= QUOTE_STALE_SECONDS else Health.DEGRADED
            out.append(Check("quotes", health, f"{len(quotes)} live quote(s)", age))
        else:
            out.append(Check("quotes", Health.DEGRADED, "no live quotes"))
        out.append(Check("last_seq", Health.HEALTHY, f"journaled every report up to seq {core.manager.last_seq}"))
        if core.group_sync is not None and core.group_sync.failure:
            detail = f"journal fsync failed ({core.group_sync.failure}); reports are held, restart on a sound disk"
            out.append(Check("journal", Health.UNHEALTHY, detail))
        sessions = len(core.sessions)
        if sessions:
            out.append(Check("ops_session", Health.HEALTHY, f"{sessions} order session(s) connected"))
        else:
            age = self._clock.monotonic() - self._started
            out.append(Check("ops_session", Health.DEGRADED, "no ops order session connected", age))
        stats = core.tracing.export_stats
        if (
            core.tracing.exporter_kind != "off"
            and stats.last_failure_at
            and stats.last_failure_at > (stats.last_ok_at or 0.0)
        ):
            out.append(Check("span_exporter", Health.DEGRADED, f"last export failed ({stats.last_error})"))
        else:
            out.append(Check("span_exporter", Health.HEALTHY, f"{core.tracing.exporter_kind}: {stats.exported} ok"))
        for check in out:
            core.metrics.component_up.labels(check.name).set(1 if check.status is Health.HEALTHY else 0)
        return out

    def report(self) -> tuple[Health, list[Check]]:
        checks = self.checks()
        return rollup(checks), checks
