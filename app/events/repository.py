"""All SQL about the event log. Every read a caller can reach is bounded to its service.

`append` writes events in the caller's transaction (the change and its events commit or
roll back together). The update's hot path on PostgreSQL sends its event insert in the same
pipeline as the token's write (`PG_APPEND`): no round trip of its own. The relay's
statements (`sequence`, `unpublished`, `mark_published`) and retention run in transactions
of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import ColumnElement, bindparam, case, delete, func, insert, null, select, update
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.orm import Session

from app.events.changes import EventType, TokenEvent
from app.events.models import TokenEventRow

# The session's mark that its transaction wrote events: the unit of work wakes the relay
# once it has committed (app.transactions).
EVENTS_WRITTEN = "tokenstore.events_written"

_EVENTS = TokenEventRow.metadata.tables["token_events"]
_COLUMNS = (
    "id", "service_api_key", "token_id", "client_id", "subject", "type", "actor",
    "request_id", "time", "changes",
)  # fmt: skip
_APPEND = insert(_EVENTS).values({name: bindparam(name) for name in _COLUMNS})
PG_APPEND = str(_APPEND.compile(dialect=PGDialect_psycopg()))  # type: ignore[no-untyped-call]


def values_of(event: TokenEvent) -> dict[str, Any]:
    """The one mapping from an event to its row's columns."""
    return {
        "id": event.id,
        "service_api_key": event.service_api_key,
        "token_id": event.token_id,
        "client_id": event.client_id,
        "subject": event.subject,
        "type": event.type.value,
        "actor": event.actor,
        "request_id": event.request_id,
        "time": event.time,
        "changes": {name: dict(change) for name, change in event.changes.items()},
    }


def pg_values_of(event: TokenEvent) -> dict[str, Any]:
    """As `values_of`, for psycopg itself: the changes travel as jsonb."""
    values = values_of(event)
    values["changes"] = Jsonb(values["changes"])
    return values


def event_of(row: Any) -> TokenEvent:
    """The one mapping back: a `TokenEventRow` or a Core row of `token_events`."""
    return TokenEvent(
        id=row.id,
        service_api_key=row.service_api_key,
        token_id=row.token_id,
        client_id=row.client_id,
        subject=row.subject,
        type=EventType(row.type),
        actor=row.actor,
        request_id=row.request_id,
        time=row.time,
        changes=row.changes,
    )


def append(session: Session, events: Sequence[TokenEvent]) -> None:
    """Writes the events in the session's transaction."""
    if not events:
        return
    session.execute(_APPEND, [values_of(event) for event in events])
    session.info[EVENTS_WRITTEN] = True


# --- Reads of a service's events -------------------------------------------------------------


def history(
    session: Session, service_api_key: int, token_id: str, *, offset: int, limit: int
) -> list[TokenEvent]:
    """A token's events, oldest first (ix_token_events_token)."""
    statement = (
        select(_EVENTS)
        .where(_EVENTS.c.service_api_key == service_api_key, _EVENTS.c.token_id == token_id)
        .order_by(_EVENTS.c.seq)
        .offset(offset)
        .limit(limit)
    )
    return [event_of(row) for row in session.execute(statement)]


def history_count(session: Session, service_api_key: int, token_id: str) -> int:
    statement = select(func.count()).where(
        _EVENTS.c.service_api_key == service_api_key, _EVENTS.c.token_id == token_id
    )
    return session.scalar(statement) or 0


@dataclass(frozen=True, slots=True)
class FeedEntry:
    position: int
    event: TokenEvent


def feed(session: Session, service_api_key: int, *, after: int, limit: int) -> list[FeedEntry]:
    """The service's events with a position after the cursor, in position order
    (ix_token_events_feed)."""
    statement = (
        select(_EVENTS)
        .where(
            _EVENTS.c.service_api_key == service_api_key,
            _EVENTS.c.position.is_not(None),
            _EVENTS.c.position > after,
        )
        .order_by(_EVENTS.c.position)
        .limit(limit)
    )
    return [FeedEntry(row.position, event_of(row)) for row in session.execute(statement)]


# --- The relay's queues ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    event: TokenEvent


def unsequenced(session: Session, *, limit: int) -> list[Pending]:
    """Committed events without a position yet, in `seq` order (ix_token_events_unsequenced)."""
    statement = (
        select(_EVENTS).where(_EVENTS.c.position.is_(None)).order_by(_EVENTS.c.seq).limit(limit)
    )
    return [Pending(row.seq, event_of(row)) for row in session.execute(statement)]


def assign_positions(session: Session, seqs: Sequence[int], *, published: int, now: int) -> None:
    """Gives the events (`seqs`, ascending) the next positions, in `seq` order; the first
    `published` of them are marked published too. One statement: the positions are the
    last one given plus each event's rank. Only the relay calls it, one process at a time
    (its lock); the unique index on `position` refuses a second relay's numbers should two
    ever overlap."""
    if not seqs:
        return
    last = session.scalar(select(func.max(_EVENTS.c.position))) or 0
    rank = func.row_number().over(order_by=_EVENTS.c.seq)
    ranked = select(_EVENTS.c.seq, rank.label("n")).where(_EVENTS.c.seq.in_(list(seqs))).subquery()
    session.execute(
        update(_EVENTS)
        .where(_EVENTS.c.seq == ranked.c.seq)
        .values(
            position=ranked.c.n + last,
            published_at=case((ranked.c.n <= published, now), else_=null()),
        )
    )


def unpublished(session: Session, *, limit: int) -> list[Pending]:
    """Events with a position and not yet published, in position order."""
    statement = (
        select(_EVENTS)
        .where(_EVENTS.c.position.is_not(None), _EVENTS.c.published_at.is_(None))
        .order_by(_EVENTS.c.position)
        .limit(limit)
    )
    return [Pending(row.seq, event_of(row)) for row in session.execute(statement)]


def mark_published(session: Session, seqs: Sequence[int], *, now: int) -> None:
    if seqs:
        session.execute(
            update(_EVENTS).where(_EVENTS.c.seq.in_(list(seqs))).values(published_at=now)
        )


def waiting(session: Session, *, publishing: bool) -> int:
    """Events not yet relayed: without a position, or (`publishing`) not yet published."""
    unsequenced = select(func.count()).where(_EVENTS.c.position.is_(None))
    count = session.scalar(unsequenced) or 0
    if publishing:
        unpublished_count = select(func.count()).where(
            _EVENTS.c.position.is_not(None), _EVENTS.c.published_at.is_(None)
        )
        count += session.scalar(unpublished_count) or 0
    return count


# --- Retention -------------------------------------------------------------------------------


def delete_old_batch(session: Session, *, before: int, limit: int, publishing: bool) -> int:
    """Deletes up to `limit` events older than `before`, never one the relay has still to
    handle: without a position, or (`publishing`) not yet published."""
    done: ColumnElement[bool] = _EVENTS.c.position.is_not(None)
    if publishing:
        done = done & _EVENTS.c.published_at.is_not(None)
    chosen = list(
        session.scalars(
            select(_EVENTS.c.seq)
            .where(_EVENTS.c.time < before, done)
            .order_by(_EVENTS.c.seq)
            .limit(limit)
        )
    )
    if not chosen:
        return 0
    result = session.execute(delete(_EVENTS).where(_EVENTS.c.seq.in_(chosen)))
    return int(result.rowcount)  # type: ignore[attr-defined]
