"""Segmented journals and ops' compaction behind a snapshot: restarts lose and double nothing at any step."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main
from engine_server.order_manager import OrderManager
from engine_server.venues.base import OrderRequest, OrderType, Side, TimeInForce
from engine_server.venues.sim import SimVenue, SimVenueConfig
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.api.ops.v1 import journal_pb2 as ops_journal_pb2
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.files import stage_text
from nautilus_mesh.journal import FsyncPolicy, JournalFormatError
from nautilus_mesh.journal_segments import (
    SEGMENT_SHIFT,
    SegmentedJournalReader,
    SegmentedJournalWriter,
    list_segments,
    segment_path,
)
from nautilus_mesh.snapshots import pack, read_snapshot, snapshot_path, unpack
from nautilus_mesh.store import SqliteStore
from ops_server import journal_compaction, ops_journal
from ops_server.engine_link import ReportCursor
from ops_server.journal_compaction import SNAPSHOT_KEY, JournalCompaction
from ops_server.measurement import Measurement
from ops_server.order_tracker import OrderTracker, TrackedOrder
from tests.venues import instrument

SCHEMA = {1: journal_pb2.OrderRecord, 2: engine_pb2.ExecutionReport}
D = Decimal


def report(seq: int, coid: str = "c", qty: str = "1") -> engine_pb2.ExecutionReport:
    return engine_pb2.ExecutionReport(
        seq=seq,
        exec_id=f"x-{seq}",
        client_order_id=coid,
        exec_type=engine_pb2.EXEC_TYPE_PARTIAL_FILL,
        order_status=engine_pb2.ORDER_STATUS_PARTIALLY_FILLED,
        last_qty=qty,
        last_price="100",
        fee="0.01",
    )


def open_segments(path: Path, *segments: list[int], fsync: FsyncPolicy = "never") -> SegmentedJournalWriter:
    """The writer of a segmented journal holding the reports of these seqs, one list per segment, left open."""
    writer = SegmentedJournalWriter(path, SCHEMA, fsync=fsync)
    for index, segment in enumerate(segments):
        if index:
            writer.roll()
        writer.write([report(seq) for seq in segment])
    return writer


def write_segments(path: Path, *segments: list[int], fsync: FsyncPolicy = "never") -> None:
    """A segmented journal holding the reports of these seqs, one list per segment."""
    open_segments(path, *segments, fsync=fsync).close()


def write_after_replay(
    path: Path, replayed: SegmentedJournalReader, seq: int, fsync: FsyncPolicy = "never"
) -> SegmentedJournalWriter:
    """Reopen the journal ``replayed`` read, write the report ``seq`` and close (the writer is returned)."""
    writer = SegmentedJournalWriter(path, SCHEMA, fsync=fsync, replayed=replayed)
    writer.write([report(seq)])
    writer.close()
    return writer


def seqs(path: Path, first_segment: int | None = None) -> list[int]:
    reader = SegmentedJournalReader(path, SCHEMA, first_segment=first_segment)
    return [r.message.seq for r in reader.records() if isinstance(r.message, engine_pb2.ExecutionReport)]


# -- the segmented journal ------------------------------------------------------------------------


def test_segments_when_a_commit_passes_the_size_then_the_next_records_go_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    writer = SegmentedJournalWriter(path, SCHEMA, fsync="never", segment_bytes=200)
    offsets = {}
    for seq in range(1, 31):
        offsets[seq] = writer.append(report(seq))
        writer.commit()
    writer.close()

    files = list_segments(path)
    assert [index for index, _ in files] == list(range(len(files))) and len(files) > 3
    assert files[0][1] == path and files[1][1].name == "journal.000001.bin"
    assert seqs(path) == list(range(1, 31))
    # A global offset reads from its record, in whichever segment it is.
    start = offsets[17]
    assert start >> SEGMENT_SHIFT > 0
    reader = SegmentedJournalReader(path, SCHEMA)
    assert [r.message.seq for r in reader.records(start)] == list(range(17, 31))  # type: ignore[attr-defined]


def test_segments_when_reopened_then_appends_to_the_newest_and_reads_all_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    write_segments(path, [1], [2], fsync="batch")
    reader = SegmentedJournalReader(path, SCHEMA)
    assert [r.message.seq for r in reader.records()] == [1, 2]  # type: ignore[attr-defined]
    again = write_after_replay(path, reader, 3, fsync="batch")
    assert again.segment == 1 and seqs(path) == [1, 2, 3]


def test_segments_when_the_newest_has_a_torn_tail_then_it_is_cut_and_appends_follow(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    write_segments(path, [1], [2])
    newest = segment_path(path, 1)
    with newest.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")  # a crash mid-append

    reader = SegmentedJournalReader(path, SCHEMA)
    assert [r.message.seq for r in reader.records()] == [1, 2]  # type: ignore[attr-defined]
    assert reader.dropped_bytes == 6
    write_after_replay(path, reader, 3)
    assert seqs(path) == [1, 2, 3]
    assert any(p.name.startswith("journal.000001.bin.torn-") for p in tmp_path.iterdir())


def _flip_byte(file: Path, at_from_end: int) -> None:
    data = bytearray(file.read_bytes())
    data[-at_from_end] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("fault", ["damaged", "empty", "missing"])
def test_segments_when_an_older_segment_is_damaged_empty_or_missing_then_nothing_is_replayed_around_it(
    tmp_path: Path, fault: str
) -> None:
    """Only the newest segment is written to, so only it can have a torn tail: damage in an older one is a disk fault,
    and replaying the later segments around the hole would lose or repeat what it held (an engine re-executed orders
    it forgot and reported a filled one cancelled). The read stops with an error naming the file."""
    path = tmp_path / "journal.bin"
    write_segments(path, [1, 2, 3], [4, 5, 6], [7, 8])
    older = segment_path(path, 1)
    if fault == "damaged":
        _flip_byte(older, 40)  # inside the payload of a record followed by others
    elif fault == "empty":
        older.write_bytes(b"")
    else:
        older.unlink()
    with pytest.raises(JournalFormatError) as refused:
        list(SegmentedJournalReader(path, SCHEMA).records())
    assert older.name in str(refused.value)


def test_segments_when_the_snapshots_next_segment_is_missing_then_the_replay_refuses(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    write_segments(path, [1], [2], [3], [4])
    path.unlink()
    segment_path(path, 1).unlink()
    segment_path(path, 2).unlink()  # the snapshot covered segments 0 and 1 only
    with pytest.raises(JournalFormatError, match="segment 2 of the journal is missing"):
        list(SegmentedJournalReader(path, SCHEMA, first_segment=2).records())
    assert [r.message.seq for r in SegmentedJournalReader(path, SCHEMA).records()] == [4]  # as journal dump reads


def test_segments_when_the_run_does_not_start_where_the_replay_does_then_the_replay_refuses(tmp_path: Path) -> None:
    """The oldest segments missing without a snapshot (journal.bin gone, or the snapshot file that covered them), or
    every segment after the snapshot's gone: replayed around, the engine re-executed ids and gave out seqs again."""
    path = tmp_path / "journal.bin"
    write_segments(path, [1], [2], [3])
    path.unlink()  # segment 0, and no snapshot: the replay starts at 0
    with pytest.raises(JournalFormatError, match="segment 0 of the journal is missing"):
        list(SegmentedJournalReader(path, SCHEMA, first_segment=0).records())
    assert [r.message.seq for r in SegmentedJournalReader(path, SCHEMA).records()] == [2, 3]  # journal dump
    for index in (1, 2):
        segment_path(path, index).unlink()  # a snapshot covered 0 and 1; its next segment, 2, is gone too
    with pytest.raises(JournalFormatError, match="segment 2 of the journal, the first the snapshot does not cover"):
        list(SegmentedJournalReader(path, SCHEMA, first_segment=2).records())
    assert list(SegmentedJournalReader(path, SCHEMA, first_segment=0).records()) == []  # a new journal: nothing yet


