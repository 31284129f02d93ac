"""The execution ledger: seq, dedup, rails, cancels, advance and journal replay."""

from __future__ import annotations

import dataclasses
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine_server import execution_ledger
from engine_server.execution_report import JOURNAL_SCHEMA, REPORT_TAG, report_from_pb, report_pb
from engine_server.order_lifecycle import OrderStatus
from engine_server.order_manager import OrderManager
from engine_server.venue_rails import VenueRails, VenueRailsConfig
from engine_server.venues.base import ExecType, OrderRequest, Quote, QuoteFeed, Side, VenueAdapter, VenueEvent
from engine_server.venues.paper import PaperVenue, PaperVenueConfig
from engine_server.venues.sim import SimVenue, SimVenueConfig
from engine_server.venues.template import TemplateVenue, TemplateVenueConfig
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.errors import NotFoundError, ValidationError, VenueRejectedError
from nautilus_mesh.journal import JournalFormatError, is_binary_journal, read_journal
from tests.venues import instrument, order_request

D = Decimal
NS = 1_000_000_000
INST = instrument()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000 * NS

    def __call__(self) -> int:
        return self.now


def req(coid: str, side: Side = Side.BUY, qty: str = "1", price: str | None = "99.00", **kw: Any) -> OrderRequest:
    return order_request(coid, side, qty, price, traced=True, **kw)


