"""Venue-level rails: the engine's last checks before an order reaches a venue.

Rails, in the order they run (the first breach wins), with their reason codes:

==================  ======================  =========================================================
rail                code                    denies
==================  ======================  =========================================================
message_rate        RATE_LIMITED            more new orders per session than the token bucket allows
                                            (excess is denied, never queued; cancels are not limited)
max_order_qty       MAX_ORDER_QTY           quantity above the venue's (or the symbol's) maximum
max_order_notional  MAX_ORDER_NOTIONAL      quantity x (limit price, or reference price for MARKET)
                                            above the maximum
price_collar        PRICE_COLLAR            a limit price further than ``price_collar_bps`` from the
                                            venue's reference price
(any of the two)    NO_REFERENCE_PRICE      a price check is configured but the venue has no
                                            reference price (fail closed)
==================  ======================  =========================================================

Self-match prevention lives in the venue's book (it needs the resting orders), and
cancel-on-disconnect is executed by the order manager from ``cancel_on_disconnect`` here.

Every denial raises ``VenueRejectedError(code, message, details, rail=...)``, increments
``rejections[(venue, rail)]``, logs a ``[VENUE-RAILS]`` line and calls ``on_reject(venue, rail)`` (the
engine exports ``venue_rejections_total{venue,rail}`` from it).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated

import pydantic

from engine_server.venues.base import OrderRequest, OrderType
from nautilus_mesh.config import StrictModel
from nautilus_mesh.decimals import EXACT
from nautilus_mesh.errors import VenueRejectedError

log = logging.getLogger(__name__)

_BPS = Decimal(10000)


PositiveDecimal = Annotated[Decimal, pydantic.Field(gt=0)]


class VenueRailsConfig(StrictModel):
    """Limits of one venue (``rails.<venue>`` of the engine config). ``None`` switches a rail off. A paper venue takes
    the size rails it does not set (``max_order_qty``, ``max_order_qty_by_symbol``, ``max_order_notional``) from the
    venue it follows, so a shadow order is held to the sizes of the live one it stands for; set one to ``null`` to
    switch it off there."""

    price_collar_bps: PositiveDecimal | None = None
    """Maximum distance of a limit price from the reference price, in basis points."""
    max_order_qty: PositiveDecimal | None = None
    """Maximum quantity of any order."""
    max_order_qty_by_symbol: dict[str, PositiveDecimal] = {}
    """Per-symbol maximum quantity, overriding ``max_order_qty`` (quantities are not comparable across symbols)."""
    max_order_notional: PositiveDecimal | None = None
    """Maximum order notional in quote currency."""
    max_messages_per_second: float | None = pydantic.Field(default=None, gt=0, allow_inf_nan=False)
    """Token refill rate of each session's bucket (new orders per second)."""
    message_burst: int | None = pydantic.Field(default=None, ge=1)
    """Bucket capacity; defaults to ``ceil(max_messages_per_second)``, and is refused without it."""
    cancel_on_disconnect: bool = True
    """Cancel a session's resting orders when its order stream drops."""

    @pydantic.model_validator(mode="after")
    def _burst_needs_rate(self) -> VenueRailsConfig:
        if self.message_burst is not None and self.max_messages_per_second is None:
            raise ValueError("message_burst needs max_messages_per_second")
        return self

    @property
    def burst(self) -> int:
        """Effective bucket capacity."""
        if self.message_burst is not None:
            return self.message_burst
        return max(1, math.ceil(self.max_messages_per_second or 1.0))


class _TokenBucket:
    __slots__ = ("last_ns", "tokens")

    def __init__(self, tokens: float, now_ns: int) -> None:
        self.tokens = tokens
        self.last_ns = now_ns