def test_journal_when_a_record_in_the_middle_fails_its_crc_then_the_read_refuses(tmp_path: Path) -> None:
    """A CRC failure with good records after it is damage in the middle, not a torn tail (a crash only tears the
    end): skipping the rest would restart seq below what was sent. A bad last record is still a torn tail."""
    path = tmp_path / "journal.bin"
    write_segments(path, [1, 2, 3])
    size = path.stat().st_size
    last = len(report(3).SerializeToString())
    _flip_byte(path, last + 20)  # the second record's payload
    with pytest.raises(JournalFormatError, match="good records follow it"):
        list(SegmentedJournalReader(path, SCHEMA).records())
    torn = tmp_path / "torn.bin"
    write_segments(torn, [1, 2, 3])
    _flip_byte(torn, 5)  # the last record's payload
    reader = SegmentedJournalReader(torn, SCHEMA)
    assert [r.message.seq for r in reader.records()] == [1, 2]
    assert reader.dropped_bytes > 0 and size == torn.stat().st_size


def test_segments_when_a_crash_left_an_empty_or_torn_new_segment_then_it_reads_empty_and_is_rewritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.bin"
    write_segments(path, [1])
    segment_path(path, 1).write_bytes(b"NMJ")  # the roll's header write was torn

    reader = SegmentedJournalReader(path, SCHEMA)
    assert [r.message.seq for r in reader.records()] == [1]  # type: ignore[attr-defined]
    again = write_after_replay(path, reader, 2)
    assert again.segment == 1 and seqs(path) == [1, 2]


