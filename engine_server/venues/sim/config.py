"""Configuration of the embedded ``sim`` venue: instruments, market maker, latency, replay.

Every config is a frozen pydantic model: unknown keys are errors, decimals are strings or numbers, and a
bad value fails with the field's path (``validate_config`` turns it into a ``ConfigError`` naming the file).
In the engine's JSON config, e.g.::

    {"name": "sim", "adapter": "sim", "seed": 7,
     "market_maker": {"spread_bps": "4", "levels": 5, "level_step_bps": "2", "level_notional": "50000"},
     "latency": {"fixed_ns": 200000, "jitter_ns": 100000},
     "replay_csv": null, "replay_speed": 1.0}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import pydantic

from engine_server.venues.base import Instrument
from nautilus_mesh.config import StrictModel

_DEFAULT_INSTRUMENTS = (
    # symbol, tick_size, lot_size (= min_qty), maker_fee_bps, taker_fee_bps, initial_price, volatility
    ("BTC-USD", "0.01", "0.0001", "1", "5", "60000.00", 0.6),
    ("ETH-USD", "0.01", "0.001", "1", "5", "3000.00", 0.75),
    ("SOL-USD", "0.001", "0.01", "2", "6", "150.000", 0.9),
)


def default_instruments() -> tuple[Instrument, ...]:
    """A small crypto universe with realistic ticks, lots, fees and starting prices."""
    return tuple(
        Instrument(
            symbol=symbol,
            tick_size=Decimal(tick),
            lot_size=Decimal(lot),
            min_qty=Decimal(lot),
            maker_fee_bps=Decimal(maker),
            taker_fee_bps=Decimal(taker),
            initial_price=Decimal(price),
            volatility=volatility,
        )
        for symbol, tick, lot, maker, taker, price, volatility in _DEFAULT_INSTRUMENTS
    )


def _venue_name(name: str) -> str:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError("venue name must be non-empty letters, digits, '-' or '_'")
    return name


VenueName = Annotated[str, pydantic.AfterValidator(_venue_name)]
"""A venue's name: letters, digits, ``-`` or ``_``."""


class MarketMakerConfig(StrictModel):
    """The synthetic market maker that gives the sim venue its liquidity."""

    spread_bps: Decimal = pydantic.Field(default=Decimal("4"), gt=0, le=2000)
    """Full spread of the innermost level around the mid, in basis points."""
    levels: int = pydantic.Field(default=5, ge=1, le=50)
    """Price levels quoted per side; a bid level that would be priced at or below 0 (many levels far apart) is not
    quoted, so the bid side may hold fewer."""
    level_step_bps: Decimal = pydantic.Field(default=Decimal("2"), ge=0, le=1000)
    """Distance between consecutive levels, in basis points of the innermost price."""
    level_notional: Decimal = pydantic.Field(default=Decimal("50000"), gt=0)
    """Size of each level as a notional at the instrument's initial price, in the quote currency (rounded down to lots,
    and raised to the instrument's ``min_qty`` when below it)."""
    level_size: dict[str, Annotated[Decimal, pydantic.Field(gt=0)]] = {}
    """Optional per-symbol quantity per level, overriding ``level_notional`` (rounded down to lots, raised to
    ``min_qty``)."""


class LatencyConfig(StrictModel):
    """Simulated venue latency added to every event timestamp (nothing sleeps)."""

    fixed_ns: int = pydantic.Field(default=0, ge=0)
    """Constant part of the delay."""
    jitter_ns: int = pydantic.Field(default=0, ge=0)
    """Upper bound of a uniform random extra delay drawn from the venue's seeded generator."""


class SimVenueConfig(StrictModel):
    """Everything a ``SimVenue`` is built from. Same config and seed give the same run."""

    adapter: Literal["sim"] = "sim"
    """Selects this adapter in the engine's ``venues`` list."""
    name: VenueName = "sim"
    """Venue name orders address."""
    instruments: tuple[Instrument, ...] = pydantic.Field(default_factory=default_instruments, min_length=1)
    """Instruments traded; symbols must be unique."""
    seed: int = 0
    """Seeds the GBM mid and the latency jitter."""
    market_maker: MarketMakerConfig = MarketMakerConfig()
    """Synthetic liquidity."""
    latency: LatencyConfig | None = None
    """Optional simulated latency."""
    replay_csv: pydantic.FilePath | None = None
    """A CSV of quotes (columns ts, symbol, bid, ask, bid_size, ask_size; ts in ns) replayed instead of GBM."""
    replay_speed: float = pydantic.Field(default=1.0, gt=0, allow_inf_nan=False)
    """Replay clock speed: 2.0 plays the CSV twice as fast as the venue's clock."""

    @pydantic.field_validator("instruments")
    @classmethod
    def _unique_symbols(cls, instruments: tuple[Instrument, ...]) -> tuple[Instrument, ...]:
        symbols = [i.symbol for i in instruments]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate instrument symbols: {', '.join(symbols)}")
        return instruments
