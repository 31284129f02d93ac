"""Where ops' orders go: the live venue or the paper venue, decided by the order's type.

``LiveOrderSink`` accepts only ``LiveOrder`` and ``PaperOrderSink`` only ``ShadowOrder``; the paper sink knows no
live venue. A shadow order therefore cannot reach a live venue by construction, not by an if.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from ops_server import wire
from ops_server.order_tracker import TrackedOrder
from ops_server.router import LiveOrder, ShadowOrder, SizedOrder

PAPER_ACCOUNT = "paper"
LIVE_KIND, PAPER_KIND = "live", "paper"


def venue_problem(kinds: Mapping[str, str], live_venue: str, paper_venue: str) -> str | None:
    """Why the engine's venues do not fit ops' config (None when they do): the live venue must be a live venue and
    the paper venue a paper one, so a shadow order can never reach a live venue through a misnamed config."""
    if kinds.get(paper_venue) != PAPER_KIND:
        found = kinds.get(paper_venue, "missing")
        return f"paper_venue {paper_venue!r} is {found!r} at the engine, not a paper venue"
    if kinds.get(live_venue) != LIVE_KIND:
        found = kinds.get(live_venue, "missing")
        return f"live_venue {live_venue!r} is {found!r} at the engine, not a live venue"
    return None


class LiveOrderSink:
    """Turns live orders into commands for the live venue, booked on ops' live account."""

    def __init__(self, venue: str, account: str) -> None:
        self.venue = venue
        self._account = account

    def command(self, order: LiveOrder, trace: common_pb2.TraceContext) -> engine_pb2.OrderCommand:
        return wire.order_command(order.order, self.venue, self._account, trace)


class PaperOrderSink:
    """Turns shadow orders into commands for the paper venue; knows no live venue."""

    def __init__(self, paper_venue: str) -> None:
        self.venue = paper_venue

    def command(self, order: ShadowOrder, trace: common_pb2.TraceContext) -> engine_pb2.OrderCommand:
        return wire.order_command(order.order, self.venue, PAPER_ACCOUNT, trace)


def resend_commands(
    orders: Iterable[TrackedOrder], live: LiveOrderSink, paper: PaperOrderSink
) -> list[engine_pb2.OrderCommand]:
    """Commands that re-send journaled orders through the sink of the venue they were first sent to."""
    commands = []
    for tracked in orders:
        sized = SizedOrder(
            tracked.client_order_id,
            tracked.signal_id,
            tracked.model_id,
            tracked.strategy_id,
            tracked.instrument,
            tracked.side,
            tracked.quantity,
            tracked.reference_mid,
            tracked.owner,
        )
        trace = common_pb2.TraceContext(traceparent=tracked.traceparent)
        if tracked.venue == paper.venue:
            commands.append(paper.command(ShadowOrder(sized), trace))
        else:
            commands.append(live.command(LiveOrder(sized), trace))
    return commands