def test_segments_when_dropped_through_k_then_only_later_segments_remain_and_writing_never_goes_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.bin"
    writer = open_segments(path, [1], [2], [3], [], fsync="batch")  # the current segment is empty
    assert writer.drop_through(10) == 3  # never the current segment
    writer.close()
    assert [i for i, _ in list_segments(path)] == [3] and seqs(path) == []
    # Every segment gone (a snapshot covers through 5): the writer starts at the first segment after it.
    segment_path(path, 3).unlink()
    after = SegmentedJournalWriter(path, SCHEMA, fsync="batch", first_segment=6)
    after.write([report(9)])
    after.close()
    assert [i for i, _ in list_segments(path)] == [6] and seqs(path, first_segment=6) == [9]


def test_journal_dump_when_the_journal_is_segmented_and_compacted_prints_the_remaining_segments_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.bin"
    writer = open_segments(path, [1], [2], [3], [4], [])
    writer.drop_through(1)
    writer.close()
    assert not path.exists()
    assert main(["journal", "dump", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [int(line["record"]["seq"]) for line in lines] == [3, 4]
    assert [line["offset"] >> SEGMENT_SHIFT for line in lines] == [2, 3]


def test_journal_dump_when_the_first_segment_is_empty_or_not_binary_then_it_fails_instead_of_printing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It read a non-binary first segment as JSONL (and that from journal.bin, compacted away): no line, exit 0."""
    empty = tmp_path / "a" / "journal.bin"
    empty.parent.mkdir()
    write_segments(empty, [1], [2], [3])
    empty.write_bytes(b"")
    damaged = tmp_path / "b" / "journal.bin"
    damaged.parent.mkdir()
    writer = open_segments(damaged, [1], [2], [3], [])
    writer.drop_through(0)
    writer.close()
    _flip_byte(segment_path(damaged, 1), len(segment_path(damaged, 1).read_bytes()))  # its magic's first byte
    for path in (empty, damaged):
        assert main(["journal", "dump", str(path)]) == 2
    assert "journal.bin" in capsys.readouterr().err


def test_ops_journal_when_a_newer_writer_added_a_record_type_then_replay_skips_it_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older ops stopped with a bare AssertionError on a record type its schema does not have."""
    path = tmp_path / "journal.bin"
    newer = {**ops_journal.SCHEMA, 9: common_pb2.TraceContext}
    writer = SegmentedJournalWriter(path, newer, fsync="never")
    writer.write([report(1), common_pb2.TraceContext(traceparent="00-x"), report(2)])
    writer.close()
    replayed = list(ops_journal.OpsJournal(path).replay())
    assert [r.seq for r in replayed] == [1, 2]  # type: ignore[union-attr]
    assert "does not know (nautilus.common.v1.TraceContext)" in caplog.text


def test_engine_when_its_journal_spans_segments_then_restart_and_old_reads_come_from_every_segment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.bin"

    def manager() -> OrderManager:
        venue = SimVenue(SimVenueConfig(instruments=(instrument(),), seed=1))
        return OrderManager(
            {"sim": venue}, journal_path=path, clock=lambda: 1_000, retention=1, history_limit=2,
            journal_segment_bytes=4096,
        )  # fmt: skip

    first = manager()
    submitted = []
    for i in range(60):
        side = Side.BUY if i % 2 == 0 else Side.SELL
        req = OrderRequest(f"c{i}", "s1", "acct", "m1", "TST-USD", side, OrderType.MARKET, TimeInForce.IOC, D("0.1"))
        submitted.extend(first.submit("sim", req))
    first.close()
    assert len(list_segments(path)) > 2

    again = manager()
    assert again.last_seq == submitted[-1].seq
    assert [r.seq for r in again.list_executions(0, 1000)] == [r.seq for r in submitted]
    assert again.get_order("c0") is not None  # left memory: read back from the first segment
    again.close()


# -- ops: compaction behind a snapshot in the state store -----------------------------------------


class OpsParts:
    """The parts of ops the journal rebuilds, over one state dir and one SQLite store."""

    def __init__(self, tmp: Path, segment_bytes: int = 4096) -> None:
        self.store = SqliteStore(tmp / "state.db")
        self.tracker = OrderTracker(tmp / "journal.bin", history=1000)
        self.measurement = Measurement(1.0)
        self.cursor = ReportCursor()
        self.compaction = JournalCompaction(self.store, self.tracker, self.measurement, self.cursor, segment_bytes)
        first = self.compaction.restore()
        self.tracker.replay(self.apply, first)

    def apply(self, r: engine_pb2.ExecutionReport) -> None:
        self.cursor.mark(r.seq)
        fill = self.tracker.apply_report(r, journal=False)
        if fill is not None:
            o = fill.order
            self.measurement.apply_fill(o.model_id, o.instrument, fill.signed_qty, fill.price, fill.fee)

    def decide(self, n: int) -> None:
        coid = f"o-{n}"
        decision = ops_pb2.SignalDecision(
            signal_id=f"s-{n}", model_id="m1", status=ops_pb2.DECISION_STATUS_ACCEPTED, client_order_id=coid
        )
        order = TrackedOrder(coid, f"s-{n}", "m1", "strat", "BTC-USD", "BUY", D(2), "LIVE", "sim", D(100), n)
        self.tracker.record(decision, order)
        self.tracker.commit()

    def fill(self, n: int, seq: int) -> None:
        r = report(seq, f"o-{n}")
        r.side = common_pb2.SIDE_BUY
        self.tracker.journal_reports([r])
        self.apply(r)

    def state(self) -> tuple[object, ...]:
        orders = {c: (o.filled, o.status, o.acknowledged) for c, o in self.tracker.orders.items()}
        decisions = sorted(self.tracker.decisions)
        return orders, decisions, self.measurement.positions_state(), self.cursor.state()

    def close(self) -> None:
        self.tracker.close()
        self.store.close()


def trade(parts: OpsParts, start: int, count: int) -> None:
    for n in range(start, start + count):
        parts.decide(n)
        parts.fill(n, seq=n)


def test_ops_when_restarted_after_compaction_replays_only_what_follows_the_snapshot(tmp_path: Path) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 40)
    assert ops.compaction.due()
    closed = ops.compaction.checkpoint()
    trade(ops, 41, 5)
    before = ops.state()
    ops.close()
    assert [i for i, _ in list_segments(tmp_path / "journal.bin")] == [closed + 1]

    again = OpsParts(tmp_path)
    assert again.state() == before
    assert again.tracker.previous_decision("m1", "s-3") is not None  # duplicates still recognised
    assert again.measurement.position("m1", "BTC-USD") == D(45)  # one fill of 1 per signal: not doubled
    saved = read_snapshot(snapshot_path(tmp_path / "journal.bin"))
    assert saved is not None and saved["through_segment"] == closed
    assert again.store.get(SNAPSHOT_KEY) is None  # a file beside the journal, not a document of the store
    again.close()


def test_ops_when_killed_between_snapshot_and_deletion_deletes_the_leftovers_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 30)
    journal = ops.tracker.journal
    assert journal is not None
    monkeypatch.setattr(journal, "drop_through", lambda last: 0)  # the crash: snapshot saved, nothing deleted
    closed = ops.compaction.checkpoint()
    trade(ops, 31, 3)
    before = ops.state()
    ops.close()
    assert [i for i, _ in list_segments(tmp_path / "journal.bin")] == [0, 1]

    again = OpsParts(tmp_path)
    assert again.state() == before
    assert again.measurement.position("m1", "BTC-USD") == D(33)
    assert [i for i, _ in list_segments(tmp_path / "journal.bin")] == [closed + 1]
    again.close()


