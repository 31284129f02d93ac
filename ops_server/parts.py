"""The domain objects of one ops service, built once by :class:`~ops_server.core.OpsCore` and handed as one
object to every component that acts on them.

The components (signal path, execution feedback, periodic decisions, queries, controls, worker coordination)
each take an :class:`OpsParts` and only the few collaborators that are theirs alone (the signal router, the
report cursor, ...), so the wiring says once what the shared objects are instead of once per component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nautilus_mesh.clock import Clock
    from nautilus_mesh.telemetry import Tracing
    from ops_server.allocation import CapitalAllocator
    from ops_server.canary.manager import CanaryManager
    from ops_server.config import OpsConfig
    from ops_server.engine_link import EngineLink
    from ops_server.events import EventHub
    from ops_server.exposure import ExposureView
    from ops_server.measurement import Measurement
    from ops_server.metrics import OpsMetrics
    from ops_server.model_registry import ModelRegistry
    from ops_server.ops_state import OpsState
    from ops_server.order_sinks import LiveOrderSink, PaperOrderSink
    from ops_server.order_tracker import OrderTracker
    from ops_server.risk import RiskRails

__all__ = ["OpsParts"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class OpsParts:
    """What one ops service is made of (read-only references; each object keeps its own state)."""

    config: OpsConfig
    """The service's configuration."""
    registry: ModelRegistry
    """Models, routing weights and modes."""
    measurement: Measurement
    """Books, PnL, marks and return series, from fills and quotes."""
    exposure: ExposureView
    """Quotas, positions + open orders and marks, read as one view (sizing and rails)."""
    tracker: OrderTracker
    """Decisions, orders and fills, journaled write-ahead."""
    allocator: CapitalAllocator
    """Each strategy's capital."""
    risk: RiskRails
    """The pre-trade rails, trading states and the kill switch."""
    canaries: CanaryManager
    """Every strategy's canary."""
    link: EngineLink
    """The order stream to the engine (orders out, reports and quotes in)."""
    live_sink: LiveOrderSink
    """Builds the commands of the live venue."""
    paper_sink: PaperOrderSink
    """Builds the commands of the paper venue (shadow models and paper twins)."""
    state: OpsState
    """The restartable state in the state store."""
    events: EventHub
    """The audit log and WatchEvents."""
    metrics: OpsMetrics
    """Ops' Prometheus metrics."""
    tracing: Tracing
    """Ops' tracing."""
    clock: Clock
    """Wall and monotonic time every part reads (simulated in a backtest)."""
