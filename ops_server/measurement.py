"""Measurement: positions, average cost, PnL, fees and slippage per model, and return series.

Fills update positions exactly (Decimal); marks come from the engine's quotes. Equity
(realized + unrealized - fees) is sampled on a fixed interval into a bounded per-model series
of returns (PnL change over the model's capital base), from which Sharpe, drawdown and hit
rate are computed. Statistics are floats; money stays Decimal.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ops_server import performance

log = logging.getLogger(__name__)

ZERO = Decimal(0)
DEFAULT_HISTORY = 10_000


@dataclass
class PositionState:
    """One model's position in one instrument."""

    quantity: Decimal = ZERO
    avg_cost: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    slippage: Decimal = ZERO

    def apply(self, signed_qty: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        """Apply a fill (positive buys, negative sells); returns the PnL it realized."""
        realized = ZERO
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):
            total = abs(q) + abs(signed_qty)
            self.avg_cost = (abs(q) * self.avg_cost + abs(signed_qty) * price) / total
            self.quantity = q + signed_qty
        else:
            closing = min(abs(q), abs(signed_qty))
            direction = 1 if q > 0 else -1
            realized = closing * (price - self.avg_cost) * direction
            self.quantity = q + signed_qty
            if self.quantity == 0:
                self.avg_cost = ZERO
            elif (self.quantity > 0) != (q > 0):  # flipped through zero: the rest opens at this price
                self.avg_cost = price
        self.realized += realized
        self.fees += fee
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        if mark is None or self.quantity == 0:
            return ZERO
        return self.quantity * (mark - self.avg_cost)


@dataclass
class ModelBook:
    """Everything measured for one model."""

    model_id: str
    positions: dict[str, PositionState] = field(default_factory=dict)
    equity_samples: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_HISTORY))
    sample_times: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_HISTORY))
    returns: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_HISTORY))
    fills: int = 0
    last_equity: Decimal | None = None
    peak_equity: Decimal = ZERO
    day_start_equity: Decimal = ZERO


@dataclass(frozen=True)
class ModelPerformance:
    """A model's measured performance at one moment."""

    model_id: str
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    slippage: Decimal
    equity: Decimal
    sharpe: float
    max_drawdown: float
    hit_rate: float
    observations: int
    fills: int


