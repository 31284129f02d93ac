"""Binary write-ahead journals: length-delimited protobuf records with group commit.

A journal is an append-only file of protobuf messages. It is what a service replays after a
crash (the engine's orders and reports, ops' decisions and applied reports), so it is written on
the hot path and read on start. Layout::

    file    := MAGIC header-record record*
    record  := length:u32le crc32:u32le tag:u8 payload[length]
    header  := a record with tag 0 whose payload is JSON {"types": {"<tag>": "<proto full name>"}}

``crc32`` covers the tag and the payload, so a torn write (a crash mid-append) and a corrupt
record are both detected. A header record may appear again later in the file: it extends the
type table (a newer writer added a record type), so the file stays self-describing and
``nautilus-mesh journal dump`` prints any journal without knowing who wrote it.

**Group commit.** :meth:`JournalWriter.append` only encodes; :meth:`JournalWriter.commit` writes
every pending record with one ``write`` and, per the fsync policy, one ``fsync``. A service
appends the records of one frame and commits once before that frame's results leave the process
(the write-ahead rule, per frame).

**Fsync policy** (per journal, :data:`FsyncPolicy`), what survives what:

- ``never``: one ``write`` per commit, no ``fsync``. Committed records are in the OS page cache:
  they survive a crash or ``kill -9`` of the process, not an OS crash or power loss.
- ``batch`` (default): one ``write`` and one ``fsync`` per commit. Everything committed survives
  power loss too; a frame costs one fsync, not one per record.
- ``always``: every :meth:`~JournalWriter.append` is written and fsynced at once (no grouping).
  Only useful for a journal whose records are not produced in frames; it buys nothing over
  ``batch`` for records that are committed before anything leaves.

**Torn and corrupt tails.** The reader stops at the first record that is incomplete, fails its
CRC or is implausibly long, logs a warning and yields everything before it: the service starts.
Opening the journal for writing truncates the file to that point (so new records are not
appended after garbage) and keeps the dropped bytes beside it in ``<path>.torn-<offset>`` for
inspection. A corrupt record in the middle of a file therefore ends the journal there too: what
follows it is kept aside in that file, not replayed (a CRC cannot say where the next good record
starts).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from nautilus_mesh.errors import ConfigError

log = logging.getLogger(__name__)

FsyncPolicy = Literal["never", "batch", "always"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("never", "batch", "always")

MAGIC = b"NMJRNL\x00\x01"
"""The first bytes of every binary journal (format version 1)."""
HEADER_TAG = 0
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A length beyond this is treated as corruption, not as a record to read."""

_HEAD = struct.Struct("<IIB")
_HEAD_SIZE = _HEAD.size
_READ_CHUNK = 1 << 20

JournalSchema = Mapping[int, type[Message]]
"""Record tags (1..255) and the message type each tag carries."""


class JournalFormatError(ConfigError):
    """A file is not a journal of this format, or its type table contradicts the writer's schema."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One record read back: its tag, its message and where it starts in the file."""

    tag: int
    message: Message
    offset: int


def _frame(tag: int, payload: bytes) -> bytes:
    body = bytes((tag,)) + payload
    return _HEAD.pack(len(payload), zlib.crc32(body), tag) + payload


def _header_payload(schema: JournalSchema) -> bytes:
    types = {str(tag): cls.DESCRIPTOR.full_name for tag, cls in sorted(schema.items())}
    return json.dumps({"types": types}, separators=(",", ":")).encode()


def _validate_schema(schema: JournalSchema) -> None:
    for tag in schema:
        if not 1 <= tag <= 255:
            raise ValueError(f"journal record tags are 1..255, got {tag}")


