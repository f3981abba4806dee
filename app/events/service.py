"""Recording changes: the shell around `changes.record`, which draws the event id's random
part and appends the events in the caller's transaction (which it does not own)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy.orm import Session

from app.events import repository
from app.events.changes import ID_RANDOM_BYTES, EventType, Origin, TokenEvent, TokenFacts, record
from app.tokens.rules import TokenState


def new_event(
    kind: EventType,
    token: TokenFacts,
    origin: Origin,
    *,
    now: int,
    before: TokenState | None = None,
    after: TokenState | None = None,
) -> TokenEvent:
    return record(
        kind, token, origin, now=now, random_bytes=secrets.token_bytes(ID_RANDOM_BYTES),
        before=before, after=after,
    )  # fmt: skip


def record_all(
    session: Session,
    kind: EventType,
    tokens: Iterable[TokenFacts],
    origin: Origin,
    *,
    now: int,
) -> None:
    """One event of `kind` for each token (a deletion, a revocation, the purge)."""
    repository.append(session, [new_event(kind, token, origin, now=now) for token in tokens])


def record_changes(
    session: Session,
    kind: EventType,
    changed: Iterable[tuple[TokenFacts, TokenState | None, TokenState]],
    origin: Origin,
    *,
    now: int,
) -> None:
    """One event for each (token, state before, state after)."""
    repository.append(
        session,
        [
            new_event(kind, token, origin, now=now, before=before, after=after)
            for token, before, after in changed
        ],
    )
