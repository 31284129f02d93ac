"""What a model holds and may use, as one view: quota, position + open orders, marks, used quota, gross exposure.

The router sizes signals and the rails check orders against this one object, so both read the same numbers.
Marks come from the engine's quote stream; instrument rules (lot, minimum quantity, tick) from the engine's venue list,
per venue: a model's orders are sized by the rules of the venue they go to (the paper venue's in SHADOW).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.clock import REAL_CLOCK, Clock
from ops_server.allocation import CapitalAllocator
from ops_server.measurement import Measurement
from ops_server.model_registry import ModelRegistry, ModelRoute, RoutingMode
from ops_server.order_tracker import OrderTracker
from ops_server.risk import RiskContext

ZERO = Decimal(0)
CENT = Decimal("0.01")
_NO_RULES: Mapping[str, InstrumentRules] = {}


@dataclass(frozen=True)
class InstrumentRules:
    """Lot and tick of an instrument, as the engine reports them."""

    lot_size: Decimal
    min_quantity: Decimal
    tick_size: Decimal


@dataclass(eq=False, repr=False)
class ExposureView:
    """Quotas, positions, open orders and marks of every model, read consistently on the event loop.

    Args:
        registry: routing weights and modes (a model's quota share).
        allocator: each strategy's capital.
        measurement: filled positions and marks.
        tracker: open orders.
        shadow_capital_usd: the paper capital a SHADOW model is sized on, USD.
        clock: monotonic time of quotes (mark age for the stale-mark rail).
        live_venue: the venue live orders go to (its instrument rules size them).
        paper_venue: the venue SHADOW orders go to (its instrument rules size them).
    """

    registry: ModelRegistry
    allocator: CapitalAllocator
    measurement: Measurement
    tracker: OrderTracker
    shadow_capital_usd: Decimal
    clock: Clock = REAL_CLOCK
    other_workers_gross: Decimal = field(init=False, default=ZERO)
    """Gross exposure the other ops workers hold, USD (several workers; kept by ops_server.coordination)."""
    live_venue: str = field(kw_only=True)
    paper_venue: str = field(kw_only=True)
    _rules: dict[str, dict[str, InstrumentRules]] = field(init=False, default_factory=dict)
    _mark_time: dict[str, float] = field(init=False, default_factory=dict)

    # -- quota -----------------------------------------------------------------------------

    def quota(self, route: ModelRoute) -> Decimal:
        """Model quota in USD: strategy allocation x routing weight, rounded down to the cent (0 for a strategy the
        capital policy leaves out); paper capital in SHADOW. Rounding down keeps the sum of a strategy's quotas within
        its allocation."""
        if route.mode is RoutingMode.SHADOW:
            return self.shadow_capital_usd
        if not self.allocator.enabled(route.strategy_id):  # left out of the capital policy: no capital
            return ZERO
        return _quota_usd(self.allocator.allocation_usd(route.strategy_id), route.weight)

    def used_quota(self, route: ModelRoute) -> Decimal:
        """Gross notional of the positions plus open orders of the book the route trades (a SHADOW model's paper
        book) at current marks, USD."""
        used = ZERO
        for instrument in route.instruments:
            mark = self.mark(instrument)
            if mark is not None:
                used += abs(self.exposure_qty(route.book, instrument)) * mark
        return used

    def available_quota(self, route: ModelRoute) -> Decimal:
        """Quota not yet used, USD (never negative)."""
        return max(ZERO, self.quota(route) - self.used_quota(route))

    # -- positions -------------------------------------------------------------------------

    def position(self, model_id: str, instrument: str) -> Decimal:
        """Filled position (signed quantity) of a model's book."""
        return self.measurement.position(model_id, instrument)

    def open_quantity(self, model_id: str, instrument: str) -> Decimal:
        """Signed quantity of a book's orders still working at the engine."""
        return self.tracker.open_quantity(model_id, instrument)

    def exposure_qty(self, model_id: str, instrument: str) -> Decimal:
        """Position plus open orders (signed quantity): what the next order is sized against."""
        return self.position(model_id, instrument) + self.open_quantity(model_id, instrument)

    def live_models(self) -> list[str]:
        return [r.model_id for r in self.registry.routes() if r.mode is RoutingMode.LIVE]

    def own_gross_exposure(self) -> Decimal:
        """Gross notional of the live positions this ops process holds, at current marks, USD."""
        return self.measurement.gross_exposure(self.live_models())

    def gross_exposure(self) -> Decimal:
        """Gross notional of every live model's positions at current marks, USD (with several ops workers, this
        worker's plus what the others last wrote to the store)."""
        return self.own_gross_exposure() + self.other_workers_gross

    def risk_context(self, route: ModelRoute, instrument: str) -> RiskContext:
        """The numbers the rails check one order of ``route`` in ``instrument`` against."""
        model_id = route.model_id
        return RiskContext(
            position_qty=self.position(model_id, instrument),
            open_order_qty=self.open_quantity(model_id, instrument),
            available_quota=self.quota(route) - self.used_quota(route),  # unfloored: an overdraft counts
            gross_exposure=self.gross_exposure(),
            mark_age_seconds=self.mark_age(instrument),
        )

    # -- marks and instruments -------------------------------------------------------------

    def mark(self, instrument: str) -> Decimal | None:
        """The latest mid from the engine's quotes, or None before the first quote."""
        return self.measurement.marks.get(instrument)

    def marks(self) -> Mapping[str, Decimal]:
        return self.measurement.marks

    def mark_age(self, instrument: str) -> float | None:
        """Seconds since the instrument's last quote (monotonic clock), or None before the first."""
        at = self._mark_time.get(instrument)
        return None if at is None else self.clock.monotonic() - at

    def on_quotes(self, quotes: Sequence[common_pb2.Quote]) -> None:
        now = self.clock.monotonic()
        for quote in quotes:
            if quote.mid:
                self.measurement.set_mark(quote.instrument, Decimal(quote.mid))
                self._mark_time[quote.instrument] = now

    def rules(self, route: ModelRoute, instrument: str) -> InstrumentRules | None:
        """Lot, minimum quantity and tick of ``instrument`` at the venue ``route``'s orders go to (the paper venue in
        SHADOW, the live venue otherwise); None when that venue does not list it."""
        venue = self.paper_venue if route.mode is RoutingMode.SHADOW else self.live_venue
        return self._rules.get(venue, _NO_RULES).get(instrument)

    def set_instruments(self, by_venue: Mapping[str, Iterable[engine_pb2.InstrumentInfo]]) -> None:
        """The instrument rules each venue lists (venue name -> its instruments), replacing the ones of an earlier
        connect."""
        self._rules = {
            venue: {
                spec.instrument: InstrumentRules(
                    lot_size=Decimal(spec.lot_size),
                    min_quantity=Decimal(spec.min_quantity or "0"),
                    tick_size=Decimal(spec.tick_size),
                )
                for spec in specs
            }
            for venue, specs in by_venue.items()
        }


@functools.lru_cache(maxsize=1024)
def _quota_usd(allocation_usd: Decimal, weight: float) -> Decimal:
    """``allocation_usd * weight`` rounded down to the cent (asked on every signal; both change rarely)."""
    return (allocation_usd * Decimal(repr(weight))).quantize(CENT, rounding=ROUND_DOWN)
