"""Synthetic liquidity: GBM and replay sources, requote crossing, the paper venue and the venue registry."""

from __future__ import annotations

import gc
import types
from decimal import Decimal
from pathlib import Path

import pytest

from engine_server.config import EngineConfig
from engine_server.venues import VENUE_FACTORIES, build_venues
from engine_server.venues.base import ExecType, OrderRequest, Quote, QuoteFeed, Side, VenueAdapter
from engine_server.venues.paper import PaperVenue, PaperVenueConfig
from engine_server.venues.sim import MarketMakerConfig, SimVenue, SimVenueConfig
from engine_server.venues.template import TemplateVenue, TemplateVenueConfig
from nautilus_mesh.config import validate_config
from nautilus_mesh.errors import ConfigError, VenueRejectedError
from tests.venues import instrument, order_request

D = Decimal
INST = instrument(0.8)
NS = 1_000_000_000


def req(coid: str, side: Side, qty: str, price: str | None, account: str = "acct") -> OrderRequest:
    return order_request(coid, side, qty, price, account=account)


def test_market_maker_when_created_then_ladder_quotes_levels_around_initial_price() -> None:
    mm = MarketMakerConfig(spread_bps=D("20"), levels=3, level_step_bps=D("10"), level_notional=D("1000"))
    venue = SimVenue(SimVenueConfig(instruments=(INST,), market_maker=mm))
    book = venue.book("TST-USD")
    assert [p for p, _ in book.depth(Side.BUY)] == [D("99.90"), D("99.80"), D("99.70")]
    assert [p for p, _ in book.depth(Side.SELL)] == [D("100.10"), D("100.21"), D("100.31")]
    assert {q for _, q in book.depth(Side.BUY)} == {D("10.0")}
    assert venue.reference_price("TST-USD") == D("100.00")


def test_gbm_when_advanced_then_mid_moves_and_quote_straddles_reference() -> None:
    venue = SimVenue(SimVenueConfig(instruments=(INST,), seed=3))
    start = venue.reference_price("TST-USD")
    venue.advance(10 * NS)  # the first advance anchors time
    assert venue.reference_price("TST-USD") == start
    venue.advance(10 * NS + 3600 * NS)
    ref = venue.reference_price("TST-USD")
    quote = venue.quote("TST-USD")
    assert ref is not None and quote is not None and ref != start
    assert quote.bid < ref < quote.ask and quote.ts_ns == 10 * NS + 3600 * NS


def test_requote_when_new_quotes_cross_resting_client_order_then_client_fills_as_maker_at_own_price() -> None:
    feed = QuoteFeed()
    feed.publish(Quote("TST-USD", D("100"), D("101"), D("5"), D("5"), D("100.5"), 0))
    paper = PaperVenue(PaperVenueConfig(instruments=(INST,), follows="live"), feed.get)
    accepted = paper.submit(req("bid", Side.BUY, "2", "100.50"))
    assert [e.exec_type for e in accepted] == [ExecType.ACCEPTED]
    feed.publish(Quote("TST-USD", D("99"), D("100"), D("5"), D("5"), D("99.5"), 0))
    events = paper.advance(NS)
    assert [(e.exec_type, e.last_price, e.liquidity, e.fee) for e in events] == [
        (ExecType.FILL, D("100.50"), "MAKER", D("0.02010000"))
    ]


def test_replay_when_csv_given_then_quotes_follow_rows_at_chosen_speed(tmp_path: Path) -> None:
    csv_path = tmp_path / "quotes.csv"
    csv_path.write_text(
        "ts,symbol,bid,ask,bid_size,ask_size\n"
        f"{0},TST-USD,100.00,100.02,3,4\n"
        f"{10 * NS},TST-USD,101.00,101.02,3,4\n"
        f"{20 * NS},TST-USD,102.00,102.02,3,4\n"
        f"{5 * NS},OTHER,1,2,1,1\n",
        encoding="utf-8",
    )
    venue = SimVenue(SimVenueConfig(instruments=(INST,), replay_csv=csv_path, replay_speed=2.0))
    assert venue.quote("TST-USD") == Quote("TST-USD", D("100.00"), D("100.02"), D("3"), D("4"), D("100.01"), 0)
    venue.advance(1_000 * NS)  # anchors the replay clock at the first row
    venue.advance(1_005 * NS)  # 5 s at 2x speed = 10 s of replay
    assert venue.reference_price("TST-USD") == D("101.01")
    venue.advance(1_100 * NS)  # past the end: hold the last row
    assert venue.reference_price("TST-USD") == D("102.01")


