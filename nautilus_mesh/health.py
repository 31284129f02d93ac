"""Detailed health shared by ops and engine: named checks with status, detail and age, rolled up.

A service's health is the worst of its checks: ``HEALTHY`` < ``DEGRADED`` < ``UNHEALTHY``. The gRPC health protocol
(``grpc.health.v1``) stays the orchestrators' view (overall and per dependency); ``GetHealth`` is the operators' view
with every check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from nautilus_mesh.api.common.v1 import common_pb2

OPS_ENGINE_LINK_SERVICE = "nautilus.ops.v1.engine_link"
"""Ops' gRPC health service that is NOT_SERVING while its order stream to the engine is down or quotes stop."""
OPS_MARKS_SERVICE = "nautilus.ops.v1.marks"
"""Ops' gRPC health service that is NOT_SERVING while a routed instrument's mark is missing or too old."""
OPS_STORE_SERVICE = "nautilus.ops.v1.store"
"""Ops' gRPC health service that is NOT_SERVING while its state store does not answer a read."""


class Health(IntEnum):
    """Status of one check (ordered: a larger value is worse)."""

    HEALTHY = 1
    DEGRADED = 2
    UNHEALTHY = 3


@dataclass(frozen=True)
class Check:
    """One health check.

    Attributes:
        name: stable name, e.g. ``engine_link`` or ``mark:BTC-USD``.
        status: HEALTHY, DEGRADED or UNHEALTHY.
        detail: human-readable detail.
        age_seconds: seconds since the checked fact last changed or was last seen (0 when not applicable).
    """

    name: str
    status: Health
    detail: str
    age_seconds: float = 0.0

    def to_pb(self) -> common_pb2.HealthCheck:
        return common_pb2.HealthCheck(
            name=self.name,
            status=HEALTH_PB[self.status],
            detail=self.detail,
            age_seconds=round(max(0.0, self.age_seconds), 3),
        )


HEALTH_PB = {
    Health.HEALTHY: common_pb2.HEALTH_STATUS_HEALTHY,
    Health.DEGRADED: common_pb2.HEALTH_STATUS_DEGRADED,
    Health.UNHEALTHY: common_pb2.HEALTH_STATUS_UNHEALTHY,
}


def rollup(checks: Iterable[Check]) -> Health:
    """The worst status of ``checks`` (HEALTHY when there are none)."""
    return max((c.status for c in checks), default=Health.HEALTHY)


def health_name(status: int) -> str:
    """``HEALTH_STATUS_DEGRADED`` -> ``DEGRADED``."""
    return common_pb2.HealthStatus.Name(status).removeprefix("HEALTH_STATUS_")  # type: ignore[arg-type]
