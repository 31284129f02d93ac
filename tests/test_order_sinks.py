"""The commands ops' order sinks build: a MARKET IOC ``NewOrder`` for the sink's venue and account, carrying the
order's trace context, and the same command again when a journaled order is re-sent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from ops_server.order_sinks import PAPER_ACCOUNT, LiveOrderSink, PaperOrderSink, resend_commands
from ops_server.order_tracker import TrackedOrder
from ops_server.router import LiveOrder, ShadowOrder, SizedOrder

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
ORDER = SizedOrder(
    client_order_id="momentum_v1-s-42",
    signal_id="s-42",
    model_id="momentum_v1",
    strategy_id="momentum",
    instrument="BTC-USD",
    side="SELL",
    quantity=Decimal("0.01250"),
    mark=Decimal("100.5"),
    owner="momentum_v1",
)


def expected(venue: str, account: str) -> engine_pb2.OrderCommand:
    """The command as the engine's contract spells it, built the plain way (a ``NewOrder``, then the command)."""
    return engine_pb2.OrderCommand(
        new_order=engine_pb2.NewOrder(
            client_order_id="momentum_v1-s-42",
            venue=venue,
            account=account,
            model_id="momentum_v1",
            instrument="BTC-USD",
            side=common_pb2.SIDE_SELL,
            order_type=common_pb2.ORDER_TYPE_MARKET,
            time_in_force=common_pb2.TIME_IN_FORCE_IOC,
            quantity="0.0125",
            trace=common_pb2.TraceContext(traceparent=TRACEPARENT),
        )
    )


def test_live_sink_sends_a_market_ioc_order_to_the_live_venue_on_the_live_account() -> None:
    command = LiveOrderSink("sim", "main").command(LiveOrder(ORDER), common_pb2.TraceContext(traceparent=TRACEPARENT))
    assert command == expected("sim", "main")
    assert command.SerializeToString() == expected("sim", "main").SerializeToString()


def test_paper_sink_sends_to_the_paper_venue_on_the_paper_account() -> None:
    command = PaperOrderSink("paper").command(ShadowOrder(ORDER), common_pb2.TraceContext(traceparent=TRACEPARENT))
    assert command == expected("paper", PAPER_ACCOUNT)


def test_a_command_does_not_share_the_trace_message_it_was_given() -> None:
    trace = common_pb2.TraceContext(traceparent=TRACEPARENT)
    command = LiveOrderSink("sim", "main").command(LiveOrder(ORDER), trace)
    trace.traceparent = ""
    assert command.new_order.trace.traceparent == TRACEPARENT


@pytest.mark.parametrize(("venue", "account"), [("sim", "main"), ("paper", PAPER_ACCOUNT)])
def test_a_journaled_order_is_re_sent_as_the_command_first_sent(venue: str, account: str) -> None:
    tracked = TrackedOrder(
        client_order_id=ORDER.client_order_id,
        signal_id=ORDER.signal_id,
        model_id=ORDER.model_id,
        strategy_id=ORDER.strategy_id,
        instrument=ORDER.instrument,
        side=ORDER.side,
        quantity=ORDER.quantity,
        mode="LIVE" if venue == "sim" else "SHADOW",
        venue=venue,
        reference_mid=ORDER.mark,
        created_ns=1,
        traceparent=TRACEPARENT,
        owner=ORDER.owner,
    )
    (command,) = resend_commands([tracked], LiveOrderSink("sim", "main"), PaperOrderSink("paper"))
    assert command == expected(venue, account)
