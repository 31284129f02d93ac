"""Log lines a peer cannot forge: control characters escaped, every logged value bounded.

Values in log records often come from the wire (signal ids, instruments, client order ids). A filter on
every handler of a service rewrites each record before it is formatted: string arguments are cut to
``MAX_FIELD_CHARS`` (with a ``...[+N chars]`` marker), the formatted message is cut to
``MAX_MESSAGE_CHARS``, and newlines, NUL, ESC and every other control character become escapes, so one
record is always one line. Tracebacks (``exc_info``) are ours and stay as they are.
"""

from __future__ import annotations

import logging

from nautilus_mesh.bounds import clip, escape_controls

MAX_FIELD_CHARS = 256
MAX_MESSAGE_CHARS = 4096


def _bounded(arg: object) -> object:
    if isinstance(arg, str):
        return clip(arg, MAX_FIELD_CHARS)
    if isinstance(arg, (bytes, bytearray)):
        return clip(repr(bytes(arg[: MAX_FIELD_CHARS + 1])), MAX_FIELD_CHARS)
    return arg


class SafeLogFilter(logging.Filter):
    """Escapes control characters and bounds the fields of every record it sees (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_nautilus_safe", False):
            return True
        if record.args:
            if isinstance(record.args, dict):
                record.args = {k: _bounded(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_bounded(a) for a in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what we have rather than lose the record
            message = f"{record.msg!s} {record.args!r}"
        record.msg = escape_controls(clip(message, MAX_MESSAGE_CHARS))
        record.args = None
        setattr(record, "_nautilus_safe", True)  # noqa: B010  (LogRecord has no declared slot for it)
        return True


def install_safe_logging(logger: logging.Logger | None = None) -> SafeLogFilter:
    """Add one ``SafeLogFilter`` to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    safe = SafeLogFilter()
    for handler in target.handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(safe)
    return safe