class VenueRails:
    """Checks orders against one venue's limits.

    Args:
        config: The limits.
        venue: Venue name used in counters, logs and error details.
        on_reject: Called with ``(venue, rail)`` on every denial (metrics hook).
    """

    def __init__(
        self,
        config: VenueRailsConfig,
        *,
        venue: str = "",
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.venue = venue
        self._on_reject = on_reject
        self._buckets: dict[str, _TokenBucket] = {}
        self.rejections: Counter[tuple[str, str]] = Counter()

    @property
    def cancel_on_disconnect(self) -> bool:
        """Whether a dropped session's resting orders are cancelled."""
        return self.config.cancel_on_disconnect

    def check(self, req: OrderRequest, reference_price: Decimal | None, now_ns: int, *, venue: str = "") -> None:
        """Check a new order; returns quietly when every rail passes.

        Args:
            req: The order.
            reference_price: The venue's reference price for the order's symbol (None when unknown).
            now_ns: Current time, for the rate limiter.
            venue: Overrides the venue label (when one rails object guards several venues).

        Raises:
            VenueRejectedError: a rail denies the order; ``code`` and ``rail`` name it.
        """
        label = venue or self.venue
        cfg = self.config
        if cfg.max_messages_per_second is not None and not self._take_token(req.session_id, now_ns):
            self._deny(
                label,
                "message_rate",
                "RATE_LIMITED",
                f"session {req.session_id} exceeds {cfg.max_messages_per_second} orders per second",
                {"session_id": req.session_id, "limit_per_second": cfg.max_messages_per_second, "burst": cfg.burst},
            )
        max_qty = cfg.max_order_qty_by_symbol.get(req.symbol, cfg.max_order_qty)
        if max_qty is not None and req.quantity > max_qty:
            self._deny(
                label,
                "max_order_qty",
                "MAX_ORDER_QTY",
                f"quantity {req.quantity} exceeds the maximum {max_qty}",
                {"requested": req.quantity, "maximum": max_qty, "symbol": req.symbol},
            )
        if cfg.max_order_notional is not None:
            price = req.limit_price if req.order_type is OrderType.LIMIT else reference_price
            if price is None:
                self._no_reference(label, "max_order_notional", req)
            else:
                notional = EXACT.multiply(req.quantity, price)  # exact: 28 digits could round it under the maximum
                if notional > cfg.max_order_notional:
                    self._deny(
                        label,
                        "max_order_notional",
                        "MAX_ORDER_NOTIONAL",
                        f"notional {notional} exceeds the maximum {cfg.max_order_notional}",
                        {"requested": notional, "maximum": cfg.max_order_notional, "price": price},
                    )
        if cfg.price_collar_bps is not None and req.order_type is OrderType.LIMIT and req.limit_price is not None:
            if reference_price is None or reference_price <= 0:
                self._no_reference(label, "price_collar", req)
            else:
                distance = abs(req.limit_price - reference_price) / reference_price * _BPS
                if distance > cfg.price_collar_bps:
                    self._deny(
                        label,
                        "price_collar",
                        "PRICE_COLLAR",
                        f"limit price {req.limit_price} is {distance:.1f} bps from the reference {reference_price}",
                        {
                            "limit_price": req.limit_price,
                            "reference_price": reference_price,
                            "distance_bps": f"{distance:.2f}",
                            "collar_bps": cfg.price_collar_bps,
                        },
                    )

    def forget_session(self, session_id: str) -> None:
        """Drop a closed session's rate bucket (keeps memory bounded by live sessions)."""
        self._buckets.pop(session_id, None)

    def _take_token(self, session_id: str, now_ns: int) -> bool:
        cfg = self.config
        rate = cfg.max_messages_per_second or 0.0
        bucket = self._buckets.get(session_id)
        if bucket is None:
            bucket = self._buckets[session_id] = _TokenBucket(float(cfg.burst), now_ns)
        elif now_ns > bucket.last_ns:
            bucket.tokens = min(float(cfg.burst), bucket.tokens + (now_ns - bucket.last_ns) * rate / 1e9)
            bucket.last_ns = now_ns
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _no_reference(self, label: str, rail: str, req: OrderRequest) -> None:
        self._deny(
            label,
            rail,
            "NO_REFERENCE_PRICE",
            f"venue has no reference price for {req.symbol}; price rails fail closed",
            {"symbol": req.symbol},
        )

    def _deny(self, label: str, rail: str, code: str, message: str, details: Mapping[str, object]) -> None:
        self.rejections[(label, rail)] += 1
        log.warning("[VENUE-RAILS] venue=%s rail=%s code=%s: %s", label, rail, code, message)
        if self._on_reject is not None:
            self._on_reject(label, rail)
        raise VenueRejectedError(code, message, {"venue": label, **details}, rail=rail)
