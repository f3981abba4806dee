"""Client management by a service's authorization server."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.clients import repository
from app.clients.authentication import (
    SECRET_BYTES,
    AuthMethod,
    ClientType,
    InvalidRegistration,
    check_jwks,
    is_secret_form,
    secret_digest,
    settle,
    subject_dn,
)
from app.clients.models import ClientRow
from app.errors import Conflict, InvalidValue, ResourceNotFound
from app.events.changes import Origin
from app.kit.hashing import b64url
from app.kit.keys import KeyRing
from app.kit.paging import check_range
from app.services.service import new_api_key
from app.tokens import service as tokens


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """What a create or update request says; None: not given."""

    name: str | None
    alias: str | None
    description: str | None
    requestable_scopes_enabled: bool | None
    requestable_scopes: tuple[str, ...] | None
    client_type: ClientType | None = None
    token_auth_method: AuthMethod | None = None
    tls_client_auth_subject_dn: str | None = None  # "": remove
    jwks: str | None = None  # "": remove
    access_token_duration: int | None = None  # 0: the service's
    refresh_token_duration: int | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    """A client as written, and its secret when this request generated one (shown once)."""

    row: ClientRow
    secret: str | None = field(default=None, repr=False)


def new_secret() -> str:
    """256 random bits, base64url (43 characters)."""
    return b64url(secrets.token_bytes(SECRET_BYTES))


def client_type_of(row: ClientRow) -> tuple[ClientType, AuthMethod]:
    """The client's type and method; rows written before they were stored get the defaults."""
    return settle(
        None if row.client_type is None else ClientType(row.client_type),
        None if row.token_auth_method is None else AuthMethod(row.token_auth_method),
    )


def _settled(row: ClientRow, spec: ClientSpec) -> tuple[ClientType, AuthMethod]:
    """The type and method after a request: what it gives, the rest from the row when that
    still fits (PUBLIC goes with NONE), else as `settle` derives it."""
    client_type, method = spec.client_type, spec.token_auth_method
    if row.client_type is not None:
        stored_type, stored_method = client_type_of(row)
        if client_type is None and method is None:
            return stored_type, stored_method
        if client_type is None and (method is AuthMethod.NONE) == (
            stored_type is ClientType.PUBLIC
        ):
            client_type = stored_type
        if method is None and (client_type is ClientType.PUBLIC) == (
            stored_method is AuthMethod.NONE
        ):
            method = stored_method
    try:
        return settle(client_type, method)
    except InvalidRegistration as error:
        raise InvalidValue(str(error)) from None


def _apply_keys(row: ClientRow, spec: ClientSpec) -> None:
    """The TLS subject DN, the JWK set and the durations a request gives ("" or 0 clear)."""
    if spec.tls_client_auth_subject_dn is not None:
        dn = spec.tls_client_auth_subject_dn
        if dn:
            try:
                subject_dn(dn)
            except ValueError:
                raise InvalidValue(
                    "tlsClientAuthSubjectDn is not an RFC 4514 distinguished name."
                ) from None
        row.tls_client_auth_subject_dn = dn or None
    if spec.jwks is not None:
        if spec.jwks:
            try:
                check_jwks(spec.jwks)
            except InvalidRegistration as error:
                raise InvalidValue(str(error)) from None
        row.jwks = spec.jwks or None
    if spec.access_token_duration is not None:
        row.access_token_duration = spec.access_token_duration or None
    if spec.refresh_token_duration is not None:
        row.refresh_token_duration = spec.refresh_token_duration or None


def _apply_credentials(row: ClientRow, spec: ClientSpec, keys: KeyRing) -> str | None:
    """Writes the authentication settings a request gives; answers a new secret when the
    client became confidential without one (public clients have none)."""
    client_type, method = _settled(row, spec)
    _apply_keys(row, spec)
    if method is AuthMethod.TLS_CLIENT_AUTH and not row.tls_client_auth_subject_dn:
        raise InvalidValue("TLS_CLIENT_AUTH needs tlsClientAuthSubjectDn (RFC 8705 2.1.2).")
    if method is AuthMethod.PRIVATE_KEY_JWT and not row.jwks:
        raise InvalidValue("PRIVATE_KEY_JWT needs the client's jwks (RFC 7523).")
    row.client_type = client_type.value
    row.token_auth_method = method.value
    if client_type is ClientType.PUBLIC:
        row.client_secret_digest = None
        return None
    if row.client_secret_digest is None:
        secret = new_secret()
        _store_secret(row, secret, keys)
        return secret
    return None


