"""Execution reports and their encodings: the wire/journal protobuf and the legacy JSONL records.

A :class:`Report` is built once per venue event by the ledger. Its protobuf
(``nautilus.engine.v1.ExecutionReport``) is built once too, lazily, by :func:`report_pb`: the same
message is serialised into the journal and copied into the session's reports frame, so a report
is never converted twice. The journal's order record is ``nautilus.engine.v1.OrderRecord``
(:func:`order_record` / :func:`request_from_pb`).

The JSONL decoders (:func:`report_from_json`, :func:`request_from_json`) read journals written
before the binary format, for their one-time migration only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine_server.order_lifecycle import OrderStatus
from engine_server.venues.base import ExecType, OrderRequest, OrderType, Side, TimeInForce, VenueEvent
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.decimals import fmt
from nautilus_mesh.fields import values_of
from nautilus_mesh.frozen import quick_init

SIDE_PB: Mapping[Side, common_pb2.Side.ValueType] = {Side.BUY: common_pb2.SIDE_BUY, Side.SELL: common_pb2.SIDE_SELL}
SIDE_OF: Mapping[int, Side] = {v: k for k, v in SIDE_PB.items()}
ORDER_TYPE_PB: Mapping[OrderType, common_pb2.OrderType.ValueType] = {
    OrderType.MARKET: common_pb2.ORDER_TYPE_MARKET,
    OrderType.LIMIT: common_pb2.ORDER_TYPE_LIMIT,
}
ORDER_TYPE_OF: Mapping[int, OrderType] = {v: k for k, v in ORDER_TYPE_PB.items()}
TIF_PB: Mapping[TimeInForce, common_pb2.TimeInForce.ValueType] = {
    TimeInForce.GTC: common_pb2.TIME_IN_FORCE_GTC,
    TimeInForce.IOC: common_pb2.TIME_IN_FORCE_IOC,
    TimeInForce.FOK: common_pb2.TIME_IN_FORCE_FOK,
}
TIF_OF: Mapping[int, TimeInForce] = {v: k for k, v in TIF_PB.items()}
EXEC_TYPE_PB: Mapping[ExecType, engine_pb2.ExecType.ValueType] = {
    t: engine_pb2.ExecType.Value(f"EXEC_TYPE_{t.value}") for t in ExecType
}
EXEC_TYPE_OF: Mapping[int, ExecType] = {v: k for k, v in EXEC_TYPE_PB.items()}
STATUS_PB: Mapping[OrderStatus, engine_pb2.OrderStatus.ValueType] = {
    s: engine_pb2.OrderStatus.Value(f"ORDER_STATUS_{s.value}") for s in OrderStatus
}
STATUS_OF: Mapping[int, OrderStatus] = {v: k for k, v in STATUS_PB.items()}

JOURNAL_SCHEMA = {1: journal_pb2.OrderRecord, 2: engine_pb2.ExecutionReport}
"""The engine journal's record types by tag."""
ORDER_TAG = 1
REPORT_TAG = 2

SAME_FIELDS = ("seq", "exec_id", "client_order_id", "venue_order_id", "venue", "model_id", "account", "liquidity")
"""Fields a report and its ``ExecutionReport`` hold under one name and type."""
DECIMAL_FIELDS = ("last_qty", "last_price", "cum_qty", "leaves_qty", "avg_price", "fee")
"""A report's decimal fields, decimal strings in its ``ExecutionReport`` (same names)."""
ORDER_SAME_FIELDS = ("client_order_id", "account", "model_id")
"""Fields an order request and its ``NewOrder`` hold under one name and type."""


@quick_init
@dataclass(frozen=True, slots=True)
class Report(VenueEvent):
    """An execution report: the venue event it was made from, plus the ledger's sequence number and the order's
    identity (it is that event, so an order applies a replayed report as it applied the event)."""

    seq: int
    exec_id: str
    venue: str
    model_id: str
    account: str
    session_id: str
    order_status: OrderStatus
    trace: Mapping[str, str] = field(default_factory=dict)
    reason_details: Mapping[str, str] = field(default_factory=dict)
    """Structured details of a rejection (e.g. requested and maximum), empty otherwise."""
    pb_cache: engine_pb2.ExecutionReport | None = field(default=None, compare=False, repr=False)
    """The report's protobuf once :func:`report_pb` has built it (set once, never changed)."""


def report_of(
    event: VenueEvent,
    seq: int,
    venue: str,
    req: OrderRequest,
    status: OrderStatus,
    details: Mapping[str, str],
) -> Report:
    """The report of one venue event applied to an order of ``venue`` (its ``exec_id`` is ``venue-seq``)."""
    return Report(
        seq=seq,
        exec_id=f"{venue}-{seq}",
        venue=venue,
        client_order_id=event.client_order_id,
        venue_order_id=event.venue_order_id,
        model_id=req.model_id,
        account=req.account,
        session_id=req.session_id,
        symbol=event.symbol,
        side=event.side,
        exec_type=event.exec_type,
        order_status=status,
        last_qty=event.last_qty,
        last_price=event.last_price,
        cum_qty=event.cum_qty,
        leaves_qty=event.leaves_qty,
        avg_price=event.avg_price,
        fee=event.fee,
        liquidity=event.liquidity,
        reason_code=event.reason_code,
        reason_text=event.reason_text,
        ts_ns=event.ts_ns,
        trace=req.trace,
        reason_details=details,
    )


