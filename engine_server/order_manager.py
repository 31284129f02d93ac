"""The engine-wide execution ledger: orders, execution reports, ``seq`` and the journal.

Every venue event becomes a :class:`Report` with an engine-wide ``seq`` (strictly increasing from 1,
no gaps) and a deterministic ``exec_id`` (``f"{venue}-{seq}"``). Ops reconciles after a reconnect with
``list_executions(since_seq)``.

Guarantees:

- **Idempotent submit.** A repeated ``client_order_id`` (including one that was rejected) is never
  executed again; the call returns every report of the existing order. Ids are "burned" once used,
  as FIX ClOrdIDs are.
- **Never overfilled.** Each event passes through :meth:`Order.apply`; an illegal or overfilling
  event is logged as an anomaly, counted, and dropped instead of reaching ops.
- **Durable before visible.** With a journal, every call appends its records with one fsync'ed
  ``append_many`` before it returns the reports. On construction the journal is replayed, so ``seq``,
  orders and deduplication survive ``kill -9``.
- **Restart semantics.** Venue books are in memory and are not restored. Orders still open in the
  replayed journal are therefore reported CANCELED with reason ``ENGINE_RESTART`` (new seqs, journaled)
  during construction; they are also available as :attr:`OrderManager.restart_reports`.

Not thread-safe: call it from one thread (the engine's event loop).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine_server.order_lifecycle import IllegalTransitionError, Order, OrderStatus
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import (
    ZERO,
    ExecType,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
    VenueAdapter,
    VenueEvent,
    rejected_event,
)
from nautilus_mesh.errors import NotFoundError, ValidationError, VenueRejectedError
from nautilus_mesh.files import JsonlWriter, read_jsonl

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class Report:
    """An execution report: a venue event plus the ledger's sequence number and the order's identity."""

    seq: int
    exec_id: str
    venue: str
    client_order_id: str
    venue_order_id: str
    model_id: str
    account: str
    session_id: str
    symbol: str
    side: Side
    exec_type: ExecType
    order_status: OrderStatus
    last_qty: Decimal
    last_price: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_price: Decimal
    fee: Decimal
    liquidity: str
    reason_code: str
    reason_text: str
    ts_ns: int
    trace: Mapping[str, str] = field(default_factory=dict)
    reason_details: Mapping[str, str] = field(default_factory=dict)
    """Structured details of a rejection (e.g. requested and maximum), empty otherwise."""

    def to_event(self) -> VenueEvent:
        """The venue event this report was made from."""
        return VenueEvent(
            exec_type=self.exec_type,
            client_order_id=self.client_order_id,
            venue_order_id=self.venue_order_id,
            symbol=self.symbol,
            side=self.side,
            last_qty=self.last_qty,
            last_price=self.last_price,
            cum_qty=self.cum_qty,
            leaves_qty=self.leaves_qty,
            avg_price=self.avg_price,
            fee=self.fee,
            liquidity=self.liquidity,
            reason_code=self.reason_code,
            reason_text=self.reason_text,
            ts_ns=self.ts_ns,
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (decimals become strings when written)."""
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["trace"] = dict(self.trace)
        record["reason_details"] = dict(self.reason_details)
        return record

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_record` output read back from JSON."""
        decimals = ("last_qty", "last_price", "cum_qty", "leaves_qty", "avg_price", "fee")
        values: dict[str, Any] = {name: rec[name] for name in cls.__dataclass_fields__ if name in rec}
        for name in decimals:
            values[name] = Decimal(str(rec[name]))
        values["side"] = Side(rec["side"])
        values["exec_type"] = ExecType(rec["exec_type"])
        values["order_status"] = OrderStatus(rec["order_status"])
        values["seq"] = int(rec["seq"])
        values["ts_ns"] = int(rec["ts_ns"])
        return cls(**values)


def request_to_record(req: OrderRequest) -> dict[str, Any]:
    """A JSON-ready dict of an order request."""
    return {
        "client_order_id": req.client_order_id,
        "session_id": req.session_id,
        "account": req.account,
        "model_id": req.model_id,
        "symbol": req.symbol,
        "side": req.side,
        "order_type": req.order_type,
        "time_in_force": req.time_in_force,
        "quantity": req.quantity,
        "limit_price": req.limit_price,
        "trace": dict(req.trace),
    }


def request_from_record(rec: Mapping[str, Any]) -> OrderRequest:
    """Rebuild an order request from :func:`request_to_record` output."""
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


class OrderManager:
    """Routes orders to venues through their rails and keeps the execution ledger.

    Args:
        venues: Venue adapters by name.
        rails: Rails per venue name, or one ``VenueRails`` for every venue. A venue without rails gets
            a default (no limits, cancel-on-disconnect on).
        journal_path: JSONL journal; replayed on construction, appended (fsync) before every return.
        clock: Wall clock in ns (injected in tests).
        history_limit: Reports kept in memory for ``list_executions``; older ones are read from the journal.
        journal_fsync: fsync every append (survives power loss); False still survives a process crash.
    """

    def __init__(
        self,
        venues: Mapping[str, VenueAdapter],
        rails: Mapping[str, VenueRails] | VenueRails | None = None,
        journal_path: Path | None = None,
        clock: Callable[[], int] = time.time_ns,
        *,
        history_limit: int = 200_000,
        journal_fsync: bool = True,
    ) -> None:
        self._venues = dict(venues)
        # Live venues advance before paper ones, so a paper venue copies the quotes of this same step.
        self._advance_order = sorted(self._venues.values(), key=lambda v: v.kind == "paper")
        self._shared_rails = rails if isinstance(rails, VenueRails) else None
        self._rails: dict[str, VenueRails] = {}
        for name in self._venues:
            given = None if isinstance(rails, VenueRails) or rails is None else rails.get(name)
            self._rails[name] = given or self._shared_rails or VenueRails(VenueRailsConfig(), venue=name)
        self._clock = clock
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}
        self._order_reports: dict[str, list[Report]] = {}
        self._history: deque[Report] = deque(maxlen=max(1, history_limit))
        self._seq = 0
        self.anomalies = 0
        """Venue events dropped because they were illegal for their order (should stay 0)."""
        self._journal_path = journal_path
        self._journal: JsonlWriter | None = None
        self.restart_reports: list[Report] = []
        if journal_path is not None:
            self._replay(journal_path)
            self._journal = JsonlWriter(journal_path, fsync=journal_fsync)
            self.restart_reports = self._cancel_after_restart()

    # ------------------------------------------------------------------ queries

    @property
    def last_seq(self) -> int:
        """The seq of the newest report (0 when there is none)."""
        return self._seq

    @property
    def venues(self) -> Mapping[str, VenueAdapter]:
        """The venue adapters by name."""
        return self._venues

    def rails_for(self, venue: str) -> VenueRails | None:
        """The rails guarding ``venue``, None for an unknown venue."""
        return self._rails.get(venue)

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this id, or None. The object is the ledger's own: read it, do not mutate it."""
        return self._orders.get(client_order_id)

    def reports_for(self, client_order_id: str) -> list[Report]:
        """Every report of one order, oldest first."""
        return list(self._order_reports.get(client_order_id, ()))

    def open_orders(
        self, *, session_id: str | None = None, model_id: str | None = None, venue: str | None = None
    ) -> list[Order]:
        """Orders not yet terminal, optionally filtered, in submission order."""
        return [o for o in self._open.values() if _matches(o, session_id, model_id, venue)]

    def list_executions(self, since_seq: int, limit: int = 500) -> list[Report]:
        """Reports with ``seq > since_seq`` in ascending order, at most ``limit`` (capped at 5000).

        Raises:
            NotFoundError: ``EXECUTIONS_TRUNCATED`` when the range is older than the in-memory
                history and there is no journal to read it from.
        """
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        since_seq = max(0, since_seq)
        if since_seq >= self._seq:
            return []
        first = self._history[0].seq if self._history else self._seq + 1
        if since_seq + 1 >= first:
            start = since_seq + 1 - first
            return list(itertools.islice(self._history, start, start + limit))
        if self._journal_path is None:
            raise NotFoundError(
                "EXECUTIONS_TRUNCATED",
                f"reports before seq {first} are no longer held in memory",
                {"since_seq": since_seq, "oldest_available": first - 1},
            )
        out: list[Report] = []
        for rec in read_jsonl(self._journal_path):
            if rec.get("k") == "report" and int(rec["seq"]) > since_seq:
                out.append(Report.from_record(rec))
                if len(out) >= limit:
                    break
        return out

    # ------------------------------------------------------------------ commands

    def submit(self, venue_name: str, req: OrderRequest) -> list[Report]:
        """Execute a new order; returns its reports (and those of any other order it traded with).

        A repeated ``client_order_id`` returns the existing order's reports and executes nothing.
        Unknown venue or instrument and rail breaches come back as one REJECTED report whose
        ``reason_code`` names the cause (``UNKNOWN_VENUE``, ``UNKNOWN_INSTRUMENT``, ``PRICE_COLLAR``...).

        Raises:
            ValidationError: ``INVALID_CLIENT_ORDER_ID`` for an empty id (nothing to deduplicate on).
        """
        coid = req.client_order_id
        if not coid:
            raise ValidationError("INVALID_CLIENT_ORDER_ID", "client_order_id is required", field="client_order_id")
        if coid in self._orders:
            previous = self.reports_for(coid)
            log.info("[ORDER-MANAGER] duplicate client_order_id %s: returning %d reports", coid, len(previous))
            return previous
        now = self._clock()
        order = Order(coid, venue_name, req, created_ns=now, updated_ns=now)
        self._orders[coid] = order
        self._open[coid] = order
        records: list[dict[str, Any]] = []
        if self._journal is not None:
            records.append({"k": "order", "venue": venue_name, "created_ns": now, "request": request_to_record(req)})
        details: dict[str, str] = {}
        venue = self._venues.get(venue_name)
        if venue is None:
            events = [rejected_event(req, "UNKNOWN_VENUE", f"no venue named {venue_name!r}", now)]
        elif req.symbol not in venue.instruments():
            events = [rejected_event(req, "UNKNOWN_INSTRUMENT", f"{venue_name} does not trade {req.symbol}", now)]
        else:
            try:
                self._rails[venue_name].check(req, venue.reference_price(req.symbol), now, venue=venue_name)
                events = venue.submit(req)
            except VenueRejectedError as exc:
                details = exc.details
                events = [rejected_event(req, exc.code, exc.message, now)]
            except Exception:
                log.exception("[ORDER-MANAGER] venue %s failed on order %s", venue_name, coid)
                events = [rejected_event(req, "VENUE_ERROR", f"venue {venue_name} failed to process the order", now)]
        return self._record(events, records, {coid: details} if details else None)

    def cancel(self, client_order_id: str) -> list[Report]:
        """Cancel one order.

        Raises:
            NotFoundError: ``ORDER_NOT_FOUND`` for an id the engine never saw.
            VenueRejectedError: A cancel reject for a finished order: ``TOO_LATE_TO_CANCEL`` once it is filled,
                ``ORDER_ALREADY_DONE`` once cancelled, rejected or expired (``details`` carry its status).
        """
        order = self._orders.get(client_order_id)
        if order is None:
            raise NotFoundError(
                "ORDER_NOT_FOUND", f"no order {client_order_id!r}", {"client_order_id": client_order_id}
            )
        if order.is_terminal:
            code = "TOO_LATE_TO_CANCEL" if order.status is OrderStatus.FILLED else "ORDER_ALREADY_DONE"
            status = order.status.value
            raise VenueRejectedError(
                code,
                f"order {client_order_id!r} is already {status}: nothing left to cancel",
                {"client_order_id": client_order_id, "status": status, "filled_qty": order.filled_qty},
                rail="cancel",
            )
        venue = self._venues.get(order.venue)
        if venue is None:
            return []
        return self._record(venue.cancel(client_order_id), [])

    def cancel_all(
        self, session_id: str | None = None, model_id: str | None = None, venue: str | None = None
    ) -> list[Report]:
        """Cancel every open order matching all the given filters (all open orders when none is given)."""
        reports: list[Report] = []
        for order in self.open_orders(session_id=session_id, model_id=model_id, venue=venue):
            reports.extend(self.cancel(order.client_order_id))
        if reports:
            log.info(
                "[ORDER-MANAGER] cancel_all cancelled %d orders", sum(r.exec_type is ExecType.CANCELED for r in reports)
            )
        return reports

    def on_session_closed(self, session_id: str) -> list[Report]:
        """A session's order stream dropped: cancel its open orders on venues whose rails say cancel_on_disconnect."""
        reports: list[Report] = []
        for order in self.open_orders(session_id=session_id):
            rails = self._rails.get(order.venue)
            if rails is not None and rails.cancel_on_disconnect:
                reports.extend(self.cancel(order.client_order_id))
        for rails in self._rails.values():
            rails.forget_session(session_id)
        log.info("[ORDER-MANAGER] session %s closed: %d cancel reports", session_id, len(reports))
        return reports

    def advance(self, now_ns: int | None = None) -> list[Report]:
        """Advance every venue's market to ``now_ns`` (default: the clock) and report the fills it caused."""
        now = self._clock() if now_ns is None else now_ns
        events: list[VenueEvent] = []
        for venue in self._advance_order:
            events.extend(venue.advance(now))
        return self._record(events, []) if events else []

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()

    # ------------------------------------------------------------------ internals

    def _record(
        self,
        events: Iterable[VenueEvent],
        records: list[dict[str, Any]],
        details: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[Report]:
        reports: list[Report] = []
        for event in events:
            report = self._apply(event, (details or {}).get(event.client_order_id, {}))
            if report is not None:
                reports.append(report)
                if self._journal is not None:
                    records.append({"k": "report", **report.to_record()})
        if self._journal is not None and records:
            self._journal.append_many(records)
        for report in reports:
            self._remember(report)
        return reports

    def _apply(self, event: VenueEvent, details: Mapping[str, str]) -> Report | None:
        order = self._orders.get(event.client_order_id)
        if order is None:
            self.anomalies += 1
            log.error("[ORDER-MANAGER] event for unknown order %s dropped", event.client_order_id)
            return None
        try:
            status = order.apply(event)
        except IllegalTransitionError as exc:
            self.anomalies += 1
            log.error("[ORDER-MANAGER] venue %s event dropped: %s %s", order.venue, exc.message, exc.details)
            return None
        if order.is_terminal:
            self._open.pop(order.client_order_id, None)
        self._seq += 1
        req = order.request
        return Report(
            seq=self._seq,
            exec_id=f"{order.venue}-{self._seq}",
            venue=order.venue,
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

    def _remember(self, report: Report) -> None:
        self._history.append(report)
        self._order_reports.setdefault(report.client_order_id, []).append(report)

    def _replay(self, path: Path) -> None:
        orders = reports = 0
        for rec in read_jsonl(path):
            kind = rec.get("k")
            try:
                if kind == "order":
                    req = request_from_record(rec["request"])
                    created = int(rec.get("created_ns", 0))
                    order = Order(req.client_order_id, str(rec["venue"]), req, created_ns=created, updated_ns=created)
                    self._orders[order.client_order_id] = order
                    self._open[order.client_order_id] = order
                    orders += 1
                elif kind == "report":
                    report = Report.from_record(rec)
                    if report.seq <= self._seq:
                        log.warning("[ORDER-MANAGER] journal seq %d out of order, skipped", report.seq)
                        continue
                    order = self._orders[report.client_order_id]
                    order.apply(report.to_event())
                    if order.is_terminal:
                        self._open.pop(order.client_order_id, None)
                    self._seq = report.seq
                    self._remember(report)
                    reports += 1
            except (KeyError, ValueError, ArithmeticError, IllegalTransitionError) as exc:
                log.error("[ORDER-MANAGER] unusable journal record skipped: %r", exc)
        if orders or reports:
            log.info(
                "[ORDER-MANAGER] journal %s replayed: %d orders, %d reports, last seq %d",
                path,
                orders,
                reports,
                self._seq,
            )

    def _cancel_after_restart(self) -> list[Report]:
        now = self._clock()
        events: list[VenueEvent] = []
        for order in list(self._open.values()):
            if order.status is OrderStatus.NEW:
                # Crashed between journaling the order and its first report: it never reached a book we still have.
                events.append(
                    rejected_event(
                        order.request, "ENGINE_RESTART", "engine restarted before the order was acknowledged", now
                    )
                )
                continue
            events.append(
                VenueEvent(
                    exec_type=ExecType.CANCELED,
                    client_order_id=order.client_order_id,
                    venue_order_id=order.venue_order_id,
                    symbol=order.request.symbol,
                    side=order.request.side,
                    last_qty=ZERO,
                    last_price=ZERO,
                    cum_qty=order.filled_qty,
                    leaves_qty=ZERO,
                    avg_price=order.avg_price,
                    fee=ZERO,
                    liquidity="",
                    reason_code="ENGINE_RESTART",
                    reason_text="engine restarted; venue books are not restored",
                    ts_ns=now,
                )
            )
        reports = self._record(events, []) if events else []
        if reports:
            log.warning("[ORDER-MANAGER] %d orders open at restart reported CANCELED (ENGINE_RESTART)", len(reports))
        return reports


def _matches(order: Order, session_id: str | None, model_id: str | None, venue: str | None) -> bool:
    req = order.request
    return (
        (session_id is None or req.session_id == session_id)
        and (model_id is None or req.model_id == model_id)
        and (venue is None or order.venue == venue)
    )