def _store_secret(row: ClientRow, secret: str, keys: KeyRing) -> None:
    """The secret's digest under the current key, and that key's id."""
    row.client_secret_digest = secret_digest(row.client_id, secret, keys.current.secret)
    row.secret_key_id = keys.current.id


def _check_alias(session: Session, service_api_key: int, spec: ClientSpec, client_id: int) -> None:
    if spec.alias and repository.alias_taken(
        session, service_api_key, spec.alias, other_than=client_id
    ):
        raise _alias_conflict(spec)


def _alias_conflict(spec: ClientSpec) -> Conflict:
    return Conflict(f"Another client of this service has the alias {spec.alias!r}.")


def create(
    session: Session, *, service_api_key: int, spec: ClientSpec, keys: KeyRing, now: int
) -> Saved:
    client_id = new_api_key()
    _check_alias(session, service_api_key, spec, client_id)
    row = ClientRow(
        client_id=client_id,
        service_api_key=service_api_key,
        client_id_alias=spec.alias or None,
        client_name=spec.name,
        description=spec.description,
        requestable_scopes_enabled=bool(spec.requestable_scopes_enabled),
        requestable_scopes=list(dict.fromkeys(spec.requestable_scopes or ())),
        created_at=now,
        modified_at=now,
    )
    secret = _apply_credentials(row, spec, keys)
    try:
        repository.insert(session, row)
    except repository.AliasTaken:
        # Taken by a concurrent request after the check: the constraint is the last word.
        raise _alias_conflict(spec) from None
    return Saved(row, secret)


def get(session: Session, *, service_api_key: int, client_id: int) -> ClientRow:
    row = repository.get(session, service_api_key, client_id)
    if row is None:
        raise ResourceNotFound(f"This service has no client {client_id}.")
    return row


def page(
    session: Session, *, service_api_key: int, start: int, end: int
) -> tuple[Sequence[ClientRow], int]:
    check_range(start, end)
    rows = repository.page(session, service_api_key, offset=start, limit=end - start)
    return rows, repository.count(session, service_api_key)


def update(
    session: Session,
    *,
    service_api_key: int,
    client_id: int,
    spec: ClientSpec,
    keys: KeyRing,
    now: int,
) -> Saved:
    row = repository.get_for_update(session, service_api_key, client_id)
    if row is None:
        raise ResourceNotFound(f"This service has no client {client_id}.")
    _check_alias(session, service_api_key, spec, client_id)
    if spec.name is not None:
        row.client_name = spec.name
    if spec.alias is not None:
        row.client_id_alias = spec.alias or None
    if spec.description is not None:
        row.description = spec.description
    if spec.requestable_scopes_enabled is not None:
        row.requestable_scopes_enabled = spec.requestable_scopes_enabled
    if spec.requestable_scopes is not None:
        row.requestable_scopes = list(dict.fromkeys(spec.requestable_scopes))
    secret = _apply_credentials(row, spec, keys)
    row.modified_at = now
    try:
        repository.flush(session)
    except repository.AliasTaken:
        raise _alias_conflict(spec) from None
    return Saved(row, secret)


def set_secret(
    session: Session,
    *,
    service_api_key: int,
    identifier: str,
    secret: str | None,
    keys: KeyRing,
    now: int,
) -> str:
    """Replaces a confidential client's secret with `secret`, or with a new one when None.
    Answers the new secret. Only its digest is kept, so the old one cannot be shown."""
    found = repository.get_by_identifier(session, service_api_key, identifier)
    row = (
        None
        if found is None
        else repository.get_for_update(session, service_api_key, found.client_id)
    )
    if row is None:
        raise ResourceNotFound(f"This service has no client {identifier!r}.")
    if client_type_of(row)[0] is ClientType.PUBLIC:
        raise InvalidValue("A PUBLIC client has no secret.")
    if secret is None:
        secret = new_secret()
    elif not is_secret_form(secret):
        raise InvalidValue("clientSecret is 1 to 86 characters of A-Z a-z 0-9 - _.")
    _store_secret(row, secret, keys)
    row.modified_at = now
    repository.flush(session)
    return secret


def delete(
    session: Session, *, service_api_key: int, client_id: int, now: int, origin: Origin
) -> None:
    """Deletes the client and its tokens, each token with its `deleted` event."""
    if not repository.lock_for_delete(session, service_api_key, client_id):
        raise ResourceNotFound(f"This service has no client {client_id}.")
    tokens.delete_all(session, service_api_key=service_api_key, client_id=client_id, now=now,
                      origin=origin)  # fmt: skip
    if not repository.delete_client(session, service_api_key, client_id):
        raise ResourceNotFound(f"This service has no client {client_id}.")
