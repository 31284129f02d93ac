"""Exact decimals on the wire: strict parsing and canonical formatting."""

from __future__ import annotations

import functools
import math
import re
from decimal import Context, Decimal, InvalidOperation
from fractions import Fraction

from nautilus_mesh.bounds import echo
from nautilus_mesh.errors import ValidationError

# Sizes are bounded so a malicious string cannot make Decimal arithmetic slow.
MAX_DECIMAL_CHARS = 40
# Plain ASCII only: optional sign, digits, optional point, optional exponent of at most 2 digits. No spaces,
# no underscores, no full-width or other Unicode digits, no NaN/Infinity (``Decimal()`` accepts all of these).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")
# |value| < 10**MAX_INTEGER_DIGITS
MAX_INTEGER_DIGITS = 18
# At most this many digits after the point (after trailing zeros are dropped).
MAX_FRACTION_DIGITS = 18
# Prices and quantities repeat from one order to the next: parsing and formatting are pure functions of their input,
# so the most recent results are kept (bounded) instead of being computed again on every order and report.
CACHE_ENTRIES = 2048

EXACT = Context(prec=200)
"""Arithmetic wide enough for wire decimals (each at most 36 significant digits): their sums, differences and products
are exact, quotients correct to 200 digits, and a ``quantize`` to 1e-8 never fails. The default context's 28 digits
round such a product (a notional of 1e22 with cents, its fee) and make ``quantize`` raise once a result needs more
than 28 digits. Rounding is half-even."""


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def parse_decimal(
    text: str, field: str, *, positive: bool = False, allow_empty: bool = False, code: str = "INVALID_DECIMAL"
) -> Decimal | None:
    """Parse a decimal string from the wire, strictly.

    Accepted: ASCII digits with an optional sign, point and exponent (``1``, ``-0.5``, ``2.5e-3``); at most
    ``MAX_DECIMAL_CHARS`` characters, ``MAX_INTEGER_DIGITS`` digits before the point and
    ``MAX_FRACTION_DIGITS`` after it. Refused: surrounding spaces, Unicode digits, NaN, Infinity, exponents
    beyond two digits.

    Args:
        code: the stable code of a refusal, e.g. ``INVALID_QUANTITY`` or ``INVALID_PRICE``.

    Raises:
        ValidationError: ``code`` and a message naming ``field`` (and quoting at most a clipped, escaped
            part of the text).
    """
    if text == "":
        if allow_empty:
            return None
        raise ValidationError(code, f"{field} is required", field=field)
    if len(text) > MAX_DECIMAL_CHARS:
        raise ValidationError(
            code, f"{field} is {len(text)} characters, at most {MAX_DECIMAL_CHARS} allowed", field=field
        )
    if _DECIMAL.fullmatch(text) is None:
        raise ValidationError(code, f"{field} is not a plain decimal: {echo(text)!r}", field=field)
    value = Decimal(text)  # the pattern admits only what Decimal parses
    if value != 0:
        if value.adjusted() >= MAX_INTEGER_DIGITS:
            raise ValidationError(code, f"{field} must be below 1e{MAX_INTEGER_DIGITS}", field=field)
        exponent = value.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > MAX_FRACTION_DIGITS:
            raise ValidationError(
                code, f"{field} has more than {MAX_FRACTION_DIGITS} digits after the point", field=field
            )
    if positive and value <= 0:
        raise ValidationError(code, f"{field} must be > 0", field=field)
    return value


def fmt(value: Decimal | None) -> str:
    """Canonical decimal string: no exponent, no trailing zeros ("" for None)."""
    if value is None:
        return ""
    try:
        return _fmt_cached(value)
    except TypeError:  # a signalling NaN cannot be hashed
        return _canonical(value)


def _canonical(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


# Equal decimals (1.0 and 1.00) share one entry: they have one canonical string.
_fmt_cached = functools.lru_cache(maxsize=CACHE_ENTRIES, typed=True)(_canonical)


def require_finite(value: float, field: str, low: float, high: float) -> float:
    """Check that a float is finite and within [low, high]."""
    if not math.isfinite(value):
        raise ValidationError("NOT_FINITE", f"{field} must be a finite number", field=field)
    if not low <= value <= high:
        raise ValidationError("OUT_OF_RANGE", f"{field} must be in [{low}, {high}], got {value}", field=field)
    return value


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """True when ``value`` is a whole multiple of ``step`` (exactly, at any magnitude: ``%`` in the default 28-digit
    context raises ``InvalidOperation`` once the quotient has more digits, e.g. 1e17 in lots of 1e-12)."""
    try:
        return value % step == 0
    except InvalidOperation:
        return Fraction(value) % Fraction(step) == 0  # exact at any magnitude