def sim_venues() -> dict[str, VenueAdapter]:
    return {"sim": SimVenue(SimVenueConfig(instruments=(INST,), seed=1))}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_submit_when_marketable_then_reports_numbered_from_one_with_unique_exec_ids(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    reports = manager.submit("sim", req("c1", qty="3", price=None))
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    assert [r.exec_id for r in reports] == [f"sim-{r.seq}" for r in reports]
    assert reports[0].exec_type is ExecType.ACCEPTED and reports[-1].order_status is OrderStatus.FILLED
    assert all(r.trace == {"traceparent": "00-c1"} and r.model_id == "m1" for r in reports)
    order = manager.get_order("c1")
    assert order is not None and order.filled_qty == D(3) and manager.last_seq == reports[-1].seq


def test_submit_when_client_order_id_repeated_then_existing_reports_and_no_new_execution(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    first = manager.submit("sim", req("c1", qty="2", price=None))
    seq = manager.last_seq
    again = manager.submit("sim", req("c1", qty="2", price=None))
    assert again == first and manager.last_seq == seq


@pytest.mark.parametrize(
    ("venue", "symbol", "code"), [("nowhere", "TST-USD", "UNKNOWN_VENUE"), ("sim", "XXX-USD", "UNKNOWN_INSTRUMENT")]
)
def test_submit_when_unknown_venue_or_instrument_then_rejected(
    clock: FakeClock, venue: str, symbol: str, code: str
) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    reports = manager.submit(venue, req("c1", symbol=symbol))
    assert [(r.exec_type, r.order_status, r.reason_code) for r in reports] == [
        (ExecType.REJECTED, OrderStatus.REJECTED, code)
    ]
    assert manager.open_orders() == []


def test_submit_when_rails_breached_then_rejected_with_rail_code_and_later_orders_accepted(clock: FakeClock) -> None:
    rejected_by: list[tuple[str, str]] = []
    cfg = VenueRailsConfig(price_collar_bps=D("300"), max_order_qty=D("10"), max_messages_per_second=3.0)
    rails = {"sim": VenueRails(cfg, venue="sim", on_reject=lambda v, r: rejected_by.append((v, r)))}
    manager = OrderManager(sim_venues(), rails, clock=clock)
    collar = manager.submit("sim", req("collar", price="90.00"))
    big = manager.submit("sim", req("big", qty="11"))
    manager.submit("sim", req("ok1"))
    rate = manager.submit("sim", req("too-fast"))
    assert [r[0].reason_code for r in (collar, big, rate)] == ["PRICE_COLLAR", "MAX_ORDER_QTY", "RATE_LIMITED"]
    assert big[0].reason_details["maximum"] == "10"
    assert rejected_by == [("sim", "price_collar"), ("sim", "max_order_qty"), ("sim", "message_rate")]
    clock.now += NS
    after = manager.submit("sim", req("ok2"))
    assert after[0].exec_type is ExecType.ACCEPTED
    assert [o.client_order_id for o in manager.open_orders()] == ["ok1", "ok2"]


def test_submit_when_venue_raises_not_connected_then_rejected_report(clock: FakeClock) -> None:
    template = TemplateVenue(TemplateVenueConfig(name="acme", instruments=(INST,)))
    rails = VenueRails(VenueRailsConfig())
    manager = OrderManager({"acme": template}, rails, clock=clock)
    reports = manager.submit("acme", req("c1"))
    assert [(r.exec_type, r.reason_code) for r in reports] == [(ExecType.REJECTED, "VENUE_NOT_CONNECTED")]


def test_submit_when_client_order_id_empty_then_validation_error(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    with pytest.raises(ValidationError):
        manager.submit("sim", req(""))


def test_cancel_when_resting_then_canceled_once_and_unknown_raises(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    manager.submit("sim", req("c1"))
    reports = manager.cancel("c1")
    assert [(r.exec_type, r.order_status) for r in reports] == [(ExecType.CANCELED, OrderStatus.CANCELED)]
    with pytest.raises(VenueRejectedError) as again:  # a cancel reject, not silence
        manager.cancel("c1")
    assert (again.value.code, again.value.details["status"]) == ("ORDER_ALREADY_DONE", "CANCELED")
    with pytest.raises(NotFoundError):
        manager.cancel("never-seen")


def test_cancel_all_when_filtered_then_only_matching_orders_cancelled(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    manager.submit("sim", req("a1", model="alpha"))
    manager.submit("sim", req("a2", model="alpha", session="s2"))
    manager.submit("sim", req("b1", model="beta"))
    cancelled = manager.cancel_all(model_id="alpha", session_id="s1")
    assert [r.client_order_id for r in cancelled] == ["a1"]
    assert {r.client_order_id for r in manager.cancel_all(venue="sim")} == {"a2", "b1"}
    assert manager.open_orders() == []


@pytest.mark.parametrize(("cancel_on_disconnect", "expected_open"), [(True, []), (False, ["c1"])])
def test_session_closed_when_rails_configured_then_cancel_on_disconnect_applies(
    clock: FakeClock, cancel_on_disconnect: bool, expected_open: list[str]
) -> None:
    rails = {"sim": VenueRails(VenueRailsConfig(cancel_on_disconnect=cancel_on_disconnect), venue="sim")}
    manager = OrderManager(sim_venues(), rails, clock=clock)
    manager.submit("sim", req("c1", session="ops-1"))
    manager.submit("sim", req("other", session="ops-2"))
    reports = manager.on_session_closed("ops-1")
    assert [o.client_order_id for o in manager.open_orders(session_id="ops-1")] == expected_open
    assert [o.client_order_id for o in manager.open_orders(session_id="ops-2")] == ["other"]
    # The engine cancelled it, not the client: its report says so.
    assert [(r.client_order_id, r.exec_type, r.reason_code) for r in reports] == (
        [("c1", ExecType.CANCELED, "CANCEL_ON_DISCONNECT")] if cancel_on_disconnect else []
    )


def test_advance_when_requote_crosses_resting_order_then_fill_report(clock: FakeClock) -> None:
    feed = QuoteFeed()
    feed.publish(Quote("TST-USD", D("100"), D("101"), D("5"), D("5"), D("100.5"), 0))
    paper = PaperVenue(PaperVenueConfig(instruments=(INST,), follows="live"), feed.get)
    manager = OrderManager({"paper": paper}, clock=clock)
    manager.submit("paper", req("c1", qty="2", price="100.50"))
    feed.publish(Quote("TST-USD", D("99"), D("100"), D("5"), D("5"), D("99.5"), 0))
    reports = manager.advance(2_000 * NS)
    assert [(r.exec_type, r.liquidity, r.last_price, r.venue) for r in reports] == [
        (ExecType.FILL, "MAKER", D("100.50"), "paper")
    ]


def test_advance_when_paper_follows_live_then_live_moves_first(clock: FakeClock) -> None:
    live = SimVenue(SimVenueConfig(instruments=(INST,), seed=9))
    paper = PaperVenue(PaperVenueConfig(instruments=(INST,), follows="sim"), live.quote_feed().get)
    manager = OrderManager({"paper": paper, "sim": live}, clock=clock)  # paper listed first on purpose
    manager.advance(NS)
    manager.advance(3_600 * NS)
    assert paper.reference_price("TST-USD") == live.reference_price("TST-USD")


def test_list_executions_when_paged_then_ascending_after_since_seq(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    for i in range(5):
        manager.submit("sim", req(f"c{i}"))
    page = manager.list_executions(since_seq=1, limit=2)
    assert [r.seq for r in page] == [2, 3]
    assert [r.seq for r in manager.list_executions(since_seq=3, limit=100)] == [4, 5]
    assert manager.list_executions(since_seq=5) == []


def test_list_executions_when_history_truncated_then_journal_or_error(clock: FakeClock, tmp_path: Path) -> None:
    small = OrderManager(sim_venues(), clock=clock, history_limit=2)
    journaled = OrderManager(sim_venues(), journal_path=tmp_path / "j.jsonl", clock=clock, history_limit=2)
    for manager in (small, journaled):
        for i in range(4):
            manager.submit("sim", req(f"c{i}"))
    with pytest.raises(NotFoundError):
        small.list_executions(since_seq=0)
    assert [r.seq for r in journaled.list_executions(since_seq=0, limit=3)] == [1, 2, 3]
    journaled.close()


def test_journal_when_restarted_then_seq_orders_and_dedup_survive(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "engine" / "executions.jsonl"
    first = OrderManager(sim_venues(), journal_path=path, clock=clock)
    filled = first.submit("sim", req("filled", qty="2", price=None))
    first.submit("sim", req("resting", qty="1", price="99.00"))
    first.submit("sim", req("rejected", qty="0.05"))
    seq_before = first.last_seq
    all_before = first.list_executions(since_seq=0, limit=1000)
    # first is not closed before the restart: a kill -9 leaves the fsync'ed journal as it is.

    second = OrderManager(sim_venues(), journal_path=path, clock=clock)
    restart = second.restart_reports
    assert [(r.client_order_id, r.exec_type, r.reason_code) for r in restart] == [
        ("resting", ExecType.CANCELED, "ENGINE_RESTART")
    ]
    assert second.last_seq == seq_before + 1 and restart[0].seq == seq_before + 1
    assert second.list_executions(since_seq=0, limit=1000) == [*all_before, *restart]
    again = second.submit("sim", req("filled", qty="2", price=None))
    assert again == filled and second.last_seq == seq_before + 1
    order = second.get_order("filled")
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_qty == D(2)
    new = second.submit("sim", req("fresh"))
    assert new[0].seq == seq_before + 2
    second.close()

    third = OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert third.last_seq == seq_before + 3 and [r.client_order_id for r in third.restart_reports] == ["fresh"]
    third.close()
    first.close()  # only now, so the test does not leak the file handle


def test_journal_when_last_record_torn_then_replay_skips_it(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    first = OrderManager(sim_venues(), journal_path=path, clock=clock)
    first.submit("sim", req("c1", price=None))
    seq = first.last_seq
    first.close()
    with open(path, "ab") as fh:
        fh.write(b"\x30\x00\x00\x00\x01\x02")  # the start of a record header, as a crash mid-write leaves it
    second = OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert second.last_seq == seq and second.restart_reports == []
    assert second.submit("sim", req("c2"))[0].seq == seq + 1
    second.close()


def test_report_when_an_adapter_misstates_leaves_or_average_carries_the_orders_own_figures(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    venues = sim_venues()
    sim = venues["sim"]
    manager = OrderManager(venues, clock=clock)
    manager.submit("sim", req("rest", qty="2"))  # rests below the market: NEW, nothing filled
    real_cancel = sim.cancel

    def misstating(client_order_id: str) -> list[VenueEvent]:  # an adapter bug: quantity left on a cancel
        return [dataclasses.replace(e, leaves_qty=D(5), avg_price=D(7)) for e in real_cancel(client_order_id)]

    monkeypatch.setattr(sim, "cancel", misstating)
    (report,) = manager.cancel("rest")
    assert (report.exec_type, report.leaves_qty, report.avg_price) == (ExecType.CANCELED, D(0), D(0))
    assert manager.anomalies == 1 and "event for rest corrected: leaves 5 avg 7 -> leaves 0 avg 0" in caplog.text


def test_report_when_round_tripped_through_protobuf_then_equal(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock)
    reports = [*manager.submit("sim", req("c1", qty="1.5", price=None)), *manager.submit("sim", req("c2", qty="0.05"))]
    assert reports[-1].reason_code and reports[-1].exec_type is ExecType.REJECTED
    for report in reports:
        pb = engine_pb2.ExecutionReport.FromString(report_pb(report).SerializeToString())
        assert report_from_pb(pb, report.session_id, report.trace) == report
    assert manager.anomalies == 0


def test_journal_when_crash_left_order_without_reports_then_rejected_on_restart(
    clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "j.bin"
    first = OrderManager(sim_venues(), journal_path=path, clock=clock)
    first.submit("sim", req("c1"))
    first.close()
    # Keep only the order record, as if the process died before its reports were written.
    first_report = next(r for r in read_journal(path, JOURNAL_SCHEMA) if r.tag == REPORT_TAG)
    os.truncate(path, first_report.offset)
    second = OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert [(r.client_order_id, r.exec_type, r.reason_code, r.seq) for r in second.restart_reports] == [
        ("c1", ExecType.REJECTED, "ENGINE_RESTART", 1)
    ]
    assert second.submit("sim", req("c1")) == second.restart_reports
    second.close()


def journal_size(path: Path) -> int:
    return path.stat().st_size


def test_frame_when_many_orders_submitted_then_one_commit_at_the_end(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    manager = OrderManager(sim_venues(), journal_path=path, clock=clock, journal_fsync="batch")
    empty = journal_size(path)
    with manager.frame():
        for i in range(5):
            manager.submit("sim", req(f"c{i}", price=None))
        assert journal_size(path) == empty  # nothing written before the frame ends
    assert journal_size(path) > empty
    records = list(read_journal(path, JOURNAL_SCHEMA))
    assert sum(r.tag == REPORT_TAG for r in records) == manager.last_seq
    manager.close()


def test_frame_when_duplicate_inside_same_frame_then_answered_without_execution(
    clock: FakeClock, tmp_path: Path
) -> None:
    manager = OrderManager(sim_venues(), journal_path=tmp_path / "j.bin", clock=clock, retention=0)
    with manager.frame():
        first = manager.submit("sim", req("c1", price=None))
        seq = manager.last_seq
        again = manager.submit("sim", req("c1", price=None))
    assert again == first and manager.last_seq == seq
    manager.close()


def test_retention_when_orders_finish_then_memory_bounded_and_duplicates_answered_from_journal(
    clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "j.bin"
    manager = OrderManager(sim_venues(), journal_path=path, clock=clock, retention=3, history_limit=4)
    first = manager.submit("sim", req("c0", qty="2", price=None))
    for i in range(1, 20):
        manager.submit("sim", req(f"c{i}", price=None))
    assert manager.orders_in_memory == 3
    seq = manager.last_seq
    assert manager.submit("sim", req("c0", qty="2", price=None)) == first and manager.last_seq == seq
    order = manager.get_order("c0")
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_qty == D(2)
    assert manager.reports_for("c0") == first
    assert [r.seq for r in manager.list_executions(0, 3)] == [1, 2, 3]
    manager.close()
    restarted = OrderManager(sim_venues(), journal_path=path, clock=clock, retention=3)
    assert restarted.orders_in_memory == 3 and restarted.last_seq == seq
    assert restarted.submit("sim", req("c0", qty="2", price=None)) == first and restarted.last_seq == seq
    restarted.close()


def test_cancel_when_a_filled_order_left_memory_answers_too_late_to_cancel_as_in_memory(
    clock: FakeClock, tmp_path: Path
) -> None:
    manager = OrderManager(sim_venues(), journal_path=tmp_path / "j.bin", clock=clock, retention=2)
    for i in range(5):
        manager.submit("sim", req(f"c{i}", price=None))
    assert manager.orders_in_memory == 2  # c0 left memory; GetOrder rebuilds it from the journal
    with pytest.raises(VenueRejectedError) as late:
        manager.cancel("c0")
    assert late.value.code == "TOO_LATE_TO_CANCEL" and late.value.details["status"] == "FILLED"
    with pytest.raises(NotFoundError) as unknown:
        manager.cancel("never-seen")
    assert unknown.value.code == "ORDER_NOT_FOUND"
    manager.close()


def test_retention_when_no_journal_and_beyond_window_then_id_forgotten(clock: FakeClock) -> None:
    manager = OrderManager(sim_venues(), clock=clock, retention=1)
    manager.submit("sim", req("c0", price=None))
    manager.submit("sim", req("c1", price=None))
    assert manager.get_order("c0") is None and manager.orders_in_memory == 1


def legacy_jsonl_journal(path: Path) -> None:
    """A journal as the JSONL format wrote it: one filled market order and one resting limit order."""
    trace = {"traceparent": "00-x", "tracestate": ""}
    base = {"venue": "sim", "model_id": "m1", "account": "acct", "session_id": "s1", "symbol": "TST-USD"}
    request = {"session_id": "s1", "account": "acct", "model_id": "m1", "symbol": "TST-USD", "side": "BUY"}
    report = {**base, "side": "BUY", "liquidity": "", "reason_code": "", "reason_text": "", "ts_ns": 5}
    zero = {"last_qty": "0", "last_price": "0", "fee": "0", "avg_price": "0", "cum_qty": "0"}
    lines = [
        {
            "k": "order",
            "venue": "sim",
            "created_ns": 5,
            "request": {
                **request,
                "client_order_id": "m",
                "order_type": "MARKET",
                "time_in_force": "IOC",
                "quantity": "1",
                "limit_price": None,
                "trace": trace,
            },
        },
        {
            "k": "report",
            **report,
            **zero,
            "seq": 1,
            "exec_id": "sim-1",
            "client_order_id": "m",
            "venue_order_id": "v1",
            "exec_type": "ACCEPTED",
            "order_status": "ACCEPTED",
            "leaves_qty": "1",
            "trace": trace,
            "reason_details": {},
        },
        {
            "k": "report",
            **report,
            "seq": 2,
            "exec_id": "sim-2",
            "client_order_id": "m",
            "venue_order_id": "v1",
            "exec_type": "FILL",
            "order_status": "FILLED",
            "last_qty": "1",
            "last_price": "100.01",
            "cum_qty": "1",
            "leaves_qty": "0",
            "avg_price": "100.01",
            "fee": "0.01",
            "trace": trace,
            "reason_details": {},
        },
        {
            "k": "order",
            "venue": "sim",
            "created_ns": 6,
            "request": {
                **request,
                "client_order_id": "r",
                "order_type": "LIMIT",
                "time_in_force": "GTC",
                "quantity": "1",
                "limit_price": "99.00",
                "trace": trace,
            },
        },
        {
            "k": "report",
            **report,
            **zero,
            "seq": 3,
            "exec_id": "sim-3",
            "client_order_id": "r",
            "venue_order_id": "v2",
            "exec_type": "ACCEPTED",
            "order_status": "ACCEPTED",
            "leaves_qty": "1",
            "trace": trace,
            "reason_details": {},
        },
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"k":"rep', encoding="utf-8")


@pytest.mark.parametrize("configured", ["journal.jsonl", "journal.bin"])
def test_journal_when_jsonl_from_earlier_version_then_migrated_once_and_replayed(
    clock: FakeClock, tmp_path: Path, configured: str
) -> None:
    legacy = tmp_path / "journal.jsonl"
    legacy_jsonl_journal(legacy)
    path = tmp_path / configured
    manager = OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert is_binary_journal(path) and (tmp_path / "journal.jsonl.migrated").exists()
    assert [(r.client_order_id, r.seq, r.reason_code) for r in manager.restart_reports] == [("r", 4, "ENGINE_RESTART")]
    filled = manager.get_order("m")
    assert filled is not None and filled.status is OrderStatus.FILLED and filled.avg_price == D("100.01")
    assert [r.seq for r in manager.submit("sim", req("m", price=None))] == [1, 2]
    manager.close()
    again = OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert again.last_seq == 4 and again.restart_reports == []
    again.close()


@pytest.mark.parametrize("header", [b"XMJRNL\x00\x01", b"\x00" * 8])
def test_journal_when_a_binary_journal_has_a_damaged_header_then_refused_not_migrated_as_jsonl(
    clock: FakeClock, tmp_path: Path, header: bytes
) -> None:
    """A binary journal whose magic is damaged was taken for an old JSONL journal: the start crashed with a bare
    UnicodeDecodeError, or (zero-filled) swapped the journal for an empty one and started again at seq 0."""
    path = tmp_path / "journal.bin"
    manager = OrderManager(sim_venues(), journal_path=path, clock=clock)
    manager.submit("sim", req("m", price=None))
    manager.close()
    data = path.read_bytes()
    path.write_bytes(header + data[len(header) :])
    with pytest.raises(JournalFormatError, match="not a binary journal"):
        OrderManager(sim_venues(), journal_path=path, clock=clock)
    assert path.read_bytes()[len(header) :] == data[len(header) :]  # left as it was
    assert not (tmp_path / "journal.bin.migrated").exists()


def test_list_executions_when_old_range_then_read_from_the_journal_near_its_start(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution_ledger, "JOURNAL_INDEX_EVERY", 3)
    path = tmp_path / "j.bin"
    manager = OrderManager(sim_venues(), journal_path=path, clock=clock, history_limit=2)
    for i in range(10):
        manager.submit("sim", req(f"c{i}", price=None))
    last = manager.last_seq
    for since in (0, 1, 4, 7, last - 3):
        assert [r.seq for r in manager.list_executions(since, limit=4)] == list(
            range(since + 1, min(since + 5, last + 1))
        )
    manager.close()
    restarted = OrderManager(sim_venues(), journal_path=path, clock=clock, history_limit=2)
    assert [r.seq for r in restarted.list_executions(5, limit=3)] == [6, 7, 8]
    restarted.close()
