"""Read views of ops for strategies and operators: positions, models, quotas, stats, orders, fills, canaries.

Every answer is built from the domain objects through :mod:`ops_server.wire`; nothing here changes state.

Who sees what (:class:`Scope`): an operator (admin token) sees everything; a strategy token sees its own models and
its own strategies only. Lists are filtered to the caller's scope; naming a model or strategy outside it answers
``PERMISSION_DENIED`` (``MODEL_NOT_ALLOWED`` / ``STRATEGY_NOT_ALLOWED``). Global figures (total capital, the global
trading state, global and default risk limits) are visible to every caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import PermissionDeniedError
from nautilus_mesh.pagination import Page, paginate
from ops_server import wire
from ops_server.allocation import CapitalAllocator
from ops_server.canary.manager import CanaryManager
from ops_server.events import EventHub, OpsEvent
from ops_server.exposure import ExposureView
from ops_server.measurement import Measurement
from ops_server.model_registry import ModelRegistry, ModelRoute
from ops_server.order_tracker import OrderTracker, TrackedOrder
from ops_server.periodic import PeriodicDecisions
from ops_server.risk import RiskRails, TradingState

ZERO = Decimal(0)


@dataclass(frozen=True)
class Scope:
    """What a caller may read: ``None`` means every model (or strategy)."""

    name: str
    """Who the caller is (a strategy name, or ``operator``), for error messages."""
    models: frozenset[str] | None
    strategies: frozenset[str] | None

    def sees_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def sees_strategy(self, strategy_id: str) -> bool:
        return self.strategies is None or strategy_id in self.strategies

    def require_model(self, model_id: str) -> None:
        if model_id and not self.sees_model(model_id):
            raise PermissionDeniedError(
                "MODEL_NOT_ALLOWED",
                f"{self.name!r} may not read model {model_id!r}",
                {"model_id": model_id},
                field="model_id",
            )

    def require_strategy(self, strategy_id: str) -> None:
        if strategy_id and not self.sees_strategy(strategy_id):
            raise PermissionDeniedError(
                "STRATEGY_NOT_ALLOWED",
                f"{self.name!r} may not read strategy {strategy_id!r}",
                {"strategy_id": strategy_id},
                field="strategy_id",
            )


EVERYTHING = Scope("operator", None, None)
"""The operator's scope: every model and strategy."""


