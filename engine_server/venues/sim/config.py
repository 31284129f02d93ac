"""Configuration of the embedded ``sim`` venue: instruments, market maker, latency, replay.

Every config is a frozen dataclass that validates itself and raises ``ConfigError`` with the
offending field, and has ``from_mapping`` for the engine's JSON config, e.g.::

    {"name": "sim", "adapter": "sim", "seed": 7,
     "market_maker": {"spread_bps": "4", "levels": 5, "level_step_bps": "2", "level_notional": "50000"},
     "latency": {"fixed_ns": 200000, "jitter_ns": 100000},
     "replay_csv": null, "replay_speed": 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from engine_server.venues.base import Instrument
from nautilus_mesh.errors import ConfigError


def default_instruments() -> tuple[Instrument, ...]:
    """A small crypto universe with realistic ticks, lots, fees and starting prices."""
    return (
        Instrument(
            symbol="BTC-USD",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.0001"),
            min_qty=Decimal("0.0001"),
            maker_fee_bps=Decimal("1"),
            taker_fee_bps=Decimal("5"),
            initial_price=Decimal("60000.00"),
            volatility=0.6,
        ),
        Instrument(
            symbol="ETH-USD",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.001"),
            min_qty=Decimal("0.001"),
            maker_fee_bps=Decimal("1"),
            taker_fee_bps=Decimal("5"),
            initial_price=Decimal("3000.00"),
            volatility=0.75,
        ),
        Instrument(
            symbol="SOL-USD",
            tick_size=Decimal("0.001"),
            lot_size=Decimal("0.01"),
            min_qty=Decimal("0.01"),
            maker_fee_bps=Decimal("2"),
            taker_fee_bps=Decimal("6"),
            initial_price=Decimal("150.000"),
            volatility=0.9,
        ),
    )


def _dec(data: Mapping[str, object], key: str, default: str) -> Decimal:
    try:
        value = Decimal(str(data.get(key, default)))
    except InvalidOperation:
        raise ConfigError(f"{key} must be a decimal", {key: data.get(key)}) from None
    return value


@dataclass(frozen=True, slots=True)
class MarketMakerConfig:
    """The synthetic market maker that gives the sim venue its liquidity."""

    spread_bps: Decimal = Decimal("4")
    """Full spread of the innermost level around the mid, in basis points."""
    levels: int = 5
    """Price levels quoted per side."""
    level_step_bps: Decimal = Decimal("2")
    """Distance between consecutive levels, in basis points of the innermost price."""
    level_notional: Decimal = Decimal("50000")
    """Size of each level as a notional at the instrument's initial price (rounded down to lots)."""
    level_size: Mapping[str, Decimal] = field(default_factory=dict)
    """Optional per-symbol quantity per level, overriding ``level_notional``."""

    def __post_init__(self) -> None:
        if not self.spread_bps.is_finite() or not Decimal(0) < self.spread_bps <= Decimal(2000):
            raise ConfigError("market_maker.spread_bps must be in (0, 2000]", {"spread_bps": self.spread_bps})
        if not 1 <= self.levels <= 50:
            raise ConfigError("market_maker.levels must be in [1, 50]", {"levels": self.levels})
        if not self.level_step_bps.is_finite() or not Decimal(0) <= self.level_step_bps <= Decimal(1000):
            raise ConfigError(
                "market_maker.level_step_bps must be in [0, 1000]", {"level_step_bps": self.level_step_bps}
            )
        if not self.level_notional.is_finite() or self.level_notional <= 0:
            raise ConfigError("market_maker.level_notional must be positive", {"level_notional": self.level_notional})
        for symbol, size in self.level_size.items():
            if not size.is_finite() or size <= 0:
                raise ConfigError(f"market_maker.level_size[{symbol}] must be positive", {"size": size})

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> MarketMakerConfig:
        """Build from a config dict; missing keys keep their defaults."""
        sizes = data.get("level_size", {})
        if not isinstance(sizes, Mapping):
            raise ConfigError("market_maker.level_size must be an object of symbol -> quantity")
        try:
            levels = int(str(data.get("levels", 5)))
            level_size = {str(k): Decimal(str(v)) for k, v in sizes.items()}
        except (ValueError, InvalidOperation):
            raise ConfigError("market_maker config is malformed", {"market_maker": data}) from None
        return cls(
            spread_bps=_dec(data, "spread_bps", "4"),
            levels=levels,
            level_step_bps=_dec(data, "level_step_bps", "2"),
            level_notional=_dec(data, "level_notional", "50000"),
            level_size=level_size,
        )


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Simulated venue latency added to every event timestamp (nothing sleeps)."""

    fixed_ns: int = 0
    """Constant part of the delay."""
    jitter_ns: int = 0
    """Upper bound of a uniform random extra delay drawn from the venue's seeded generator."""

    def __post_init__(self) -> None:
        if self.fixed_ns < 0 or self.jitter_ns < 0:
            raise ConfigError("latency fixed_ns and jitter_ns must be >= 0", {"fixed_ns": self.fixed_ns})

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> LatencyConfig:
        """Build from a config dict."""
        try:
            return cls(fixed_ns=int(str(data.get("fixed_ns", 0))), jitter_ns=int(str(data.get("jitter_ns", 0))))
        except ValueError:
            raise ConfigError("latency config is malformed", {"latency": data}) from None


