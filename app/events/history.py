"""Reading the log: a token's history and a service's poll feed. Both are bounded to the
caller's service; the service owns no transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import InvalidValue, ResourceNotFound
from app.events import repository
from app.events.changes import TokenEvent
from app.kit.keys import KeyRing
from app.kit.paging import page_size
from app.tokens.service import find_by_identifier

MAX_FEED = 1000
# A position is a BIGINT: a larger cursor could not be compared with one (a 500 on SQLite,
# a database error on PostgreSQL), and no answer ever gives one.
MAX_CURSOR = 2**63 - 1


@dataclass(frozen=True, slots=True)
class History:
    events: list[TokenEvent]
    total: int


def history(
    session: Session,
    *,
    service_api_key: int,
    identifier: str,
    keys: KeyRing,
    start: int,
    end: int,
) -> History:
    """By the access token's value, its hash or the `tokenId`; a deleted token's history
    stays readable by its `tokenId` (until retention removes its events)."""
    limit = page_size(start, end)
    row = find_by_identifier(
        session, service_api_key=service_api_key, identifier=identifier, keys=keys
    )
    token_id = identifier if row is None else row.token_id
    total = repository.history_count(session, service_api_key, token_id)
    if row is None and total == 0:
        raise ResourceNotFound("This service has no such token, and no events of one.")
    events = []
    if limit:
        events = repository.history(session, service_api_key, token_id, offset=start, limit=limit)
    return History(events, total)


def parse_cursor(cursor: str | None) -> int:
    """A feed cursor is the decimal position of the last event seen ("0" or none: from
    the oldest event the log still keeps)."""
    if cursor is None or cursor == "":
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19) or (
        int(cursor) > MAX_CURSOR
    ):
        raise InvalidValue(
            f"after is a cursor from an earlier answer: up to 19 digits, at most {MAX_CURSOR}."
        )
    return int(cursor)


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[TokenEvent]
    cursor: int


def feed(session: Session, *, service_api_key: int, after: int, limit: int) -> FeedPage:
    if not 1 <= limit <= MAX_FEED:
        raise InvalidValue(f"Ask for 1 to {MAX_FEED} events at a time (limit).")
    entries = repository.feed(session, service_api_key, after=after, limit=limit)
    cursor = entries[-1].position if entries else after
    return FeedPage([entry.event for entry in entries], cursor)
