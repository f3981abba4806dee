"""All SQL about client applications. Every query is bounded to one service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.clients.models import ClientRow
from app.db import is_unique_violation


class AliasTaken(Exception):
    """The write was refused by the unique constraint on (service, alias): another client
    of the service took the alias, possibly at the same moment (client IDs are random
    15-digit numbers, so the alias is the unique value a write can collide on)."""


def get(session: Session, service_api_key: int, client_id: int) -> ClientRow | None:
    statement = select(ClientRow).where(
        ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id
    )
    return session.scalars(statement).one_or_none()


def get_for_update(session: Session, service_api_key: int, client_id: int) -> ClientRow | None:
    """The client, its row locked until the transaction ends, so that concurrent updates
    of one client do not lose each other's changes. FOR NO KEY UPDATE, as the UPDATE itself
    takes: token inserts (a key-share lock through their foreign key) are not held up."""
    statement = (
        select(ClientRow)
        .where(ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id)
        .with_for_update(key_share=True)
    )
    return session.scalars(statement).one_or_none()


def lock_for_delete(session: Session, service_api_key: int, client_id: int) -> bool:
    """Locks the client's row FOR UPDATE, which blocks token inserts for it (their foreign
    key's key-share lock) until the deletion commits: no token is created meanwhile that
    the cascade would then remove without its event. False when there is no such client."""
    statement = (
        select(ClientRow.client_id)
        .where(ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id)
        .with_for_update()
    )
    return session.scalar(statement) is not None


def get_by_identifier(session: Session, service_api_key: int, identifier: str) -> ClientRow | None:
    """By client ID (digits) or, failing that, by alias."""
    if identifier.isascii() and identifier.isdigit() and len(identifier) <= 18:
        row = get(session, service_api_key, int(identifier))
        if row is not None:
            return row
    statement = select(ClientRow).where(
        ClientRow.service_api_key == service_api_key, ClientRow.client_id_alias == identifier
    )
    return session.scalars(statement).one_or_none()


def alias_taken(
    session: Session, service_api_key: int, alias: str, *, other_than: int | None = None
) -> bool:
    statement = select(ClientRow.client_id).where(
        ClientRow.service_api_key == service_api_key, ClientRow.client_id_alias == alias
    )
    if other_than is not None:
        statement = statement.where(ClientRow.client_id != other_than)
    return session.scalar(statement) is not None


def page(session: Session, service_api_key: int, *, offset: int, limit: int) -> Sequence[ClientRow]:
    statement = (
        select(ClientRow)
        .where(ClientRow.service_api_key == service_api_key)
        .order_by(ClientRow.created_at, ClientRow.client_id)
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(statement).all()


def count(session: Session, service_api_key: int) -> int:
    statement = select(func.count()).where(ClientRow.service_api_key == service_api_key)
    return session.scalar(statement) or 0


def insert(session: Session, row: ClientRow) -> None:
    """Raises AliasTaken when another client holds the row's alias."""
    session.add(row)
    flush(session)


def flush(session: Session) -> None:
    """Writes the session's changes to clients; raises AliasTaken when another client
    holds an alias given. The check before a write (`alias_taken`) sees only committed
    clients: a concurrent request's alias shows up here, from the constraint, once that
    request commits (PostgreSQL makes the second insert of a unique value wait for the
    first transaction's end)."""
    try:
        session.flush()
    except IntegrityError as error:
        if is_unique_violation(error):
            raise AliasTaken from None
        raise


def rekey_secret(
    session: Session,
    service_api_key: int,
    client_id: int,
    *,
    old_digest: str,
    old_key_id: str,
    digest: str,
    key_id: str,
) -> bool:
    """Moves the client's secret digest to another key (its secret is known only while a
    request carries it), if the row still holds the one verified: a concurrent move or a
    new secret meanwhile wins. False: nothing moved."""
    result = session.execute(
        update(ClientRow)
        .where(
            ClientRow.service_api_key == service_api_key,
            ClientRow.client_id == client_id,
            ClientRow.client_secret_digest == old_digest,
            ClientRow.secret_key_id == old_key_id,
        )
        .values(client_secret_digest=digest, secret_key_id=key_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_client(session: Session, service_api_key: int, client_id: int) -> bool:
    """Deletes the client; its tokens go with it (ON DELETE CASCADE)."""
    result = session.execute(
        delete(ClientRow).where(
            ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def count_secrets_by_key(session: Session) -> list[tuple[str, int]]:
    """Clients that have a secret, per key id of its digest (`tokenstore keys`, the
    metric); across every service."""
    statement = (
        select(ClientRow.secret_key_id, func.count())
        .where(ClientRow.client_secret_digest.is_not(None))
        .group_by(ClientRow.secret_key_id)
    )
    return [(key_id, rows) for key_id, rows in session.execute(statement)]
