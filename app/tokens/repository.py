"""All SQL about tokens. Every query is bounded to the caller's service.

The update's locked read takes the row lock for its read-modify-write: `SELECT ... FOR
UPDATE` on PostgreSQL; on SQLite the clause is a no-op and the immediate write transaction
(see `app.db`) already serializes writers.

The hot path (introspection and the update) runs on PostgreSQL through psycopg directly
(`PostgresTokens`): the statements are SQLAlchemy Core, built once from the table metadata
and compiled once to psycopg's SQL, then prepared on each connection. Introspection is one
round trip in autocommit; the update is two, in pipeline mode (BEGIN with the locked read
and the service's scopes, then the write with the COMMIT). On SQLite the same statements
run through a `Session` on the database thread (`SessionTokens`), where a call costs no
network round trip. The other paths use the ORM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    not_,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from app.clients.models import ClientRow
from app.events import repository as events
from app.events.changes import TokenEvent, TokenFacts
from app.kit.keys import SEALED_PREFIX, HashKey, KeyRing, is_sealed
from app.services import repository as services
from app.services.models import ServiceRow
from app.tokens.models import (
    KEYED_COLUMNS,
    DpopProofRow,
    TokenRow,
    keyed_columns,
    opened_hash,
    state_of,
    stored_columns,
)
from app.tokens.rules import TokenState, TokenStatus
from app.transactions import AsyncDatabase, ThreadedDatabase, UnitOfWork


@dataclass(frozen=True, slots=True)
class LockedToken:
    """A token read under its row lock for an update: where it is, and its state."""

    id: int
    service_api_key: int
    token_id: str
    client_id: int
    subject: str | None
    refresh_hash: str | None  # in the clear (opened), to re-key the refresh token's columns
    state: TokenState
    # The row's keyed columns as stored (lookup keys, sealed hashes, key id): written back
    # unchanged when the token is already under the current key and keeps its value.
    keyed: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClientScopes:
    """What the update's scope rules need of the token's client."""

    requestable_scopes_enabled: bool
    requestable_scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateTarget:
    """A token locked for an update, with the scope data its rules may need."""

    token: LockedToken
    client: ClientScopes | None
    # The service's scopes among those the request names: name -> attributes.
    scopes: Mapping[str, list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class FoundToken:
    """A token as introspection sees it, with its client's alias (one statement)."""

    token_id: str
    client_id: int
    client_id_alias: str | None
    subject: str | None
    grant_type: str | None
    created_at: int
    matched_refresh: bool  # found by its refresh token's key, not its access token's
    state: TokenState
    # The service's DPoP nonce settings (RFC 9449 section 9), read in the same statement.
    dpop_nonce_required: bool = False
    dpop_nonce_duration: int | None = None


class TokenWrites(Protocol):
    """The update's transaction: the locked read, then the write."""

    async def load_for_update(
        self,
        service_api_key: int,
        *,
        access_key: str | None,
        token_id: str | None,
        scope_names: Sequence[str] | None,
        refresh_key: str | None = None,
    ) -> UpdateTarget | None: ...

    async def save(
        self, token: LockedToken, state: TokenState, *, now: int, event: TokenEvent
    ) -> None:
        """Writes the state, its keyed columns under the current key (a token found under
        an older one moves to it), and appends its event, in the update's transaction."""


class TokenReads(Protocol):
    """Introspection's I/O: one read, and the DPoP replay record."""

    async def find(
        self, service_api_key: int, *, access_key: str, refresh_key: str | None = None
    ) -> list[FoundToken]: ...

    async def remember_proof(self, *, key: str, expires_at: int, now: int) -> bool:
        """Records a DPoP proof, False when it was recorded before (a replay); removes a
        few expired ones on the way."""


# --- The hot path's statements (Core, built once) ------------------------------------------

_TOKENS = TokenRow.metadata.tables["tokens"]
_CLIENTS = ClientRow.metadata.tables["clients"]
_SERVICES = ServiceRow.metadata.tables["services"]
_JSON_COLUMNS = frozenset(c.name for c in _TOKENS.columns if isinstance(c.type, JSON))


