"""Measurement: positions, average cost, PnL, fees and slippage per model, and return series.

Fills update positions exactly (Decimal); marks come from the engine's quotes. PnL
(realized + unrealized - fees) is sampled on a fixed interval into a bounded per-model series
of returns (PnL change over the model's capital base), from which Sharpe, drawdown and hit
rate are computed. Statistics are floats; money stays Decimal.

Units (see docs/statistics.md):
    - Sharpe is annualised from returns summed into bars of ``bar_seconds`` (``sharpe_annual``).
    - Drawdown has one definition: the fall of equity from its peak, where equity = capital base + PnL and a change
      of the capital base (an allocation) is a deposit or withdrawal, not a gain or loss. It is measured on the
      time-weighted equity index ``I_t = I_{t-1} (B_t + P_t) / (B_t + P_{t-1})`` (``I_0 = 1``, ``B`` the
      capital base at the sample, ``P`` the PnL), so ``drawdown_ratio = 1 - I / max I``
      (a fraction of peak equity) and an allocation cut alone changes no drawdown figure. ``drawdown_usd`` is the
      same fall in USD: ``max PnL - PnL``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ops_server import performance
from ops_server.performance import aggregate_returns, bars_per_year, samples_per_bar

log = logging.getLogger(__name__)

ZERO = Decimal(0)
ONE = Decimal(1)
DEFAULT_HISTORY = 10_000


@dataclass
class PositionState:
    """One model's position in one instrument.

    The open position's cost is kept as a sum (``cost``, USD: quantity x price of each opening fill, less what closing
    fills took out) and the average cost is derived from it, so a position closed in full realizes exactly what its
    fills paid and received (buy 1 at 100, 2 at 101, sell 3 at 101 realizes 1, not 0.9999...: an average of 100.666...
    rounded to 28 digits would not give it back)."""

    quantity: Decimal = ZERO
    avg_cost: Decimal = ZERO
    """``cost / |quantity|`` (0 when flat), USD per unit: what unrealized PnL is measured from."""
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    slippage: Decimal = ZERO
    cost: Decimal = ZERO
    """What the open position cost, USD (positive for a long and a short alike)."""

    def apply(self, signed_qty: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        """Apply a fill (positive buys, negative sells); returns the PnL it realized."""
        realized = ZERO
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):
            self.cost += abs(signed_qty) * price
            self.quantity = q + signed_qty
            self.avg_cost = self.cost / abs(self.quantity)
        else:
            closing = min(abs(q), abs(signed_qty))
            direction = 1 if q > 0 else -1
            closed_cost = self.cost if closing == abs(q) else self.cost * closing / abs(q)
            realized = (closing * price - closed_cost) * direction
            self.cost -= closed_cost
            self.quantity = q + signed_qty
            if self.quantity == 0:
                self.avg_cost = self.cost = ZERO
            elif (self.quantity > 0) != (q > 0):  # flipped through zero: the rest opens at this price
                self.avg_cost = price
                self.cost = abs(self.quantity) * price
        self.realized += realized
        self.fees += fee
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """PnL of the open position at ``mark``, USD: its value less what it cost (from the exact ``cost``, not the
        rounded average: long 3 that cost 302, marked at 101, is 1, not 0.9999...)."""
        if mark is None or self.quantity == 0:
            return ZERO
        value = self.quantity * mark
        return value - self.cost if self.quantity > 0 else value + self.cost


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
    """PnL at the last sample, USD (named for history: it is the equity less the capital base)."""
    peak_pnl: Decimal = ZERO
    """Highest sampled PnL, USD."""
    max_drawdown_usd: Decimal = ZERO
    """Largest ``peak_pnl - PnL`` seen at a sample, USD."""
    equity_index: Decimal = ONE
    """Time-weighted equity index: equity (capital base + PnL) per unit, net of allocation changes (1 at start). A
    decimal, so that a fall to exactly a limit (20% of 1000 USD) is exactly that fraction, not 0.19999999999999996."""
    peak_index: Decimal = ONE
    """Highest ``equity_index`` seen (unitless)."""
    resumed_from: Decimal | None = None
    """PnL at the last sample before a restart (USD), restored from the state store: the first sample after it steps
    the equity index from there (a fall across the restart is not forgotten); it records no return."""
    max_drawdown_ratio: float = 0.0
    """Largest ``1 - equity_index / peak_index`` seen (fraction of peak equity)."""
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
    """PnL: realized + unrealized - fees, USD."""
    sharpe_annual: float
    """Sharpe ratio annualised from returns summed into bars (Sharpe per sqrt(year)); 0.0 below ``min_bars`` bars."""
    drawdown_ratio: float
    """Current fall from peak equity, a fraction of the peak."""
    max_drawdown_ratio: float
    """Largest fall from peak equity so far, a fraction of the peak."""
    drawdown_usd: Decimal
    """Current fall of PnL from its peak at a sample, USD."""
    max_drawdown_usd: Decimal
    """Largest fall of PnL from its peak so far, USD."""
    hit_rate: float
    observations: int
    """Bars behind the Sharpe ratio and the hit rate (count)."""
    fills: int
    min_bars: int = 2
    """Bars the Sharpe ratio needs before it is reported (count); ``sharpe_annual`` is 0.0 below it."""


class Measurement:
    """Positions and performance of every model.

    Args:
        sample_seconds: interval between two samples, seconds.
        bar_seconds: horizon returns are summed to before Sharpe and hit rate, seconds (rounded to whole samples).
        history: maximum samples kept per model.
        min_bars: bars a Sharpe ratio needs before it is reported (count); below it the Sharpe ratio is 0.0.
    """

    def __init__(
        self, sample_seconds: float, bar_seconds: float = 60.0, history: int = DEFAULT_HISTORY, min_bars: int = 2
    ) -> None:
        if min_bars < 2:
            raise ValueError(f"min_bars must be at least 2 (a Sharpe ratio needs a standard deviation), got {min_bars}")
        self.min_bars = min_bars
        """Bars a Sharpe ratio needs before it is reported (count)."""
        self.samples_per_bar = samples_per_bar(bar_seconds, sample_seconds)
        self.bar_seconds = self.samples_per_bar * sample_seconds
        """The effective bar, seconds (a whole number of samples)."""
        self.bars_per_year = bars_per_year(self.bar_seconds)
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
            if not self.book_priced(model_id):  # an open position without a mark (before the first quote after a
                continue  # restart) would count at nothing: the book is sampled once it is priced
            book = self.book(model_id)
            equity = self.equity(model_id)
            base = capital.get(model_id, ZERO)
            # The index steps from the last sample's PnL, or the one saved before a restart, or 0 (PnL starts at 0:
            # fees paid before a book's first sample are a fall too); a return needs a previous sample.
            previous = _last_pnl(book) or ZERO
            if base > 0:
                if book.last_equity is not None:  # none over a restart: the interval is not one sample long
                    r = float((equity - previous) / base)
                    sampled[model_id] = r
                    book.returns.append(r)
                # Equity is base + PnL; a new base is a deposit or withdrawal made before this interval, so the
                # interval's return on equity is dPnL / (base + previous PnL). Equity wiped out leaves the index at 0.
                start = base + previous
                growth = (base + equity) / start if start > 0 else ZERO
                book.equity_index = max(ZERO, book.equity_index * growth)
                book.peak_index = max(book.peak_index, book.equity_index)
                book.max_drawdown_ratio = max(book.max_drawdown_ratio, _fall(book.equity_index, book.peak_index))
            book.resumed_from = None
            book.last_equity = equity
            book.equity_samples.append(float(equity))
            book.sample_times.append(now)
            book.peak_pnl = max(book.peak_pnl, equity)
            book.max_drawdown_usd = max(book.max_drawdown_usd, book.peak_pnl - equity)
        return sampled

    def drawdown_ratio(self, model_id: str) -> float:
        """Current fall of the model's equity from its peak at the last sample, a fraction of the peak in [0, 1]."""
        book = self._books.get(model_id)
        return 0.0 if book is None else _fall(book.equity_index, book.peak_index)

    def drawdown_usd(self, model_id: str) -> Decimal:
        """Current fall of the model's PnL from its peak at the last sample, USD (>= 0)."""
        book = self._books.get(model_id)
        if book is None or book.last_equity is None:
            return ZERO
        return book.peak_pnl - book.last_equity

    def drawdown_state(self) -> dict[str, dict[str, str]]:
        """Each book's drawdown memory (equity index, peaks, maxima) as strings, for the state store."""
        return {
            model_id: {
                "equity_index": str(book.equity_index),
                "peak_index": str(book.peak_index),
                "max_drawdown_ratio": repr(book.max_drawdown_ratio),
                "peak_pnl": str(book.peak_pnl),
                "max_drawdown_usd": str(book.max_drawdown_usd),
                **({"last_pnl": str(pnl)} if (pnl := _last_pnl(book)) is not None else {}),
            }
            for model_id, book in self._books.items()
        }

    def restore_drawdown_state(self, state: Mapping[str, Mapping[str, str]]) -> None:
        """Put back what :meth:`drawdown_state` saved, so a restart does not forget a drawdown (or its peak)."""
        for model_id, saved in state.items():
            book = self.book(model_id)
            book.equity_index = Decimal(saved["equity_index"])  # a float's repr in states saved before: read as is
            book.peak_index = Decimal(saved["peak_index"])
            book.resumed_from = Decimal(saved["last_pnl"]) if "last_pnl" in saved else None
            book.max_drawdown_ratio = float(saved["max_drawdown_ratio"])
            book.peak_pnl = Decimal(saved["peak_pnl"])
            book.max_drawdown_usd = Decimal(saved["max_drawdown_usd"])

    def positions_state(self) -> dict[str, dict[str, object]]:
        """Every book's positions and fill count as strings (what the journal's fills built), for a snapshot."""
        return {
            model_id: {
                "fills": book.fills,
                "positions": {
                    instrument: {
                        "quantity": str(p.quantity),
                        "avg_cost": str(p.avg_cost),
                        "cost": str(p.cost),
                        "realized": str(p.realized),
                        "fees": str(p.fees),
                        "slippage": str(p.slippage),
                    }
                    for instrument, p in book.positions.items()
                },
            }
            for model_id, book in self._books.items()
        }

    def restore_positions(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Put back what :meth:`positions_state` saved."""
        for model_id, saved in state.items():
            book = self.book(model_id)
            book.fills = int(saved["fills"])
            book.positions = {instrument: _position_of(p) for instrument, p in saved["positions"].items()}

    def annual_sharpe(self, returns: list[float]) -> float:
        """Sharpe ratio of sampled returns, summed into the most recent whole bars and annualised.

        0.0 below ``min_bars`` bars: an annualised estimate from ``n`` bars has a standard error of about
        ``sqrt(bars_per_year / n)``, so a figure from a handful of bars says nothing.
        """
        return self._bar_sharpe(self.bar_returns(returns))

    def _bar_sharpe(self, bars: list[float]) -> float:
        return performance.annualized_sharpe(bars, self.bars_per_year) if len(bars) >= self.min_bars else 0.0

    def bar_returns(self, returns: list[float]) -> list[float]:
        """Sampled returns summed into bars (the most recent whole bars)."""
        return aggregate_returns(returns[len(returns) % self.samples_per_bar :], self.samples_per_bar)

    def daily_pnl(self, model_id: str) -> Decimal:
        book = self._books.get(model_id)
        return self.equity(model_id) - (book.day_start_equity if book else ZERO)

    def book_priced(self, model_id: str) -> bool:
        """Whether every open position of the book has a mark (its equity is then fully valued)."""
        book = self._books.get(model_id)
        return book is None or all(i in self.marks for i, p in book.positions.items() if p.quantity)

    def unpriced_books(self) -> set[str]:
        """The books with an open position that has no mark yet."""
        return {model_id for model_id in self._books if not self.book_priced(model_id)}

    def start_day(self, books: Iterable[str] | None = None) -> None:
        """Mark the start of a trading day for daily-loss limits: every book's equity now, or only ``books``'."""
        for model_id in self._books if books is None else books:
            self.book(model_id).day_start_equity = self.equity(model_id)

    def performance(self, model_id: str) -> ModelPerformance:
        book = self.book(model_id)
        positions = book.positions.items()
        returns = list(book.returns)
        bars = self.bar_returns(returns)
        return ModelPerformance(
            model_id=model_id,
            realized=sum((p.realized for _, p in positions), start=ZERO),
            unrealized=sum((p.unrealized(self.marks.get(i)) for i, p in positions), start=ZERO),
            fees=sum((p.fees for _, p in positions), start=ZERO),
            slippage=sum((p.slippage for _, p in positions), start=ZERO),
            equity=self.equity(model_id),
            sharpe_annual=self._bar_sharpe(bars),
            drawdown_ratio=self.drawdown_ratio(model_id),
            max_drawdown_ratio=book.max_drawdown_ratio,
            drawdown_usd=self.drawdown_usd(model_id),
            max_drawdown_usd=book.max_drawdown_usd,
            hit_rate=performance.hit_rate(bars) if bars else 0.0,
            observations=len(bars),
            fills=book.fills,
            min_bars=self.min_bars,
        )

    def combined_equity(self, model_ids: Iterable[str]) -> list[float]:
        """The summed PnL curve of several models over the samples in memory, aligned on the most recent (USD); a
        model with fewer samples (it went live later) counts as PnL 0 before its first, so a younger model never
        shortens the curve (and a drawdown the others had is not forgotten)."""
        curves = [list(self.book(m).equity_samples) for m in model_ids]
        n = max((len(c) for c in curves), default=0)
        return [math.fsum(c[i - n + len(c)] for c in curves if i >= n - len(c)) for i in range(n)]

    def returns(self, model_id: str) -> list[float]:
        book = self._books.get(model_id)
        return list(book.returns) if book else []


def _last_pnl(book: ModelBook) -> Decimal | None:
    """The PnL the next sample's index step starts from: the last sample's, or the one restored from before a
    restart while no sample has been taken since."""
    return book.last_equity if book.last_equity is not None else book.resumed_from


def _fall(index: Decimal, peak: Decimal) -> float:
    """``1 - index / peak`` clipped to [0, 1]: the fall from the peak as a fraction of it."""
    return 0.0 if peak <= 0 else float(min(ONE, max(ZERO, ONE - index / peak)))


def drawdown_of_pnl_curve(pnl: list[float]) -> float:
    """Largest fall from a peak of a PnL curve, in currency units: ``max(0, P_1..P_t) - P_t`` at its worst (PnL
    starts at 0, so a curve that only falls has fallen from 0)."""
    peak = 0.0
    worst = 0.0
    for value in pnl:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst


def _position_of(saved: Mapping[str, Any]) -> PositionState:
    """A position from :meth:`Measurement.positions_state`'s strings; a snapshot written before ``cost`` was kept
    gives the cost its average stood for."""
    position = PositionState(**{name: Decimal(value) for name, value in saved.items()})
    if "cost" not in saved:
        position.cost = abs(position.quantity) * position.avg_cost
    return position