class OpsQueries:
    """Answers the read RPCs of OpsService (and the reads of OpsAdminService)."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        measurement: Measurement,
        exposure: ExposureView,
        tracker: OrderTracker,
        allocator: CapitalAllocator,
        risk: RiskRails,
        canaries: CanaryManager,
        periodic: PeriodicDecisions,
        events: EventHub,
    ) -> None:
        self._registry = registry
        self._measurement = measurement
        self._exposure = exposure
        self._tracker = tracker
        self._allocator = allocator
        self._risk = risk
        self._canaries = canaries
        self._periodic = periodic
        self._events = events

    def scope_of(self, principal: Principal) -> Scope:
        """A strategy token's scope: its models and the strategies they belong to."""
        strategies = frozenset(self._registry.route(m).strategy_id for m in principal.models if self._registry.knows(m))
        return Scope(principal.name, principal.models, strategies)

    def _routes(self, scope: Scope, model_id: str = "", strategy_id: str = "") -> list[ModelRoute]:
        scope.require_model(model_id)
        scope.require_strategy(strategy_id)
        return [
            r
            for r in self._registry.routes()
            if (not model_id or r.model_id == model_id)
            and (not strategy_id or r.strategy_id == strategy_id)
            and scope.sees_model(r.model_id)
        ]

    # -- models and capital ----------------------------------------------------------------

    def model_info(self, route: ModelRoute) -> ops_pb2.ModelInfo:
        return wire.model_info(route, self._exposure.quota(route), self._risk.state(route.model_id))

    def models(self, strategy_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.ModelInfo]:
        return [self.model_info(r) for r in self._routes(scope, strategy_id=strategy_id)]

    def route(self, model_id: str) -> ModelRoute:
        """A model's route; NotFoundError ``UNKNOWN_MODEL`` for an unknown id."""
        return self._registry.route(model_id)

    def quota(self, model_id: str, scope: Scope = EVERYTHING) -> ops_pb2.GetModelQuotaResponse:
        scope.require_model(model_id)
        route = self._registry.route(model_id)
        quota = self._exposure.quota(route)
        used = self._exposure.used_quota(route.model_id)
        return ops_pb2.GetModelQuotaResponse(
            model_id=route.model_id,
            quota_usd=fmt(quota),
            used_usd=fmt(used),
            available_usd=fmt(max(quota - used, ZERO)),
        )

    def allocations(self, scope: Scope = EVERYTHING) -> ops_pb2.GetAllocationsResponse:
        last = self._periodic.last_allocation
        return ops_pb2.GetAllocationsResponse(
            allocations=[a for a in wire.allocations(self._allocator) if scope.sees_strategy(a.strategy_id)],
            total_capital_usd=fmt(self._allocator.policy.total_capital),
            updated_at_unix_nanos=wire.unix_nanos(self._allocator.last_applied_at),
            last_reason=last.reason.value if last is not None else "",
        )

    def allocation_weights(self) -> dict[str, float]:
        """Each strategy's capital fraction."""
        return dict(self._allocator.weights)

    def allocation_usd(self, strategy_id: str) -> Decimal:
        """A strategy's capital in USD."""
        return self._allocator.allocation_usd(strategy_id)

    # -- positions and performance ---------------------------------------------------------

    def positions(self, model_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.Position]:
        """Positions per model and instrument; a shadow model shows its paper book."""
        out = []
        for route in self._routes(scope, model_id=model_id):
            book = self._measurement.book(route.book)
            for instrument, state in sorted(book.positions.items()):
                rules = self._exposure.rules.get(instrument)
                tick = rules.tick_size if rules is not None else None
                out.append(wire.position(route, instrument, state, self._exposure.mark(instrument), tick))
        return out

    def position(self, book: str, instrument: str) -> Decimal:
        """Filled position (signed quantity) of a book (a model id, or ``<model>@paper``)."""
        return self._measurement.position(book, instrument)

    def fills_of(self, book: str) -> int:
        """How many fills a book has applied."""
        return self._measurement.book(book).fills

    def mark(self, instrument: str) -> Decimal | None:
        return self._exposure.mark(instrument)

    def marks(self) -> dict[str, Decimal]:
        return dict(self._exposure.marks())

    def stats(self, model_id: str = "", scope: Scope = EVERYTHING) -> ops_pb2.GetModelStatsResponse:
        routes = self._routes(scope, model_id=model_id)
        bar = self._measurement.bar_seconds
        models = [wire.model_stats(r, self._measurement.performance(r.book), bar) for r in routes]
        strategies = [s for s in self._periodic.strategy_stats() if scope.sees_strategy(s.strategy_id)]
        return ops_pb2.GetModelStatsResponse(models=models, strategies=strategies)

    # -- orders and fills ------------------------------------------------------------------

    def order(self, client_order_id: str) -> TrackedOrder | None:
        """One of ops' orders by client order id (None when unknown or past the history window)."""
        return self._tracker.orders.get(client_order_id)

    def previous_decision(self, model_id: str, signal_id: str) -> ops_pb2.SignalDecision | None:
        """The decision already taken for a signal id, within the dedupe window."""
        return self._tracker.previous_decision(model_id, signal_id)

    def orders(
        self, model_id: str, page_size: int, page_token: str, scope: Scope = EVERYTHING
    ) -> Page[ops_pb2.OrderSummary]:
        """Newest first (a shadow model's paper orders are listed under its paper book, ``<model>@paper``)."""
        scope.require_model(model_id)
        orders = [
            o
            for o in reversed(self._tracker.orders.values())
            if (not model_id or o.model_id == model_id) and scope.sees_model(o.owner or o.model_id)
        ]
        page = paginate(orders, page_size, page_token)
        return Page([wire.order_summary(o) for o in page.items], page.next_page_token)

    def fills(self, model_id: str, page_size: int, page_token: str, scope: Scope = EVERYTHING) -> Page[ops_pb2.Fill]:
        """Newest first."""
        scope.require_model(model_id)
        fills = [
            f
            for f in reversed(self._tracker.fills.values())
            if (not model_id or f.model_id == model_id) and scope.sees_model(f.model_id)
        ]
        return paginate(fills, page_size, page_token)

    # -- canaries, risk and events ---------------------------------------------------------

    def fills_after(self, seq: int, models: frozenset[str]) -> list[ops_pb2.Fill]:
        """Fills of ``models`` with a seq above ``seq``, oldest first (within the fill history ops keeps)."""
        return sorted(
            (f for f in self._tracker.fills.values() if f.seq > seq and f.model_id in models), key=lambda f: f.seq
        )

    def canary_statuses(self, strategy_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.CanaryStatus]:
        scope.require_strategy(strategy_id)
        return [
            wire.canary_status(run.controller.status(), run.controller.config.schedule, run.backtest)
            for sid, run in self._canaries.runs.items()
            if (not strategy_id or sid == strategy_id) and scope.sees_strategy(sid)
        ]

    def risk_limits(self, scope: Scope = EVERYTHING) -> dict[str, Any]:
        limits = wire.limits(self._risk.limits)
        limits["models"] = {m: v for m, v in limits["models"].items() if scope.sees_model(m)}
        return limits

    def trading_states(self, scope: Scope = EVERYTHING) -> ops_pb2.GetTradingStateResponse:
        models = {r.model_id: self._risk.state(r.model_id) for r in self._routes(scope)}
        return wire.trading_states(self._risk.global_state, self._risk.kill_switch_engaged, models)

    def trading_state(self, model_id: str | None = None) -> TradingState:
        """The effective state of a model, or the global state when ``model_id`` is None."""
        return self._risk.global_state if model_id is None else self._risk.state(model_id)

    def recent_events(self) -> Iterable[OpsEvent]:
        return tuple(self._events.recent)

    @staticmethod
    def event_visible(event: OpsEvent, scope: Scope) -> bool:
        """An event names a model or a strategy; a strategy sees only the events naming one of its own."""
        if scope.models is None:
            return True
        model = event.attributes.get("model_id") or event.attributes.get("model")
        strategy = event.attributes.get("strategy")
        return bool((model and scope.sees_model(model)) or (strategy and scope.sees_strategy(strategy)))

    def subscribe_events(self) -> asyncio.Queue[OpsEvent]:
        return self._events.subscribe()

    def unsubscribe_events(self, queue: asyncio.Queue[OpsEvent]) -> None:
        self._events.unsubscribe(queue)
