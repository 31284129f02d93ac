"""How a service writes its log: JSON lines for machines or text for people, both in UTC.

``--log-format json`` (or ``LOG_FORMAT=json``) writes one JSON object per record: ``ts`` (UTC ISO 8601 with
milliseconds and ``Z``), ``level``, ``logger``, ``message``, and ``trace_id``/``span_id`` when an OpenTelemetry
span is active (so a log line leads to its trace). ``text`` (the default) writes
``2026-01-01T12:00:00.000Z INFO logger message``. Both sit behind :class:`~nautilus_mesh.log_safety.SafeLogFilter`,
so a value from the wire is escaped and bounded whichever format is used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from opentelemetry import trace

from nautilus_mesh.log_safety import install_safe_logging

LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "LOG_FORMAT"


def _utc_iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class UtcTextFormatter(logging.Formatter):
    """``<UTC ISO time>Z LEVEL logger message``: the zone is in every line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the active span's ``trace_id`` and ``span_id``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = f"{context.trace_id:032x}"
            entry["span_id"] = f"{context.span_id:016x}"
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_format_from_env(default: str = "text") -> str:
    """``LOG_FORMAT`` when it names a known format, else ``default``."""
    value = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    return value if value in LOG_FORMATS else default


def configure_logging(level: str | int = "INFO", log_format: str = "text") -> None:
    """Send the root logger to stderr in ``log_format`` (``text`` or ``json``) with the safety filter installed."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else UtcTextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    install_safe_logging()  # peer-supplied values cannot forge log lines or make them unbounded
