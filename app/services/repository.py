"""All SQL about services and their scopes."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import String, any_, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, selectinload

from app.services.models import ScopeRow, ServiceAccessTokenRow, ServiceRow
from app.transactions import ANNOUNCEMENTS

# Credentials: every write that changes them announces it in its own transaction, for the
# per-process replicas (app.credentials).
CREDENTIALS_CHANNEL = "tokenstore_credentials"
# The session's list of this transaction's announcements (app.transactions reads it).
CREDENTIALS_CHANGED = ANNOUNCEMENTS
_NOTIFY = text(f"SELECT pg_notify('{CREDENTIALS_CHANNEL}', :payload)")


def announce_credentials_changed(session: Session) -> None:
    """PostgreSQL delivers the NOTIFY to every listener when the transaction commits (and
    never when it rolls back), and the committing request waits until its own process has
    received it; on SQLite, the commit bumps an epoch file (app.credentials)."""
    payload = secrets.token_hex(8)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY, {"payload": payload})
    session.info.setdefault(CREDENTIALS_CHANGED, []).append(payload)


class StoredSecret(NamedTuple):
    """A service's API secret at rest: its digest, and the id of the hash secret it was
    made with (app.kit.keys)."""

    digest: str
    key_id: str


class BearerOwner(NamedTuple):
    """Whose a service access token is: its service, its own id (an event's actor), and
    the id of the hash secret its stored key was made with."""

    api_key: int
    token_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Credentials:
    digests: dict[int, StoredSecret]  # API key -> the API secret's digest and its key id
    bearer: dict[str, BearerOwner]  # service access token key -> its service, id and key id


def all_credentials(session: Session) -> Credentials:
    digests = session.execute(
        select(ServiceRow.api_key, ServiceRow.secret_digest, ServiceRow.secret_key_id)
    )
    bearer = session.execute(
        select(
            ServiceAccessTokenRow.token_key,
            ServiceAccessTokenRow.service_api_key,
            ServiceAccessTokenRow.token_id,
            ServiceAccessTokenRow.key_id,
        )
    )
    return Credentials(
        digests={api_key: StoredSecret(digest, key_id) for api_key, digest, key_id in digests},
        bearer={
            key: BearerOwner(api_key, token_id, key_id) for key, api_key, token_id, key_id in bearer
        },
    )


def get(session: Session, api_key: int) -> ServiceRow | None:
    return session.get(ServiceRow, api_key)


# Built once: the credential check runs on every request.
_SECRET_DIGEST = select(ServiceRow.secret_digest, ServiceRow.secret_key_id).where(
    ServiceRow.api_key == bindparam("api_key")
)


def secret_digest_of(session: Session, api_key: int) -> StoredSecret | None:
    """The stored digest of the service's API secret and its key id, None for an unknown
    service."""
    row = session.execute(_SECRET_DIGEST, {"api_key": api_key}).first()
    return None if row is None else StoredSecret(row.secret_digest, row.secret_key_id)


def rekey_secret(session: Session, api_key: int, *, old: StoredSecret, new: StoredSecret) -> bool:
    """Moves the service's secret digest to another key (its secret is known only while a
    request carries it), if the row still holds `old`: a concurrent move, or any other
    change meanwhile, wins. Announced, so that every replica reloads. False: nothing moved."""
    result = session.execute(
        update(ServiceRow)
        .where(
            ServiceRow.api_key == api_key,
            ServiceRow.secret_digest == old.digest,
            ServiceRow.secret_key_id == old.key_id,
        )
        .values(secret_digest=new.digest, secret_key_id=new.key_id)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    announce_credentials_changed(session)
    return True


def lock_for_delete(session: Session, api_key: int) -> bool:
    """Locks the service's row FOR UPDATE, which blocks inserts of its clients and tokens
    (their foreign keys' key-share locks) until the deletion commits. False when there is
    no such service."""
    statement = select(ServiceRow.api_key).where(ServiceRow.api_key == api_key).with_for_update()
    return session.scalar(statement) is not None


def get_for_update(session: Session, api_key: int) -> ServiceRow | None:
    """The service, its row locked until the transaction ends (without its scopes).

    An update of a service takes this lock before anything else, so concurrent updates of
    one service run one after the other: each replaces the scopes the previous one wrote
    (PostgreSQL reads afresh after a lock wait). Without it they deleted and inserted the
    same scope rows side by side: deadlocks, and unique violations of the scope names.
    FOR NO KEY UPDATE, as an UPDATE of the row takes: it leaves the key-share locks that
    inserts of the service's clients and tokens take through their foreign keys alone.
    SQLite has no row locks (its writers take turns) and renders no locking clause."""
    statement = (
        select(ServiceRow).where(ServiceRow.api_key == api_key).with_for_update(key_share=True)
    )
    return session.scalars(statement).one_or_none()


def get_with_scopes(session: Session, api_key: int) -> ServiceRow | None:
    statement = (
        select(ServiceRow)
        .where(ServiceRow.api_key == api_key)
        .options(selectinload(ServiceRow.scopes))
    )
    return session.scalars(statement).one_or_none()


_INTROSPECTION_KEYS = select(ServiceRow.jwks, ServiceRow.introspection_signature_key_id).where(
    ServiceRow.api_key == bindparam("api_key")
)


def introspection_keys(session: Session, api_key: int) -> tuple[str | None, str | None]:
    """The service's JWK set and the id of its key for introspection responses (RFC 9701);
    (None, None) for an unknown service."""
    row = session.execute(_INTROSPECTION_KEYS, {"api_key": api_key}).first()
    return (None, None) if row is None else (row.jwks, row.introspection_signature_key_id)


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


# The same lookup for psycopg directly (app.tokens.repository): an array parameter instead
# of an expanding IN list, so the statement is fixed and can be prepared.
SCOPES_NAMED_PG = select(ScopeRow.name, ScopeRow.attributes).where(
    ScopeRow.service_api_key == bindparam("service"),
    ScopeRow.name == any_(bindparam("names", type_=ARRAY(String))),
)


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
    announce_credentials_changed(session)


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
    announce_credentials_changed(session)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def insert_access_token(session: Session, row: ServiceAccessTokenRow) -> None:
    session.add(row)
    session.flush()
    announce_credentials_changed(session)


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
    announce_credentials_changed(session)
    return bool(result.rowcount)  # type: ignore[attr-defined]


_BEARER_OWNERS = select(
    ServiceAccessTokenRow.token_key,
    ServiceAccessTokenRow.service_api_key,
    ServiceAccessTokenRow.token_id,
    ServiceAccessTokenRow.key_id,
).where(ServiceAccessTokenRow.token_key.in_(bindparam("token_keys", expanding=True)))


def service_of_access_token(
    session: Session, token_keys: Sequence[str]
) -> tuple[str, BearerOwner] | None:
    """The first of `token_keys` (one value's key under each listed hash secret) that is
    stored, and its owner; one round trip whatever their number."""
    found = {
        row.token_key: BearerOwner(row.service_api_key, row.token_id, row.key_id)
        for row in session.execute(_BEARER_OWNERS, {"token_keys": list(token_keys)})
    }
    return next(((key, found[key]) for key in token_keys if key in found), None)


def rekey_access_token(
    session: Session, *, old_key: str, old_key_id: str, new_key: str, new_key_id: str
) -> bool:
    """Moves a service access token's stored key to another hash secret, if the row is
    still under the old one (a concurrent move wins). Announced, so that every replica
    reloads. False: nothing moved."""
    result = session.execute(
        update(ServiceAccessTokenRow)
        .where(
            ServiceAccessTokenRow.token_key == old_key,
            ServiceAccessTokenRow.key_id == old_key_id,
        )
        .values(token_key=new_key, key_id=new_key_id)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    announce_credentials_changed(session)
    return True


def count_secrets_by_key(session: Session) -> list[tuple[str, int]]:
    """Services per key id of their API secret's digest (`tokenstore keys`, the metric)."""
    statement = select(ServiceRow.secret_key_id, func.count()).group_by(ServiceRow.secret_key_id)
    return [(key_id, rows) for key_id, rows in session.execute(statement)]


def count_access_tokens_by_key(session: Session) -> list[tuple[str, int]]:
    """Service access tokens per key id of their stored key."""
    statement = select(ServiceAccessTokenRow.key_id, func.count()).group_by(
        ServiceAccessTokenRow.key_id
    )
    return [(key_id, rows) for key_id, rows in session.execute(statement)]
