"""The ops journal: decisions and reports written and read back exactly (including protobuf's JSON shape)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf import json_format

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.api.ops.v1 import journal_pb2, ops_pb2
from ops_server.ops_journal import OpsJournal, decision_from_record, decision_record, report_from_record, report_record
from ops_server.order_tracker import OrderTracker, TrackedOrder

REPORT = engine_pb2.ExecutionReport(
    seq=42,
    exec_id="sim-42",
    client_order_id="o-1",
    venue_order_id="v-9",
    venue="sim",
    model_id="m1",
    account="main",
    instrument="BTC-USD",
    side=common_pb2.SIDE_SELL,
    exec_type=engine_pb2.EXEC_TYPE_PARTIAL_FILL,
    order_status=engine_pb2.ORDER_STATUS_PARTIALLY_FILLED,
    last_qty="0.5",
    last_price="100.25",
    cum_qty="0.5",
    leaves_qty="1.5",
    avg_price="100.25",
    fee="0.01",
    liquidity="TAKER",
    ts_unix_nanos=1_700_000_000_000_000_000,
    trace=common_pb2.TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
)
DECISION = ops_pb2.SignalDecision(
    signal_id="s-1",
    model_id="m1",
    status=ops_pb2.DECISION_STATUS_ACCEPTED,
    mode=ops_pb2.ROUTING_MODE_LIVE,
    client_order_id="o-1",
    side=common_pb2.SIDE_SELL,
    quantity="2",
)


def test_journal_codecs_when_round_tripped_keep_every_replayed_field() -> None:
    assert report_from_record(report_record(REPORT)) == REPORT
    assert decision_from_record(decision_record(DECISION)) == DECISION


def test_journal_codecs_when_a_record_lacks_fields_read_them_as_the_defaults() -> None:
    assert report_from_record({}) == engine_pb2.ExecutionReport()
    assert decision_from_record({"signal_id": "s-2"}) == ops_pb2.SignalDecision(signal_id="s-2")
    assert not decision_from_record({"trace": {}}).HasField("trace")


def test_journal_codecs_when_given_protobuf_json_mapping_read_it_too() -> None:
    legacy = json_format.MessageToDict(REPORT, preserving_proto_field_name=True)
    assert report_from_record(legacy) == REPORT
    assert decision_from_record(json_format.MessageToDict(DECISION, preserving_proto_field_name=True)) == DECISION


@pytest.mark.parametrize("reason_bytes", [0, 200, 20_000])
def test_journal_decision_record_when_put_together_from_encodings_equals_the_built_message(
    tmp_path: Path, reason_bytes: int
) -> None:
    decision = ops_pb2.SignalDecision()
    decision.CopyFrom(DECISION)
    decision.error.message = "x" * reason_bytes  # lengths of one, two and three varint bytes
    order = TrackedOrder("o-1", "s-1", "m1", "strat", "BTC-USD", "SELL", Decimal(2), "LIVE", "sim", Decimal(100), 1)
    journal = OpsJournal(tmp_path / "journal.bin")
    journal.append_decision(decision.SerializeToString(), order.record_bytes())
    journal.append_decision(decision.SerializeToString(), None)
    journal.close()

    records = list(OpsJournal(tmp_path / "journal.bin").replay())
    built = journal_pb2.DecisionRecord(decision=decision, order=order.to_pb())
    assert [r.SerializeToString() for r in records] == [
        built.SerializeToString(),
        journal_pb2.DecisionRecord(decision=decision).SerializeToString(),
    ]


def test_tracker_when_replayed_rebuilds_orders_fills_and_duplicates(tmp_path: Path) -> None:
    journal = tmp_path / "journal.bin"
    tracker = OrderTracker(journal)
    order = TrackedOrder("o-1", "s-1", "m1", "strat", "BTC-USD", "SELL", Decimal(2), "LIVE", "sim", Decimal(100), 1)
    tracker.record(DECISION, order)
    assert tracker.open_quantity("m1", "BTC-USD") == Decimal(-2)
    fill = tracker.apply_report(REPORT)
    assert fill is not None and fill.signed_qty == Decimal("-0.5")
    tracker.close()
    with journal.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")  # a torn last record from a crash

    replayed: list[engine_pb2.ExecutionReport] = []
    again = OrderTracker(journal)
    again.replay(lambda r: (replayed.append(r), again.apply_report(r, journal=False)))
    assert replayed == [REPORT]
    assert again.previous_decision("m1", "s-1") == DECISION
    assert again.orders["o-1"].filled == Decimal("0.5")
    assert again.open_quantity("m1", "BTC-USD") == Decimal("-1.5")
    again.close()


def test_tracker_when_a_paper_twin_decides_journals_it_but_keeps_it_out_of_the_dedup_window(tmp_path: Path) -> None:
    journal = tmp_path / "journal.bin"
    tracker = OrderTracker(journal, dedup_window=1)
    twin_decision = ops_pb2.SignalDecision()
    twin_decision.CopyFrom(DECISION)
    twin_decision.model_id = "m1@paper"
    twin = TrackedOrder(
        "o-2", "s-1", "m1@paper", "strat", "BTC-USD", "SELL", Decimal(2), "SHADOW", "paper", Decimal(100), 1
    )
    tracker.record(DECISION, None)
    tracker.record(twin_decision, twin)
    assert tracker.knows_decision("m1", "s-1"), "the twin took no place in a window of one"
    assert not tracker.knows_decision("m1@paper", "s-1")
    tracker.close()

    again = OrderTracker(journal, dedup_window=1)
    assert again.replay(lambda r: None) == 2, "both decisions were journaled"
    assert again.knows_decision("m1", "s-1") and not again.knows_decision("m1@paper", "s-1")
    assert again.orders["o-2"].model_id == "m1@paper", "the twin's order is restored"
    again.close()


def test_tracker_remembers_a_decision_as_recorded_and_hands_out_copies() -> None:
    tracker = OrderTracker(dedup_window=2)
    decision = ops_pb2.SignalDecision()
    decision.CopyFrom(DECISION)
    tracker.record(decision, None)
    decision.status = ops_pb2.DECISION_STATUS_REJECTED  # after the record: neither remembered nor journaled
    first = tracker.previous_decision("m1", "s-1")
    assert first == DECISION and tracker.knows_decision("m1", "s-1")
    assert first is not None
    first.status = ops_pb2.DECISION_STATUS_DUPLICATE  # a caller's copy: the next reader still gets the decision
    assert tracker.previous_decision("m1", "s-1") == DECISION
    assert tracker.previous_decision("m1", "s-2") is None and not tracker.knows_decision("m1", "s-2")
    for n in (2, 3):  # the window keeps the two newest
        tracker.record(ops_pb2.SignalDecision(signal_id=f"s-{n}", model_id="m1"), None)
    assert not tracker.knows_decision("m1", "s-1") and tracker.knows_decision("m1", "s-3")


def test_tracker_when_a_jsonl_journal_is_found_migrates_it_once_and_replays_it(tmp_path: Path) -> None:
    legacy = tmp_path / "journal.jsonl"
    order = TrackedOrder("o-1", "s-1", "m1", "strat", "BTC-USD", "SELL", Decimal(2), "LIVE", "sim", Decimal(100), 1)
    records = [
        {"type": "decision", "decision": decision_record(DECISION), "order": legacy_order(order)},
        {"type": "report", "report": report_record(REPORT)},
    ]
    legacy.write_text("".join(json.dumps(r) + "\n" for r in records))

    tracker = OrderTracker(tmp_path / "journal.bin")
    replayed: list[engine_pb2.ExecutionReport] = []
    tracker.replay(lambda r: (replayed.append(r), tracker.apply_report(r, journal=False)))
    tracker.close()

    assert replayed == [REPORT]
    assert tracker.previous_decision("m1", "s-1") == DECISION
    assert tracker.orders["o-1"].filled == Decimal("0.5")
    assert (tmp_path / "journal.jsonl.migrated").exists() and not legacy.exists()


def legacy_order(order: TrackedOrder) -> dict[str, object]:
    """An order as the JSONL journal (before the binary format) wrote it."""
    return {
        "client_order_id": order.client_order_id,
        "signal_id": order.signal_id,
        "model_id": order.model_id,
        "strategy_id": order.strategy_id,
        "instrument": order.instrument,
        "side": order.side,
        "quantity": str(order.quantity),
        "mode": order.mode,
        "venue": order.venue,
        "reference_mid": str(order.reference_mid),
        "created_ns": order.created_ns,
        "traceparent": order.traceparent,
        "owner": order.owner,
    }


def test_tracker_when_open_orders_rest_at_the_head_keeps_them_and_lets_finished_ones_leave_in_finishing_order() -> None:
    tracker = OrderTracker(history=6)

    def send(i: int) -> None:
        coid = f"o-{i}"
        decision = ops_pb2.SignalDecision(signal_id=f"s-{i}", model_id="m1", client_order_id=coid, quantity="1")
        tracker.record(
            decision,
            TrackedOrder(coid, f"s-{i}", "m1", "st", "BTC-USD", "BUY", Decimal(1), "LIVE", "sim", Decimal(1), i),
        )

    def finish(i: int, status: int = engine_pb2.ORDER_STATUS_FILLED) -> None:
        report = engine_pb2.ExecutionReport(
            seq=i + 1, client_order_id=f"o-{i}", exec_type=engine_pb2.EXEC_TYPE_FILL, order_status=status,
            last_qty="1", last_price="100",
        )  # fmt: skip
        tracker.apply_report(report)

    for i in range(3):
        send(i)  # three resting orders, never finished
    for i in range(3, 10):
        send(i)
    finish(9)
    finish(3, engine_pb2.ORDER_STATUS_CANCELED)
    for i in range(4, 9):
        finish(i)
    send(10)  # over the history: finished orders leave, oldest finished first, open ones stay
    assert list(tracker.orders) == ["o-0", "o-1", "o-2", "o-7", "o-8", "o-10"]  # o-9, o-3 ... o-6 left
    assert tracker.open_quantity("m1", "BTC-USD") == Decimal(4)
    finish(0)
    send(11)
    send(12)
    send(13)
    assert list(tracker.orders) == ["o-1", "o-2", "o-10", "o-11", "o-12", "o-13"]  # o-7, o-8, then o-0