def _locked(name: ColumnElement[bool]) -> Select[Any]:
    """The token, locked (its row only), with what the scope rules need of its client."""
    return (
        select(_TOKENS, _CLIENTS.c.requestable_scopes_enabled, _CLIENTS.c.requestable_scopes)
        .join_from(_TOKENS, _CLIENTS, _CLIENTS.c.client_id == _TOKENS.c.client_id, isouter=True)
        .where(_TOKENS.c.service_api_key == bindparam("service"), name)
        .with_for_update(of=_TOKENS)
    )


_LOCKED_BY_ACCESS_KEY = _locked(_TOKENS.c.access_key == bindparam("name"))
_LOCKED_BY_TOKEN_ID = _locked(_TOKENS.c.token_id == bindparam("name"))
# By the refresh token's key (`hashing.refresh_lookup_key`): its unique index, as above.
_LOCKED_BY_REFRESH_KEY = _locked(_TOKENS.c.refresh_key == bindparam("name"))
_SAVED_COLUMNS = (
    *stored_columns(TokenState("", (), 0, False, None)),
    *keyed_columns("", None, key=HashKey.of("-", b"-"), service_api_key=0, token_id=""),
    "updated_at",
)
_SAVE = (
    update(_TOKENS)
    .where(_TOKENS.c.id == bindparam("row_id"))
    .values({name: bindparam(name) for name in _SAVED_COLUMNS})
)


# By access key or by refresh key, in one statement: a UNION ALL of two unique-index
# lookups. (`access_key = ? OR refresh_key = ?` made SQLite scan the service's tokens
# once ANALYZE had counted the refresh keys' NULLs as one value: 14 introspections/s on
# 1,000,000 tokens; so did a join in the refresh branch.) Only the access token's answer
# (Authlete's introspection) names the client's alias, and the service's DPoP nonce
# settings: joined by the service's primary key in the same statement, they cost no round
# trip and are never stale. (The credential replica, app.credentials, would save only that
# index probe, and would have to be announced and reloaded on every service update.)
_INTROSPECTED = union_all(
    select(
        _TOKENS,
        _CLIENTS.c.client_id_alias,
        _SERVICES.c.dpop_nonce_required,
        _SERVICES.c.dpop_nonce_duration,
    )
    .join_from(_TOKENS, _CLIENTS, _CLIENTS.c.client_id == _TOKENS.c.client_id, isouter=True)
    .join(_SERVICES, _SERVICES.c.api_key == _TOKENS.c.service_api_key, isouter=True)
    .where(_TOKENS.c.service_api_key == bindparam("service"))
    .where(_TOKENS.c.access_key == bindparam("key")),
    select(
        _TOKENS,
        null().label("client_id_alias"),
        null().label("dpop_nonce_required"),
        null().label("dpop_nonce_duration"),
    )
    .where(_TOKENS.c.service_api_key == bindparam("service"))
    .where(_TOKENS.c.refresh_key == bindparam("rkey")),
)

# Each proof recorded removes up to this many expired ones: the replay table stays about as
# large as the proofs of its window, with no operator action (`purge-expired` still can).
PRUNED_PER_PROOF = 4
_EXPIRED_PROOFS = (
    select(DpopProofRow.key)
    .where(DpopProofRow.expires_at <= bindparam("now"))
    .order_by(DpopProofRow.expires_at)
    .limit(bindparam("prune"))
)
_PRUNE_PROOFS = delete(DpopProofRow).where(DpopProofRow.key.in_(_EXPIRED_PROOFS.scalar_subquery()))
# PostgreSQL: one statement; SKIP LOCKED, so concurrent requests prune different rows
# instead of waiting on each other.
_REMEMBER_PROOF_PG = (
    postgresql_insert(DpopProofRow)
    .values(key=bindparam("key"), expires_at=bindparam("expires_at"))
    .on_conflict_do_nothing(index_elements=["key"])
    .returning(DpopProofRow.key)
    .add_cte(
        delete(DpopProofRow)
        .where(
            DpopProofRow.key.in_(
                _EXPIRED_PROOFS.with_for_update(skip_locked=True).scalar_subquery()
            )
        )
        .cte("pruned")
    )
)


