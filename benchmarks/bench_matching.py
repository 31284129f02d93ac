"""Orders matched per second by the sim venue in one process, market maker on.

Run: .venv/bin/python benchmarks/bench_matching.py [--orders N] [--seed S]

The flow is a fixed mix: 60 % limit orders within +-10 bps of the reference price (GTC, a tenth of
them IOC), 40 % market orders, spread over three instruments; the market maker requotes every 50
orders (100 ms of simulated time) and resting client orders older than 500 orders are cancelled so
the book stays a realistic size. Reported: submits per second (each includes validation, matching
and event creation) and the same figure through the OrderManager ledger (rails + seq, no journal).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_server.order_manager import OrderManager
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import OrderRequest, OrderType, Side, TimeInForce, VenueAdapter
from engine_server.venues.sim import SimVenue, SimVenueConfig

REQUOTE_EVERY = 50
STEP_NS = 100_000_000
MAX_RESTING = 500


def make_orders(venue: SimVenue, count: int, seed: int) -> list[tuple[OrderRequest, float]]:
    """Pre-built requests (price offsets applied at submit time against the moving reference)."""
    rng = random.Random(seed)
    symbols = list(venue.instruments())
    out: list[tuple[OrderRequest, float]] = []
    for i in range(count):
        symbol = symbols[i % len(symbols)]
        inst = venue.instruments()[symbol]
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        lots = rng.randint(1, 20)
        qty = inst.min_qty * lots * (100 if symbol == "SOL-USD" else 10)
        if rng.random() < 0.6:
            tif = TimeInForce.IOC if rng.random() < 0.1 else TimeInForce.GTC
            req = OrderRequest(f"o{i}", "bench", f"acct{i % 4}", "bench", symbol, side, OrderType.LIMIT, tif, qty, None)
            out.append((req, rng.uniform(-10, 10)))
        else:
            req = OrderRequest(
                f"o{i}", "bench", f"acct{i % 4}", "bench", symbol, side, OrderType.MARKET, TimeInForce.IOC, qty
            )
            out.append((req, 0.0))
    return out


def priced(venue: VenueAdapter, req: OrderRequest, offset_bps: float) -> OrderRequest:
    if req.order_type is OrderType.MARKET:
        return req
    ref = venue.reference_price(req.symbol)
    assert ref is not None
    tick = venue.instruments()[req.symbol].tick_size
    price = (ref * (1 + Decimal(repr(offset_bps)) / 10000) / tick).to_integral_value() * tick
    return OrderRequest(
        req.client_order_id, req.session_id, req.account, req.model_id, req.symbol, req.side,
        req.order_type, req.time_in_force, req.quantity, price,
    )  # fmt: skip


def run_venue(count: int, seed: int) -> tuple[float, int]:
    venue = SimVenue(SimVenueConfig(seed=seed))
    orders = make_orders(venue, count, seed)
    resting: deque[str] = deque()
    now = 1_700_000_000_000_000_000
    venue.advance(now)
    fills = 0
    start = time.perf_counter()
    for i, (req, offset) in enumerate(orders):
        if i % REQUOTE_EVERY == 0:
            now += STEP_NS
            fills += len(venue.advance(now))
        events = venue.submit(priced(venue, req, offset))
        fills += sum(1 for e in events if e.liquidity)
        if events and events[-1].leaves_qty > 0 and req.order_type is OrderType.LIMIT:
            resting.append(req.client_order_id)
            if len(resting) > MAX_RESTING:
                venue.cancel(resting.popleft())
    return time.perf_counter() - start, fills


def run_manager(count: int, seed: int) -> float:
    venue = SimVenue(SimVenueConfig(seed=seed))
    rails = VenueRails(VenueRailsConfig(price_collar_bps=Decimal(500), max_order_notional=Decimal(10_000_000)))
    now = [1_700_000_000_000_000_000]
    manager = OrderManager({"sim": venue}, rails, clock=lambda: now[0])
    orders = make_orders(venue, count, seed)
    manager.advance(now[0])
    start = time.perf_counter()
    for i, (req, offset) in enumerate(orders):
        if i % REQUOTE_EVERY == 0:
            now[0] += STEP_NS
            manager.advance(now[0])
        manager.submit("sim", priced(venue, req, offset))
        if i % MAX_RESTING == 0:
            manager.cancel_all(session_id="bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/bench_matching.py " + " ".join(sys.argv[1:]))
    elapsed, fills = run_venue(args.orders, args.seed)
    rate = args.orders / elapsed
    print(f"sim venue:     {args.orders} orders in {elapsed:.2f} s = {rate:,.0f} orders/s ({fills} fill events)")
    count = args.orders // 2
    elapsed_mgr = run_manager(count, args.seed)
    print(
        f"order manager: {count} orders in {elapsed_mgr:.2f} s = {count / elapsed_mgr:,.0f} orders/s (rails + ledger)"
    )


if __name__ == "__main__":
    main()