def is_binary_journal(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` exists and starts with the journal magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return False


def _message_class(full_name: str) -> type[Message] | None:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


class JournalReader:
    """Reads a journal front to back, tolerating a torn or corrupt tail.

    Args:
        path: The journal file. A missing or empty file reads as an empty journal.
        schema: Message types by tag. Without one, types are resolved by the names in the file's
            header from the generated modules already imported (``journal dump`` imports them all).

    After :meth:`records` is exhausted, :attr:`valid_end` is the offset just past the last good
    record and :attr:`dropped_bytes` counts what followed it (0 for a clean journal).
    """

    def __init__(self, path: str | os.PathLike[str], schema: JournalSchema | None = None) -> None:
        self.path = Path(path)
        self._schema = dict(schema) if schema is not None else None
        self.types: dict[int, str] = {}
        """The file's type table: tag -> protobuf full name (from its header records)."""
        self.valid_end = 0
        self.dropped_bytes = 0

    def records(self, start: int = 0) -> Iterator[JournalRecord]:
        """Yield every good record in file order (header records excluded).

        Args:
            start: Offset of a record to start from (one a writer's ``append`` or an earlier read
                returned); needs a schema. 0 reads the whole file.
        """
        if start and self._schema is None:
            raise ValueError("reading from an offset needs the journal's schema")
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            return
        try:
            yield from self._read(fh, start)
        finally:
            fh.close()

    def _read(self, fh: BinaryIO, start: int) -> Iterator[JournalRecord]:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
                self._torn(0, size, "torn file header")
                return
            raise JournalFormatError(f"{self.path} is not a binary journal (no {MAGIC!r} header)")
        classes: dict[int, type[Message] | None] = dict(self._schema or {})
        buf = b""
        pos = 0
        base = len(MAGIC)  # file offset of buf[0]
        if start > base:
            fh.seek(start)
            base = start
        self.valid_end = base
        eof = False
        while True:
            if len(buf) - pos < _HEAD_SIZE and not eof:
                chunk = fh.read(_READ_CHUNK)
                buf, base, pos = buf[pos:] + chunk, base + pos, 0
                eof = not chunk
                continue
            if len(buf) - pos < _HEAD_SIZE:
                if len(buf) - pos:
                    self._torn(base + pos, size, "torn record header")
                return
            length, crc, tag = _HEAD.unpack_from(buf, pos)
            if length > MAX_RECORD_BYTES:
                self._torn(base + pos, size, f"implausible record length {length}")
                return
            end = pos + _HEAD_SIZE + length
            if end > len(buf):
                if eof:
                    self._torn(base + pos, size, "torn record")
                    return
                chunk = fh.read(max(_READ_CHUNK, end - len(buf)))
                buf, base, pos = buf[pos:] + chunk, base + pos, 0
                eof = not chunk
                continue
            payload = buf[pos + _HEAD_SIZE : end]
            if zlib.crc32(payload, zlib.crc32(bytes((tag,)))) != crc:
                if _good_record_at(fh, base + end, size):
                    raise JournalFormatError(
                        f"{self.path}: the record at offset {base + pos} fails its CRC and good records follow it: "
                        "damage in the middle (a disk fault; a crash only tears the end), not replayed around; "
                        "restore the file or move it aside (nautilus-mesh journal dump shows what it holds)"
                    )
                self._torn(base + pos, size, "record fails its CRC")
                return
            offset = base + pos
            pos = end
            self.valid_end = base + pos
            if tag == HEADER_TAG:
                self._read_header(payload, classes)
                continue
            cls = classes.get(tag)
            if cls is None:
                log.warning("[JOURNAL] %s: record of unknown tag %d at offset %d skipped", self.path, tag, offset)
                continue
            message = cls()
            try:
                message.ParseFromString(payload)
            except DecodeError:
                name = cls.DESCRIPTOR.full_name
                log.warning("[JOURNAL] %s: undecodable %s at offset %d skipped", self.path, name, offset)
                continue
            yield JournalRecord(tag, message, offset)

    def _read_header(self, payload: bytes, classes: dict[int, type[Message] | None]) -> None:
        try:
            types = {int(k): str(v) for k, v in json.loads(payload)["types"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise JournalFormatError(f"{self.path}: unreadable journal header: {exc}") from exc
        for tag, name in types.items():
            self.types[tag] = name
            given = self._schema.get(tag) if self._schema is not None else None
            if given is not None and given.DESCRIPTOR.full_name != name:
                raise JournalFormatError(
                    f"{self.path}: tag {tag} holds {name} in the file but {given.DESCRIPTOR.full_name} in the schema"
                )
            classes[tag] = given if given is not None else _message_class(name)

    def _torn(self, offset: int, size: int, why: str) -> None:
        self.valid_end = offset
        self.dropped_bytes = size - offset
        log.warning(
            "[JOURNAL] %s: %s at offset %d; the last %d byte(s) are skipped", self.path, why, offset, self.dropped_bytes
        )


def _good_record_at(fh: BinaryIO, offset: int, size: int) -> bool:
    """Whether a whole record with a good CRC starts at ``offset`` of the file (after a damaged one: the damage is then
    in the middle, not a torn tail). Moves the file position."""
    if offset + _HEAD_SIZE > size:
        return False
    fh.seek(offset)
    length, crc, tag = _HEAD.unpack(fh.read(_HEAD_SIZE))
    if length > MAX_RECORD_BYTES or offset + _HEAD_SIZE + length > size:
        return False
    return bool(zlib.crc32(fh.read(length), zlib.crc32(bytes((tag,)))) == crc)


def read_journal(path: str | os.PathLike[str], schema: JournalSchema | None = None) -> Iterator[JournalRecord]:
    """Yield the good records of a journal (see :class:`JournalReader`)."""
    return JournalReader(path, schema).records()


def _scan_end(path: Path, schema: JournalSchema) -> tuple[int, dict[int, str]]:
    reader = JournalReader(path, schema)
    for _ in reader.records():
        pass
    return reader.valid_end, reader.types


class JournalWriter:
    """Appends protobuf records to a journal with group commit.

    Args:
        path: The journal file (created with its header when missing).
        schema: Message types by tag; an existing file's type table must agree with it.
        fsync: ``never``, ``batch`` (default) or ``always``; see the module docstring.
        replayed: A :class:`JournalReader` that has just read this file to its end (the service's
            replay): its end of good records and type table spare a second scan. Without it the
            file is scanned on open.

    Raises:
        JournalFormatError: the file is not a binary journal, or a tag means another type in it.

    Use a writer from one thread (the service's event loop): record offsets returned by
    :meth:`append` assume appends and commits happen in that thread's order.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: JournalSchema,
        *,
        fsync: FsyncPolicy = "batch",
        replayed: JournalReader | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        _validate_schema(schema)
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        # Each type's tag and the CRC-32 of that tag byte, the checksum's start (the checksum covers tag + payload).
        self._tags = {cls: (tag, zlib.crc32(bytes((tag,)))) for tag, cls in schema.items()}
        self._pending: list[bytes] = []
        self._unsynced = False  # written by commit(sync=False), not yet fsynced
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        known: dict[int, str] = {}
        if not fresh:
            if replayed is None:
                end, known = _scan_end(self.path, schema)
            else:
                end, known = replayed.valid_end, replayed.types
            self._cut_tail(end)
            fresh = end == 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._end = os.fstat(self._fd).st_size
        self._pending_bytes = 0
        if fresh:
            self._write(MAGIC + _frame(HEADER_TAG, _header_payload(schema)), sync=fsync != "never")
            if fsync != "never":
                _fsync_dir(self.path.parent)
        else:
            missing = {tag: cls for tag, cls in schema.items() if tag not in known}
            if missing:  # a newer writer with more record types: extend the file's type table
                self._write(_frame(HEADER_TAG, _header_payload(missing)), sync=fsync != "never")

    @property
    def pending(self) -> int:
        """Records appended since the last commit."""
        return len(self._pending)

    @property
    def end(self) -> int:
        """The file's size once the pending records are committed, bytes."""
        return self._end + self._pending_bytes

    def append(self, message: Message) -> int:
        """Encode one record for the next commit (``always``: write and fsync it now); returns its offset."""
        return self.append_serialized(type(message), message.SerializeToString())

    def append_serialized(self, kind: type[Message], payload: bytes) -> int:
        """:meth:`append` of a record already serialised: ``payload`` is a ``kind`` message's bytes (a caller that
        builds them from parts it keeps encoded saves a parse and a serialisation)."""
        tag, tag_crc = self._tags[kind]
        record = _HEAD.pack(len(payload), zlib.crc32(payload, tag_crc), tag) + payload
        offset = self._end + self._pending_bytes
        if self.fsync == "always":
            with self._lock:
                self._write(record, sync=True)
            return offset
        self._pending.append(record)
        self._pending_bytes += len(record)
        return offset

    def commit(self, *, sync: bool = True) -> int:
        """Write every pending record with one write (and one fsync under ``batch``); returns how many.

        ``sync=False`` under ``batch`` writes now and leaves the fsync to :meth:`sync`, which another thread may call
        (group commit off the event loop: the caller must not act on the records before that fsync returned).
        """
        if not self._pending:
            return 0
        records, self._pending = self._pending, []
        self._pending_bytes = 0
        batch = self.fsync == "batch"
        with self._lock:
            self._write(b"".join(records), sync=batch and sync)
            self._unsynced = self._unsynced or (batch and not sync)
        return len(records)

    def sync(self) -> None:
        """fsync what :meth:`commit` wrote with ``sync=False`` (thread-safe; returns at once when nothing is owed).

        The fsync runs on a duplicate of the file descriptor outside the lock, so the writer keeps writing meanwhile;
        whatever was written before this call is durable when it returns.
        """
        with self._lock:
            if self._fd < 0 or not self._unsynced:
                return
            self._unsynced = False
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, messages: Iterable[Message]) -> int:
        """Append ``messages`` and commit them as one group."""
        for message in messages:
            self.append(message)
        return self.commit()

    def close(self) -> None:
        """Commit what is pending and close the file."""
        with self._lock:
            if self._fd < 0:
                return
        self.commit()
        with self._lock:
            if self._unsynced:
                os.fsync(self._fd)
                self._unsynced = False
            os.close(self._fd)
            self._fd = -1

    def _write(self, data: bytes, *, sync: bool) -> None:
        self._end += len(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if sync:
            os.fsync(self._fd)

    def _cut_tail(self, end: int) -> None:
        size = self.path.stat().st_size
        if end >= size:
            return
        keep = self.path.with_name(f"{self.path.name}.torn-{end}")
        n = 0
        while keep.exists():  # an earlier tear at this offset: its bytes are kept too
            n += 1
            keep = self.path.with_name(f"{self.path.name}.torn-{end}.{n}")
        with open(self.path, "rb") as src:
            src.seek(end)
            data = src.read()
        with open(keep, "xb") as out:
            out.write(data)
            os.fsync(out.fileno())
        _fsync_dir(keep.parent)  # the bytes are safe aside before the journal lets them go
        os.truncate(self.path, end)
        log.warning("[JOURNAL] %s: %d byte(s) after offset %d moved to %s", self.path, size - end, end, keep)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_policy(value: FsyncPolicy | bool) -> FsyncPolicy:
    """The fsync policy of a config value (``true``/``false`` of older configs mean ``batch``/``never``)."""
    if value is True:
        return "batch"
    if value is False:
        return "never"
    return value
