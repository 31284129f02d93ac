"""Log lines a peer cannot forge or multiply: control characters escaped, every logged value bounded, and lines a
peer can trigger at will throttled.

Values in log records often come from the wire (signal ids, instruments, client order ids). A filter on
every handler of a service rewrites each record before it is formatted: string arguments are cut to
``MAX_FIELD_CHARS`` (with a ``...[+N chars]`` marker), the formatted message is cut to
``MAX_MESSAGE_CHARS``, and newlines, NUL, ESC and every other control character become escapes, so one
record is always one line. Tracebacks (``exc_info``) are ours and stay as they are. A line a peer can cause on
every message (a flood refused at intake, a stream paused) goes through a :class:`LogThrottle`: one line per key
and interval, carrying the count of what it stands for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nautilus_mesh.bounds import clip, escape_controls
from nautilus_mesh.clock import REAL_CLOCK

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


class LogThrottle:
    """At most one log line per key every ``interval`` seconds; what the held-back lines stood for is counted into
    the next one, so a flood of events makes one line per interval, not one per event.

    Args:
        interval: seconds between two lines of one key.
        clock: monotonic seconds.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = REAL_CLOCK.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._keys: dict[str, tuple[float, int]] = {}  # key -> (when its last line was logged, count since then)

    def note(self, key: str, count: int = 1) -> int | None:
        """Count ``count`` events of ``key``; returns the events counted since its last line when a line is due now
        (the first event of a key is always due), else None."""
        now = self._clock()
        last, counted = self._keys.get(key, (now - self.interval, 0))
        counted += count
        if now - last < self.interval:
            self._keys[key] = (last, counted)
            return None
        self._keys[key] = (now, 0)
        return counted
