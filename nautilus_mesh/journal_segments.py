"""Segmented journals: a journal split into files of bounded size, whose oldest files can be deleted.

A journal configured at ``journal.bin`` is the sequence of segment files::

    journal.bin          segment 0 (the journal of a service that never rolled, or one written before segments)
    journal.000001.bin   segment 1
    journal.000002.bin   segment 2 ...

Each segment is a complete journal of :mod:`nautilus_mesh.journal` (magic, header, records), so every file is
self-describing on its own and ``nautilus-mesh journal dump journal.bin`` reads them all in order. Records never
span two segments: a writer moves to a new segment only between commits (:meth:`SegmentedJournalWriter.roll`, or
on its own at a commit that leaves the segment at ``segment_bytes`` or more).

**Offsets.** A record's offset is global: ``segment << 40 | offset in the segment`` (:data:`SEGMENT_SHIFT`), so an
offset a writer returned stays valid as a place to read from after later segments are added.

**Compaction.** :meth:`SegmentedJournalWriter.drop_through` deletes segments ``<= K`` once the service holds a
snapshot of everything they contain (ops keeps it in its state store). Deletion goes oldest first, so a crash
during it leaves a contiguous run of segments; a restart reads only the segments after the snapshot's ``K``
(``first_segment``) and deletes any left over.

**Crash safety.** A segment is created complete with its header (written and, unless the policy is ``never``,
fsynced together with the folder) before any record goes to it; a crash while rolling leaves an empty or torn
newest segment, which reads as empty and is rewritten on open. Only the newest segment is written to, so only it
can have a torn tail: damage in an older one, an empty older one or a missing segment is a disk fault, and the reader
refuses to replay around it (:class:`~nautilus_mesh.journal.JournalFormatError`): that would lose or repeat what it
held.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf.message import Message

from nautilus_mesh.journal import (
    FsyncPolicy,
    JournalFormatError,
    JournalReader,
    JournalRecord,
    JournalSchema,
    JournalWriter,
)

log = logging.getLogger(__name__)

SEGMENT_SHIFT = 40
"""A global offset is ``segment << SEGMENT_SHIFT | offset in the segment`` (segments below 1 TiB)."""
_LOCAL_MASK = (1 << SEGMENT_SHIFT) - 1


def segment_path(path: str | os.PathLike[str], index: int) -> Path:
    """The file of segment ``index`` of the journal configured at ``path`` (segment 0 is ``path`` itself)."""
    path = Path(path)
    return path if index == 0 else path.with_name(f"{path.stem}.{index:06d}{path.suffix}")


def list_segments(path: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The segment files that exist, as ``(index, file)`` in ascending order."""
    path = Path(path)
    pattern = re.compile(rf"{re.escape(path.stem)}\.(\d{{6}}){re.escape(path.suffix)}")
    found = [(0, path)] if path.is_file() else []
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and int(match.group(1)) > 0:
                found.append((int(match.group(1)), entry))
    return sorted(found)


def segments_bytes(path: str | os.PathLike[str], first: int = 0, below: int | None = None) -> int:
    """Bytes on disk of the segments ``first <= index < below`` (every segment from ``first`` when ``below`` is
    None)."""
    last = sys.maxsize if below is None else below
    return sum(file.stat().st_size for index, file in list_segments(path) if first <= index < last)


def split_offset(offset: int) -> tuple[int, int]:
    """``(segment, offset in the segment)`` of a global offset."""
    return offset >> SEGMENT_SHIFT, offset & _LOCAL_MASK


def _size(file: Path) -> int | None:
    """Bytes of a segment file; None when compaction deleted it meanwhile."""
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentedJournalReader:
    """Reads every segment of a journal in order, as one journal (see :class:`~nautilus_mesh.journal.JournalReader`).

    Args:
        path: The journal as configured (``journal.bin``); its segments are found beside it.
        schema: Message types by tag (needed to start from an offset).
        first_segment: A replay's first segment (the one after the snapshot's, 0 without a snapshot): segments before
            it are not read, and a whole read refuses a run that does not start there. None reads the segments that
            exist from the oldest (``nautilus-mesh journal dump``).

    After :meth:`records` is exhausted, :attr:`dropped_bytes` counts the bytes skipped in every segment, and
    :attr:`newest` is the reader of the newest segment (a writer opened after it needs no second scan).
    """

    def __init__(
        self, path: str | os.PathLike[str], schema: JournalSchema | None = None, *, first_segment: int | None = None
    ) -> None:
        self.path = Path(path)
        self._schema = schema
        self.first_segment = first_segment or 0
        self._replay = first_segment is not None  # a replay's run starts at first_segment; else at the oldest there
        self.types: dict[int, str] = {}
        self.dropped_bytes = 0
        self.newest: JournalReader | None = None
        self.newest_index = -1

    def records(self, start: int = 0) -> Iterator[JournalRecord]:
        """Every good record of the segments from ``start`` (a global offset; 0 reads them all), in order.

        Raises:
            JournalFormatError: a segment is missing (the run from the first one read has a gap, or starts after
                ``first_segment``), or one that is not the newest is empty or damaged: only the newest segment is
                ever written to, so only it can have a torn tail; reading around a hole would lose or repeat what
                it held.
        """
        first, local = split_offset(start)
        segments = [(i, f) for i, f in list_segments(self.path) if i >= max(first, self.first_segment)]
        # A whole replay starts at the snapshot's first segment, or at segment 0 without a snapshot (only a compaction
        # deletes segments, and it writes the snapshot first); any read goes on without a gap. The snapshot's first
        # segment exists once the snapshot does (a roll creates the new segment before the compaction starts).
        whole = start == 0 and self._replay
        expected = self.first_segment if whole else (segments[0][0] if segments else 0)
        if whole and self.first_segment and not segments:
            raise JournalFormatError(
                f"{segment_path(self.path, self.first_segment)}: segment {self.first_segment} of the journal, the "
                "first the snapshot does not cover, is missing; not replayed around"
            )
        for n, (index, file) in enumerate(segments):
            if index != expected:
                raise JournalFormatError(
                    f"{segment_path(self.path, expected)}: segment {expected} of the journal is missing "
                    f"(the next is {file.name}); not replayed around"
                )
            expected = index + 1
            newest = n == len(segments) - 1
            if not newest and _size(file) == 0:
                raise JournalFormatError(f"{file}: segment {index} is empty but later segments exist (a disk fault)")
            reader = JournalReader(file, self._schema)
            offset = local if index == first else 0
            base = index << SEGMENT_SHIFT
            for record in reader.records(offset):
                yield JournalRecord(record.tag, record.message, base | record.offset)
            if not newest and reader.dropped_bytes:
                raise JournalFormatError(
                    f"{file}: segment {index} is damaged at offset {reader.valid_end} ({reader.dropped_bytes} byte(s) "
                    "unread) but later segments exist: not a torn tail (only the newest segment is written to); "
                    "not replayed around"
                )
            self.types.update(reader.types)
            self.dropped_bytes += reader.dropped_bytes
            self.newest, self.newest_index = reader, index


