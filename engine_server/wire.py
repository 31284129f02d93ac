"""The engine's domain objects from and to the wire: strict parsing of order commands (plain ASCII decimals, known
enums, bounded strings), the re-used client order id check, venue listings and trace sampling flags. The enum tables
are :mod:`engine_server.execution_report`'s, shared with the journal.
"""

from __future__ import annotations

from engine_server.execution_report import ORDER_TYPE_OF, SIDE_OF, TIF_OF
from engine_server.order_lifecycle import Order
from engine_server.order_manager import OrderManager
from engine_server.venues.base import ExecType, OrderRequest, TimeInForce
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.bounds import require_bounded
from nautilus_mesh.decimals import fmt, parse_decimal
from nautilus_mesh.errors import ValidationError

DEFAULT_PAGE = 500
# Reports that get a span of their own: the ones that change positions or end an order in error.
TRACED_EXEC_TYPES = frozenset({ExecType.FILL, ExecType.PARTIAL_FILL, ExecType.REJECTED})
FILL_EXEC_TYPES = frozenset({ExecType.FILL, ExecType.PARTIAL_FILL})
QUOTE_DECIMALS = ("bid", "ask", "bid_size", "ask_size", "mid")
"""A quote's decimal fields, decimal strings under the same names in its ``Quote`` message."""


MAX_PAGE = 5000


def order_request(new: engine_pb2.NewOrder, session_id: str, trace: dict[str, str]) -> OrderRequest:
    """Parse a NewOrder; raises ValidationError naming the field."""
    for name, value, required in (
        ("client_order_id", new.client_order_id, True),
        ("instrument", new.instrument, True),
        ("venue", new.venue, False),
        ("account", new.account, False),
        ("model_id", new.model_id, False),
    ):
        require_bounded(value, name, required=required)
    if new.side not in SIDE_OF:
        raise ValidationError("INVALID_SIDE", "side must be BUY or SELL", field="side")
    if new.order_type not in ORDER_TYPE_OF:
        raise ValidationError("INVALID_ORDER_TYPE", "order_type must be MARKET or LIMIT", field="order_type")
    if new.time_in_force not in TIF_OF and new.time_in_force != common_pb2.TIME_IN_FORCE_UNSPECIFIED:
        raise ValidationError(
            "INVALID_TIME_IN_FORCE", f"unknown time_in_force {new.time_in_force}", field="time_in_force"
        )
    tif = TIF_OF.get(new.time_in_force, TimeInForce.IOC if new.order_type == common_pb2.ORDER_TYPE_MARKET else None)
    if tif is None:
        raise ValidationError(
            "INVALID_TIME_IN_FORCE", "time_in_force is required for LIMIT orders", field="time_in_force"
        )
    quantity = parse_decimal(new.quantity, "quantity", positive=True, code="INVALID_QUANTITY")
    assert quantity is not None
    limit = parse_decimal(new.limit_price, "limit_price", positive=True, allow_empty=True, code="INVALID_PRICE")
    if new.order_type == common_pb2.ORDER_TYPE_LIMIT and limit is None:
        raise ValidationError("INVALID_PRICE", "limit_price is required for LIMIT orders", field="limit_price")
    if new.order_type == common_pb2.ORDER_TYPE_MARKET and limit is not None:
        raise ValidationError("INVALID_PRICE", "limit_price must be empty for MARKET orders", field="limit_price")
    return OrderRequest(
        client_order_id=new.client_order_id,
        session_id=session_id,
        account=new.account or "default",
        model_id=new.model_id,
        symbol=new.instrument,
        side=SIDE_OF[new.side],
        order_type=ORDER_TYPE_OF[new.order_type],
        time_in_force=tif,
        quantity=quantity,
        limit_price=limit,
        trace=trace,
    )


def check_reuse(previous: Order | None, venue: str, request: OrderRequest) -> None:
    """A repeated ``client_order_id`` must name the same order (then the existing one is answered).

    Raises:
        ValidationError: ``CLIENT_ORDER_ID_REUSED`` when the id names an order with another venue, account,
            model, instrument, side, type, time in force, quantity or limit price.
    """
    if previous is None:
        return
    old = previous.request
    differs = [
        name
        for name, a, b in (
            ("venue", previous.venue, venue),
            ("account", old.account, request.account),
            ("model_id", old.model_id, request.model_id),
            ("instrument", old.symbol, request.symbol),
            ("side", old.side, request.side),
            ("order_type", old.order_type, request.order_type),
            ("time_in_force", old.time_in_force, request.time_in_force),
            ("quantity", old.quantity, request.quantity),
            ("limit_price", old.limit_price, request.limit_price),
        )
        if a != b
    ]
    if differs:
        raise ValidationError(
            "CLIENT_ORDER_ID_REUSED",
            f"client_order_id {request.client_order_id} already names another order (differs in {', '.join(differs)})",
            {"differs": ",".join(differs)},
            field="client_order_id",
        )


def venue_infos(manager: OrderManager) -> list[engine_pb2.VenueInfo]:
    out = []
    for name, venue in manager.venues.items():
        status = venue.status()
        out.append(
            engine_pb2.VenueInfo(
                name=name,
                kind=status.kind,
                connected=status.connected,
                instruments=list(status.instruments),
                detail=status.detail,
                instrument_specs=[
                    engine_pb2.InstrumentInfo(
                        instrument=i.symbol,
                        tick_size=fmt(i.tick_size),
                        lot_size=fmt(i.lot_size),
                        min_quantity=fmt(i.min_qty),
                    )
                    for i in venue.instruments().values()
                ],
            )
        )
    return out
