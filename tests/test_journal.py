"""The binary journal: round trip, group commit, fsync policies, torn and corrupt tails."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, journal_pb2
from nautilus_mesh.journal import (
    MAGIC,
    JournalFormatError,
    JournalReader,
    JournalWriter,
    is_binary_journal,
    read_journal,
)

SCHEMA = {1: journal_pb2.OrderRecord, 2: engine_pb2.ExecutionReport}


def report(seq: int) -> engine_pb2.ExecutionReport:
    return engine_pb2.ExecutionReport(
        seq=seq,
        exec_id=f"sim-{seq}",
        client_order_id=f"c{seq}",
        exec_type=engine_pb2.EXEC_TYPE_FILL,
        last_qty="1.5",
        last_price="100.25",
        error=common_pb2.ErrorDetail(code="X", details={"requested": "2"}) if seq % 2 else None,
    )


def order(coid: str) -> journal_pb2.OrderRecord:
    return journal_pb2.OrderRecord(
        order=engine_pb2.NewOrder(client_order_id=coid, venue="sim", quantity="1"),
        session_id="s1",
        created_unix_nanos=123,
    )


def write_some(path: Path, n: int = 5, fsync: str = "never") -> list[object]:
    writer = JournalWriter(path, SCHEMA, fsync=fsync)  # type: ignore[arg-type]
    messages: list[object] = [order("c0"), *(report(i) for i in range(1, n))]
    for message in messages:
        writer.append(message)  # type: ignore[arg-type]
    writer.commit()
    writer.close()
    return messages


@pytest.mark.parametrize("fsync", ["never", "batch", "always"])
def test_journal_when_written_and_read_then_records_round_trip(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "j.bin"
    messages = write_some(path, fsync=fsync)
    assert is_binary_journal(path)
    records = list(read_journal(path, SCHEMA))
    assert [r.message for r in records] == messages
    assert [r.tag for r in records] == [1, 2, 2, 2, 2]


def test_journal_when_reopened_then_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    write_some(path, n=3)
    writer = JournalWriter(path, SCHEMA, fsync="never")
    assert writer.write([report(10), report(11)]) == 2
    writer.close()
    assert [r.message.seq for r in read_journal(path, SCHEMA) if r.tag == 2] == [1, 2, 10, 11]  # type: ignore[attr-defined]


def test_journal_when_records_appended_then_nothing_written_until_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    writer = JournalWriter(path, SCHEMA, fsync="batch")
    size = path.stat().st_size
    writer.append(report(1))
    writer.append(report(2))
    assert writer.pending == 2 and path.stat().st_size == size
    assert writer.commit() == 2 and writer.pending == 0
    assert [r.message for r in read_journal(path, SCHEMA)] == [report(1), report(2)]
    writer.close()


def test_journal_when_read_without_schema_then_types_come_from_header(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    messages = write_some(path)
    reader = JournalReader(path)
    assert [r.message for r in reader.records()] == messages
    assert reader.types == {1: "nautilus.engine.v1.OrderRecord", 2: "nautilus.engine.v1.ExecutionReport"}


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
def test_journal_when_tail_torn_then_reader_skips_it_with_warning(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.bin"
    messages = write_some(path)
    os.truncate(path, path.stat().st_size - cut)
    with caplog.at_level(logging.WARNING, logger="nautilus_mesh.journal"):
        reader = JournalReader(path, SCHEMA)
        assert [r.message for r in reader.records()] == messages[:-1]
    assert reader.dropped_bytes > 0 and "skipped" in caplog.text


def test_journal_when_tail_corrupt_then_reader_stops_before_it(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    messages = write_some(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last payload: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert [r.message for r in read_journal(path, SCHEMA)] == messages[:-1]


def test_journal_when_reopened_after_torn_tail_then_tail_kept_aside_and_appends_readable(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    messages = write_some(path)
    with open(path, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00garbage")
    writer = JournalWriter(path, SCHEMA, fsync="never")
    writer.write([report(99)])
    writer.close()
    assert [r.message for r in read_journal(path, SCHEMA)] == [*messages, report(99)]
    kept = list(tmp_path.glob("j.bin.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"\x40\x00\x00\x00garbage"


def test_journal_when_torn_twice_at_one_offset_then_both_tails_are_kept(tmp_path: Path) -> None:
    """The second tear did overwrite the first one's kept-aside bytes (the only copy of what they held)."""
    path = tmp_path / "j.bin"
    write_some(path)
    end = path.stat().st_size
    for garbage in (b"\x40\x00\x00\x00first", b"\x40\x00\x00\x00second"):
        with open(path, "ab") as fh:
            fh.write(garbage)
        JournalWriter(path, SCHEMA, fsync="never").close()
        assert path.stat().st_size == end
    kept = sorted(p.read_bytes() for p in tmp_path.glob("j.bin.torn-*"))
    assert kept == [b"\x40\x00\x00\x00first", b"\x40\x00\x00\x00second"]


def test_journal_when_file_is_jsonl_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"k":"order"}\n', encoding="utf-8")
    assert not is_binary_journal(path)
    with pytest.raises(JournalFormatError):
        list(read_journal(path, SCHEMA))
    with pytest.raises(JournalFormatError):
        JournalWriter(path, SCHEMA)


def test_journal_when_schema_disagrees_with_file_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    write_some(path)
    with pytest.raises(JournalFormatError):
        JournalWriter(path, {1: engine_pb2.ExecutionReport})


def test_journal_when_writer_adds_a_type_then_header_extended(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    writer = JournalWriter(path, {2: engine_pb2.ExecutionReport}, fsync="never")
    writer.write([report(1)])
    writer.close()
    writer = JournalWriter(path, SCHEMA, fsync="never")
    writer.write([order("c9")])
    writer.close()
    reader = JournalReader(path)
    assert [r.message for r in reader.records()] == [report(1), order("c9")]
    assert set(reader.types) == {1, 2}


def test_journal_when_only_magic_is_torn_then_empty_and_writable(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    path.write_bytes(MAGIC[:3])
    assert list(read_journal(path, SCHEMA)) == []
    writer = JournalWriter(path, SCHEMA, fsync="never")
    writer.write([report(1)])
    writer.close()
    assert [r.message for r in read_journal(path, SCHEMA)] == [report(1)]


def test_journal_when_missing_then_reads_empty(tmp_path: Path) -> None:
    assert list(read_journal(tmp_path / "none.bin", SCHEMA)) == []
    assert not is_binary_journal(tmp_path / "none.bin")


def test_journal_when_read_from_an_appended_offset_then_starts_at_that_record(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    writer = JournalWriter(path, SCHEMA, fsync="never")
    offsets = [writer.append(report(i)) for i in range(1, 4)]
    writer.commit()
    offsets.append(writer.append(report(4)))
    writer.close()
    assert [r.offset for r in read_journal(path, SCHEMA)] == offsets
    assert [r.message for r in JournalReader(path, SCHEMA).records(start=offsets[2])] == [report(3), report(4)]
    with pytest.raises(ValueError):
        list(JournalReader(path).records(start=offsets[2]))
