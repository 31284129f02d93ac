"""Snapshot documents: lists of protobuf messages packed into a JSON document.

A service that compacts its journal keeps a snapshot of what the journal rebuilds (ops in its state store, the
engine in a file beside its journal, replaced atomically by :mod:`engine_server.ledger_compaction`). Both pack their
protobuf records the same way (:func:`pack`, :func:`unpack`) and read them back with :func:`unpack`
(:func:`read_snapshot` reads the engine's file).

Both encode their snapshot on a worker thread while the event loop goes on, and a thread holds the GIL through any
single C call: a packed list is base64-encoded in chunks of :data:`B64_CHUNK_BYTES` and a document's text is put
together by :func:`json_text` (the packed lists copied as they are, not scanned by the JSON encoder), so no step of
the encoding holds the GIL for more than a few milliseconds.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

_LENGTH = struct.Struct("<I")
M = TypeVar("M", bound=Message)

B64_CHUNK_BYTES = 3 << 18
"""Bytes base64-encoded per call (786,432, a multiple of 3: the chunks' texts concatenate into the whole's)."""
__all__ = [
    "B64_CHUNK_BYTES",
    "Packed",
    "json_text",
    "pack",
    "pack_serialized",
    "read_snapshot",
    "unpack",
]


class Packed(str):
    """A packed list (:func:`pack`): base64 text, which a JSON string holds as it is (nothing to escape)."""

    __slots__ = ()


def pack(messages: Iterable[Message]) -> Packed:
    """Length-prefixed serialised messages, base64: a compact list of protobuf messages inside a JSON document."""
    return pack_serialized(message.SerializeToString() for message in messages)


def pack_serialized(payloads: Iterable[bytes]) -> Packed:
    """:func:`pack` of messages already serialised (the same text), base64-encoded chunk by chunk."""
    length = _LENGTH.pack
    data = memoryview(b"".join(part for payload in payloads for part in (length(len(payload)), payload)))
    chunks = [base64.b64encode(data[at : at + B64_CHUNK_BYTES]) for at in range(0, len(data), B64_CHUNK_BYTES)]
    return Packed(b"".join(chunks).decode("ascii"))


def json_text(document: Mapping[str, Any]) -> str:
    """``document`` as compact strict JSON text, the same value as ``json.dumps`` gives, with each :class:`Packed`
    value (at any depth of objects) copied between quotes instead of being scanned by the encoder."""
    parts: list[str] = []
    _put_json(document, parts)
    return "".join(parts)


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