def test_ops_when_killed_between_roll_and_snapshot_replays_every_segment_and_loses_nothing(tmp_path: Path) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 10)
    journal = ops.tracker.journal
    assert journal is not None
    journal.roll()  # the crash: new segment started, no snapshot saved
    trade(ops, 11, 10)
    before = ops.state()
    ops.close()

    again = OpsParts(tmp_path)
    assert not snapshot_path(tmp_path / "journal.bin").exists()
    assert again.state() == before and again.measurement.position("m1", "BTC-USD") == D(20)
    again.close()


def test_ops_when_compacted_twice_with_a_torn_newest_segment_restarts_with_every_committed_frame(
    tmp_path: Path,
) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 20)
    ops.compaction.checkpoint()
    trade(ops, 21, 20)
    last = ops.compaction.checkpoint()
    trade(ops, 41, 4)
    before = ops.state()
    ops.close()
    with segment_path(tmp_path / "journal.bin", last + 1).open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")

    again = OpsParts(tmp_path)
    assert again.state() == before and again.measurement.position("m1", "BTC-USD") == D(44)
    trade(again, 45, 1)
    again.close()
    third = OpsParts(tmp_path)
    assert third.measurement.position("m1", "BTC-USD") == D(45)
    third.close()


async def test_ops_when_checkpoint_writes_off_the_loop_keeps_trading_and_restarts_with_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 40)
    write_started, write_may_finish = threading.Event(), threading.Event()

    def slow_stage(path: Path, parts: list[str]) -> Path:
        write_started.set()
        write_may_finish.wait(5)
        return stage_text(path, parts)

    monkeypatch.setattr(journal_compaction, "stage_text", slow_stage)
    checkpoint = asyncio.ensure_future(ops.compaction.maybe_checkpoint())
    assert await asyncio.to_thread(write_started.wait, 5), "the snapshot is written on a worker thread"
    trade(ops, 41, 5)  # the loop keeps deciding while the snapshot is written: these go to the next segment
    ops.store.put("allocator", {"saved": "meanwhile"})  # the store is free: a state save does not wait for it
    assert not checkpoint.done()
    assert len(list_segments(tmp_path / "journal.bin")) == 2, "nothing deleted before the snapshot is written"
    write_may_finish.set()
    assert await checkpoint is True
    before = ops.state()
    ops.close()

    again = OpsParts(tmp_path)
    assert again.state() == before
    assert again.measurement.position("m1", "BTC-USD") == D(45)
    assert again.tracker.previous_decision("m1", "s-43") is not None
    again.close()


