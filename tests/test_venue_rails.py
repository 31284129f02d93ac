"""Venue-level rails: collar, size, notional, per-session message rate."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import OrderRequest, OrderType, Side, TimeInForce
from nautilus_mesh.config import validate_config
from nautilus_mesh.errors import ConfigError, VenueRejectedError

D = Decimal
NS = 1_000_000_000
HUNDRED = Decimal(100)


def req(qty: str = "1", price: str | None = "100", *, session: str = "s1", symbol: str = "BTC-USD") -> OrderRequest:
    otype = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderRequest(
        "c", session, "a", "m", symbol, Side.BUY, otype, TimeInForce.GTC, D(qty), None if price is None else D(price)
    )


def denial(rails: VenueRails, order: OrderRequest, ref: Decimal | None = HUNDRED, now: int = 0) -> VenueRejectedError:
    with pytest.raises(VenueRejectedError) as exc_info:
        rails.check(order, ref, now)
    return exc_info.value


@pytest.mark.parametrize("price", ["105.01", "94.99"])
def test_collar_when_limit_outside_band_then_price_collar(price: str) -> None:
    rails = VenueRails(VenueRailsConfig(price_collar_bps=D("500")), venue="sim")
    err = denial(rails, req(price=price))
    assert (err.code, err.rail, err.details["reference_price"]) == ("PRICE_COLLAR", "price_collar", "100")


def test_collar_when_limit_inside_band_or_market_then_passes() -> None:
    rails = VenueRails(VenueRailsConfig(price_collar_bps=D("500")), venue="sim")
    rails.check(req(price="105"), D(100), 0)
    rails.check(req(price=None), D(100), 0)
    assert not rails.rejections


def test_max_qty_when_exceeded_then_max_order_qty_with_symbol_override() -> None:
    cfg = VenueRailsConfig(max_order_qty=D("10"), max_order_qty_by_symbol={"SOL-USD": D("1000")})
    rails = VenueRails(cfg, venue="sim")
    err = denial(rails, req(qty="11"))
    assert (err.code, err.details["requested"], err.details["maximum"]) == ("MAX_ORDER_QTY", "11", "10")
    rails.check(req(qty="500", symbol="SOL-USD"), D(100), 0)


def test_notional_when_exceeded_then_uses_limit_or_reference_price() -> None:
    rails = VenueRails(VenueRailsConfig(max_order_notional=D("1000")), venue="sim")
    assert denial(rails, req(qty="11", price="100")).code == "MAX_ORDER_NOTIONAL"
    assert denial(rails, req(qty="6", price=None), ref=D(200)).code == "MAX_ORDER_NOTIONAL"
    rails.check(req(qty="6", price=None), D(100), 0)


def test_notional_when_exact_product_is_above_maximum_though_28_digits_round_it_below_then_denied() -> None:
    """The product is compared exactly: 123456789012.3456 x 123456789012.34 = 15241578753238125910690.744704, above a
    maximum of ...690.7447 (rounded to the default context's 28 digits it was ...690.7447 and passed)."""
    maximum = D("15241578753238125910690.7447")
    rails = VenueRails(VenueRailsConfig(max_order_notional=maximum), venue="sim")
    err = denial(rails, req(qty="123456789012.3456", price="123456789012.34"))
    assert (err.code, err.details["requested"]) == ("MAX_ORDER_NOTIONAL", "15241578753238125910690.744704")
    rails.check(req(qty="123456789012.3456", price="123456789012.33"), HUNDRED, 0)  # below it: passes


def test_price_rails_when_no_reference_then_fail_closed() -> None:
    rails = VenueRails(VenueRailsConfig(price_collar_bps=D("100"), max_order_notional=D("1e9")), venue="sim")
    assert denial(rails, req(price=None), ref=None).code == "NO_REFERENCE_PRICE"
    assert denial(rails, req(price="100"), ref=None).rail == "price_collar"


def test_rate_when_burst_used_then_denied_until_refilled_and_not_queued() -> None:
    rails = VenueRails(VenueRailsConfig(max_messages_per_second=2.0), venue="sim")
    rails.check(req(), D(100), 0)
    rails.check(req(), D(100), 0)
    assert denial(rails, req(), now=0).code == "RATE_LIMITED"
    assert denial(rails, req(), now=NS // 4).code == "RATE_LIMITED"  # half a token: still denied
    rails.check(req(), D(100), NS // 2)  # one token refilled; the denied ones did not queue up
    assert denial(rails, req(), now=NS // 2).code == "RATE_LIMITED"
    rails.check(req(session="s2"), D(100), 0)  # buckets are per session


def test_denial_when_rail_breached_then_counter_callback_and_log(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []
    rails = VenueRails(VenueRailsConfig(max_order_qty=D(1)), venue="sim", on_reject=lambda v, r: seen.append((v, r)))
    with caplog.at_level(logging.WARNING):
        denial(rails, req(qty="2"))
        denial(rails, req(qty="3"))
    assert rails.rejections[("sim", "max_order_qty")] == 2
    assert seen == [("sim", "max_order_qty")] * 2
    assert "[VENUE-RAILS] venue=sim rail=max_order_qty code=MAX_ORDER_QTY" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        {"price_collar_bps": "-1"},
        {"max_order_qty": "0"},
        {"max_messages_per_second": "nan"},
        {"message_burst": 5},
        {"max_order_notional": "abc"},
        {"cancel_on_disconnect": "maybe"},
    ],
)
def test_config_when_invalid_then_config_error(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"engine\.json: rails\.sim"):
        validate_config(VenueRailsConfig, data, source="engine.json", at="rails.sim")


def test_config_when_read_from_json_values_then_values_parsed() -> None:
    cfg = validate_config(
        VenueRailsConfig,
        {"price_collar_bps": "250", "max_messages_per_second": 50, "cancel_on_disconnect": "false"},
        source="engine.json",
    )
    assert (cfg.price_collar_bps, cfg.burst, cfg.cancel_on_disconnect) == (D(250), 50, False)