class Measurement:
    """Positions and performance of every model.

    Args:
        periods_per_year: sampling periods per year, for annualising Sharpe.
        history: maximum samples kept per model.
    """

    def __init__(self, periods_per_year: float, history: int = DEFAULT_HISTORY) -> None:
        self.periods_per_year = periods_per_year
        self._history = history
        self._books: dict[str, ModelBook] = {}
        self.marks: dict[str, Decimal] = {}

    def book(self, model_id: str) -> ModelBook:
        book = self._books.get(model_id)
        if book is None:
            book = ModelBook(
                model_id,
                equity_samples=deque(maxlen=self._history),
                sample_times=deque(maxlen=self._history),
                returns=deque(maxlen=self._history),
            )
            self._books[model_id] = book
        return book

    def models(self) -> list[str]:
        return list(self._books)

    def set_mark(self, instrument: str, mark: Decimal) -> None:
        self.marks[instrument] = mark

    def apply_fill(
        self,
        model_id: str,
        instrument: str,
        signed_qty: Decimal,
        price: Decimal,
        fee: Decimal,
        reference_mid: Decimal | None = None,
    ) -> Decimal:
        """Apply one fill; ``reference_mid`` (the mid when the signal arrived) measures slippage."""
        book = self.book(model_id)
        position = book.positions.setdefault(instrument, PositionState())
        realized = position.apply(signed_qty, price, fee)
        if reference_mid is not None:
            # Paid above the mid when buying, or received below it when selling: a positive cost.
            position.slippage += (price - reference_mid) * signed_qty
        book.fills += 1
        return realized

    def position(self, model_id: str, instrument: str) -> Decimal:
        book = self._books.get(model_id)
        if book is None:
            return ZERO
        pos = book.positions.get(instrument)
        return pos.quantity if pos else ZERO

    def exposure(self, model_id: str) -> Decimal:
        """Gross notional of a model's positions at current marks."""
        book = self._books.get(model_id)
        if book is None:
            return ZERO
        return sum(
            (abs(p.quantity) * self.marks.get(i, p.avg_cost) for i, p in book.positions.items()),
            start=ZERO,
        )

    def gross_exposure(self, models: Iterable[str] | None = None) -> Decimal:
        return sum((self.exposure(m) for m in (models if models is not None else self._books)), start=ZERO)

    def equity(self, model_id: str) -> Decimal:
        """Realized + unrealized - fees, at current marks."""
        book = self._books.get(model_id)
        if book is None:
            return ZERO
        return sum(
            (p.realized + p.unrealized(self.marks.get(i)) - p.fees for i, p in book.positions.items()),
            start=ZERO,
        )

    def sample(self, now: float, capital: Mapping[str, Decimal]) -> dict[str, float]:
        """Sample every model's equity; the return is the equity change over the model's capital base.

        Returns:
            The return each model got in this sample (models without a capital base or a previous sample get none).
        """
        sampled: dict[str, float] = {}
        for model_id in set(self._books) | set(capital):
            book = self.book(model_id)
            equity = self.equity(model_id)
            base = capital.get(model_id, ZERO)
            if book.last_equity is not None and base > 0:
                sampled[model_id] = float((equity - book.last_equity) / base)
                book.returns.append(sampled[model_id])
            book.last_equity = equity
            book.equity_samples.append(float(equity))
            book.sample_times.append(now)
            book.peak_equity = max(book.peak_equity, equity)
        return sampled

    def drawdown(self, model_id: str, capital: Decimal) -> float:
        """Current drawdown from peak equity as a fraction of ``capital`` (0 when none)."""
        book = self._books.get(model_id)
        if book is None or capital <= 0:
            return 0.0
        return float(max(ZERO, book.peak_equity - self.equity(model_id)) / capital)

    def daily_pnl(self, model_id: str) -> Decimal:
        book = self._books.get(model_id)
        return self.equity(model_id) - (book.day_start_equity if book else ZERO)

    def start_day(self) -> None:
        """Mark the start of a trading day for daily-loss limits."""
        for model_id, book in self._books.items():
            book.day_start_equity = self.equity(model_id)

    def performance(self, model_id: str) -> ModelPerformance:
        book = self.book(model_id)
        positions = book.positions.items()
        returns = list(book.returns)
        equity_curve = list(book.equity_samples)
        return ModelPerformance(
            model_id=model_id,
            realized=sum((p.realized for _, p in positions), start=ZERO),
            unrealized=sum((p.unrealized(self.marks.get(i)) for i, p in positions), start=ZERO),
            fees=sum((p.fees for _, p in positions), start=ZERO),
            slippage=sum((p.slippage for _, p in positions), start=ZERO),
            equity=self.equity(model_id),
            sharpe=performance.annualized_sharpe(returns, self.periods_per_year) if len(returns) >= 2 else 0.0,
            max_drawdown=drawdown_of_pnl_curve(equity_curve),
            hit_rate=performance.hit_rate(returns) if returns else 0.0,
            observations=len(returns),
            fills=book.fills,
        )

    def combined_equity(self, model_ids: Iterable[str]) -> list[float]:
        """The summed equity curve of several models over their common (most recent) samples."""
        curves = [list(self.book(m).equity_samples) for m in model_ids]
        n = min((len(c) for c in curves), default=0)
        return [sum(c[len(c) - n + i] for c in curves) for i in range(n)]

    def returns(self, model_id: str) -> list[float]:
        book = self._books.get(model_id)
        return list(book.returns) if book else []


def drawdown_of_pnl_curve(pnl: list[float]) -> float:
    """Largest fall from a peak of a PnL curve, in currency units (a PnL curve may start at zero)."""
    peak = float("-inf")
    worst = 0.0
    for value in pnl:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst
