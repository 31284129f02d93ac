"""Exact decimals on the wire: strict parsing and canonical formatting."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from nautilus_mesh.errors import ValidationError

# Sizes are bounded so a malicious string cannot make Decimal arithmetic slow.
MAX_DECIMAL_CHARS = 40


def parse_decimal(text: str, field: str, *, positive: bool = False, allow_empty: bool = False) -> Decimal | None:
    """Parse a decimal string from the wire.

    Raises:
        ValidationError: code ``INVALID_DECIMAL`` for anything that is not a finite decimal
            (or not > 0 when ``positive``).
    """
    if text == "":
        if allow_empty:
            return None
        raise ValidationError("INVALID_DECIMAL", f"{field} is required", field=field)
    if len(text) > MAX_DECIMAL_CHARS:
        raise ValidationError("INVALID_DECIMAL", f"{field} is too long", field=field)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValidationError("INVALID_DECIMAL", f"{field} is not a decimal: {text!r}", field=field) from None
    if not value.is_finite():
        raise ValidationError("INVALID_DECIMAL", f"{field} must be finite", field=field)
    if positive and value <= 0:
        raise ValidationError("INVALID_DECIMAL", f"{field} must be > 0", field=field)
    return value


def fmt(value: Decimal | None) -> str:
    """Canonical decimal string: no exponent, no trailing zeros ("" for None)."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def require_finite(value: float, field: str, low: float, high: float) -> float:
    """Check that a float is finite and within [low, high]."""
    if not math.isfinite(value):
        raise ValidationError("NOT_FINITE", f"{field} must be a finite number", field=field)
    if not low <= value <= high:
        raise ValidationError("OUT_OF_RANGE", f"{field} must be in [{low}, {high}], got {value}", field=field)
    return value
