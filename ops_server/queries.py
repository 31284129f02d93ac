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
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal
from typing import Any

from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import PermissionDeniedError
from nautilus_mesh.pagination import Page
from ops_server import wire
from ops_server.events import OpsEvent
from ops_server.model_registry import ModelRoute
from ops_server.order_archive import merged_page
from ops_server.order_tracker import RememberedFill, TrackedOrder, fill_of
from ops_server.parts import OpsParts
from ops_server.periodic import PeriodicDecisions
from ops_server.risk import TradingState

ZERO = Decimal(0)


def archived_order(record: journal_pb2.TrackedOrderRecord, filled: Decimal, status: int) -> TrackedOrder:
    """An order read back from the archive, as it was when it left memory."""
    order = TrackedOrder.from_pb(record)
    order.filled, order.status = filled, status
    return order


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
        self._require("model", model_id, self.sees_model(model_id))

    def require_strategy(self, strategy_id: str) -> None:
        self._require("strategy", strategy_id, self.sees_strategy(strategy_id))

    def _require(self, kind: str, key: str, seen: bool) -> None:
        """Refuse a named ``kind`` (``model``, ``strategy``) outside the scope; an empty name asks for all it sees."""
        if key and not seen:
            raise PermissionDeniedError(
                f"{kind.upper()}_NOT_ALLOWED",
                f"{self.name!r} may not read {kind} {key!r}",
                {f"{kind}_id": key},
                field=f"{kind}_id",
            )


EVERYTHING = Scope("operator", None, None)
"""The operator's scope: every model and strategy."""


