"""The commands ops' order sinks build: a MARKET IOC ``NewOrder`` for the sink's venue and account, carrying the
order's trace context, and the same command again when a journaled order is re-sent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from google.protobuf import text_format

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from ops_server.order_sinks import PAPER_ACCOUNT, LiveOrderSink, PaperOrderSink, resend_commands
from ops_server.order_tracker import TrackedOrder
from ops_server.router import LiveOrder, ShadowOrder, SizedOrder

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
ORDER = SizedOrder(
    "momentum_v1-s-42", "s-42", "momentum_v1", "momentum", "BTC-USD", "SELL", Decimal("0.01250"), Decimal("100.5")
)
"""A live order of momentum_v1 (owner unset: the model's own strategy gets its fills)."""


def expected(venue: str, account: str) -> engine_pb2.OrderCommand:
    """The command as the engine's contract spells it (protobuf text format, apart from how the code builds it)."""
    return text_format.Parse(
        f'new_order {{ client_order_id: "momentum_v1-s-42" venue: "{venue}" account: "{account}" '
        'model_id: "momentum_v1" instrument: "BTC-USD" side: SIDE_SELL order_type: ORDER_TYPE_MARKET '
        f'time_in_force: TIME_IN_FORCE_IOC quantity: "0.0125" trace {{ traceparent: "{TRACEPARENT}" }} }}',
        engine_pb2.OrderCommand(),
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
    mode = "LIVE" if venue == "sim" else "SHADOW"
    fields = (ORDER.client_order_id, ORDER.signal_id, ORDER.model_id, ORDER.strategy_id, ORDER.instrument, ORDER.side)
    tracked = TrackedOrder(*fields, ORDER.quantity, mode, venue, ORDER.mark, 1, TRACEPARENT)
    (command,) = resend_commands([tracked], LiveOrderSink("sim", "main"), PaperOrderSink("paper"))
    assert command == expected(venue, account)