@pytest.mark.parametrize("version", [1, 2])
def test_ops_when_an_earlier_version_kept_its_snapshot_in_the_store_restores_it_and_moves_it_to_the_file(
    tmp_path: Path, version: int
) -> None:
    ops = OpsParts(tmp_path)
    trade(ops, 1, 12)
    closed = ops.compaction.checkpoint()
    file = snapshot_path(tmp_path / "journal.bin")
    saved = dict(read_snapshot(file) or {})
    file.unlink()  # as an earlier version left it: the snapshot in the state store, no file
    ops.store.put(SNAPSHOT_KEY, saved if version == 2 else first_version(saved))
    before = ops.state()
    ops.close()

    again = OpsParts(tmp_path)
    assert again.state() == before and closed >= 0
    trade(again, 13, 30)
    after = again.state()
    moved = again.compaction.checkpoint()
    assert read_snapshot(file)["through_segment"] == moved  # type: ignore[index]
    assert again.store.get(SNAPSHOT_KEY) == {}  # emptied: a missing file is never answered by a stale snapshot
    again.close()
    third = OpsParts(tmp_path)
    assert third.state() == after and third.measurement.position("m1", "BTC-USD") == D(42)
    third.close()


def first_version(saved: dict[str, Any]) -> dict[str, Any]:
    """A version 2 snapshot as version 1 wrote it: a document per order."""
    saved = dict(saved)
    columns = saved["orders"]
    records = [pack([r]) for r in unpack(columns["records"], ops_journal_pb2.TrackedOrderRecord)]
    saved["orders"] = [  # version 1: a document per order
        {"record": rec, "filled": f, "status": s, "acknowledged": a}
        for rec, f, s, a in zip(records, columns["filled"], columns["status"], columns["acknowledged"], strict=True)
    ]
    saved["version"] = 1
    return saved


