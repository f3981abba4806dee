"""Token creation, listing and update: loads under a lock, asks the rules, writes.

The service owns no transaction: the request's session commits or rolls back.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.clients import repository as clients
from app.clients.models import ClientRow
from app.errors import (
    BadRequestAction,
    ClientUnknown,
    MalformedRequest,
    ResourceNotFound,
    TokenNotFound,
)
from app.events import service as events
from app.events.changes import EventType, Origin, TokenFacts
from app.kit.durations import client_duration
from app.kit.hashing import (
    VALUE_BYTES,
    encode_value,
    is_sha256_b64url,
    lookup_key,
    refresh_lookup_key,
    token_hash,
)
from app.kit.keys import HashKey, KeyRing
from app.kit.paging import page_size
from app.services import repository as services
from app.tokens import repository
from app.tokens.models import TokenRow
from app.tokens.rules import (
    Issued,
    IssueRequest,
    Lookup,
    ScopePolicy,
    TokenState,
    TokenStatus,
    UpdateRequest,
    apply_update,
    check_issue_request,
    choose_identifier,
    is_alive,
    issue,
    scope_durations,
)

log = logging.getLogger("tokenstore.tokens")


def new_value() -> str:
    return encode_value(secrets.token_bytes(VALUE_BYTES))


def new_token_id() -> str:
    return secrets.token_urlsafe(24)


# --- Update --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateCommand:
    access_token: str | None
    access_token_hash: str | None
    token_id: str | None
    changes: UpdateRequest
    refresh_token: str | None = None
    refresh_token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    state: TokenState
    token_id: str
    shown_value: str | None  # the value the caller sent, or the regenerated one


class ClientRestriction(Protocol):
    """What the scope rules read of a client (a `ClientRow`, or the update's `ClientScopes`)."""

    @property
    def requestable_scopes_enabled(self) -> bool: ...
    @property
    def requestable_scopes(self) -> Sequence[str]: ...


def scope_policy(
    scopes: Mapping[str, Sequence[Mapping[str, Any]]], client: ClientRestriction | None
) -> ScopePolicy:
    """The scope policy from the service's scopes (name -> attributes) that a request names
    and its client's restriction."""
    supported = {
        name: scope_durations((a.get("key"), a.get("value")) for a in attributes)
        for name, attributes in scopes.items()
    }
    requestable = (
        frozenset(client.requestable_scopes)
        if client is not None and client.requestable_scopes_enabled
        else None
    )
    return ScopePolicy(supported=supported, requestable=requestable)


def policy_for(
    session: Session, *, service_api_key: int, client: ClientRow | None, scopes: Sequence[str]
) -> ScopePolicy:
    """The scope policy for the given scope names: only those rows are loaded."""
    rows = services.scopes_named(session, service_api_key, scopes)
    return scope_policy({row.name: row.attributes for row in rows}, client)


async def update(
    writes: repository.TokenWrites,
    *,
    service_api_key: int,
    command: UpdateCommand,
    keys: KeyRing,
    now: int,
    origin: Origin,
) -> UpdateResult:
    """Loads the token under its lock (with the scope data the rules may need, in the same
    round trip), asks the rules, and writes what they decided.

    A value or hash is looked up under the current key first (one round trip, as before
    key rotation), then under each older listed key, then the current key again (a row
    moved to it meanwhile, `KeyRing.lookup_order`); a token found under an older key is
    written back under the current one (`writes.save`)."""
    identifier = choose_identifier(
        access_token=command.access_token,
        access_token_hash=command.access_token_hash,
        refresh_token=command.refresh_token,
        refresh_token_hash=command.refresh_token_hash,
        token_id=command.token_id,
    )
    changes = command.changes
    target = None
    if identifier.kind is Lookup.TOKEN_ID:
        target = await writes.load_for_update(
            service_api_key, access_key=None, token_id=identifier.text,
            scope_names=changes.scopes,
        )  # fmt: skip
    else:
        hash_ = token_hash(identifier.text) if identifier.kind.by_value else identifier.text
        by_refresh = identifier.kind.by_refresh_token
        key_of = refresh_lookup_key if by_refresh else lookup_key
        for key in keys.lookup_order:
            name = key_of(service_api_key, hash_, key.secret)
            target = await writes.load_for_update(
                service_api_key,
                access_key=None if by_refresh else name,
                token_id=None,
                scope_names=changes.scopes,
                refresh_key=name if by_refresh else None,
            )
            if target is not None:
                break
    if target is None or not is_alive(target.token.state, now):
        raise TokenNotFound("No such token, or its access and refresh tokens have expired.")
    token = target.token
    policy = ScopePolicy(supported={})
    if changes.scopes is not None:
        policy = scope_policy(target.scopes, target.client)
    decision = apply_update(token.state, changes, policy, now=now, new_value=new_value())
    event = events.new_event(
        EventType.UPDATED,
        TokenFacts(service_api_key, token.token_id, token.client_id, token.subject),
        origin,
        now=now,
        before=token.state,
        after=decision.state,
    )
    await writes.save(token, decision.state, now=now, event=event)
    log.info("token updated token_id=%s regenerated=%s", token.token_id, bool(decision.new_value))
    # The access token's value is shown when the caller sent it or it was just made; named
    # by anything else (a hash, the refresh token, tokenId) it is not known here.
    shown = decision.new_value or (identifier.text if identifier.kind is Lookup.VALUE else None)
    return UpdateResult(decision.state, token.token_id, shown)


# --- Create --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateResult:
    row: TokenRow
    issued: Issued


def create(
    session: Session,
    *,
    service_api_key: int,
    command: IssueRequest,
    keys: KeyRing,
    now: int,
    origin: Origin,
) -> CreateResult:
    """Loads what the decision needs (the client, the service's defaults, the scopes named),
    asks `rules.issue`, and inserts the token."""
    check_issue_request(command)  # every check that needs nothing read comes first
    assert command.client_id is not None  # noqa: S101 - checked just above
    client = clients.get(session, service_api_key, command.client_id)
    if client is None:
        raise ClientUnknown(f"This service has no client {command.client_id}.")
    service = services.get(session, service_api_key)
    assert service is not None  # noqa: S101 - the caller was authenticated as this service
    policy = policy_for(
        session, service_api_key=service_api_key, client=client, scopes=command.scopes
    )
    issued = issue(
        command, policy, now=now, new_values=(new_value(), new_value()),
        access_seconds=client_duration(service.access_token_duration, client.access_token_duration),
        refresh_seconds=client_duration(
            service.refresh_token_duration, client.refresh_token_duration
        ),
    )  # fmt: skip
    row = TokenRow(
        token_id=new_token_id(),
        service_api_key=service_api_key,
        client_id=client.client_id,
        subject=command.subject,
        grant_type=command.grant_type,
        created_at=now,
        updated_at=now,
    )
    row.store(issued.state, refresh_hash=issued.refresh_hash, key=keys.current)
    if _in_use_under_older_keys(session, service_api_key, issued, keys):
        raise BadRequestAction("That accessToken or refreshToken is already in use.")
    try:
        repository.insert(session, row)
    except IntegrityError:
        # Only a caller-chosen value can collide; generated ones are 256 random bits.
        raise BadRequestAction("That accessToken or refreshToken is already in use.") from None
    events.record_changes(
        session, EventType.CREATED, [(repository.facts_of(row), None, issued.state)], origin,
        now=now,
    )  # fmt: skip
    log.info("token created token_id=%s client_id=%s", row.token_id, client.client_id)
    return CreateResult(row, issued)


def _in_use_under_older_keys(
    session: Session, service_api_key: int, issued: Issued, keys: KeyRing
) -> bool:
    """A caller-chosen value that a token keyed under an older listed key already holds:
    the unique indexes compare lookup keys, which differ from key to key."""
    older = keys.keys[1:]
    if not older:
        return False
    hashes = [issued.state.access_hash, issued.refresh_hash]
    chosen = [h for h in hashes if h is not None]
    found = repository.find(
        session, service_api_key,
        access_keys=lookup_keys(service_api_key, chosen, older),
        refresh_keys=lookup_keys(service_api_key, chosen, older, refresh=True),
    )  # fmt: skip
    return found is not None


# --- List ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenPage:
    rows: Sequence[TokenRow] | None  # None: `end - start <= 0` asked for the count only
    total: int
    client: ClientRow | None


def page(
    session: Session,
    *,
    service_api_key: int,
    client_identifier: str | None,
    subject: str | None,
    start: int,
    end: int,
    now: int,
    status: TokenStatus = TokenStatus.VALID,
) -> TokenPage:
    limit = page_size(start, end)
    client = None
    if client_identifier:
        client = clients.get_by_identifier(session, service_api_key, client_identifier)
        if client is None:
            # An unknown client has no tokens; answering with an empty page tells nothing
            # about other services' clients.
            return TokenPage([] if limit else None, 0, None)
    client_id = client.client_id if client else None
    rows = None
    if limit:
        rows = repository.page(
            session, service_api_key, client_id=client_id, subject=subject, now=now,
            offset=start, limit=limit, status=status,
        )  # fmt: skip
    total = repository.count(
        session, service_api_key, client_id=client_id, subject=subject, now=now, status=status
    )
    return TokenPage(rows, total, client)


# --- Delete and revoke ---------------------------------------------------------------------


def lookup_keys(
    service_api_key: int, hashes: Sequence[str], keys: Sequence[HashKey], *, refresh: bool = False
) -> list[str]:
    """The lookup keys of the hashes under each of the keys: what an `IN` over the unique
    index looks for (one statement, whichever key a token was stored under)."""
    key_of = refresh_lookup_key if refresh else lookup_key
    return [key_of(service_api_key, h, key.secret) for h in hashes for key in keys]


def identifier_keys(
    service_api_key: int, identifier: str, keys: KeyRing, *, refresh: bool = False
) -> list[str]:
    """Lookup keys for an identifier that is a value or a hash, under every listed key (one
    statement: an IN over the unique index). A 43-character value can look like a hash, so
    both readings are tried."""
    hashes = [token_hash(identifier)]
    if is_sha256_b64url(identifier):
        hashes.append(identifier)
    return lookup_keys(service_api_key, hashes, keys.keys, refresh=refresh)


def find_by_identifier(
    session: Session, *, service_api_key: int, identifier: str, keys: KeyRing
) -> TokenRow | None:
    """By access token value, its hash, or `tokenId`."""
    return repository.find(
        session,
        service_api_key,
        access_keys=identifier_keys(service_api_key, identifier, keys),
        token_id=identifier,
    )


def delete(
    session: Session,
    *,
    service_api_key: int,
    identifier: str,
    keys: KeyRing,
    now: int,
    origin: Origin,
) -> None:
    row = find_by_identifier(
        session, service_api_key=service_api_key, identifier=identifier, keys=keys
    )
    if row is None or not repository.delete_row(session, row):
        raise ResourceNotFound("This service has no such token.")
    events.record_all(session, EventType.DELETED, [repository.facts_of(row)], origin, now=now)
    log.info("token deleted token_id=%s", row.token_id)


def delete_all(
    session: Session,
    *,
    service_api_key: int,
    client_id: int | None = None,
    subject: str | None = None,
    kind: EventType = EventType.DELETED,
    now: int,
    origin: Origin,
) -> int:
    """Deletes every token of the service, or of its client and/or subject, with one event
    per token (a client's or a service's deletion, connected apps, a bulk revocation);
    answers how many went."""
    gone = repository.delete_matching(
        session, service_api_key, client_id=client_id, subject=subject
    )
    events.record_all(session, kind, gone, origin, now=now)
    return len(gone)


def revoke(
    session: Session,
    *,
    service_api_key: int,
    access_identifier: str | None,
    refresh_identifier: str | None,
    client_identifier: str | None,
    subject: str | None,
    keys: KeyRing,
    now: int,
    origin: Origin,
) -> int:
    """Revokes (deletes) one token by its access or refresh identifier, or else every token
    of a client and/or a subject. Answers how many tokens went."""
    if access_identifier or refresh_identifier:
        if access_identifier:
            row = find_by_identifier(
                session,
                service_api_key=service_api_key,
                identifier=access_identifier,
                keys=keys,
            )
        else:
            assert refresh_identifier is not None  # noqa: S101 - narrowed by the branch
            row = repository.find(
                session, service_api_key,
                refresh_keys=identifier_keys(
                    service_api_key, refresh_identifier, keys, refresh=True
                ),
            )  # fmt: skip
        if row is None or not repository.delete_row(session, row):
            return 0
        events.record_all(session, EventType.REVOKED, [repository.facts_of(row)], origin, now=now)
        log.info("token revoked token_id=%s", row.token_id)
        return 1
    if not client_identifier and subject is None:
        raise MalformedRequest(
            "Name what to revoke: accessTokenIdentifier, refreshTokenIdentifier, or "
            "clientIdentifier and/or subject."
        )
    client_id = None
    if client_identifier:
        client = clients.get_by_identifier(session, service_api_key, client_identifier)
        if client is None:
            return 0
        client_id = client.client_id
    count = delete_all(
        session, service_api_key=service_api_key, client_id=client_id, subject=subject,
        kind=EventType.REVOKED, now=now, origin=origin,
    )  # fmt: skip
    log.info("tokens revoked count=%d client_id=%s", count, client_id)
    return count