def _lock_params(
    service_api_key: int, access_key: str | None, token_id: str | None, refresh_key: str | None
) -> tuple[Select[Any], dict[str, Any]]:
    if access_key is not None:
        return _LOCKED_BY_ACCESS_KEY, {"service": service_api_key, "name": access_key}
    if refresh_key is not None:
        return _LOCKED_BY_REFRESH_KEY, {"service": service_api_key, "name": refresh_key}
    if token_id is not None:
        return _LOCKED_BY_TOKEN_ID, {"service": service_api_key, "name": token_id}
    raise ValueError("name the token by access_key, refresh_key or token_id")


def _save_params(token: LockedToken, state: TokenState, key: HashKey, now: int) -> dict[str, Any]:
    """The row's columns after an update: the keyed ones made anew under the current key
    when the token was under an older one, was not yet sealed, or has a new value."""
    keyed = token.keyed
    if not (
        keyed["key_id"] == key.id
        and is_sealed(keyed["access_hash"])
        and (keyed["refresh_hash"] is None or is_sealed(keyed["refresh_hash"]))
        and state.access_hash == token.state.access_hash
    ):
        keyed = keyed_columns(
            state.access_hash, token.refresh_hash, key=key,
            service_api_key=token.service_api_key, token_id=token.token_id,
        )  # fmt: skip
    return stored_columns(state) | dict(keyed) | {"updated_at": now, "row_id": token.id}


def _target(row: Any, scopes: Mapping[str, list[dict[str, Any]]], keys: KeyRing) -> UpdateTarget:
    client = (
        None
        if row.requestable_scopes_enabled is None
        else ClientScopes(bool(row.requestable_scopes_enabled), tuple(row.requestable_scopes))
    )
    token = LockedToken(
        id=row.id,
        service_api_key=row.service_api_key,
        token_id=row.token_id,
        client_id=row.client_id,
        subject=row.subject,
        refresh_hash=opened_hash(row, keys, "refresh"),
        state=state_of(row, keys),
        keyed={name: getattr(row, name) for name in KEYED_COLUMNS},
    )
    return UpdateTarget(token, client, scopes)


def _found(row: Any, refresh_key: str | None, keys: KeyRing) -> FoundToken:
    return FoundToken(
        token_id=row.token_id,
        client_id=row.client_id,
        client_id_alias=row.client_id_alias,
        subject=row.subject,
        grant_type=row.grant_type,
        created_at=row.created_at,
        matched_refresh=refresh_key is not None and row.refresh_key == refresh_key,
        state=state_of(row, keys),
        dpop_nonce_required=bool(row.dpop_nonce_required),
        dpop_nonce_duration=row.dpop_nonce_duration,
    )


# --- PostgreSQL: psycopg directly ----------------------------------------------------------

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


def _sql(statement: ClauseElement) -> str:
    return str(statement.compile(dialect=_DIALECT))


_PG_LOCKED = {
    s: _sql(s) for s in (_LOCKED_BY_ACCESS_KEY, _LOCKED_BY_TOKEN_ID, _LOCKED_BY_REFRESH_KEY)
}
_PG_SAVE = _sql(_SAVE)
_PG_INTROSPECTED = _sql(_INTROSPECTED)
_PG_SCOPES_NAMED = _sql(services.SCOPES_NAMED_PG)
_PG_REMEMBER_PROOF = _sql(_REMEMBER_PROOF_PG)


def _pg_params(params: dict[str, Any]) -> dict[str, Any]:
    """JSON documents travel as jsonb (psycopg would send a list as an array)."""
    return {
        name: Jsonb(value) if name in _JSON_COLUMNS and value is not None else value
        for name, value in params.items()
    }