def test_replay_when_columns_missing_then_config_error(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("ts,symbol,bid\n1,TST-USD,100\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="missing columns"):
        SimVenue(SimVenueConfig(instruments=(INST,), replay_csv=csv_path))


def test_paper_when_following_live_then_same_prices_but_separate_book() -> None:
    live = SimVenue(SimVenueConfig(instruments=(INST,), seed=11))
    paper = PaperVenue(PaperVenueConfig(instruments=(INST,), follows="live"), live.quote_feed().get)
    live.advance(NS)
    live.advance(600 * NS)
    paper.advance(600 * NS)
    assert paper.quote("TST-USD") == live.quote("TST-USD")
    assert paper.reference_price("TST-USD") == live.reference_price("TST-USD")
    events = paper.submit(req("p1", Side.BUY, "50", None))
    assert events[-1].cum_qty > 0
    assert paper.quote("TST-USD") != live.quote("TST-USD")  # only the paper book was consumed
    assert paper.status().kind == "paper" and live.status().kind == "live"


def _reachable(root: object) -> list[object]:
    """Objects reachable from ``root`` through instance state (not through modules, classes or functions)."""
    seen: dict[int, object] = {}
    stack = [root]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return list(seen.values())


def test_paper_when_built_from_a_live_feed_then_no_live_adapter_is_reachable() -> None:
    live = SimVenue(SimVenueConfig(instruments=(INST,)))
    paper = PaperVenue(PaperVenueConfig(instruments=(INST,), follows="live"), live.quote_feed().get)
    reachable = _reachable(paper)
    assert not any(obj is live for obj in reachable)
    assert any(isinstance(obj, QuoteFeed) for obj in reachable)  # the walk did reach the feed


def venues_from(configs: list[dict[str, object]]) -> dict[str, VenueAdapter]:
    """Venues as the engine builds them from the ``venues`` list of its config file."""
    return build_venues(validate_config(EngineConfig, {"venues": configs}, source="engine.json").venues)


def test_registry_when_sim_and_paper_configured_then_paper_follows_sim() -> None:
    venues = venues_from(
        [{"name": "sim", "adapter": "sim", "seed": 5}, {"name": "shadow", "adapter": "paper", "follows": "sim"}]
    )
    assert set(venues) == {"sim", "shadow"} and set(VENUE_FACTORIES) == {"sim", "paper"}
    venues["sim"].advance(NS)
    venues["sim"].advance(900 * NS)
    venues["shadow"].advance(900 * NS)
    assert venues["shadow"].quote("ETH-USD") == venues["sim"].quote("ETH-USD")


@pytest.mark.parametrize(
    "configs",
    [
        [{"name": "x", "adapter": "nope"}],
        [{"name": "p", "adapter": "paper", "follows": "sim"}, {"name": "sim", "adapter": "sim"}],
        [{"name": "sim", "adapter": "sim"}, {"name": "sim", "adapter": "sim"}],
        [{"name": "sim", "adapter": "sim", "market_maker": {"levels": 0}}],
    ],
)
def test_registry_when_config_invalid_then_config_error(configs: list[dict[str, object]]) -> None:
    with pytest.raises(ConfigError):
        venues_from(configs)


def test_template_when_submitting_then_not_connected_rejection() -> None:
    venue = TemplateVenue(TemplateVenueConfig(name="acme", instruments=(INST,)))
    with pytest.raises(VenueRejectedError) as exc_info:
        venue.submit(req("t1", Side.BUY, "1", "100.00"))
    assert exc_info.value.code == "VENUE_NOT_CONNECTED"
    assert venue.status().connected is False
