"""Paging of lists, Authlete style: `start` (inclusive) and `end` (exclusive)."""

from __future__ import annotations

from app.errors import InvalidValue

MAX_PAGE = 1000


def check_range(start: int, end: int) -> None:
    """Services and clients: `end < start` is refused (docs/decisions.md)."""
    if start < 0 or end < start:
        raise InvalidValue("Ask for 0 <= start <= end.")
    if end - start > MAX_PAGE:
        raise InvalidValue(f"Ask for at most {MAX_PAGE} entries at a time (end - start).")


def page_size(start: int, end: int) -> int:
    """Token lists, as Authlete: `end - start <= 0` asks for the total count only, and the
    answer is 0 entries; more than `MAX_PAGE` entries at once is refused."""
    if start < 0:
        raise InvalidValue("Ask for 0 <= start.")
    if end - start > MAX_PAGE:
        raise InvalidValue(f"Ask for at most {MAX_PAGE} entries at a time (end - start).")
    return max(end - start, 0)