class PostgresTokens:
    """The hot path on one psycopg connection (see the module docstring)."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], keys: KeyRing) -> None:
        self._connection = connection
        self._keys = keys

    async def load_for_update(
        self,
        service_api_key: int,
        *,
        access_key: str | None,
        token_id: str | None,
        scope_names: Sequence[str] | None,
        refresh_key: str | None = None,
    ) -> UpdateTarget | None:
        statement, params = _lock_params(service_api_key, access_key, token_id, refresh_key)
        token_cursor = self._connection.cursor(row_factory=namedtuple_row)
        # Pipeline mode: both statements (and the BEGIN before them) leave together.
        await token_cursor.execute(_PG_LOCKED[statement], params, prepare=True)
        scope_cursor = None
        if scope_names:
            scope_cursor = self._connection.cursor()
            await scope_cursor.execute(
                _PG_SCOPES_NAMED,
                {"service": service_api_key, "names": list(set(scope_names))},
                prepare=True,
            )
        row = await token_cursor.fetchone()
        scopes = {} if scope_cursor is None else dict(await scope_cursor.fetchall())
        return None if row is None else _target(row, scopes, self._keys)

    async def save(
        self, token: LockedToken, state: TokenState, *, now: int, event: TokenEvent
    ) -> None:
        # Both sent now, answered with the COMMIT (app.transactions.AsyncDatabase.pipelined):
        # the event costs no round trip of its own.
        await self._connection.execute(
            _PG_SAVE,
            _pg_params(_save_params(token, state, self._keys.current, now)),
            prepare=True,
        )
        await self._connection.execute(events.PG_APPEND, events.pg_values_of(event), prepare=True)

    async def find(
        self, service_api_key: int, *, access_key: str, refresh_key: str | None = None
    ) -> list[FoundToken]:
        cursor = self._connection.cursor(row_factory=namedtuple_row)
        await cursor.execute(
            _PG_INTROSPECTED,
            {"service": service_api_key, "key": access_key, "rkey": refresh_key},
            prepare=True,
        )
        return [_found(row, refresh_key, self._keys) for row in await cursor.fetchall()]

    async def remember_proof(self, *, key: str, expires_at: int, now: int) -> bool:
        params = {"key": key, "expires_at": expires_at, "now": now, "prune": PRUNED_PER_PROOF}
        cursor = await self._connection.execute(_PG_REMEMBER_PROOF, params, prepare=True)
        return await cursor.fetchone() is not None


class PostgresReads:
    """Introspection's reads, each on a pooled connection in autocommit (one round trip)."""

    def __init__(self, database: AsyncDatabase, keys: KeyRing) -> None:
        self._database = database
        self._keys = keys

    async def find(
        self, service_api_key: int, *, access_key: str, refresh_key: str | None = None
    ) -> list[FoundToken]:
        async with self._database.reads() as connection:
            return await PostgresTokens(connection, self._keys).find(
                service_api_key, access_key=access_key, refresh_key=refresh_key
            )

    async def remember_proof(self, *, key: str, expires_at: int, now: int) -> bool:
        async with self._database.reads() as connection:
            tokens = PostgresTokens(connection, self._keys)
            return await tokens.remember_proof(key=key, expires_at=expires_at, now=now)


# --- SQLite (and any Session): the same statements through SQLAlchemy -----------------------


def load_for_update(
    session: Session,
    service_api_key: int,
    *,
    access_key: str | None,
    token_id: str | None,
    scope_names: Sequence[str] | None,
    refresh_key: str | None = None,
    keys: KeyRing,
) -> UpdateTarget | None:
    statement, params = _lock_params(service_api_key, access_key, token_id, refresh_key)
    row = session.execute(statement, params).first()
    if row is None:
        return None
    named = services.scopes_named(session, service_api_key, scope_names or ())
    return _target(row, {scope.name: scope.attributes for scope in named}, keys)


def save(
    session: Session,
    token: LockedToken,
    state: TokenState,
    *,
    key: HashKey,
    now: int,
    event: TokenEvent,
) -> None:
    """Writes the state the rules decided for a token read by `load_for_update`, its
    keyed columns under `key`, and its event."""
    session.execute(_SAVE, _save_params(token, state, key, now))
    events.append(session, [event])


def find_for_introspection(
    session: Session,
    service_api_key: int,
    *,
    access_key: str,
    refresh_key: str | None = None,
    keys: KeyRing,
) -> list[FoundToken]:
    params = {"service": service_api_key, "key": access_key, "rkey": refresh_key}
    return [_found(row, refresh_key, keys) for row in session.execute(_INTROSPECTED, params)]


class SessionTokens:
    """The update's transaction on a unit of work (SQLite: one call per step)."""

    def __init__(self, work: UnitOfWork, keys: KeyRing) -> None:
        self._work = work
        self._keys = keys

    async def load_for_update(
        self,
        service_api_key: int,
        *,
        access_key: str | None,
        token_id: str | None,
        scope_names: Sequence[str] | None,
        refresh_key: str | None = None,
    ) -> UpdateTarget | None:
        return await self._work.run_sync(
            load_for_update, service_api_key, access_key=access_key, token_id=token_id,
            scope_names=scope_names, refresh_key=refresh_key, keys=self._keys,
        )  # fmt: skip

    async def save(
        self, token: LockedToken, state: TokenState, *, now: int, event: TokenEvent
    ) -> None:
        await self._work.run_sync(save, token, state, key=self._keys.current, now=now, event=event)


