"""The quote tape a backtest replays: read from a CSV (validated line by line) or drawn from the seeded sim market.

CSV columns (header required, any order, extra columns ignored):

- ``ts``: quote time, integer nanoseconds since the Unix epoch, strictly increasing per symbol.
- ``bid``, ``ask``: prices (decimals), finite, ``0 < bid < ask``.
- ``bid_size``, ``ask_size`` (optional, both or neither): quantities at the inside, finite and positive; without
  them the sim market maker's configured level size is quoted.
- ``symbol`` (optional): the instrument; without it every row is the backtest's default instrument (``BTC-USD``).

This is also the engine's replay format (``ts,symbol,bid,ask,bid_size,ask_size``), so a file recorded for the
sim venue's ``replay_csv`` replays here too. A bad row is refused with its line number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from engine_server.venues.base import Instrument
from engine_server.venues.sim.config import MarketMakerConfig
from engine_server.venues.sim.market_maker import GbmPriceSource
from nautilus_mesh.errors import ConfigError

DEFAULT_SYMBOL = "BTC-USD"
REQUIRED_COLUMNS = ("ts", "bid", "ask")
SIZE_COLUMNS = ("bid_size", "ask_size")
SYNTHETIC_START_NS = 1_767_225_600_000_000_000
"""2026-01-01T00:00:00Z: the first instant of a synthetic tape (nanoseconds since the epoch)."""
NS_PER_SECOND = 1_000_000_000


class TapeError(ConfigError):
    """A quote file the backtest refuses, with the offending line number when there is one."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}", {"path": str(path), "line": line or 0}, code="BACKTEST_BAD_INPUT")
        self.line = line


@dataclass(frozen=True, slots=True)
class TapeQuote:
    """One quote of the tape."""

    ts_ns: int
    """Quote time, nanoseconds since the Unix epoch."""
    symbol: str
    bid: Decimal
    """Best bid price."""
    ask: Decimal
    """Best ask price."""
    bid_size: Decimal | None
    """Quantity at the bid (None: the market maker's level size)."""
    ask_size: Decimal | None
    """Quantity at the ask (None: the market maker's level size)."""


def _decimal(raw: str | None, column: str, path: Path, line: int) -> Decimal:
    try:
        value = Decimal((raw or "").strip())
    except InvalidOperation:
        raise TapeError(path, line, f"{column} is not a number: {raw!r}") from None
    if not value.is_finite():
        raise TapeError(path, line, f"{column} is not finite: {raw!r}")
    if value <= 0:
        raise TapeError(path, line, f"{column} must be positive, got {raw!r}")
    return value


def load_tape(path: Path, *, default_symbol: str = DEFAULT_SYMBOL) -> list[TapeQuote]:
    """Read and validate a quote CSV.

    Raises:
        TapeError: the file is unreadable or empty, a required column is missing, or a row has a malformed or
            non-finite number, a crossed or locked quote (``bid >= ask``), or a timestamp not after the previous
            one of its symbol (the message names the line).
    """
    quotes: list[TapeQuote] = []
    last_ts: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise TapeError(path, 1, f"missing column(s) {', '.join(missing)} (need ts, bid, ask)")
            has_sizes = [c for c in SIZE_COLUMNS if c in columns]
            if len(has_sizes) == 1:
                raise TapeError(path, 1, "bid_size and ask_size come together: give both or neither")
            reader.fieldnames = columns
            for line, row in enumerate(reader, 2):
                raw_ts = (row.get("ts") or "").strip()
                try:
                    ts = int(raw_ts)
                except ValueError:
                    raise TapeError(path, line, f"ts is not an integer of nanoseconds: {raw_ts!r}") from None
                symbol = (row.get("symbol") or default_symbol).strip()
                bid = _decimal(row.get("bid"), "bid", path, line)
                ask = _decimal(row.get("ask"), "ask", path, line)
                if bid >= ask:
                    raise TapeError(path, line, f"crossed quote: bid {bid} >= ask {ask}")
                if ts < 0:
                    raise TapeError(path, line, f"ts must be nanoseconds since the Unix epoch (>= 0), got {ts}")
                if symbol in last_ts and ts <= last_ts[symbol]:
                    raise TapeError(path, line, f"ts {ts} is not after the previous {symbol} quote ({last_ts[symbol]})")
                last_ts[symbol] = ts
                sizes = (
                    (
                        _decimal(row.get("bid_size"), "bid_size", path, line),
                        _decimal(row.get("ask_size"), "ask_size", path, line),
                    )
                    if has_sizes
                    else (None, None)
                )
                quotes.append(TapeQuote(ts, symbol, bid, ask, sizes[0], sizes[1]))
    except OSError as exc:
        raise TapeError(path, None, f"cannot read the quote file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TapeError(path, None, "not a UTF-8 text file") from None
    if not quotes:
        raise TapeError(path, None, "no quotes")
    quotes.sort(key=lambda q: q.ts_ns)  # stable: rows of one timestamp keep their file order
    return quotes


def synthetic_tape(
    instrument: Instrument, market_maker: MarketMakerConfig, seed: int, count: int, interval_ns: int = NS_PER_SECOND
) -> list[TapeQuote]:
    """``count`` quotes of the sim venue's seeded GBM market for ``instrument``, one every ``interval_ns``.

    The same seed and instrument always give the same tape (the sim venue's own price source draws it).
    """
    if count < 1 or interval_ns < 1:
        raise ValueError(f"count and interval_ns must be >= 1, got {count} and {interval_ns}")
    source = GbmPriceSource([instrument], market_maker, seed)
    out: list[TapeQuote] = []
    for i in range(count):
        top = source.top(instrument, SYNTHETIC_START_NS + i * interval_ns)
        assert top is not None  # a GBM source always quotes its instruments
        out.append(TapeQuote(top.ts_ns, instrument.symbol, top.bid, top.ask, top.bid_size, top.ask_size))
    return out


def write_tape(path: Path, quotes: Sequence[TapeQuote], *, with_symbol: bool = False) -> None:
    """Write quotes as a CSV that :func:`load_tape` reads back: ``ts,bid,ask,bid_size,ask_size`` plus ``symbol``
    with ``with_symbol`` (needed for any instrument but the default one)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("ts", "bid", "ask", "bid_size", "ask_size", *(("symbol",) if with_symbol else ())))
        for q in quotes:
            row = (q.ts_ns, q.bid, q.ask, q.bid_size or "", q.ask_size or "")
            writer.writerow((*row, q.symbol) if with_symbol else row)


def symbols(quotes: Sequence[TapeQuote]) -> list[str]:
    """The tape's instruments, sorted."""
    return sorted({q.symbol for q in quotes})


def batches(quotes: Sequence[TapeQuote]) -> Iterator[tuple[int, list[TapeQuote]]]:
    """The tape grouped by timestamp, in time order: ``(ts_ns, quotes at ts_ns)``."""
    i, n = 0, len(quotes)
    while i < n:
        ts = quotes[i].ts_ns
        j = i
        while j < n and quotes[j].ts_ns == ts:
            j += 1
        yield ts, list(quotes[i:j])
        i = j