def report_pb(report: Report) -> engine_pb2.ExecutionReport:
    """The report as ``ExecutionReport``, built on first use and then shared (journal, wire, queries).

    Spelled out field by field rather than from :data:`SAME_FIELDS` and :data:`DECIMAL_FIELDS`: it runs once per
    venue event, and the tables cost it half as much CPU again (~1.6 us a report). :func:`report_from_pb`, on the
    recovery path, reads the tables; a test checks the round trip.

    The message carries no trace context: the journal takes it from the order record and a
    session's frame sets it on its own copy.
    """
    pb = report.pb_cache
    if pb is not None:
        return pb
    pb = engine_pb2.ExecutionReport(
        seq=report.seq,
        exec_id=report.exec_id,
        client_order_id=report.client_order_id,
        venue_order_id=report.venue_order_id,
        venue=report.venue,
        model_id=report.model_id,
        account=report.account,
        instrument=report.symbol,
        side=SIDE_PB[report.side],
        exec_type=EXEC_TYPE_PB[report.exec_type],
        order_status=STATUS_PB[report.order_status],
        last_qty=fmt(report.last_qty),
        last_price=fmt(report.last_price),
        cum_qty=fmt(report.cum_qty),
        leaves_qty=fmt(report.leaves_qty),
        avg_price=fmt(report.avg_price),
        fee=fmt(report.fee),
        liquidity=report.liquidity,
        ts_unix_nanos=report.ts_ns,
    )
    if report.reason_code:
        error = pb.error
        error.kind = "venue_rejected" if report.exec_type is ExecType.REJECTED else "venue_event"
        error.code = report.reason_code
        error.message = report.reason_text
        if report.reason_details:
            error.details.update(report.reason_details)
    object.__setattr__(report, "pb_cache", pb)
    return pb


def report_from_pb(pb: engine_pb2.ExecutionReport, session_id: str, trace: Mapping[str, str]) -> Report:
    """Rebuild a report read from the journal (session and trace come from its order)."""
    return Report(
        **values_of(pb, SAME_FIELDS),
        **values_of(pb, DECIMAL_FIELDS, Decimal),
        symbol=pb.instrument,
        side=SIDE_OF[pb.side],
        exec_type=EXEC_TYPE_OF[pb.exec_type],
        order_status=STATUS_OF[pb.order_status],
        ts_ns=pb.ts_unix_nanos,
        reason_code=pb.error.code,
        reason_text=pb.error.message,
        reason_details=dict(pb.error.details),
        session_id=session_id,
        trace=trace,
        pb_cache=pb,
    )


def write_order(pb: engine_pb2.NewOrder | engine_pb2.Order, venue: str, req: OrderRequest) -> None:
    """Write ``req``, an order on ``venue``, into the fields ``NewOrder`` and ``Order`` share (all but the trace of
    one and the state of the other)."""
    pb.client_order_id = req.client_order_id
    pb.venue = venue
    pb.account = req.account
    pb.model_id = req.model_id
    pb.instrument = req.symbol
    pb.side = SIDE_PB[req.side]
    pb.order_type = ORDER_TYPE_PB[req.order_type]
    pb.time_in_force = TIF_PB[req.time_in_force]
    pb.quantity = fmt(req.quantity)
    pb.limit_price = fmt(req.limit_price)


def order_record(venue: str, req: OrderRequest, created_ns: int) -> journal_pb2.OrderRecord:
    """The journal record of a new order."""
    record = journal_pb2.OrderRecord(session_id=req.session_id, created_unix_nanos=created_ns)
    new = record.order
    write_order(new, venue, req)
    if req.trace:
        new.trace.traceparent = req.trace.get("traceparent", "")
        new.trace.tracestate = req.trace.get("tracestate", "")
    return record


def request_from_pb(record: journal_pb2.OrderRecord) -> OrderRequest:
    """The order request of a journal order record."""
    new = record.order
    trace: dict[str, str] = {}
    if new.trace.traceparent:
        trace["traceparent"] = new.trace.traceparent
    if new.trace.tracestate:
        trace["tracestate"] = new.trace.tracestate
    return OrderRequest(
        **values_of(new, ORDER_SAME_FIELDS),
        symbol=new.instrument,
        side=SIDE_OF[new.side],
        order_type=ORDER_TYPE_OF[new.order_type],
        time_in_force=TIF_OF[new.time_in_force],
        quantity=Decimal(new.quantity),
        limit_price=Decimal(new.limit_price) if new.limit_price else None,
        session_id=record.session_id,
        trace=trace,
    )


# -- legacy JSONL journal (read once, for migration) ------------------------------------------------


def report_from_json(rec: Mapping[str, Any]) -> Report:
    """Rebuild a report from a JSONL journal line."""
    names = [n for n in Report.__dataclass_fields__ if n != "pb_cache"]
    values: dict[str, Any] = {name: rec[name] for name in names if name in rec}
    for name in DECIMAL_FIELDS:
        values[name] = Decimal(str(rec[name]))
    values["side"] = Side(rec["side"])
    values["exec_type"] = ExecType(rec["exec_type"])
    values["order_status"] = OrderStatus(rec["order_status"])
    values["seq"] = int(rec["seq"])
    values["ts_ns"] = int(rec["ts_ns"])
    return Report(**values)


def request_from_json(rec: Mapping[str, Any]) -> OrderRequest:
    """Rebuild an order request from a JSONL journal line's ``request``."""
    price = rec.get("limit_price")
    return OrderRequest(
        client_order_id=str(rec["client_order_id"]),
        session_id=str(rec["session_id"]),
        account=str(rec["account"]),
        model_id=str(rec["model_id"]),
        symbol=str(rec["symbol"]),
        side=Side(rec["side"]),
        order_type=OrderType(rec["order_type"]),
        time_in_force=TimeInForce(rec["time_in_force"]),
        quantity=Decimal(str(rec["quantity"])),
        limit_price=None if price is None else Decimal(str(price)),
        trace={str(k): str(v) for k, v in dict(rec.get("trace") or {}).items()},
    )
