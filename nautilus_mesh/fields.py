"""Copying fields between a record type and its protobuf message by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def values_of(source: object, names: Iterable[str], convert: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``source``'s attributes ``names``, by name and passed through ``convert``: keyword arguments of another type.

    >>> from decimal import Decimal
    >>> from types import SimpleNamespace
    >>> values_of(SimpleNamespace(qty="1.5", fee="0", venue="sim"), ("qty", "fee"), Decimal)
    {'qty': Decimal('1.5'), 'fee': Decimal('0')}
    """
    if convert is None:
        return {name: getattr(source, name) for name in names}
    return {name: convert(getattr(source, name)) for name in names}
