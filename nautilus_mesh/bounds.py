"""Bounded, printable text from untrusted input: for error messages, log lines and stored ids.

Whatever a peer sends, what the mesh echoes back (an error message, a trailer) or writes to its log
is short and holds no control characters: long text is cut with a marker that says how much was
cut, and control characters (newline, NUL, ESC, ...) are written as escapes, so a value cannot
forge a log line or a terminal sequence.
"""

from __future__ import annotations

from nautilus_mesh.errors import ValidationError

# What an error message quotes of a peer's value.
ECHO_CHARS = 64
# Ids, model and account names, instruments: the longest value the engine stores.
MAX_ID_CHARS = 128

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x00``, ``\\x1b``, ``\\u2028`` ...)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters plus a marker (``...[+N chars]``) when longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[+{len(text) - limit} chars]"


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A peer's value as an error message or log line may quote it: clipped, then escaped."""
    return escape_controls(clip(str(value), limit))


def require_bounded(value: str, field: str, *, limit: int = MAX_ID_CHARS, required: bool = False) -> str:
    """Check a string field from the wire: at most ``limit`` characters, printable, present when ``required``.

    Raises:
        ValidationError: ``MISSING_FIELD`` (empty but required), ``FIELD_TOO_LONG`` or ``INVALID_CHARACTERS``,
            naming the field.
    """
    if not value:
        if required:
            raise ValidationError("MISSING_FIELD", f"{field} is required", field=field)
        return value
    if len(value) > limit:
        raise ValidationError(
            "FIELD_TOO_LONG",
            f"{field} is {len(value)} characters, at most {limit} allowed",
            {"length": len(value), "limit": limit},
            field=field,
        )
    if not value.isprintable():
        raise ValidationError("INVALID_CHARACTERS", f"{field} holds control characters: {echo(value)}", field=field)
    return value