class SessionReads:
    """Introspection's reads on SQLite: a pure read outside the writer's queue, and the
    replay record in a write transaction."""

    def __init__(self, database: ThreadedDatabase, keys: KeyRing) -> None:
        self._database = database
        self._keys = keys

    async def find(
        self, service_api_key: int, *, access_key: str, refresh_key: str | None = None
    ) -> list[FoundToken]:
        return await self._database.read(
            find_for_introspection, service_api_key, access_key=access_key,
            refresh_key=refresh_key, keys=self._keys,
        )  # fmt: skip

    async def remember_proof(self, *, key: str, expires_at: int, now: int) -> bool:
        async with self._database.transaction() as work:
            return await work.run_sync(remember_proof, key=key, expires_at=expires_at, now=now)


@asynccontextmanager
async def writes(
    database: AsyncDatabase | ThreadedDatabase, keys: KeyRing
) -> AsyncIterator[TokenWrites]:
    """The update's transaction, committed when the block ends (app.transactions owns it)."""
    if isinstance(database, AsyncDatabase):
        async with database.pipelined() as connection:
            yield PostgresTokens(connection, keys)
        # Committed, with its event: the relay may publish it.
        database.events_committed()
    else:
        async with database.transaction() as work:
            yield SessionTokens(work, keys)


def reads(database: AsyncDatabase | ThreadedDatabase, keys: KeyRing) -> TokenReads:
    if isinstance(database, AsyncDatabase):
        return PostgresReads(database, keys)
    return SessionReads(database, keys)


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
    service_api_key: int,
    client_id: int | None,
    subject: str | None,
    now: int,
    status: TokenStatus = TokenStatus.VALID,
) -> list[ColumnElement[bool]]:
    """The conditions of a list. The service, client and subject select through an index
    (ix_tokens_service_created, ix_tokens_client_created, ix_tokens_service_subject); the
    status is a filter on the rows found there."""
    conditions = [TokenRow.service_api_key == service_api_key]
    if status is TokenStatus.VALID:
        conditions.append(alive(now))
    elif status is TokenStatus.INVALID:
        conditions.append(not_(alive(now)))
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
    status: TokenStatus = TokenStatus.VALID,
) -> Sequence[TokenRow]:
    statement = (
        select(TokenRow)
        .where(*_listing(service_api_key, client_id, subject, now, status))
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
    status: TokenStatus = TokenStatus.VALID,
) -> int:
    statement = select(func.count()).where(
        *_listing(service_api_key, client_id, subject, now, status)
    )
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
    # One unique-index lookup per kind of name, in turn: an OR of them let SQLite's planner
    # scan the service's tokens (its index on service_api_key) once ANALYZE had run.
    for name in names:
        statement = select(TokenRow).where(TokenRow.service_api_key == service_api_key, name)
        row = session.scalars(statement.limit(1)).first()
        if row is not None:
            return row
    return None