def test_snapshot_encoding_when_packed_in_chunks_then_text_and_json_value_are_those_of_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64
    import struct

    from nautilus_mesh import snapshots

    monkeypatch.setattr(snapshots, "B64_CHUNK_BYTES", 3 * 7)  # many chunks, one ending mid-message
    messages = [ops_pb2.SignalDecision(signal_id=f"s-{n}" * (n % 5 + 1), model_id="m1") for n in range(50)]
    whole = b"".join(struct.pack("<I", len(m.SerializeToString())) + m.SerializeToString() for m in messages)
    packed = snapshots.pack(messages)
    assert packed == base64.b64encode(whole).decode("ascii")
    assert list(unpack(packed, ops_pb2.SignalDecision)) == messages
    assert snapshots.pack_serialized(m.SerializeToString() for m in messages) == packed
    document = {"v": 2, "blob": packed, "nested": {"k": [1, 'é"\\'], "p": snapshots.pack([]), "n": None}}
    assert snapshots.json_text(document) == json.dumps(document, separators=(",", ":"))
    assert "".join(snapshots.json_parts(document)) == snapshots.json_text(document)
    monkeypatch.setattr(snapshots, "PACE_RECORDS", 8)  # a pause after every 8 records and every base64 chunk
    pauses: list[int] = []
    assert snapshots.pack(messages, lambda: pauses.append(1)) == packed
    chunks = -(-len(whole) // (3 * 7))
    assert len(pauses) == 2 * 7 + chunks  # 50 records: 7 batches serialised, 7 packed; then the chunks


def test_pacer_when_called_after_work_sleeps_in_proportion_to_the_cpu_time_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nautilus_mesh import snapshots

    clock = [10.0]
    slept: list[float] = []
    monkeypatch.setattr(snapshots.time, "thread_time", lambda: clock[0])
    monkeypatch.setattr(snapshots.time, "sleep", slept.append)
    pace = snapshots.Pacer(0.25)  # the thread may hold the GIL a quarter of the time: 3 s asleep per 1 s of work
    clock[0] += 0.002
    pace()
    clock[0] += 0.004
    pace()
    pace()  # no work since: no pause
    assert slept == pytest.approx([0.006, 0.012])
    assert pace.slept_seconds == pytest.approx(0.018)
    snapshots.Pacer(1.0)()  # a share of 1 never sleeps
    assert len(slept) == 2
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="share"):
            snapshots.Pacer(share)


def test_ops_snapshot_when_windows_evicted_then_restore_keeps_their_order_and_the_encoded_records(
    tmp_path: Path,
) -> None:
    ops = OpsParts(tmp_path, segment_bytes=1 << 20)
    ops.tracker.dedup_window, ops.tracker.history = 7, 6
    trade(ops, 1, 12)
    ops.decide(13)  # open: kept past the history while the finished ones before it leave
    trade(ops, 14, 4)
    order = list(ops.tracker.orders), list(ops.tracker.decisions), list(ops.tracker.fills)
    cached = {coid: o.record_bytes() for coid, o in ops.tracker.orders.items()}
    ops.compaction.checkpoint()
    before = ops.state()
    ops.close()

    again = OpsParts(tmp_path)
    again.tracker.dedup_window, again.tracker.history = 7, 6
    assert again.state() == before
    assert (list(again.tracker.orders), list(again.tracker.decisions), list(again.tracker.fills)) == order
    assert {coid: o.to_pb().SerializeToString() for coid, o in again.tracker.orders.items()} == cached
    again.close()


def test_checkpoint_leaves_no_reference_cycle_holding_the_snapshot(tmp_path: Path) -> None:
    """The services collect cycles rarely (``GC_THRESHOLDS``): a cycle made by a checkpoint would keep its snapshot's
    text, tens of MB at the default windows, alive until the next full collection, checkpoint after checkpoint."""
    import gc

    ops = OpsParts(tmp_path, segment_bytes=1 << 20)
    for n in range(50):
        ops.decide(n)
        ops.fill(n, n + 1)
    gc.collect()
    gc.disable()
    try:
        ops.compaction.checkpoint()
        assert gc.collect() == 0
    finally:
        gc.enable()
        ops.close()
