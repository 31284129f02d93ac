"""Snapshot documents: lists of protobuf messages packed into a JSON document.

A service that compacts its journal keeps a snapshot of what the journal rebuilds (ops in its state store, the
engine in a file beside its journal, replaced atomically by :mod:`engine_server.ledger_compaction`). Both pack their
protobuf records the same way (:func:`pack`, :func:`unpack`) and read them back with :func:`unpack`
(:func:`read_snapshot` reads the engine's file).

Both encode their snapshot on a worker thread while the event loop goes on, and a thread holds the GIL through any
single C call: a packed list is base64-encoded in chunks of :data:`B64_CHUNK_BYTES` and a document's text is put
together by :func:`json_text` (the packed lists copied as they are, not scanned by the JSON encoder), so no step of
the encoding holds the GIL for more than a few milliseconds.

Short holds are not enough on their own: a thread that takes the GIL back after every step still takes about half of
it from the event loop, which then decides signals at half its speed for the whole encoding (seconds, for a snapshot
of a full retention window) and falls behind a steady signal rate. So the encodings take a :class:`Pacer`, which
sleeps after each step (:data:`PACE_RECORDS` records, or one base64 chunk) for as long as the step ran, scaled so
the encoding thread holds the GIL for at most :data:`SNAPSHOT_GIL_SHARE` of the time while it works.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

_LENGTH = struct.Struct("<I")
M = TypeVar("M", bound=Message)

B64_CHUNK_BYTES = 3 << 18
"""Bytes base64-encoded per call (786,432, a multiple of 3: the chunks' texts concatenate into the whole's)."""
PACE_RECORDS = 2048
"""Records serialised or packed between two :class:`Pacer` pauses (count; about a millisecond of work)."""
SNAPSHOT_GIL_SHARE = 0.25
"""The share of the time a snapshot's encoding thread holds the GIL while it works (fraction): the event loop keeps
the rest, so a service decides at about 3/4 of its speed during a snapshot, and the snapshot takes about 4x its
CPU time from start to end."""
__all__ = [
    "B64_CHUNK_BYTES",
    "PACE_RECORDS",
    "SNAPSHOT_GIL_SHARE",
    "Pacer",
    "Packed",
    "json_parts",
    "json_text",
    "paced",
    "pack",
    "pack_serialized",
    "read_snapshot",
    "snapshot_path",
    "unpack",
]


class Packed(str):
    """A packed list (:func:`pack`): base64 text, which a JSON string holds as it is (nothing to escape)."""

    __slots__ = ()


class Pacer:
    """Paces a worker thread's encoding: each call sleeps ``(1 - share) / share`` times the CPU time this thread used
    since the previous call (``time.thread_time``: its own work, not its waits for the GIL), so the thread holds the
    GIL for at most about ``share`` of the time it takes. Make one in the thread that calls it, and call it between
    steps of a millisecond or so.

    Args:
        share: The fraction of the time the thread may hold the GIL, in (0, 1]; 1 never sleeps.

    Raises:
        ValueError: ``share`` outside (0, 1].
    """

    def __init__(self, share: float = SNAPSHOT_GIL_SHARE) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a pacer's share must be in (0, 1], got {share!r}")
        self._ratio = (1 - share) / share
        self._mark = time.thread_time()
        self.slept_seconds = 0.0
        """Time spent in the pauses so far, seconds."""

    def __call__(self) -> None:
        used = time.thread_time() - self._mark
        if self._ratio and used > 0:
            pause = used * self._ratio
            time.sleep(pause)
            self.slept_seconds += pause
        self._mark = time.thread_time()


def _no_pause() -> None:
    return None


def paced(items: Iterable[Any], pace: Callable[[], None] | None) -> Iterator[list[Any]]:
    """``items`` in lists of :data:`PACE_RECORDS`, ``pace`` called after each list is used (when given)."""
    after = pace or _no_pause
    it = iter(items)
    while batch := list(islice(it, PACE_RECORDS)):
        yield batch
        after()


def pack(messages: Iterable[Message], pace: Callable[[], None] | None = None) -> Packed:
    """Length-prefixed serialised messages, base64: a compact list of protobuf messages inside a JSON document.
    ``pace`` (a :class:`Pacer`) is called between steps of the work."""
    serialised = [m.SerializeToString() for batch in paced(messages, pace) for m in batch]
    return pack_serialized(serialised, pace)


def pack_serialized(payloads: Iterable[bytes], pace: Callable[[], None] | None = None) -> Packed:
    """:func:`pack` of messages already serialised (the same text), base64-encoded chunk by chunk; ``pace`` as in
    :func:`pack`."""
    length = _LENGTH.pack
    after = pace or _no_pause
    parts = [
        b"".join([part for payload in batch for part in (length(len(payload)), payload)])
        for batch in paced(payloads, pace)
    ]
    data = memoryview(b"".join(parts))
    del parts
    chunks = []
    for at in range(0, len(data), B64_CHUNK_BYTES):
        chunks.append(base64.b64encode(data[at : at + B64_CHUNK_BYTES]))
        after()
    return Packed(b"".join(chunks).decode("ascii"))


def json_text(document: Mapping[str, Any]) -> str:
    """``document`` as compact strict JSON text, the same value as ``json.dumps`` gives, with each :class:`Packed`
    value (at any depth of objects) copied between quotes instead of being scanned by the encoder."""
    return "".join(json_parts(document))


def json_parts(document: Mapping[str, Any]) -> list[str]:
    """:func:`json_text` in pieces, each :class:`Packed` value one of them: what a writer writes one after the other
    (a file), without joining tens of MB into one string while it holds the GIL."""
    parts: list[str] = []
    _put_json(document, parts)
    return parts


def snapshot_path(journal_path: str | os.PathLike[str]) -> Path:
    """The snapshot file of the journal configured at ``journal_path`` (``journal.snapshot.json`` beside
    ``journal.bin``)."""
    path = Path(journal_path)
    return path.with_name(f"{path.stem}.snapshot.json")


def _put_json(value: object, parts: list[str]) -> None:
    """Append ``value``'s JSON text to ``parts``.

    A plain function, not a closure over ``parts`` calling itself: such a closure is a reference cycle, which would
    keep every part (a snapshot's packed lists, tens of MB) alive until the next full collection of the cyclic GC,
    rare in the services (:data:`nautilus_mesh.serving.GC_THRESHOLDS`)."""
    if isinstance(value, Packed):
        parts.extend(('"', value, '"'))
    elif isinstance(value, Mapping):
        parts.append("{")
        for n, (key, item) in enumerate(value.items()):
            parts.append(("," if n else "") + json.dumps(str(key)) + ":")
            _put_json(item, parts)
        parts.append("}")
    else:
        parts.append(json.dumps(value, allow_nan=False, separators=(",", ":")))


def unpack(blob: str, cls: type[M]) -> Iterator[M]:
    """The messages :func:`pack` wrote."""
    data = base64.b64decode(blob)
    pos = 0
    while pos < len(data):
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        message = cls()
        message.ParseFromString(data[pos : pos + length])
        pos += length
        yield message


def read_snapshot(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The snapshot document at ``path``, or None when there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a snapshot must be a JSON object")
    return document