@dataclass(frozen=True, slots=True)
class SimVenueConfig:
    """Everything a ``SimVenue`` is built from. Same config and seed give the same run."""

    name: str = "sim"
    """Venue name orders address."""
    instruments: tuple[Instrument, ...] = field(default_factory=default_instruments)
    """Instruments traded; symbols must be unique."""
    seed: int = 0
    """Seeds the GBM mid and the latency jitter."""
    market_maker: MarketMakerConfig = field(default_factory=MarketMakerConfig)
    """Synthetic liquidity."""
    latency: LatencyConfig | None = None
    """Optional simulated latency."""
    replay_csv: Path | None = None
    """A CSV of quotes (columns ts, symbol, bid, ask, bid_size, ask_size; ts in ns) replayed instead of GBM."""
    replay_speed: float = 1.0
    """Replay clock speed: 2.0 plays the CSV twice as fast as the venue's clock."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("venue name must be non-empty letters, digits, '-' or '_'", {"name": self.name})
        if not self.instruments:
            raise ConfigError(f"venue {self.name}: at least one instrument is required")
        symbols = [i.symbol for i in self.instruments]
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"venue {self.name}: duplicate instrument symbols", {"symbols": ",".join(symbols)})
        if not math.isfinite(self.replay_speed) or self.replay_speed <= 0:
            raise ConfigError("replay_speed must be a positive number", {"replay_speed": self.replay_speed})
        if self.replay_csv is not None and not Path(self.replay_csv).is_file():
            raise ConfigError(f"replay_csv not found: {self.replay_csv}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> SimVenueConfig:
        """Build from the engine's venue config dict (``adapter`` and unknown keys are ignored).

        Raises:
            ConfigError: a field is malformed.
        """
        raw_instruments = data.get("instruments")
        if raw_instruments is None:
            instruments = default_instruments()
        elif isinstance(raw_instruments, list):
            instruments = tuple(Instrument.from_mapping(_as_mapping(i, "instruments[]")) for i in raw_instruments)
        else:
            raise ConfigError("instruments must be a list of objects")
        latency = data.get("latency")
        replay = data.get("replay_csv")
        try:
            seed = int(str(data.get("seed", 0)))
            speed = float(str(data.get("replay_speed", 1.0)))
        except ValueError:
            raise ConfigError("seed must be an integer and replay_speed a number") from None
        return cls(
            name=str(data.get("name", "sim")),
            instruments=instruments,
            seed=seed,
            market_maker=MarketMakerConfig.from_mapping(_as_mapping(data.get("market_maker", {}), "market_maker")),
            latency=None if latency is None else LatencyConfig.from_mapping(_as_mapping(latency, "latency")),
            replay_csv=None if replay is None else Path(str(replay)),
            replay_speed=speed,
        )


def _as_mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be an object")
    return value
