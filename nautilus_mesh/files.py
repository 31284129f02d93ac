"""Append-only JSONL logs and atomic file replacement.

Audit logs are never rewritten: records are appended one JSON object per line and
flushed; a torn last line (a crash mid-write) is skipped on read, with a warning.
Config files are replaced atomically (write a sibling temp file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def json_default(value: object) -> object:
    """What a JSON record holds for a value the encoder does not know: a Decimal as its string, a set as a sorted
    list; anything else raises TypeError."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))
"""One encoder for every record (``json.dumps`` with options builds a new one per call)."""


def dumps(value: object) -> str:
    """Serialise one record (or any JSON value) as compact JSON on one line (Decimals as strings)."""
    return _ENCODER.encode(value)


class JsonlWriter:
    """Appends JSON records to a file, one per line.

    Thread-safe. ``fsync=True`` makes every ``append`` durable before it returns
    (use for ledgers that must survive ``kill -9``); otherwise lines are flushed to
    the OS, which survives a process crash but not a power loss.

    ``max_bytes`` rotates the file (for spans, never for audit logs): once it grows past that many bytes it becomes
    ``<name>.1`` (replacing the previous one) and writing starts a fresh file, so the pair never holds much more
    than twice ``max_bytes``.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        # A torn last line from a crash would glue onto our first record: start on a fresh line.
        if self._file.tell() > 0:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    self._file.write("\n")

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record."""
        self.append_many((record,))

    def append_many(self, records: Iterator[Mapping[str, Any]] | tuple[Mapping[str, Any], ...] | list[Any]) -> None:
        """Append several records with one flush."""
        self.append_lines(dumps(r) for r in records)

    def append_lines(self, lines: Iterable[str]) -> None:
        """Append records already encoded as JSON, one per string (no newline inside), with one flush."""
        text = "".join(line + "\n" for line in lines)
        if not text:
            return
        with self._lock:
            self._file.write(text)
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            if self._max_bytes is not None and self._file.tell() > self._max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        log.info(
            "[FILES] %s rotated (past %d bytes); the previous part is %s.1", self.path, self._max_bytes, self.path.name
        )

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file, skipping a torn or corrupt line with a warning."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("[FILES] skipping torn line %d of %s", lineno, p)
                continue
            if isinstance(record, dict):
                yield record


def atomic_write_text(path: str | os.PathLike[str], text: str, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically: readers see the old or the new file, never half.

    ``sync_dir`` also fsyncs the folder after the rename, so the replacement itself survives an OS crash.
    """
    install_staged(stage_text(path, text), path, sync_dir=sync_dir)


def stage_text(path: str | os.PathLike[str], text: str | Iterable[str]) -> Path:
    """Write ``text`` (or its pieces one after the other) to a new temporary file beside ``path`` and fsync it;
    returns it (for :func:`install_staged`: the slow half of :func:`atomic_write_text`, fit for a worker thread)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines([text] if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def install_staged(staged: Path, path: str | os.PathLike[str], *, sync_dir: bool = False) -> None:
    """Rename a file :func:`stage_text` wrote over ``path`` (``sync_dir``: then fsync the folder)."""
    p = Path(path)
    try:
        os.replace(staged, p)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if sync_dir:
        fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_json_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object from a file; raises ConfigError on a missing, unreadable or non-object file."""
    from nautilus_mesh.errors import ConfigError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{p}: cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except RecursionError:  # arrays or objects nested thousands deep: no config file is
        raise ConfigError(f"{p}: invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object at the top level")
    return data
