"""All SQL about client applications. Every query is bounded to one service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.clients.models import ClientRow


def get(session: Session, service_api_key: int, client_id: int) -> ClientRow | None:
    statement = select(ClientRow).where(
        ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id
    )
    return session.scalars(statement).one_or_none()


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
    session.add(row)
    session.flush()


def delete_client(session: Session, service_api_key: int, client_id: int) -> bool:
    """Deletes the client; its tokens go with it (ON DELETE CASCADE)."""
    result = session.execute(
        delete(ClientRow).where(
            ClientRow.service_api_key == service_api_key, ClientRow.client_id == client_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
