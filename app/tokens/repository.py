"""All SQL about tokens. Every query is bounded to the caller's service.

`get_for_update` takes the row lock for the read-modify-write of an update: `SELECT ...
FOR UPDATE` on PostgreSQL; on SQLite the clause is a no-op and the immediate write
transaction (see `app.db`) already serializes writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.tokens.models import DpopProofRow, TokenRow, state_of, stored_columns
from app.tokens.rules import TokenState


@dataclass(frozen=True, slots=True)
class LockedToken:
    """A token read under its row lock for an update: where it is, and its state."""

    id: int
    token_id: str
    client_id: int
    access_key: str
    state: TokenState


# The update is the hot path: its statements are Core, built once (no ORM unit of work,
# no statement construction per call), and the lock comes with the read.
_TOKENS = TokenRow.metadata.tables["tokens"]
_LOCKED_BY_ACCESS_KEY = (
    select(_TOKENS)
    .where(_TOKENS.c.service_api_key == bindparam("service"))
    .where(_TOKENS.c.access_key == bindparam("name"))
    .with_for_update()
)
_LOCKED_BY_TOKEN_ID = (
    select(_TOKENS)
    .where(_TOKENS.c.service_api_key == bindparam("service"))
    .where(_TOKENS.c.token_id == bindparam("name"))
    .with_for_update()
)
_SAVE = update(_TOKENS).where(_TOKENS.c.id == bindparam("row_id"))


def get_for_update(
    session: Session,
    service_api_key: int,
    *,
    access_key: str | None = None,
    token_id: str | None = None,
) -> LockedToken | None:
    if access_key is not None:
        statement, name = _LOCKED_BY_ACCESS_KEY, access_key
    elif token_id is not None:
        statement, name = _LOCKED_BY_TOKEN_ID, token_id
    else:
        raise ValueError("name the token by access_key or token_id")
    row = session.execute(statement, {"service": service_api_key, "name": name}).first()
    if row is None:
        return None
    return LockedToken(row.id, row.token_id, row.client_id, row.access_key, state_of(row))


def save(
    session: Session, token: LockedToken, state: TokenState, *, access_key: str, now: int
) -> None:
    """Writes the state the rules decided for a token read by `get_for_update`."""
    columns = stored_columns(state) | {"access_key": access_key, "updated_at": now}
    session.execute(_SAVE, {"row_id": token.id, **columns})


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


def find(
    session: Session,
    service_api_key: int,
    *,
    access_keys: Sequence[str] = (),
    token_id: str | None = None,
    refresh_keys: Sequence[str] = (),
) -> TokenRow | None:
    """A token of the service by any of its names, without a lock (for reads)."""
    names: list[ColumnElement[bool]] = []
    if access_keys:
        names.append(TokenRow.access_key.in_(access_keys))
    if refresh_keys:
        names.append(TokenRow.refresh_key.in_(refresh_keys))
    if token_id is not None:
        names.append(TokenRow.token_id == token_id)
    if not names:
        return None
    statement = select(TokenRow).where(TokenRow.service_api_key == service_api_key, or_(*names))
    return session.scalars(statement.limit(1)).first()


def delete_row(session: Session, row: TokenRow) -> None:
    session.delete(row)
    session.flush()


def delete_matching(
    session: Session, service_api_key: int, *, client_id: int | None, subject: str | None
) -> int:
    """Deletes every token of the service for the client and/or the subject."""
    statement = delete(TokenRow).where(TokenRow.service_api_key == service_api_key)
    if client_id is not None:
        statement = statement.where(TokenRow.client_id == client_id)
    if subject is not None:
        statement = statement.where(TokenRow.subject == subject)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def delete_dead_batch(session: Session, *, now: int, limit: int) -> int:
    """Deletes up to `limit` tokens whose access and refresh tokens have both expired.

    Only ids are selected, `limit` at a time; on PostgreSQL rows locked by a live update
    are skipped (SKIP LOCKED), and the delete checks the condition again, so a token an
    update revived in between stays."""
    dead = not_(alive(now))
    ids = (
        select(TokenRow.id)
        .where(dead)
        .order_by(TokenRow.access_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    chosen = list(session.scalars(ids))
    if not chosen:
        return 0
    result = session.execute(delete(TokenRow).where(TokenRow.id.in_(chosen), dead))
    return int(result.rowcount)  # type: ignore[attr-defined]


def remember_proof(session: Session, *, key: str, expires_at: int) -> bool:
    """Records a DPoP proof; False when it was recorded before (a replay). One statement
    (INSERT ... ON CONFLICT DO NOTHING), so concurrent processes cannot both succeed."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(DpopProofRow)
        .values(key=key, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(DpopProofRow.key)
    )
    # RETURNING yields the row only when it was inserted (rowcount is not reliable here).
    return session.execute(statement).first() is not None


def forget_proofs_batch(session: Session, *, now: int, limit: int) -> int:
    keys = list(
        session.scalars(select(DpopProofRow.key).where(DpopProofRow.expires_at <= now).limit(limit))
    )
    if not keys:
        return 0
    result = session.execute(delete(DpopProofRow).where(DpopProofRow.key.in_(keys)))
    return int(result.rowcount)  # type: ignore[attr-defined]
