"""Paging of lists, Authlete style: `start` (inclusive) and `end` (exclusive)."""

from __future__ import annotations

from app.errors import InvalidValue

MAX_PAGE = 1000


def check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise InvalidValue("Ask for 0 <= start <= end.")
    if end - start > MAX_PAGE:
        raise InvalidValue(f"Ask for at most {MAX_PAGE} entries at a time (end - start).")