class SegmentedJournalWriter:
    """Appends to the newest segment of a journal with group commit, and moves to a new segment between commits.

    Args:
        path: The journal as configured (``journal.bin``).
        schema: Message types by tag.
        fsync: ``never``, ``batch`` or ``always`` (:mod:`nautilus_mesh.journal`); also whether a new segment and a
            deletion are fsynced with their folder.
        replayed: A :class:`SegmentedJournalReader` that has just read the journal to its end (no second scan).
        first_segment: The lowest segment this writer may write to: a snapshot covers the ones before it, so
            writing there would hide records from the next replay.
        segment_bytes: Roll to a new segment at a commit that leaves the current one at this size or more; None
            rolls only on :meth:`roll` (a service that snapshots its state at each roll).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: JournalSchema,
        *,
        fsync: FsyncPolicy = "batch",
        replayed: SegmentedJournalReader | None = None,
        first_segment: int = 0,
        segment_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._schema = schema
        self.fsync: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes
        existing = list_segments(self.path)
        newest = existing[-1][0] if existing else 0
        self.segment = max(newest, first_segment)
        reused = replayed.newest if replayed is not None and replayed.newest_index == self.segment else None
        self._writer = self._open(self.segment, reused)

    def _open(self, index: int, replayed: JournalReader | None = None) -> JournalWriter:
        # A new segment gets its header (and, unless the policy is never, its fsync and the folder's) at once.
        return JournalWriter(segment_path(self.path, index), self._schema, fsync=self.fsync, replayed=replayed)

    @property
    def pending(self) -> int:
        """Records appended since the last commit."""
        return self._writer.pending

    @property
    def size(self) -> int:
        """Bytes in the current segment, pending records included."""
        return self._writer.end

    def append(self, message: Message) -> int:
        """Encode one record for the next commit; returns its global offset."""
        return self.segment << SEGMENT_SHIFT | self._writer.append(message)

    def append_serialized(self, kind: type[Message], payload: bytes) -> int:
        """:meth:`append` of a record already serialised (see :meth:`JournalWriter.append_serialized`)."""
        return self.segment << SEGMENT_SHIFT | self._writer.append_serialized(kind, payload)

    def commit(self, *, sync: bool = True) -> int:
        """Write the pending records with one write (see :meth:`JournalWriter.commit`); may then roll (a rolled
        segment is fsynced as it closes, whatever ``sync`` says)."""
        count = self._writer.commit(sync=sync)
        if self.segment_bytes is not None and self._writer.end >= self.segment_bytes:
            self.roll()
        return count

    def sync(self) -> None:
        """fsync the segment being written (see :meth:`JournalWriter.sync`; thread-safe)."""
        self._writer.sync()

    def write(self, messages: Iterable[Message]) -> int:
        """Append ``messages`` and commit them as one group."""
        for message in messages:
            self.append(message)
        return self.commit()

    def roll(self) -> int:
        """Commit, close the current segment and start the next one; returns the index of the closed segment."""
        closed = self.segment
        self._writer.close()
        self.segment += 1
        self._writer = self._open(self.segment)
        log.info("[JOURNAL] %s: segment %d closed, writing to %s", self.path, closed, self._writer.path.name)
        return closed

    def drop_through(self, last: int) -> int:
        """Delete the segments ``<= last`` (never the current one), oldest first; returns how many were deleted."""
        last = min(last, self.segment - 1)
        deleted = 0
        for index, file in list_segments(self.path):
            if index > last:
                break
            file.unlink(missing_ok=True)
            deleted += 1
        if deleted:
            if self.fsync != "never":
                _fsync_dir(self.path.parent)
            log.info("[JOURNAL] %s: %d segment(s) up to %d deleted (covered by a snapshot)", self.path, deleted, last)
        return deleted

    def close(self) -> None:
        """Commit what is pending and close the current segment."""
        self._writer.close()


def drop_segments_before(path: str | os.PathLike[str], first: int) -> int:
    """Delete the segments before ``first`` (left over by a crash between a snapshot and its compaction)."""
    deleted = 0
    for index, file in list_segments(path):
        if index >= first:
            break
        file.unlink()
        deleted += 1
    if deleted:
        log.warning("[JOURNAL] %s: %d segment(s) before %d deleted (a snapshot covers them)", path, deleted, first)
    return deleted
