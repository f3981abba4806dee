"""Service management by the operator: create, read, list, update, delete."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import InvalidValue, ResourceNotFound
from app.events.changes import Origin
from app.kit.durations import duration_or
from app.kit.hashing import secret_digest, service_token_key
from app.kit.keys import KeyRing
from app.kit.paging import check_range
from app.services import keys, repository
from app.services.models import ScopeRow, ServiceAccessTokenRow, ServiceRow
from app.tokens import service as tokens

# Authlete's defaults for a new service: one day, ten days.
DEFAULT_ACCESS_TOKEN_DURATION = 86_400
DEFAULT_REFRESH_TOKEN_DURATION = 864_000


@dataclass(frozen=True, slots=True)
class ScopeSpec:
    name: str
    description: str | None
    attributes: tuple[tuple[str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What a create or update request says; None: not given."""

    name: str | None
    description: str | None
    scopes: tuple[ScopeSpec, ...] | None
    access_token_duration: int | None
    refresh_token_duration: int | None
    # DPoP nonces (RFC 9449 sections 8 and 9): None leaves them unset (create) or unchanged.
    dpop_nonce_required: bool | None = None
    dpop_nonce_duration: int | None = None
    # The JWK set (JSON text) and the introspection key's id: None leaves them unchanged,
    # "" removes them.
    jwks: str | None = None
    introspection_signature_key_id: str | None = None


def new_api_key() -> int:
    # 15 digits: well inside JSON's exact-integer range (2**53) and Authlete-like.
    return secrets.randbelow(9 * 10**14) + 10**14


def _scope_rows(scopes: Sequence[ScopeSpec]) -> list[ScopeRow]:
    names = [scope.name for scope in scopes]
    if any(not name or any(ch.isspace() for ch in name) for name in names):
        raise InvalidValue("Every scope needs a name without spaces (RFC 6749 section 3.3).")
    if len(set(names)) != len(names):
        raise InvalidValue("Scope names must be unique within a service.")
    return [
        ScopeRow(
            position=position,
            name=scope.name,
            description=scope.description,
            attributes=[{"key": key, "value": value} for key, value in scope.attributes],
        )
        for position, scope in enumerate(scopes)
    ]


def _duration(value: int | None, default: int) -> int:
    return duration_or(value, default, error=InvalidValue)


def _signing_keys(
    spec: ServiceSpec, jwks: str | None, key_id: str | None
) -> tuple[str | None, str | None]:
    """The JWK set and introspection key id after the request, checked together
    (keys.check: VALUE_INVALID)."""
    if spec.jwks is not None:
        jwks = spec.jwks or None
    if spec.introspection_signature_key_id is not None:
        key_id = spec.introspection_signature_key_id or None
    keys.check(jwks, key_id)
    return jwks, key_id


def create(
    session: Session, *, spec: ServiceSpec, keys: KeyRing, now: int
) -> tuple[ServiceRow, str]:
    """Creates a service; returns it and its API secret, which is shown only this once
    (kept as its digest under the current key)."""
    jwks, key_id = _signing_keys(spec, None, None)
    api_secret = secrets.token_urlsafe(32)
    row = ServiceRow(
        api_key=new_api_key(),
        secret_digest=secret_digest(api_secret, keys.current.secret),
        secret_key_id=keys.current.id,
        name=spec.name,
        description=spec.description,
        access_token_duration=_duration(spec.access_token_duration, DEFAULT_ACCESS_TOKEN_DURATION),
        refresh_token_duration=_duration(
            spec.refresh_token_duration, DEFAULT_REFRESH_TOKEN_DURATION
        ),
        dpop_nonce_required=bool(spec.dpop_nonce_required),
        # 0: not set; nonces then live DEFAULT_NONCE_DURATION (app.tokens.nonces).
        dpop_nonce_duration=_duration(spec.dpop_nonce_duration, 0),
        jwks=jwks,
        introspection_signature_key_id=key_id,
        created_at=now,
        modified_at=now,
    )
    scopes = _scope_rows(spec.scopes or ())
    repository.insert(session, row)
    repository.replace_scopes(session, row, scopes)
    return _reload(session, row.api_key), api_secret


def get(session: Session, *, api_key: int) -> ServiceRow:
    row = repository.get_with_scopes(session, api_key)
    if row is None:
        raise ResourceNotFound(f"There is no service {api_key}.")
    return row


def page(session: Session, *, start: int, end: int) -> tuple[Sequence[ServiceRow], int]:
    check_range(start, end)
    return repository.page(session, offset=start, limit=end - start), repository.count(session)


def update(session: Session, *, api_key: int, spec: ServiceSpec, now: int) -> ServiceRow:
    """Updates what the request gives (null, and durations of 0, leave a field alone)."""
    row = repository.get_for_update(session, api_key)
    if row is None:
        raise ResourceNotFound(f"There is no service {api_key}.")
    if spec.name is not None:
        row.name = spec.name
    if spec.description is not None:
        row.description = spec.description
    row.access_token_duration = _duration(spec.access_token_duration, row.access_token_duration)
    row.refresh_token_duration = _duration(spec.refresh_token_duration, row.refresh_token_duration)
    if spec.dpop_nonce_required is not None:
        row.dpop_nonce_required = spec.dpop_nonce_required
    row.dpop_nonce_duration = _duration(spec.dpop_nonce_duration, row.dpop_nonce_duration or 0)
    row.jwks, row.introspection_signature_key_id = _signing_keys(
        spec, row.jwks, row.introspection_signature_key_id
    )
    row.modified_at = now
    if spec.scopes is not None:
        repository.replace_scopes(session, row, _scope_rows(spec.scopes))
    session.flush()
    return _reload(session, api_key)


def delete(session: Session, *, api_key: int, now: int, origin: Origin) -> None:
    """Deletes the service, its clients and its tokens, each token with its `deleted`
    event (the log outlives the service: its events are still relayed)."""
    if not repository.lock_for_delete(session, api_key):
        raise ResourceNotFound(f"There is no service {api_key}.")
    tokens.delete_all(session, service_api_key=api_key, now=now, origin=origin)
    if not repository.delete_service(session, api_key):
        raise ResourceNotFound(f"There is no service {api_key}.")


def _reload(session: Session, api_key: int) -> ServiceRow:
    session.expire_all()
    return get(session, api_key=api_key)


# --- Service access tokens (API v3 credentials) ---------------------------------------------


def create_access_token(
    session: Session, *, api_key: int, description: str | None, keys: KeyRing, now: int
) -> tuple[ServiceAccessTokenRow, str]:
    """A new bearer credential for the service's `/api/{serviceId}/...` paths; its value is
    shown only this once (kept as its key under the current hash secret)."""
    get(session, api_key=api_key)
    value = secrets.token_urlsafe(32)
    row = ServiceAccessTokenRow(
        token_id=secrets.token_urlsafe(12),
        service_api_key=api_key,
        token_key=service_token_key(value, keys.current.secret),
        key_id=keys.current.id,
        description=description,
        created_at=now,
    )
    repository.insert_access_token(session, row)
    return row, value


def access_tokens(session: Session, *, api_key: int) -> Sequence[ServiceAccessTokenRow]:
    get(session, api_key=api_key)
    return repository.access_tokens(session, api_key)


def revoke_access_token(session: Session, *, api_key: int, token_id: str) -> None:
    if not repository.delete_access_token(session, api_key, token_id):
        raise ResourceNotFound(f"Service {api_key} has no access token {token_id}.")
