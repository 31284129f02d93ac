"""``nautilus-mesh journal dump PATH``: a journal (binary or JSONL, the engine's or ops') as JSON lines."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import TextIO

from google.protobuf import json_format

import nautilus_mesh.api
from clients.commands import CliError
from nautilus_mesh.files import read_jsonl
from nautilus_mesh.journal import JournalFormatError, is_binary_journal
from nautilus_mesh.journal_segments import SegmentedJournalReader, list_segments


def cmd_journal_dump(args: argparse.Namespace, out: TextIO) -> int:
    """One JSON object per record: ``{"offset", "type", "record"}`` (protobuf JSON, original field names).

    A segmented journal (``journal.bin``, ``journal.000001.bin``, ...) is read segment by segment in order from the
    configured path, whichever segments compaction has left; ``offset`` is global (``segment << 40 | offset``).

    A binary journal is self-describing (its header names each record's message type); a JSONL
    journal (ops today, the engine before the binary format) is printed record by record as it is.
    """
    path = Path(args.path)
    segments = list_segments(path)
    if not segments:
        raise CliError(f"no journal at {path}", 2)
    if len(segments) == 1 and not is_binary_journal(segments[0][1]):  # one file that is not binary: JSONL
        try:
            for line in read_jsonl(segments[0][1]):
                out.write(json.dumps({"type": "jsonl", "record": line}, separators=(",", ":")) + "\n")
        except UnicodeDecodeError:
            raise CliError(f"{path} is neither a binary nor a JSONL journal", 2) from None
        return 0
    import_generated_messages()
    reader = SegmentedJournalReader(path)  # every segment in order: journal.bin, journal.000001.bin, ...
    try:
        for record in reader.records():
            body = json_format.MessageToDict(record.message, preserving_proto_field_name=True)
            name = record.message.DESCRIPTOR.full_name
            out.write(json.dumps({"offset": record.offset, "type": name, "record": body}, separators=(",", ":")) + "\n")
    except JournalFormatError as exc:
        raise CliError(str(exc), 2) from None
    if reader.dropped_bytes:
        print(f"warning: {reader.dropped_bytes} byte(s) of a torn or corrupt tail skipped", file=sys.stderr)
    return 0


def import_generated_messages() -> None:
    """Import every generated ``*_pb2`` module, so a journal's header names resolve to message types."""
    for module in pkgutil.walk_packages(nautilus_mesh.api.__path__, "nautilus_mesh.api."):
        if module.name.endswith("_pb2"):
            importlib.import_module(module.name)


# --- canary --------------------------------------------------------------------------------------
