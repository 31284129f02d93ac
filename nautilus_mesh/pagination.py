"""Paginated list RPCs, written once: one page-size bound and opaque page tokens.

``page_size`` 0 asks for the default page; anything above ``MAX_PAGE_SIZE`` is served as ``MAX_PAGE_SIZE``; a
negative size or a token this server did not issue is ``INVALID_ARGUMENT`` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from nautilus_mesh.errors import ValidationError

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
"""Items in a page when the request asks for 0."""
MAX_PAGE_SIZE = 1000
"""The most items one page carries, whatever the request asks for."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of items and the token of the next page ("" after the last)."""

    items: list[T]
    next_page_token: str


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The number of items to serve for a requested page size (0: ``default``; at most ``maximum``)."""
    if requested < 0:
        raise ValidationError("INVALID_PAGE_SIZE", "page_size must be >= 0", field="page_size")
    return min(requested or default, maximum)


def token_number(page_token: str) -> int:
    """The non-negative integer inside a page token (0 for the first page)."""
    if not page_token:
        return 0
    if not (page_token.isascii() and page_token.isdigit()) or len(page_token) > 20:
        raise ValidationError("INVALID_PAGE_TOKEN", "page_token is not one this server issued", field="page_token")
    return int(page_token)


def paginate(items: Sequence[T], requested_size: int, page_token: str) -> Page[T]:
    """A page of ``items`` by offset: the token is the offset of the next page."""
    size = page_size(requested_size)
    start = token_number(page_token)
    end = start + size
    return Page(list(items[start:end]), str(end) if end < len(items) else "")
