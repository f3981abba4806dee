"""All SQL about services and their scopes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session, selectinload

from app.services.models import ScopeRow, ServiceAccessTokenRow, ServiceRow


def get(session: Session, api_key: int) -> ServiceRow | None:
    return session.get(ServiceRow, api_key)


# Built once: the credential check runs on every request.
_SECRET_DIGEST = select(ServiceRow.secret_digest).where(ServiceRow.api_key == bindparam("api_key"))


def secret_digest_of(session: Session, api_key: int) -> str | None:
    """The stored digest of the service's API secret, None for an unknown service."""
    return session.scalar(_SECRET_DIGEST, {"api_key": api_key})


def get_with_scopes(session: Session, api_key: int) -> ServiceRow | None:
    statement = (
        select(ServiceRow)
        .where(ServiceRow.api_key == api_key)
        .options(selectinload(ServiceRow.scopes))
    )
    return session.scalars(statement).one_or_none()


def page(session: Session, *, offset: int, limit: int) -> Sequence[ServiceRow]:
    statement = (
        select(ServiceRow)
        .options(selectinload(ServiceRow.scopes))
        .order_by(ServiceRow.created_at, ServiceRow.api_key)
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(statement).all()


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ServiceRow)) or 0


def scopes_named(session: Session, api_key: int, names: Sequence[str]) -> Sequence[ScopeRow]:
    """The service's scopes among `names` (the only ones an update or a creation needs)."""
    if not names:
        return []
    statement = select(ScopeRow).where(
        ScopeRow.service_api_key == api_key, ScopeRow.name.in_(set(names))
    )
    return session.scalars(statement).all()


def insert(session: Session, row: ServiceRow) -> None:
    session.add(row)
    session.flush()


def replace_scopes(session: Session, row: ServiceRow, scopes: Sequence[ScopeRow]) -> None:
    session.execute(delete(ScopeRow).where(ScopeRow.service_api_key == row.api_key))
    session.flush()
    for scope in scopes:
        scope.service_api_key = row.api_key
        session.add(scope)
    session.flush()


def delete_service(session: Session, api_key: int) -> bool:
    """Deletes the service; its scopes, clients and tokens go with it (ON DELETE CASCADE)."""
    result = session.execute(delete(ServiceRow).where(ServiceRow.api_key == api_key))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def insert_access_token(session: Session, row: ServiceAccessTokenRow) -> None:
    session.add(row)
    session.flush()


def access_tokens(session: Session, api_key: int) -> Sequence[ServiceAccessTokenRow]:
    statement = (
        select(ServiceAccessTokenRow)
        .where(ServiceAccessTokenRow.service_api_key == api_key)
        .order_by(ServiceAccessTokenRow.created_at, ServiceAccessTokenRow.id)
    )
    return session.scalars(statement).all()


def delete_access_token(session: Session, api_key: int, token_id: str) -> bool:
    result = session.execute(
        delete(ServiceAccessTokenRow).where(
            ServiceAccessTokenRow.service_api_key == api_key,
            ServiceAccessTokenRow.token_id == token_id,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def service_of_access_token(session: Session, token_key: str) -> int | None:
    statement = select(ServiceAccessTokenRow.service_api_key).where(
        ServiceAccessTokenRow.token_key == token_key
    )
    return session.scalar(statement)
