"""Snapshot documents: lists of protobuf messages packed into a JSON document, written atomically.

A service that compacts its journal keeps a snapshot of what the journal rebuilds (ops in its state store, the
engine in a file beside its journal). Both pack their protobuf records the same way (:func:`pack`, :func:`unpack`);
the engine's file is replaced atomically (:func:`write_snapshot`): a reader sees the previous snapshot or the new
one, never a part, and with ``sync=True`` the rename is durable (folder fsynced) before the call returns, so the
journal segments it covers may be deleted after it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from nautilus_mesh.files import atomic_write_text

_LENGTH = struct.Struct("<I")
M = TypeVar("M", bound=Message)

__all__ = ["pack", "read_snapshot", "unpack", "write_snapshot"]


def pack(messages: Iterable[Message]) -> str:
    """Length-prefixed serialised messages, base64: a compact list of protobuf messages inside a JSON document."""
    parts = []
    for message in messages:
        payload = message.SerializeToString()
        parts.append(_LENGTH.pack(len(payload)))
        parts.append(payload)
    return base64.b64encode(b"".join(parts)).decode("ascii")


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


def write_snapshot(path: str | os.PathLike[str], document: dict[str, Any], *, sync: bool = True) -> int:
    """Replace the snapshot at ``path`` with ``document`` atomically; returns its size in bytes.

    ``sync`` also fsyncs the folder after the rename, so the new snapshot survives an OS crash before anything
    that relies on it (deleting the journal segments it covers) happens.
    """
    text = json.dumps(document, separators=(",", ":"))
    atomic_write_text(path, text, sync_dir=sync)
    return len(text)


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