@dataclass(eq=False, repr=False)
class OpsQueries:
    """Answers the read RPCs of OpsService (and the reads of OpsAdminService).

    Args:
        parts: the ops service's domain objects (read, never changed here).
        periodic: the last allocation and sample.
    """

    parts: OpsParts
    _: KW_ONLY
    periodic: PeriodicDecisions

    def scope_of(self, principal: Principal) -> Scope:
        """A strategy token's scope: its models and the strategies they belong to."""
        strategies = frozenset(
            self.parts.registry.route(m).strategy_id for m in principal.models if self.parts.registry.knows(m)
        )
        return Scope(principal.name, principal.models, strategies)

    def _routes(self, scope: Scope, model_id: str = "", strategy_id: str = "") -> list[ModelRoute]:
        """The routes a read covers; a ``model_id`` the registry does not have is ``UNKNOWN_MODEL`` (not an empty
        answer that reads as "nothing yet")."""
        scope.require_model(model_id)
        scope.require_strategy(strategy_id)
        if model_id:
            self.parts.registry.route(model_id)  # NotFoundError UNKNOWN_MODEL
        return [
            r
            for r in self.parts.registry.routes()
            if (not model_id or r.model_id == model_id)
            and (not strategy_id or r.strategy_id == strategy_id)
            and scope.sees_model(r.model_id)
        ]

    # -- models and capital ----------------------------------------------------------------

    def model_info(self, route: ModelRoute) -> ops_pb2.ModelInfo:
        return wire.model_info(route, self.parts.exposure.quota(route), self.parts.risk.state(route.model_id))

    def models(self, strategy_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.ModelInfo]:
        return [self.model_info(r) for r in self._routes(scope, strategy_id=strategy_id)]

    def route(self, model_id: str) -> ModelRoute:
        """A model's route; NotFoundError ``UNKNOWN_MODEL`` for an unknown id."""
        return self.parts.registry.route(model_id)

    def quota(self, model_id: str, scope: Scope = EVERYTHING) -> ops_pb2.GetModelQuotaResponse:
        parts = self.parts
        scope.require_model(model_id)
        route = parts.registry.route(model_id)
        quota = parts.exposure.quota(route)
        used = parts.exposure.used_quota(route)
        return ops_pb2.GetModelQuotaResponse(
            model_id=route.model_id,
            quota_usd=fmt(quota),
            used_usd=fmt(used),
            available_usd=fmt(max(quota - used, ZERO)),
        )

    def allocations(self, scope: Scope = EVERYTHING) -> ops_pb2.GetAllocationsResponse:
        parts = self.parts
        last = self.periodic.last_allocation
        return ops_pb2.GetAllocationsResponse(
            allocations=[a for a in wire.allocations(parts.allocator) if scope.sees_strategy(a.strategy_id)],
            total_capital_usd=fmt(parts.allocator.policy.total_capital),
            updated_at_unix_nanos=wire.unix_nanos(parts.allocator.last_applied_at),
            last_reason=last.reason.value if last is not None else "",
        )

    def allocation_usd(self, strategy_id: str) -> Decimal:
        """A strategy's capital in USD."""
        return self.parts.allocator.allocation_usd(strategy_id)

    # -- positions and performance ---------------------------------------------------------

    def positions(self, model_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.Position]:
        """Positions per model and instrument; a shadow model shows its paper book."""
        parts = self.parts
        out = []
        for route in self._routes(scope, model_id=model_id):
            book = parts.measurement.book(route.book)
            for instrument, state in sorted(book.positions.items()):
                rules = parts.exposure.rules(route, instrument)
                tick = rules.tick_size if rules is not None else None
                out.append(wire.position(route, instrument, state, parts.exposure.mark(instrument), tick))
        return out

    def position(self, book: str, instrument: str) -> Decimal:
        """Filled position (signed quantity) of a book (a model id, or ``<model>@paper``)."""
        return self.parts.measurement.position(book, instrument)

    def mark(self, instrument: str) -> Decimal | None:
        return self.parts.exposure.mark(instrument)

    def marks(self) -> dict[str, Decimal]:
        return dict(self.parts.exposure.marks())

    def stats(self, model_id: str = "", scope: Scope = EVERYTHING) -> ops_pb2.GetModelStatsResponse:
        routes = self._routes(scope, model_id=model_id)
        bar = self.parts.measurement.bar_seconds
        models = [wire.model_stats(r, self.parts.measurement.performance(r.book), bar) for r in routes]
        wanted = {r.strategy_id for r in routes} if model_id else None  # one model: its strategy alone
        strategies = [
            s
            for s in self.periodic.strategy_stats()
            if scope.sees_strategy(s.strategy_id) and (wanted is None or s.strategy_id in wanted)
        ]
        return ops_pb2.GetModelStatsResponse(models=models, strategies=strategies)

    # -- orders and fills ------------------------------------------------------------------

    def order(self, client_order_id: str) -> TrackedOrder | None:
        """One of ops' orders by client order id (None when unknown or past the history window)."""
        return self.parts.tracker.orders.get(client_order_id)

    def previous_decision(self, model_id: str, signal_id: str) -> ops_pb2.SignalDecision | None:
        """The decision already taken for a signal id, within the dedupe window."""
        return self.parts.tracker.previous_decision(model_id, signal_id)

    def orders(
        self, model_id: str, page_size: int, page_token: str, scope: Scope = EVERYTHING
    ) -> Page[ops_pb2.OrderSummary]:
        """Newest first, then the orders that left memory, most recently archived first (a shadow model's paper
        orders are listed under its paper book, ``<model>@paper``)."""
        scope.require_model(model_id)
        tracker = self.parts.tracker
        orders = [
            o
            for o in reversed(tracker.orders.values())
            if (not model_id or o.model_id == model_id) and scope.sees_model(o.owner or o.model_id)
        ]
        archive = tracker.archive

        def fetch(before: int, limit: int) -> list[tuple[int, TrackedOrder]]:
            assert archive is not None
            rows = archive.orders(model_id, scope.models, before, limit)
            return [(at, archived_order(record, filled, status)) for at, record, filled, status in rows]

        page = merged_page(
            orders,
            page_size,
            page_token,
            None if archive is None else fetch,
            lambda o: o.client_order_id in tracker.orders,
        )
        return Page([wire.order_summary(o) for o in page.items], page.next_page_token)

    def fills(self, model_id: str, page_size: int, page_token: str, scope: Scope = EVERYTHING) -> Page[ops_pb2.Fill]:
        """Newest first, then the fills that left memory, most recently archived first."""
        scope.require_model(model_id)
        tracker = self.parts.tracker
        fills: list[RememberedFill | ops_pb2.Fill] = [
            f
            for f in reversed(tracker.fills.values())
            if (not model_id or f[1] == model_id) and scope.sees_model(f[1])  # f[1]: the fill's model
        ]
        archive = tracker.archive

        def fetch(before: int, limit: int) -> list[tuple[int, RememberedFill | ops_pb2.Fill]]:
            assert archive is not None
            return list(archive.fills(model_id, scope.models, before, limit))

        page = merged_page(
            fills,
            page_size,
            page_token,
            None if archive is None else fetch,
            lambda f: (f[0] if isinstance(f, tuple) else f.exec_id) in tracker.fills,  # f[0]: a kept fill's exec id
        )
        return Page([fill_of(f) if isinstance(f, tuple) else f for f in page.items], page.next_page_token)

    # -- canaries, risk and events ---------------------------------------------------------

    def fills_after(self, seq: int, models: frozenset[str]) -> list[ops_pb2.Fill]:
        """Fills of ``models`` with a seq above ``seq``, oldest first (within the fill history ops keeps)."""
        kept = sorted(  # (exec_id, model_id, seq, encoded)
            (f for f in self.parts.tracker.fills.values() if f[2] > seq and f[1] in models), key=lambda f: f[2]
        )
        return [fill_of(f) for f in kept]

    def canary_statuses(self, strategy_id: str = "", scope: Scope = EVERYTHING) -> list[ops_pb2.CanaryStatus]:
        scope.require_strategy(strategy_id)
        return [
            wire.canary_status(run.controller.status(), run.controller.config.schedule, run.backtest)
            for sid, run in self.parts.canaries.runs.items()
            if (not strategy_id or sid == strategy_id) and scope.sees_strategy(sid)
        ]

    def risk_limits(self, scope: Scope = EVERYTHING) -> dict[str, Any]:
        limits = wire.limits(self.parts.risk.limits)
        limits["models"] = {m: v for m, v in limits["models"].items() if scope.sees_model(m)}
        return limits

    def trading_states(self, scope: Scope = EVERYTHING) -> ops_pb2.GetTradingStateResponse:
        parts = self.parts
        models = {r.model_id: parts.risk.state(r.model_id) for r in self._routes(scope)}
        return wire.trading_states(parts.risk.global_state, parts.risk.kill_switch_engaged, models)

    def trading_state(self, model_id: str | None = None) -> TradingState:
        """The effective state of a model, or the global state when ``model_id`` is None."""
        return self.parts.risk.global_state if model_id is None else self.parts.risk.state(model_id)

    def recent_events(self) -> Iterable[OpsEvent]:
        return tuple(self.parts.events.recent)

    @staticmethod
    def event_visible(event: OpsEvent, scope: Scope) -> bool:
        """An event names a model or a strategy; a strategy sees only the events naming one of its own."""
        if scope.models is None:
            return True
        model = event.attributes.get("model_id") or event.attributes.get("model")
        strategy = event.attributes.get("strategy")
        return bool((model and scope.sees_model(model)) or (strategy and scope.sees_strategy(strategy)))

    def subscribe_events(self) -> asyncio.Queue[OpsEvent]:
        return self.parts.events.subscribe()

    def unsubscribe_events(self, queue: asyncio.Queue[OpsEvent]) -> None:
        self.parts.events.unsubscribe(queue)
