"""All SQL about tokens. Every query is bounded to the caller's service.

`get_for_update` takes the row lock for the read-modify-write of an update: `SELECT ...
FOR UPDATE` on PostgreSQL; on SQLite the clause is a no-op and the immediate write
transaction (see `app.db`) already serializes writers.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from app.tokens.models import TokenRow


def get_for_update(
    session: Session,
    service_api_key: int,
    *,
    access_key: str | None = None,
    token_id: str | None = None,
) -> TokenRow | None:
    if access_key is not None:
        match = TokenRow.access_key == access_key
    elif token_id is not None:
        match = TokenRow.token_id == token_id
    else:
        raise ValueError("name the token by access_key or token_id")
    statement = (
        select(TokenRow).where(TokenRow.service_api_key == service_api_key, match).with_for_update()
    )
    return session.scalars(statement).one_or_none()


def insert(session: Session, row: TokenRow) -> None:
    session.add(row)
    session.flush()


def alive(now: int) -> ColumnElement[bool]:
    """SQL twin of `rules.is_alive`, with the same `now` bound as a parameter: the access
    token is persistent or unexpired, or the refresh token is unexpired."""
    return or_(
        TokenRow.persistent.is_(True),
        TokenRow.access_expires_at > now,
        and_(TokenRow.refresh_key.is_not(None), TokenRow.refresh_expires_at > now),
    )


def _listing(
    service_api_key: int, client_id: int | None, subject: str | None, now: int
) -> list[ColumnElement[bool]]:
    conditions = [TokenRow.service_api_key == service_api_key, alive(now)]
    if client_id is not None:
        conditions.append(TokenRow.client_id == client_id)
    if subject is not None:
        conditions.append(TokenRow.subject == subject)
    return conditions


def page(
    session: Session,
    service_api_key: int,
    *,
    client_id: int | None,
    subject: str | None,
    now: int,
    offset: int,
    limit: int,
) -> Sequence[TokenRow]:
    statement = (
        select(TokenRow)
        .where(*_listing(service_api_key, client_id, subject, now))
        .order_by(TokenRow.created_at, TokenRow.id)
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(statement).all()


def count(
    session: Session,
    service_api_key: int,
    *,
    client_id: int | None,
    subject: str | None,
    now: int,
) -> int:
    statement = select(func.count()).where(*_listing(service_api_key, client_id, subject, now))
    return session.scalar(statement) or 0