def delete_row(session: Session, row: TokenRow) -> bool:
    """Deletes a token found before; False when a concurrent request deleted it first.

    The DELETE's own row count decides, not the earlier read: on PostgreSQL a second
    delete of one row waits for the first one's transaction, then finds the row gone and
    deletes nothing. (The ORM's `session.delete` only warned about that, and every
    concurrent delete of a token answered that it had deleted it.)"""
    result = session.execute(
        delete(TokenRow).where(TokenRow.id == row.id).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def facts_of(row: Any) -> TokenFacts:
    """What names a token in its events: a `TokenRow`, or a row RETURNING those columns."""
    return TokenFacts(row.service_api_key, row.token_id, row.client_id, row.subject)


_FACT_COLUMNS = (TokenRow.service_api_key, TokenRow.token_id, TokenRow.client_id, TokenRow.subject)


def delete_matching(
    session: Session,
    service_api_key: int,
    *,
    client_id: int | None = None,
    subject: str | None = None,
) -> list[TokenFacts]:
    """Deletes every token of the service, or of the client and/or the subject; answers
    which went (one statement, RETURNING them)."""
    statement = delete(TokenRow).where(TokenRow.service_api_key == service_api_key)
    if client_id is not None:
        statement = statement.where(TokenRow.client_id == client_id)
    if subject is not None:
        statement = statement.where(TokenRow.subject == subject)
    returning = statement.returning(*_FACT_COLUMNS).execution_options(synchronize_session=False)
    return [facts_of(row) for row in session.execute(returning)]


def delete_dead_batch(session: Session, *, now: int, limit: int) -> list[TokenFacts]:
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
        return []
    statement = delete(TokenRow).where(TokenRow.id.in_(chosen), dead).returning(*_FACT_COLUMNS)
    return [facts_of(row) for row in session.execute(statement)]


def remember_proof(session: Session, *, key: str, expires_at: int, now: int) -> bool:
    """Records a DPoP proof; False when it was recorded before (a replay). One statement
    (INSERT ... ON CONFLICT DO NOTHING), so concurrent processes cannot both succeed.
    Removes up to PRUNED_PER_PROOF expired proofs first."""
    session.execute(_PRUNE_PROOFS, {"now": now, "prune": PRUNED_PER_PROOF})
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


# --- Connected apps: a subject's tokens, per client ------------------------------------------


def _of_subject(service_api_key: int, subject: str, now: int) -> list[ColumnElement[bool]]:
    # Selected through ix_tokens_service_subject (service, subject, created_at).
    return [TokenRow.service_api_key == service_api_key, TokenRow.subject == subject, alive(now)]


def clients_of_subject(
    session: Session, service_api_key: int, *, subject: str, now: int, offset: int, limit: int
) -> Sequence[ClientRow]:
    """The clients the subject holds live tokens of, in the order clients are listed."""
    holders = select(TokenRow.client_id).where(*_of_subject(service_api_key, subject, now))
    statement = (
        select(ClientRow)
        .where(ClientRow.service_api_key == service_api_key, ClientRow.client_id.in_(holders))
        .order_by(ClientRow.created_at, ClientRow.client_id)
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(statement).all()


def count_clients_of_subject(
    session: Session, service_api_key: int, *, subject: str, now: int
) -> int:
    statement = select(func.count(TokenRow.client_id.distinct())).where(
        *_of_subject(service_api_key, subject, now)
    )
    return session.scalar(statement) or 0


def _of_authorization(
    service_api_key: int, client_id: int, subject: str, now: int
) -> list[ColumnElement[bool]]:
    return [*_of_subject(service_api_key, subject, now), TokenRow.client_id == client_id]


@dataclass(frozen=True, slots=True)
class GrantedToken:
    scopes: tuple[str, ...]
    updated_at: int


def granted(
    session: Session, service_api_key: int, *, client_id: int, subject: str, now: int
) -> list[GrantedToken]:
    """The scopes of the subject's live tokens of the client, oldest token first."""
    statement = (
        select(TokenRow.scopes, TokenRow.updated_at)
        .where(*_of_authorization(service_api_key, client_id, subject, now))
        .order_by(TokenRow.created_at, TokenRow.id)
    )
    rows = session.execute(statement)
    return [GrantedToken(tuple(scopes), updated_at) for scopes, updated_at in rows]


def replace_scopes(
    session: Session,
    service_api_key: int,
    *,
    client_id: int,
    subject: str,
    scopes: Sequence[str],
    now: int,
    keys: KeyRing,
) -> list[tuple[TokenFacts, TokenState]]:
    """Gives every live token of the subject and the client these scopes: the tokens are
    read under their row locks (so a concurrent update of one of them runs before or
    after, never in between), then written in one statement. Answers each token with its
    state from before."""
    locked = (
        select(TokenRow)
        .where(*_of_authorization(service_api_key, client_id, subject, now))
        .order_by(TokenRow.id)
        .with_for_update()
    )
    rows = session.scalars(locked).all()
    if rows:
        session.execute(
            update(TokenRow)
            .where(TokenRow.id.in_([row.id for row in rows]))
            .values(scopes=list(scopes), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return [(facts_of(row), state_of(row, keys)) for row in rows]


# --- Key rotation: what depends on which key, and re-keying (app.keyring) -------------------


def _unsealed() -> ColumnElement[bool]:
    """A row whose stored hashes are not both sealed (written before migration 0006)."""
    return or_(
        not_(TokenRow.access_hash.startswith(SEALED_PREFIX)),
        and_(
            TokenRow.refresh_hash.is_not(None),
            not_(TokenRow.refresh_hash.startswith(SEALED_PREFIX)),
        ),
    )


def count_by_key(session: Session) -> list[tuple[str, int, int]]:
    """Token rows per key id, and how many of those are not yet sealed. A scan of the
    table: for `tokenstore keys` and the periodic metric, never for a request."""
    statement = select(TokenRow.key_id, func.count(), func.count(case((_unsealed(), 1)))).group_by(
        TokenRow.key_id
    )
    return [(key_id, rows, unsealed) for key_id, rows, unsealed in session.execute(statement)]


@dataclass(frozen=True, slots=True)
class KeyedToken:
    """What re-keying reads of a token row: where it is, its key id and stored hashes."""

    id: int
    service_api_key: int
    token_id: str
    key_id: str
    access_hash: str
    refresh_hash: str | None


_KEYED_TOKEN = (
    TokenRow.id, TokenRow.service_api_key, TokenRow.token_id, TokenRow.key_id,
    TokenRow.access_hash, TokenRow.refresh_hash,
)  # fmt: skip


def rekey_candidates(
    session: Session, *, listed: Sequence[str], current: str, after_id: int, limit: int
) -> list[KeyedToken]:
    """Up to `limit` token rows after `after_id` (in id order) that a listed key opens and
    that are under an older key than `current`, or not yet sealed. A plain read: the batch
    writes only rows still as read (`move_keyed`)."""
    statement = (
        select(*_KEYED_TOKEN)
        .where(
            TokenRow.id > after_id,
            TokenRow.key_id.in_(listed),
            or_(TokenRow.key_id != current, _unsealed()),
        )
        .order_by(TokenRow.id)
        .limit(limit)
    )
    return [KeyedToken(*row) for row in session.execute(statement)]


_REKEY = (
    update(_TOKENS)
    .where(_TOKENS.c.id == bindparam("row_id"))
    .values({name: bindparam(name) for name in KEYED_COLUMNS})
)
# SQLite: the same write, only where the row is still as read (compare and set).
_REKEY_UNCHANGED = _REKEY.where(
    _TOKENS.c.key_id == bindparam("read_key_id"),
    _TOKENS.c.access_hash == bindparam("read_access_hash"),
    _TOKENS.c.refresh_hash.is_not_distinct_from(bindparam("read_refresh_hash")),
)


def move_keyed(
    session: Session, read: Sequence[KeyedToken], made: Mapping[int, Mapping[str, Any]]
) -> int:
    """Writes the keyed columns made anew (`keyed_columns`, by row id) of the rows read
    before whose keyed columns are still as read, and nothing else: a re-key changes no
    token's state, so neither `updated_at` nor an event. A row an update moved meanwhile is
    left out (that update moved it to the current key itself). Returns how many it wrote.

    - PostgreSQL: the rows are locked first, and those a live update holds are skipped
      (SKIP LOCKED), so the batch never waits on a request.
    - SQLite: the batch holds the one writer lock already, so each row is written by a
      compare-and-set UPDATE: no read under the lock, which every writer waits for."""
    rows = [token for token in read if token.id in made]
    if not rows:
        return 0
    if session.get_bind().dialect.name == "sqlite":
        compared = [
            {
                **made[token.id],
                "row_id": token.id,
                "read_key_id": token.key_id,
                "read_access_hash": token.access_hash,
                "read_refresh_hash": token.refresh_hash,
            }
            for token in rows
        ]
        result = session.execute(_REKEY_UNCHANGED, compared)
        return int(result.rowcount)  # type: ignore[attr-defined]
    as_read = {token.id: token for token in rows}
    statement = (
        select(*_KEYED_TOKEN)
        .where(TokenRow.id.in_(list(as_read)))
        .order_by(TokenRow.id)
        .with_for_update(skip_locked=True)
    )
    now = [KeyedToken(*row) for row in session.execute(statement)]
    held = [token.id for token in now if token == as_read[token.id]]
    if held:
        session.execute(_REKEY, [{**made[row_id], "row_id": row_id} for row_id in held])
    return len(held)
